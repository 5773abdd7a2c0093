r"""Time grids of Gaussian processes: placed in noise level, in log-SNR, or where the score changes.

Every grid here is built in the process' log-SNR :math:`\lambda_t` (or its noise-to-signal ratio
:math:`\tilde\sigma_t = \sigma_t/\alpha_t = e^{-\lambda_t/2}`, the VE form of Karras et al.) and mapped back
to time by inverting :math:`\lambda`, which is strictly decreasing (:func:`time_of_log_snr`). Processes
with a closed-form inverse register it in :data:`LOG_SNR_INVERSE`; any other Gaussian process is inverted
by bisection to float64 resolution.
"""

from __future__ import annotations

import math

import torch

from .._registry import Registry
from .._validation import check_finite, check_positive_int
from ..processes.gaussian import GaussianProcess, LinearBlend, VESDE, VPSDE, _expand
from .base import Explicit, Grid

__all__ = ["Karras", "LogSNR", "ScoreOptimal", "time_of_log_snr", "LOG_SNR_INVERSE"]

#: Closed-form inverses ``inverse(process, log_snr) -> t`` of :math:`\lambda_t`, keyed by process type.
LOG_SNR_INVERSE = Registry("closed-form inverse of the log-SNR")


def _check_process(grid, process) -> GaussianProcess:
    if not isinstance(process, GaussianProcess):
        raise ValueError(f"{type(grid).__name__} places times by noise level and needs a GaussianProcess, "
                         f"got {type(process).__name__}")
    return process


def _bisect(process: GaussianProcess, lam: torch.Tensor) -> torch.Tensor:
    """Solve :math:`\\lambda_t = \\lambda` for t in [t_min, t_max] by bisection (λ decreasing in t)."""
    lo = torch.full_like(lam, process.t_min)
    hi = torch.full_like(lam, process.t_max)
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        above = process.log_snr(mid) > lam        # still too little noise: the root lies later
        lo, hi = torch.where(above, mid, lo), torch.where(above, hi, mid)
        if bool(((hi - lo) <= 4 * torch.finfo(lam.dtype).eps * hi.abs().clamp_min(1.0)).all()):
            break
    return 0.5 * (lo + hi)


def time_of_log_snr(process: GaussianProcess, log_snr: torch.Tensor) -> torch.Tensor:
    r"""The time t with :math:`\lambda_t` = ``log_snr`` (float64), clipped to ``[t_min, t_max]``.

    Uses the registered closed form for the process' type if there is one, else bisection.
    """
    lam = torch.as_tensor(log_snr, dtype=torch.float64)
    try:
        inverse = LOG_SNR_INVERSE.lookup(process)
    except ValueError:
        t = _bisect(process, lam)
    else:
        t = inverse(process, lam)
    return t.clamp(process.t_min, process.t_max)


@LOG_SNR_INVERSE.register(VESDE)
def _ve_inverse(process: VESDE, lam: torch.Tensor) -> torch.Tensor:
    # lambda = -2 log sigma_t = -2 (log sigma_min + t log(sigma_max / sigma_min))
    return (-0.5 * lam - math.log(process.sigma_min)) / process._log_ratio


@LOG_SNR_INVERSE.register(LinearBlend)
def _blend_inverse(process: LinearBlend, lam: torch.Tensor) -> torch.Tensor:
    # lambda = 2 log((1 - t) / t)  <=>  t = sigmoid(-lambda / 2)
    return torch.sigmoid(-0.5 * lam)


@LOG_SNR_INVERSE.register(VPSDE)
def _vp_inverse(process: VPSDE, lam: torch.Tensor) -> torch.Tensor:
    # alpha^2 = sigmoid(lambda), and log alpha = -t^2 (b1 - b0)/4 - t b0/2 is a quadratic in t:
    # (b1 - b0)/4 t^2 + b0/2 t + c = 0 with c = log alpha = 0.5 log sigmoid(lambda) = -0.5 softplus(-lambda).
    a = 0.25 * (process.beta_max - process.beta_min)
    b = 0.5 * process.beta_min
    c = 0.5 * torch.nn.functional.softplus(-lam)                # = -log alpha >= 0
    if a == 0.0:
        return c / b
    # stable root of a t^2 + b t - c = 0 (t >= 0): t = 2c / (b + sqrt(b^2 + 4ac))
    return 2.0 * c / (b + torch.sqrt(b * b + 4.0 * a * c))


def _log_snr_ends(grid, process: GaussianProcess):
    ends = process.log_snr(torch.tensor([process.t_max, process.t_min], dtype=torch.float64))
    if not bool(torch.isfinite(ends).all()):
        raise ValueError(f"{type(grid).__name__} needs a finite log-SNR at t_min and t_max, got "
                         f"{ends.tolist()} for {process!r}; choose t_max < 1 (LinearBlend) or use Uniform")
    return float(ends[0]), float(ends[1])


class LogSNR(Grid):
    r"""Times equally spaced in log-SNR :math:`\lambda_t` (the variable of DPM-Solver, Lu et al. 2022, §3.3;
    Kingma et al., "Variational Diffusion Models", 2021)."""

    def times(self, process) -> torch.Tensor:
        process = _check_process(self, process)
        lam_max_t, lam_min_t = _log_snr_ends(self, process)
        lam = torch.linspace(lam_max_t, lam_min_t, self.steps + 1, dtype=torch.float64)
        return self._finish(time_of_log_snr(process, lam), process)


class Karras(Grid):
    r"""The noise levels of Karras et al., "Elucidating the Design Space of Diffusion-Based Generative
    Models" (NeurIPS 2022), Eq. (5), in the VE form :math:`\tilde\sigma = \sigma_t/\alpha_t = e^{-\lambda_t/2}`:

    .. math::

        \tilde\sigma_i = \Big(\tilde\sigma_{max}^{1/\rho} + \tfrac{i}{N}\big(\tilde\sigma_{min}^{1/\rho}
        - \tilde\sigma_{max}^{1/\rho}\big)\Big)^{\rho},\qquad i = 0, \dots, N,

    with :math:`\tilde\sigma_{max}, \tilde\sigma_{min}` those of ``t_max``, ``t_min``, mapped back to time by
    inverting the log-SNR. ``rho = 7`` is EDM's choice; ``rho = 1`` is uniform in :math:`\tilde\sigma`.

    Args:
        steps: number of steps (positive integer).
        rho: the exponent, finite and > 0.
    """

    def __init__(self, steps: int, rho: float = 7.0):
        super().__init__(steps)
        check_finite("rho", rho)
        if isinstance(rho, bool) or not rho > 0:
            raise ValueError(f"rho must be a finite number > 0, got {rho!r}")
        self.rho = float(rho)

    def times(self, process) -> torch.Tensor:
        process = _check_process(self, process)
        lam_max_t, lam_min_t = _log_snr_ends(self, process)
        # sigma~^(1/rho) = exp(-lambda / (2 rho)); interpolate there, then lambda = -2 rho log(.)
        lo, hi = math.exp(-lam_min_t / (2 * self.rho)), math.exp(-lam_max_t / (2 * self.rho))
        u = torch.linspace(0.0, 1.0, self.steps + 1, dtype=torch.float64)
        lam = -2.0 * self.rho * torch.log(hi + u * (lo - hi))
        return self._finish(time_of_log_snr(process, lam), process)

    def __repr__(self) -> str:
        return f"Karras(steps={self.steps}, rho={self.rho:g})"


# ==================================================================== score-optimal schedules
class ScoreOptimal(Explicit):
    r"""The score-optimal schedule of Williams, Campbell, Doucet & Syed, "Score-Optimal Diffusion Schedules"
    (NeurIPS 2024), THEORY.md §6: times at constant speed in the metric of the local corrector cost.

    The local cost of the step from :math:`t_i` to the less noisy :math:`t_{i+1}` is

    .. math::

        L_i = \sigma_{t_{i+1}}^2\;E\,\big|s(x, t_{i+1}) - s(x, t_i)\big|^2,\qquad
        x = \alpha_{t_i}x_0 + \sigma_{t_i}\epsilon,

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

    The cost measures the corrector's work along the path, not one solver's truncation error: in
    ``benchmarks/samplers.py`` the fitted grid makes Euler 2–3× more accurate than any fixed grid on the
    2-D ring at 5–10 steps, but on the 16-D mixture it is worse than Uniform or LogSNR for every solver.

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
                    generator: torch.Generator | None = None) -> torch.Tensor:
        r"""Monte-Carlo estimate of :math:`L_i` for each interval of ``times`` (decreasing), shape ``(steps,)``.

        The same :math:`(x_0, \epsilon)` pairs serve every interval (common random numbers), so the
        estimated costs of neighbouring intervals are compared with little noise.
        """
        process = _check_process(ScoreOptimal, process)
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
                x = _expand(process.alpha(t_b), x0) * x0 + _expand(process.sigma(t_b), x0) * eps
                diff = model.score(x, s_b) - model.score(x, t_b)
                cost = (_expand(process.sigma(s_b), x0) ** 2 * diff**2).sum(dims).mean()
                costs.append(cost.to(torch.float64).cpu())
        return torch.stack(costs)

    @staticmethod
    def reparameterise(times, costs, *, steps: int | None = None, floor: float = 1e-3) -> torch.Tensor:
        r"""``steps + 1`` constant-speed times (default: as many as ``times``) for ``costs`` measured on the
        intervals of ``times``: equal increments of :math:`\Lambda`, inverted piecewise-linearly in t;
        endpoints kept; strictly decreasing."""
        ts = torch.as_tensor(times, dtype=torch.float64).cpu()
        costs = torch.as_tensor(costs, dtype=torch.float64).cpu()
        if costs.shape != (ts.shape[0] - 1,):
            raise ValueError(f"costs must have shape (steps,) = ({ts.shape[0] - 1},), got {tuple(costs.shape)}")
        check_finite("costs", costs)
        if bool((costs < 0).any()):
            raise ValueError("costs must be >= 0")
        if isinstance(floor, bool) or not isinstance(floor, (int, float)) or not 0 < floor <= 1:
            raise ValueError(f"floor must be a number in (0, 1], got {floor!r}")
        steps = ts.shape[0] - 1 if steps is None else steps
        check_positive_int("steps", steps)
        speed = costs.sqrt()
        mean = float(speed.mean())
        speed = speed.clamp_min(floor * mean) if mean > 0 else torch.ones_like(speed)
        lam = torch.cat([speed.new_zeros(1), speed.cumsum(0)])
        targets = torch.linspace(0.0, float(lam[-1]), int(steps) + 1, dtype=torch.float64)
        j = torch.searchsorted(lam, targets, right=True).clamp(1, ts.shape[0] - 1) - 1
        w = ((targets - lam[j]) / (lam[j + 1] - lam[j])).clamp(0.0, 1.0)
        out = ts[j] + w * (ts[j + 1] - ts[j])
        out[0], out[-1] = ts[0], ts[-1]
        return out

    # ---------------------------------------------------------------- fitting
    @classmethod
    def fit(cls, process: GaussianProcess, model, data: torch.Tensor, steps: int, *, iterations: int = 4,
            refine: int = 8, init: Grid | None = None, floor: float = 1e-3,
            generator: torch.Generator | None = None) -> "ScoreOptimal":
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
        """
        process = _check_process(cls, process)
        check_positive_int("iterations", iterations)
        init = LogSNR(steps) if init is None else init
        if not isinstance(init, Grid) or init.steps != int(steps):
            raise ValueError(f"init must be a Grid with steps={steps}, got {init!r}")
        grid = cls(init.times(process))
        for _ in range(int(iterations)):
            grid = grid.update(process, model, data, gamma=1.0, refine=refine, floor=floor, generator=generator)
        return grid

    def update(self, process: GaussianProcess, model, data: torch.Tensor, *, gamma: float = 0.1, refine: int = 8,
               floor: float = 1e-3, generator: torch.Generator | None = None) -> "ScoreOptimal":
        r"""A new grid :math:`\gamma t^* + (1-\gamma)t`, with :math:`t^*` the constant-speed times for the
        costs re-estimated on this grid, each interval split into ``refine`` equal parts (``gamma`` in
        (0, 1]); ``self`` is left unchanged. Returns a grid with the same number of steps."""
        if isinstance(gamma, bool) or not isinstance(gamma, (int, float)) or not 0 < gamma <= 1:
            raise ValueError(f"gamma must be a number in (0, 1], got {gamma!r}")
        check_positive_int("refine", refine)
        ts = self.times(process)
        u = torch.arange(int(refine), dtype=torch.float64) / int(refine)
        fine = torch.cat([(ts[:-1, None] + u * (ts[1:, None] - ts[:-1, None])).reshape(-1), ts[-1:]])
        costs = self.local_costs(process, model, data, fine, generator=generator)
        new = self.reparameterise(fine, costs, steps=self.steps, floor=floor)
        return type(self)(self._finish(gamma * new + (1.0 - gamma) * ts, process), costs=costs)
