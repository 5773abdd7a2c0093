r"""A grid on which every step of a given solver carries the same error: :class:`LocalErrorOptimal`.

The score-optimal schedule (:class:`~probdiff.grids.ScoreOptimal`) spends its steps where the score changes;
a solver errs where its own truncation error is large, and the two differ (docs/schedules.rst). Here the
error density is measured for the solver itself, by step halving on pilot trajectories, and the steps are
placed so that each carries an equal share of it: the equidistribution principle of adaptive mesh
selection (de Boor, "Good approximation by splines with variable knots II", 1974; Hairer, Nørsett & Wanner,
*Solving Ordinary Differential Equations I*, §II.4, step halving), iterated towards its fixed point.
"""

from __future__ import annotations

import math

import torch

from ._util import check_positive_int
from .placement import Explicit, Grid, LogSNR
from .sampling import sample
from .solvers.base import Solver
from .tuning import _check_deterministic, _check_floor, _equal_increments, _rms
from .tuning_multistep import _pilot

__all__ = ["LocalErrorOptimal"]


class LocalErrorOptimal(Explicit):
    r"""Times at which each step of one deterministic solver contributes the same endpoint error, by
    step halving on pilot trajectories of the probability flow.

    For the current grid :math:`t_0 > \dots > t_N` (log-SNR :math:`\lambda_i`) and pilot initial states,
    the contribution of step :math:`i` is measured by halving it: :math:`D_i` is the RMS distance between
    the solver's endpoints on the grid and on the grid with :math:`t_i, t_{i+1}` split at the log-SNR
    midpoint. For a solver of order :math:`p` (``solver.order``) with local error :math:`C\,h^{p+1}`, the
    halved step errs by :math:`2^{-p}` of it, so :math:`D_i = (1 - 2^{-p})` times step :math:`i`'s error
    carried to the endpoint by the solver itself — its own truncation error, in its own variable, after
    its own propagation (multistep history included), from a black box: only :func:`probdiff.sample` runs.
    The summed error :math:`\int C\,h^p\,d\lambda` is smallest when every step carries the same error
    (density :math:`\propto C^{1/(p+1)}`, equidistribution); with :math:`C` constant on each step, the new
    grid puts equal increments of

    .. math::

        \Lambda(\lambda) = \sum_{j<i} D_j^{1/(p+1)} + D_i^{1/(p+1)}\,
        \frac{\lambda - \lambda_i}{\lambda_{i+1} - \lambda_i}, \qquad \lambda \in [\lambda_i, \lambda_{i+1}],

    between consecutive times (each :math:`D_j^{1/(p+1)}` floored at ``floor`` times their mean), and
    :math:`\lambda \leftarrow \gamma\lambda^* + (1 - \gamma)\lambda` blends it into the current grid. A grid
    with equal :math:`D_i` is a fixed point, whatever :math:`p`. This is de Boor's iteration for
    equidistributing a measured error (C. de Boor, "Good approximation by splines with variable knots II",
    1974), with the error estimated by step halving (Hairer, Nørsett & Wanner, *Solving Ordinary
    Differential Equations I*, 1993, §II.4).

    A multistep solver's steps interact (halving one changes the history of the next), and where errors of
    different steps cancel, equal shares need not be the smallest sum; the iteration can then oscillate
    between a few grids. So :meth:`fit` keeps the iterate — the start included — with the smallest RMS
    endpoint error on the pilot states against the probability flow solved to tight tolerance: a choice
    among at most ``iterations + 1`` grids made on pilot noise, never on the states you will sample.

    Construct with :meth:`fit`, or from given times ``LocalErrorOptimal(times)``.

    Attributes:
        history: ``(times, contributions, error)`` for every iterate: its times, its :math:`D_i` and its RMS
            endpoint error on the pilot states (``None`` for a grid built from times).
        chosen: index in ``history`` of the iterate returned.
        nfe: model evaluations spent by the fit (each over the whole pilot batch), the reference included.
    """

    def __init__(self, times, *, history: list | None = None, chosen: int = 0, nfe: int = 0):
        super().__init__(times)
        self.history, self.chosen, self.nfe = history, int(chosen), int(nfe)

    @staticmethod
    def contributions(reverse, solver: Solver, times, x_init: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
        r"""``(D, x, nfe)``: the step-halving contributions :math:`D_i` of every step of ``times`` (float64,
        shape ``(steps,)``), the solver's endpoints on ``times`` from ``x_init``, and the model evaluations
        spent."""
        process = reverse.process
        ts = torch.as_tensor(times, dtype=torch.float64)
        lam = process.log_snr(ts)
        nfe = 0

        def run(grid_times):
            nonlocal nfe
            sol = sample(reverse, x_init=x_init, solver=solver, grid=Explicit(grid_times))
            nfe += sol.nfe
            return sol.x

        with torch.no_grad():
            x = run(ts)
            d = []
            for i in range(ts.shape[0] - 1):
                mid = process.time_of_log_snr(0.5 * (lam[i] + lam[i + 1]).reshape(1))
                d.append(_rms(x, run(torch.cat([ts[:i + 1], mid, ts[i + 1:]]))))
        return torch.tensor(d, dtype=torch.float64), x, nfe

    @staticmethod
    def equidistribute(log_snr: torch.Tensor, contributions: torch.Tensor, order: int, *,
                       floor: float = 1e-3) -> torch.Tensor:
        r"""The log-SNR values, endpoints kept, at equal increments of :math:`\Lambda` (class docstring) for
        ``contributions`` :math:`D_i` measured on the steps of the grid ``log_snr`` (monotone)."""
        lam = torch.as_tensor(log_snr, dtype=torch.float64)
        d = torch.as_tensor(contributions, dtype=torch.float64)
        if d.shape != (lam.shape[0] - 1,) or not bool(torch.isfinite(d).all()) or bool((d < 0).any()):
            raise ValueError(f"contributions must be {lam.shape[0] - 1} finite numbers >= 0, got {d.tolist()}")
        check_positive_int("order", order)
        _check_floor(floor)
        return _equal_increments(lam, d.pow(1.0 / (int(order) + 1)), lam.shape[0], floor)

    @classmethod
    def fit(cls, reverse, solver: Solver, steps: int, x_init: torch.Tensor, *, init: Grid | None = None,
            iterations: int = 8, gamma: float = 0.5, floor: float = 1e-3, reference: torch.Tensor | None = None,
            rtol: float = 1e-8) -> "LocalErrorOptimal":
        r"""Fit a ``steps``-step grid for ``solver`` on the probability flow ``reverse``.

        Args:
            reverse: the probability flow (``noise == 0``) of a Gaussian process with finite log-SNR at both
                ends (:func:`probdiff.probability_flow`).
            solver: a deterministic solver (one whose output depends on the random generator is refused);
                its ``order`` sets the exponent :math:`1/(p+1)`.
            steps: number of steps.
            x_init: pilot initial states at ``t_max``, ``(batch, *event)``, ``batch >= 2``; use other states
                than the ones you will sample.
            init: the grid to start from (default :class:`~probdiff.grids.LogSNR`).
            iterations: equidistribution rounds (>= 1); each runs the solver ``steps + 1`` times.
            gamma: share of the equidistributed grid blended into the current one, in (0, 1].
            floor: relative floor of the per-step increments (see :meth:`equidistribute`).
            reference: the exact endpoints of ``x_init`` at ``t_min``, if known; by default the probability
                flow is integrated by ``TorchDiffEq(rtol=rtol, atol=rtol)``.
            rtol: tolerance of the reference solution.
        """
        if not isinstance(solver, Solver):
            raise ValueError(f"solver must be a probdiff Solver, got {type(solver).__name__}")
        check_positive_int("iterations", iterations)
        _check_floor(floor)
        if isinstance(gamma, bool) or not isinstance(gamma, (int, float)) or not 0 < gamma <= 1:
            raise ValueError(f"gamma must be a number in (0, 1], got {gamma!r}")
        process, steps, (x, ref), _, nfe = _pilot(cls, reverse, steps, x_init, init, reference, 0.0, rtol)
        ts = (LogSNR(steps) if init is None else init).times(process)

        def run(grid, x_start, generator=None):
            nonlocal nfe
            sol = sample(reverse, x_init=x_start, solver=solver, grid=grid, generator=generator)
            nfe += sol.nfe
            return sol.x

        _check_deterministic(run, Explicit(ts), x[:2], solver)
        history = []
        for k in range(int(iterations) + 1):
            d, end, spent = cls.contributions(reverse, solver, ts, x)
            nfe += spent
            history.append((ts, d, _rms(end, ref)))
            if k == int(iterations) or steps == 1:
                break
            lam = process.log_snr(ts)
            new = cls.equidistribute(lam, d, solver.order, floor=floor)
            ts = Grid._finish(process.time_of_log_snr(gamma * new + (1.0 - gamma) * lam), process)
        errors = [e if math.isfinite(e) else math.inf for _, _, e in history]
        chosen = min(range(len(history)), key=lambda i: (errors[i], i))
        return cls(history[chosen][0], history=history, chosen=chosen, nfe=nfe)
