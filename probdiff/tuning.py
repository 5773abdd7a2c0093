r"""Fitted grids: time grids tuned to a model (score-optimal, THEORY.md §6) or to a solver (endpoint error).

Both run the model, and :class:`EndpointOptimal` runs the sampler, so they sit above the sampling loop
(:mod:`probdiff.sampling`); :mod:`probdiff.grids` re-exports them beside the fixed placement rules.

*Score-optimal schedules* (Williams, Campbell, Doucet & Syed, NeurIPS 2024) place times at constant speed in
the metric of the local corrector cost. *Endpoint-optimal grids* minimise one deterministic solver's
endpoint error on pilot trajectories. A fixed rule (uniform in t, in log-SNR, Karras' power law) places the
same times for every solver and every data set. The error of a deterministic sampler, however, is a
function of the interior times that can be *measured*: from pilot initial states, run the solver on the
grid and compare its endpoints with the probability-flow solution computed to tight tolerance.
:class:`EndpointOptimal` minimises that global error over the interior times. Chen et al. (ICML 2024)
observe that probability-flow trajectories are regular enough that a few pilot trajectories determine a
good schedule for all the others; the fit below checks that claim on held-out pilot states every time it
runs.
"""

from __future__ import annotations

import math

import scipy.optimize
import torch

from ._util import check_finite, check_positive_int, expand_like
from .models.base import bind
from .placement import Explicit, Grid, Karras, LogSNR, Uniform
from .processes.gaussian import GaussianProcess, as_gaussian
from .sampling import sample
from .solvers.base import Solver
from .tuning_multistep import _pilot, _times_of, _weights_of

__all__ = ["ScoreOptimal", "EndpointOptimal"]


def _rms(x: torch.Tensor, y: torch.Tensor) -> float:
    """Root-mean-square distance between the rows of two batches of states (NaN for an empty batch)."""
    return float((x - y).flatten(1).pow(2).sum(1).mean().sqrt()) if x.shape[0] else math.nan


def _check_floor(floor) -> None:
    if isinstance(floor, bool) or not isinstance(floor, (int, float)) or not 0 < floor <= 1:
        raise ValueError(f"floor must be a number in (0, 1], got {floor!r}")


def _equal_increments(nodes: torch.Tensor, increments: torch.Tensor, count: int, floor: float) -> torch.Tensor:
    """``count`` points, ends kept, at equal steps of the running sum of ``increments`` (one per cell between
    consecutive ``nodes``, each floored at ``floor`` times their mean; all equal when they are all zero),
    linear in ``nodes`` within a cell: the equidistribution shared by the fitted grids."""
    mean = float(increments.mean())
    inc = increments.clamp_min(floor * mean) if mean > 0 else torch.ones_like(increments)
    total = torch.cat([inc.new_zeros(1), inc.cumsum(0)])
    targets = torch.linspace(0.0, float(total[-1]), count, dtype=torch.float64)
    j = torch.searchsorted(total, targets, right=True).clamp(1, nodes.shape[0] - 1) - 1
    w = ((targets - total[j]) / (total[j + 1] - total[j])).clamp(0.0, 1.0)
    out = nodes[j] + w * (nodes[j + 1] - nodes[j])
    out[0], out[-1] = nodes[0], nodes[-1]
    return out

class ScoreOptimal(Explicit):
    r"""The score-optimal schedule of Williams, Campbell, Doucet & Syed, "Score-Optimal Diffusion Schedules"
    (NeurIPS 2024), THEORY.md §6: times at constant speed in the metric of the local corrector cost.

    The local cost of the step from :math:`t_i` to the less noisy :math:`t_{i+1}` is

    .. math::

        L_i = \tilde\sigma_{t_{i+1}}^2\;E\,\big|\tilde s(\tilde x, t_{i+1}) - \tilde s(\tilde x, t_i)\big|^2,
        \qquad \tilde x = x/\alpha_{t_i},\quad x = \alpha_{t_i}x_0 + \sigma_{t_i}\epsilon,

    in the scale-free frame of THEORY.md §6 ("Which frame"): :math:`\tilde\sigma_u = \sigma_u/\alpha_u` and
    :math:`\tilde s(\tilde x, u) = \alpha_u\,s(\alpha_u\tilde x, u)`, so both scores are taken at the same
    scale-free point (in the process' own coordinates, :math:`x` at :math:`t_i` and
    :math:`(\alpha_{t_{i+1}}/\alpha_{t_i})\,x` at :math:`t_{i+1}`). The paper works with unscaled (VE) states,
    where this is its cost; comparing the scores of a scaled process (VP) at the same :math:`x` instead
    charges the deterministic contraction :math:`x \mapsto (\alpha_{t_{i+1}}/\alpha_{t_i})x` as transport
    work and front-loads the schedule at high noise.

    estimated from data :math:`x_0` and the model's score (:meth:`local_costs`). Locally
    :math:`L \approx \delta(t)\,dt^2`; the optimal schedule puts equal increments of
    :math:`\Lambda(t) = \int\sqrt{\delta}` between consecutive times. :meth:`reparameterise` accumulates
    :math:`\Lambda_i = \sum_{j<i}\sqrt{L_j}` (each :math:`\sqrt{L_j}` floored at ``floor`` times their mean,
    so :math:`\Lambda` is strictly increasing), inverts it by piecewise-linear interpolation in t and keeps
    the endpoints. A grid whose costs are already equal is a fixed point. The costs are estimated on each
    interval split into ``refine`` parts, because :math:`L \approx \delta\,dt^2` holds for short steps only
    (on a coarse grid the weight :math:`\sigma_{t_{i+1}}^2` of the last step to ``t_min`` hides its cost).
    :meth:`fit` iterates this from
    a log-SNR grid; :meth:`update` blends one re-estimate into the current grid,
    :math:`t \leftarrow \gamma t^* + (1-\gamma)t`, which stays strictly monotone for any
    :math:`\gamma\in(0, 1]` — the online form used during training.

    The paper's constant speed minimises the summed cost; a solver of order :math:`p` errs by its local
    error :math:`C h^{p+1}`, whose sum is smallest for the step density :math:`\propto C^{1/(p+1)}`.
    ``fit(..., solver=solver)`` takes :math:`C = \sqrt{\delta}` per unit of log-SNR (:meth:`exponent_for`).
    Measured at 10 model evaluations (VP SDE, see :doc:`/schedules` and ``benchmarks/score_optimal.py``),
    fitted over best fixed grid: with ``solver=`` Euler gets 0.95 on a 16-D mixture and 0.64 on the 2-D
    ring (the paper's speed: 0.99 and 1.52), but on a trained digits model the paper's speed is better
    (1.00 against 1.09); second-order solvers on the 16-D mixture stay 1.1–1.3× from the best fixed grid
    with either: the cost is a first time derivative of the noise prediction at a fixed point, not a
    solver's truncation error. :class:`~probdiff.grids.LocalErrorOptimal` equidistributes the solver's own
    error, measured by step halving, and :class:`EndpointOptimal` minimises it: the grids for those.

    Construct with :meth:`fit`, or from given times ``ScoreOptimal(times)`` (strictly decreasing,
    ``times[0] = t_max``, ``times[-1] = t_min`` of the process it is used with).

    Attributes:
        costs: the local costs estimated on the refined grid the times were computed from
            (``None`` for a grid built from times).
    """

    def __init__(self, times, *, costs: torch.Tensor | None = None):
        super().__init__(times)
        self.costs = costs

    # ---------------------------------------------------------------- the cost
    @staticmethod
    def local_costs(process: GaussianProcess, model, data: torch.Tensor, times, *,
                    generator: torch.Generator | None = None, scale_free: bool = True) -> torch.Tensor:
        r"""Monte-Carlo estimate of :math:`L_i` for each interval of ``times`` (decreasing), shape ``(steps,)``.

        The same :math:`(x_0, \epsilon)` pairs serve every interval (common random numbers), so the
        estimated costs of neighbouring intervals are compared with little noise. ``scale_free=False`` gives
        the cost in the process' own frame, :math:`\sigma_{t_{i+1}}^2 E|s(x, t_{i+1}) - s(x, t_i)|^2` at the
        same :math:`x` (the frames coincide for VE-like processes, :math:`\alpha = 1`).
        """
        if not isinstance(scale_free, bool):
            raise ValueError(f"scale_free must be True or False, got {scale_free!r}")
        process, model = bind(process, model, entry="ScoreOptimal.local_costs")
        process = as_gaussian(process, needed_for="ScoreOptimal places times by noise level")
        if not isinstance(data, torch.Tensor) or data.dim() < 2 or data.shape[0] < 1:
            raise ValueError("data must be a tensor of shape (batch, *event) with batch >= 1")
        check_finite("data", data)
        ts = torch.as_tensor(times, dtype=torch.float64)
        dtype = data.dtype if data.is_floating_point() else torch.get_default_dtype()
        x0 = data.to(dtype)
        eps = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=dtype)
        dims = tuple(range(1, x0.dim()))
        costs = []
        with torch.no_grad():
            for t, s in zip(ts[:-1].tolist(), ts[1:].tolist()):
                t_b = torch.full((x0.shape[0],), t, dtype=dtype, device=x0.device)
                s_b = torch.full_like(t_b, s)
                a_t, a_s = expand_like(process.alpha(t_b), x0), expand_like(process.alpha(s_b), x0)
                if not scale_free:
                    a_t, a_s = torch.ones_like(a_t), torch.ones_like(a_s)
                x = a_t * x0 + expand_like(process.sigma(t_b), x0) * eps
                # scale-free frame: s~(x~, u) = alpha_u s(alpha_u x~, u) at the same x~ = x / alpha_t, i.e. the
                # VP point (alpha_s / alpha_t) x at time s; weight sigma~_s^2 = sigma_s^2 / alpha_s^2
                diff = a_s * model.score((a_s / a_t) * x, s_b) - a_t * model.score(x, t_b)
                weight = (expand_like(process.sigma(s_b), x0) / a_s) ** 2
                cost = (weight * diff**2).sum(dims).mean()
                costs.append(cost.to(torch.float64).cpu())
        return torch.stack(costs)

    @staticmethod
    def reparameterise(times, costs, *, steps: int | None = None, floor: float = 1e-3, exponent: float = 0.5,
                       coordinate=None) -> torch.Tensor:
        r"""``steps + 1`` times at equal increments of :math:`\Lambda` for ``costs`` measured on the intervals
        of ``times`` (default: as many as ``times``), inverted piecewise-linearly; endpoints kept; strictly
        decreasing.

        With :math:`L_j \approx \delta_u h_j^2` on an interval of length :math:`h_j` in the step variable
        :math:`u` (``coordinate``: its values at ``times``, default ``times`` itself), the increment of
        :math:`\Lambda` is :math:`\delta_u^q h_j = L_j^q h_j^{1-2q}` with :math:`q` = ``exponent``: the
        paper's constant speed for :math:`q = \tfrac12` (then :math:`\sqrt{L_j}`, whatever the variable),
        the step density :math:`\propto C^{1/(p+1)}` of a solver of order :math:`p` whose local error
        density is :math:`C = \sqrt{\delta_u}` for :math:`q = 1/(2(p+1))` (:meth:`exponent_for`).
        Each increment is floored at ``floor`` times their mean."""
        ts = torch.as_tensor(times, dtype=torch.float64).cpu()
        costs = torch.as_tensor(costs, dtype=torch.float64).cpu()
        if costs.shape != (ts.shape[0] - 1,):
            raise ValueError(f"costs must have shape (steps,) = ({ts.shape[0] - 1},), got {tuple(costs.shape)}")
        check_finite("costs", costs)
        if bool((costs < 0).any()):
            raise ValueError("costs must be >= 0")
        _check_floor(floor)
        if isinstance(exponent, bool) or not isinstance(exponent, (int, float)) or not 0 < exponent <= 0.5:
            raise ValueError(f"exponent must be a number in (0, 1/2], got {exponent!r}")
        u = ts if coordinate is None else torch.as_tensor(coordinate, dtype=torch.float64).cpu()
        if u.shape != ts.shape or not bool(((u[1:] - u[:-1]) * (u[1] - u[0]) > 0).all()):
            raise ValueError("coordinate must be strictly monotone along times, with the shape of times")
        steps = ts.shape[0] - 1 if steps is None else steps
        check_positive_int("steps", steps)
        speed = costs.pow(exponent) * (u[1:] - u[:-1]).abs().pow(1.0 - 2.0 * exponent)
        return _equal_increments(ts, speed, int(steps) + 1, floor)

    @staticmethod
    def exponent_for(solver: Solver | None) -> float:
        r"""The exponent :math:`q` of :meth:`reparameterise` for ``solver``: :math:`\tfrac12` (the paper's
        constant speed) for ``None``, :math:`1/(2(p+1))` for a solver of order :math:`p` (``solver.order``):
        the local error :math:`C(u)\,h^{p+1}` summed over the steps, :math:`\int C h^p du`, is smallest
        for the step density :math:`\propto C^{1/(p+1)}` (equidistribution), with :math:`C` taken to be
        the corrector cost's rate :math:`\sqrt{\delta}` per unit of log-SNR (docs/schedules.rst)."""
        if solver is None:
            return 0.5
        if not isinstance(solver, Solver):
            raise ValueError(f"solver must be None or a probdiff Solver, got {type(solver).__name__}")
        return 1.0 / (2.0 * (int(solver.order) + 1))

    # ---------------------------------------------------------------- fitting
    @classmethod
    def fit(cls, process: GaussianProcess, model, data: torch.Tensor, steps: int, *, iterations: int = 4,
            refine: int = 8, init: Grid | None = None, floor: float = 1e-3,
            generator: torch.Generator | None = None, scale_free: bool = True,
            solver: Solver | None = None) -> "ScoreOptimal":
        r"""Fit a ``steps``-step schedule: start from ``init`` (default :class:`LogSNR`) and apply
        ``iterations`` full updates (:meth:`update` with ``gamma=1``).

        Args:
            process: the Gaussian process.
            model: a model of it with ``score(x, t)`` (e.g. an oracle or a trained network).
            data: samples of the data, ``(batch, *event)``; a few hundred suffice in low dimension.
            steps: number of steps of the schedule.
            iterations: number of estimate-and-reparameterise rounds (>= 1).
            refine: each interval is split into ``refine`` equal sub-intervals for the cost estimate
                (``L`` approximates :math:`\delta\,dt^2` only for short steps; ``refine=1`` estimates on
                the grid itself, as in THEORY.md §6).
            init: starting grid with ``steps`` steps.
            floor: relative floor of the per-interval speed (see :meth:`reparameterise`).
            generator: random source of the noise in the cost estimate.
            scale_free: the cost in the scale-free frame (default, THEORY.md §6 "Which frame"); False
                compares scores at the same point of the process' own frame (see :meth:`local_costs`).
            solver: the solver the grid is for: ``None`` places the times at the paper's constant speed;
                a solver of order :math:`p` puts the step density per unit of log-SNR
                :math:`\propto \delta^{1/(2(p+1))}` (:meth:`exponent_for`).
        """
        process, model = bind(process, model, entry="ScoreOptimal.fit")
        process = as_gaussian(process, needed_for="ScoreOptimal places times by noise level")
        check_positive_int("iterations", iterations)
        init = LogSNR(steps) if init is None else init
        if not isinstance(init, Grid) or init.steps != int(steps):
            raise ValueError(f"init must be a Grid with steps={steps}, got {init!r}")
        grid = cls(init.times(process))
        for _ in range(int(iterations)):
            grid = grid.update(process, model, data, gamma=1.0, refine=refine, floor=floor, generator=generator,
                               scale_free=scale_free, solver=solver)
        return grid

    def update(self, process: GaussianProcess, model, data: torch.Tensor, *, gamma: float = 0.1, refine: int = 8,
               floor: float = 1e-3, generator: torch.Generator | None = None,
               scale_free: bool = True, solver: Solver | None = None) -> "ScoreOptimal":
        r"""A new grid :math:`\gamma t^* + (1-\gamma)t`, with :math:`t^*` the constant-speed times for the
        costs re-estimated on this grid, each interval split into ``refine`` equal parts (``gamma`` in
        (0, 1]); ``self`` is left unchanged; ``solver`` as in :meth:`fit`. Returns a grid with the same
        number of steps."""
        if isinstance(gamma, bool) or not isinstance(gamma, (int, float)) or not 0 < gamma <= 1:
            raise ValueError(f"gamma must be a number in (0, 1], got {gamma!r}")
        check_positive_int("refine", refine)
        exponent = self.exponent_for(solver)
        ts = self.times(process)
        u = torch.arange(int(refine), dtype=torch.float64) / int(refine)
        fine = torch.cat([(ts[:-1, None] + u * (ts[1:, None] - ts[:-1, None])).reshape(-1), ts[-1:]])
        costs = self.local_costs(process, model, data, fine, generator=generator, scale_free=scale_free)
        new = self.reparameterise(fine, costs, steps=self.steps, floor=floor, exponent=exponent,
                                  coordinate=process.log_snr(fine))
        return type(self)(self._finish(gamma * new + (1.0 - gamma) * ts, process), costs=costs)


class EndpointOptimal(Explicit):
    r"""The schedule that minimises one deterministic solver's endpoint error on pilot trajectories.

    For the probability-flow reverse process of a Gaussian process, a deterministic solver :math:`\Phi` and
    pilot initial states :math:`x^{(n)}_{t_{max}}`, :meth:`fit` minimises over the interior times

    .. math::

        E(t_1, \dots, t_{N-1}) = \Big(\frac1M\sum_{n=1}^M \big|\Phi(x^{(n)}_{t_{max}}; t_0, \dots, t_N)
        - x^{(n)}_{t_{min}}\big|^2\Big)^{1/2},

    where :math:`x^{(n)}_{t_{min}}` is the probability-flow solution from the same start (an adaptive
    solver at tight tolerance, or a given ``reference``). The times are parameterised by the log-SNR
    increments :math:`u = \mathrm{softmax}(w, 0)` with :math:`\lambda_i = \lambda_{t_{max}} +
    (\lambda_{t_{min}} - \lambda_{t_{max}})\sum_{j \le i} u_j`, so every :math:`w \in \mathbb R^{N-1}` gives a
    strictly decreasing grid with the endpoints kept; :math:`\log E` is minimised by Powell's derivative-free
    method (scipy) from the best of :class:`~probdiff.grids.Uniform`, :class:`~probdiff.grids.LogSNR` and
    :class:`~probdiff.grids.Karras` (or from ``init``). A ``validation`` share of the pilot states is held
    out: if the fitted times are not more accurate there than the starting grid, the starting grid is kept,
    so a fit never returns a grid that generalises worse than where it started.

    Optimising the time steps of a sampler for its global error follows Watson et al., "Learning Fast
    Samplers for Diffusion Models by Differentiating through Sample Quality" (ICLR 2022); solver-specific
    schedules are also the point of Xue et al., "Accelerating Diffusion Sampling with Optimized Time Steps"
    (CVPR 2024) and Sabour et al., "Align Your Steps" (ICML 2024). The fitted grid is tied to the solver,
    the model and the number of steps it was fitted for. In ``benchmarks/samplers.py`` at 10 model
    evaluations it reduces UniPC's error 2.4× on a 16-D mixture and about 25× on a 2-D ring, measured on
    initial noise that the fit never saw.

    Construct with :meth:`fit`, or from given times ``EndpointOptimal(times)``.

    Attributes:
        errors: ``{"start": (fit, validation), "fitted": (fit, validation)}``, the RMS endpoint errors of
            the starting and the fitted grid on the two parts of the pilot states (``None`` for a grid built
            from times; validation is ``nan`` when nothing was held out).
        start: the grid the search started from.
        nfe: model evaluations spent by the fit (each over the whole pilot batch), the reference included.
    """

    def __init__(self, times, *, errors: dict | None = None, start: Grid | None = None, nfe: int = 0):
        super().__init__(times)
        self.errors, self.start, self.nfe = errors, start, int(nfe)

    @classmethod
    def fit(cls, reverse, solver, steps: int, x_init: torch.Tensor, *, init: Grid | None = None,
            reference: torch.Tensor | None = None, validation: float = 0.25, max_evals: int = 600,
            rtol: float = 1e-8) -> "EndpointOptimal":
        r"""Fit a ``steps``-step schedule for ``solver`` on the probability flow ``reverse``.

        Args:
            reverse: a reverse process of a Gaussian process with ``noise == 0``
                (:func:`probdiff.probability_flow`).
            solver: a deterministic solver (e.g. :class:`~probdiff.solvers.UniPC`); a solver whose output
                depends on the random generator is refused.
            steps: number of steps of the schedule (positive integer).
            x_init: pilot initial states at ``t_max``, ``(batch, *event)`` with ``batch >= 2``, e.g.
                ``process.sample_prior(1000, event_shape)``; use other states than the ones you will sample.
            init: the grid to start from (``steps`` steps); default: the best of Uniform, LogSNR and Karras.
            reference: the exact endpoints at ``t_min`` of ``x_init`` (same shape), if already known; by
                default the probability flow is integrated by ``TorchDiffEq(rtol=rtol, atol=rtol)``.
            validation: share of the pilot states held out to check the fit, in ``[0, 1)``.
            max_evals: most sampling runs the search may spend (each is ``steps``-ish model evaluations).
            rtol: tolerance of the reference solution.
        """
        if not isinstance(solver, Solver):
            raise ValueError(f"solver must be a probdiff Solver, got {type(solver).__name__}")
        check_positive_int("max_evals", max_evals)
        process, steps, (fit_x, fit_ref), (val_x, val_ref), nfe = _pilot(cls, reverse, steps, x_init, init,
                                                                          reference, validation, rtol)

        def run(grid, x, generator=None):
            nonlocal nfe
            sol = sample(reverse, x_init=x, solver=solver, grid=grid, generator=generator)
            nfe += sol.nfe
            return sol.x

        def rms(grid, x, ref):
            return _rms(run(grid, x), ref) if x.shape[0] else math.nan

        candidates = [init] if init is not None else [Uniform(steps), LogSNR(steps), Karras(steps)]
        start_fit, k = min((rms(g, fit_x, fit_ref), i) for i, g in enumerate(candidates))
        start = candidates[k]
        _check_deterministic(run, start, x_init[:2], solver)
        start_times = start.times(process)
        start_errors = (start_fit, rms(start, val_x, val_ref))
        if steps == 1:
            return cls(start_times, errors={"start": start_errors, "fitted": start_errors}, start=start, nfe=nfe)

        w0 = _weights_of(process, start_times)
        penalty = math.log(start_errors[0]) + 10.0 if start_errors[0] > 0 else 10.0

        def objective(w):
            try:
                error = rms(Explicit(Grid._finish(_times_of(process, w), process)), fit_x, fit_ref)
            except ValueError:             # increments so small that two times coincide in float64
                return penalty
            return math.log(error) if math.isfinite(error) and error > 0 else penalty

        best = scipy.optimize.minimize(objective, w0.numpy(), method="Powell",
                        options=dict(maxfev=int(max_evals), xtol=1e-3, ftol=1e-4))
        fitted = Explicit(Grid._finish(_times_of(process, best.x), process))
        fitted_errors = (rms(fitted, fit_x, fit_ref), rms(fitted, val_x, val_ref))
        keep = val_x.shape[0] == 0 or fitted_errors[1] < start_errors[1]
        times = fitted.times(process) if keep else start_times
        return cls(times, errors={"start": start_errors, "fitted": fitted_errors if keep else start_errors},
                   start=start, nfe=nfe)


def _check_deterministic(run, grid, x, solver) -> None:
    a = run(grid, x, torch.Generator(device=x.device).manual_seed(0))
    b = run(grid, x, torch.Generator(device=x.device).manual_seed(1))
    if not torch.equal(a, b):
        raise ValueError(f"solver {solver!r} draws random numbers; EndpointOptimal fits deterministic solvers only")

