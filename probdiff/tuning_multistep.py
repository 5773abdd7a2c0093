r"""Times and solver coefficients fitted together: :class:`MultistepOptimal`, and the pilot-state handling it
shares with :class:`~probdiff.grids.EndpointOptimal`.

:class:`~probdiff.grids.EndpointOptimal` fits the times of a given solver; here the solver is fitted as well.
Every deterministic multistep sampler in data prediction (DDIM, DPM-Solver++(2M), exponential Adams) is
one :class:`~probdiff.solvers.ExponentialMultistep` with particular coefficients :math:`c_{ij}` (how much of
the model's previous outputs :math:`D_{i-j} - D_i` each step adds). :class:`MultistepOptimal` minimises the
endpoint error of the probability flow over the interior times *and* the coefficients, by gradient descent
through the sampler: a handful of numbers per step, fitted on pilot initial states and checked on held-out
ones, as Frankel et al. ("S4S: Solving for a Diffusion Model Solver", ICML 2025) do for image models, following
Watson et al. (ICLR 2022), who differentiate through the sampler to tune its parameters.
"""

from __future__ import annotations

import math

import torch

from ._util import check_finite, check_positive_int
from .placement import Explicit, Grid, Karras, LogSNR, Uniform, log_snr_ends
from .reverse.gaussian import GaussianReverse
from .sampling import sample
from .solvers.adapters import TorchDiffEq
from .solvers.multistep import ExponentialMultistep

__all__ = ["MultistepOptimal"]


class MultistepOptimal(Explicit):
    r"""A grid and the :class:`~probdiff.solvers.ExponentialMultistep` coefficients fitted with it to minimise
    the endpoint error of the probability flow on pilot trajectories.

    For pilot initial states :math:`x^{(n)}_{t_{max}}` and their probability-flow endpoints
    :math:`x^{(n)}_{t_{min}}` (dopri5 at tight tolerance, or a given ``reference``), :meth:`fit` minimises

    .. math::

        \log E(w, c),\qquad E = \Big(\frac1M\sum_{n=1}^M \big|\Phi_{c}(x^{(n)}_{t_{max}}; t(w))
        - x^{(n)}_{t_{min}}\big|^2\Big)^{1/2},

    where :math:`\Phi_c` is :class:`~probdiff.solvers.ExponentialMultistep` with coefficients :math:`c`
    (``history`` per step) and the times :math:`t(w)` have log-SNR increments :math:`\mathrm{softmax}(w, 0)`
    (strictly decreasing, endpoints kept, as in :class:`~probdiff.grids.EndpointOptimal`). The gradient comes
    from autograd through the sampler and the model (times included: :math:`dt/d\lambda = 1/\lambda'(t)`);
    L-BFGS with a strong-Wolfe line search runs ``max_iter`` iterations. The search starts from
    DPM-Solver++(2M) on the best of :class:`~probdiff.grids.Uniform`, :class:`~probdiff.grids.LogSNR` and
    :class:`~probdiff.grids.Karras` (or ``init``). A ``validation`` share of the pilot states is held out: if
    the fit is not more accurate there than the start, the start (DPM-Solver++(2M) on its grid) is returned.

    Every coefficient choice keeps the step consistent (exact for a constant denoiser), so a fitted solver
    is a first-order method whose coefficients were chosen for one model, one process and one number of
    steps; it is not a solver to use on another model or grid. Use it as
    ``pd.sample(flow, x_init=x, solver=fitted.solver, grid=fitted)``.

    Attributes:
        solver: the fitted :class:`~probdiff.solvers.ExponentialMultistep`.
        errors: ``{"start": (fit, validation), "fitted": (fit, validation)}``, RMS endpoint errors of the
            start and of the result on the two parts of the pilot states.
        start: the grid the search started from.
        nfe: model evaluations spent by the fit (each over the fitted pilot batch), the reference included.
    """

    def __init__(self, times, *, solver: ExponentialMultistep, errors: dict | None = None,
                 start: Grid | None = None, nfe: int = 0):
        super().__init__(times)
        if not isinstance(solver, ExponentialMultistep) or solver.steps != self.steps:
            raise ValueError(f"solver must be an ExponentialMultistep with {self.steps} steps, got {solver!r}")
        self.solver, self.errors, self.start, self.nfe = solver, errors, start, int(nfe)

    @classmethod
    def fit(cls, reverse, steps: int, x_init: torch.Tensor, *, history: int = 2, init: Grid | None = None,
            reference: torch.Tensor | None = None, validation: float = 0.25, max_iter: int = 200,
            rtol: float = 1e-8) -> "MultistepOptimal":
        r"""Fit ``steps`` times and an :class:`~probdiff.solvers.ExponentialMultistep` on the flow ``reverse``.

        Args:
            reverse: the probability flow of a Gaussian process (:func:`probdiff.probability_flow`) with a
                model differentiable in ``x`` and ``t`` (a network or an oracle).
            steps: number of steps (= model evaluations of the fitted sampler).
            x_init: pilot initial states, ``(batch, *event)``, ``batch >= 2``; not the states you will score.
            history: past model outputs each step may use (columns of the coefficients), >= 1.
            init: the grid to start from; default: the best of Uniform, LogSNR and Karras.
            reference: the exact endpoints of ``x_init``; default: dopri5 at ``rtol``.
            validation: share of the pilot states held out to check the fit, in ``[0, 1)``.
            max_iter: L-BFGS iterations.
            rtol: tolerance of the reference solution.
        """
        history, max_iter = check_positive_int("history", history), check_positive_int("max_iter", max_iter)
        process, steps, (fit_x, fit_ref), (val_x, val_ref), nfe = _pilot(cls, reverse, steps, x_init, init,
                                                                          reference, validation, rtol)
        counted = [nfe]

        def error(times, solver, x, ref):
            if x.shape[0] == 0:
                return torch.tensor(math.nan, dtype=torch.float64)
            out = sample(reverse, x_init=x, solver=solver, grid=_Times(times))
            counted[0] += out.nfe
            return (out.x - ref).flatten(1).pow(2).sum(1).mean().sqrt()

        def start_of(grid):
            times = grid.times(process)
            return times, ExponentialMultistep.dpm_solver_2m(process, times, history=history)

        candidates = [init] if init is not None else [Uniform(steps), LogSNR(steps), Karras(steps)]
        with torch.no_grad():
            scored = [(float(error(*start_of(g), fit_x, fit_ref)), i) for i, g in enumerate(candidates)]
        start = candidates[min(scored)[1]]
        start_times, start_solver = start_of(start)
        with torch.no_grad():
            start_errors = (min(scored)[0], float(error(start_times, start_solver, val_x, val_ref)))
        w = _weights_of(process, start_times).clone().requires_grad_(True)
        c = start_solver.coefficients.clone().requires_grad_(True)
        best = [math.inf, w.detach().clone(), c.detach().clone()]

        def closure():
            optimiser.zero_grad()
            loss = error(_times_of(process, w), ExponentialMultistep(c), fit_x, fit_ref).log()
            if not bool(torch.isfinite(loss)):
                return loss.detach().new_tensor(math.inf)
            loss.backward()
            if float(loss.detach()) < best[0]:
                best[:] = [float(loss.detach()), w.detach().clone(), c.detach().clone()]
            return loss

        optimiser = torch.optim.LBFGS([w, c], lr=1.0, max_iter=max_iter, history_size=50,
                                      line_search_fn="strong_wolfe", tolerance_grad=1e-12, tolerance_change=1e-14)
        if steps > 1:
            optimiser.step(closure)
        try:
            with torch.no_grad():
                times = Grid._finish(_times_of(process, best[1]), process)
                solver = ExponentialMultistep(best[2])
                fitted_errors = (float(error(times, solver, fit_x, fit_ref)),
                                 float(error(times, solver, val_x, val_ref)))
        except ValueError:                 # increments so small that two times coincide in float64
            fitted_errors = (math.nan, math.nan)
        if not (val_x.shape[0] == 0 or fitted_errors[1] < start_errors[1]) or not math.isfinite(fitted_errors[0]):
            times, solver, fitted_errors = start_times, start_solver, start_errors
        return cls(times, solver=solver, errors={"start": start_errors, "fitted": fitted_errors}, start=start,
                   nfe=counted[0])


class _Times(Grid):
    """Given times, gradient kept (the fit's grid; :class:`Explicit` stores a detached copy)."""

    def __init__(self, times):
        super().__init__(times.shape[0] - 1)
        self._ts = times

    def times(self, process):
        return self._ts


def _pilot(owner, reverse, steps, x_init, init, reference, validation, rtol):
    """Checked arguments of the fit of ``owner`` (a class) on pilot states: ``(process, steps, (fit_x, fit_ref), (val_x, val_ref),
    nfe)``, the reference integrated by dopri5 at ``rtol`` unless given (its evaluations are ``nfe``)."""
    if not isinstance(reverse, GaussianReverse) or reverse.noise != 0:
        raise ValueError(f"reverse must be the probability flow (noise 0) of a GaussianProcess "
                         f"(pd.probability_flow(model)); got {reverse!r}")
    steps = check_positive_int("steps", steps)
    if not isinstance(x_init, torch.Tensor) or x_init.dim() < 2 or x_init.shape[0] < 2:
        raise ValueError("x_init must be a tensor of shape (batch, *event) with batch >= 2")
    check_finite("x_init", x_init)
    if isinstance(validation, bool) or not isinstance(validation, (int, float)) or not 0 <= validation < 1:
        raise ValueError(f"validation must be a number in [0, 1), got {validation!r}")
    if init is not None and (not isinstance(init, Grid) or init.steps != steps):
        raise ValueError(f"init must be a Grid with steps={steps}, got {init!r}")
    log_snr_ends(owner, reverse.process)
    nfe = 0
    if reference is None:
        sol = sample(reverse, x_init=x_init, solver=TorchDiffEq(rtol=rtol, atol=rtol), grid=LogSNR(8))
        reference, nfe = sol.x, sol.nfe
    elif not isinstance(reference, torch.Tensor) or reference.shape != x_init.shape:
        raise ValueError(f"reference must be a tensor of the shape of x_init {tuple(x_init.shape)}")
    n_val = int(round(validation * x_init.shape[0]))
    if validation > 0 and not 1 <= n_val < x_init.shape[0]:
        raise ValueError(f"validation={validation} leaves no states on one side of {x_init.shape[0]} pilot states")
    n_fit = x_init.shape[0] - n_val
    return (reverse.process, steps, (x_init[:n_fit], reference[:n_fit]), (x_init[n_fit:], reference[n_fit:]),
            nfe)


def _weights_of(process, times) -> torch.Tensor:
    """The parameters ``w`` of :func:`_times_of` that give ``times``."""
    lam = process.log_snr(torch.as_tensor(times, dtype=torch.float64))
    increments = (lam[1:] - lam[:-1]) / (lam[-1] - lam[0])
    return (increments.log() - increments[-1].log())[:-1]


def _times_of(process, w) -> torch.Tensor:
    r"""Times with log-SNR increments :math:`\mathrm{softmax}(w, 0)` of the whole range (strictly decreasing,
    endpoints kept), differentiable in ``w``: the inverse of :math:`\lambda` is taken without gradient and
    its derivative :math:`1/\lambda'(t)` attached (one Newton step of zero length)."""
    lam_max_t, lam_min_t = log_snr_ends(None, process)
    w = torch.as_tensor(w, dtype=torch.float64)
    u = torch.softmax(torch.cat([w, w.new_zeros(1)]), 0)
    lam = lam_max_t + (lam_min_t - lam_max_t) * torch.cat([u.new_zeros(1), u.cumsum(0)])
    t0 = process.time_of_log_snr(lam.detach())
    if not lam.requires_grad:
        return t0
    with torch.enable_grad():
        probe = t0.clone().requires_grad_(True)
        (slope,) = torch.autograd.grad(process.log_snr(probe).sum(), probe)
    return t0 + (lam - lam.detach()) / slope
