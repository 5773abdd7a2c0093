r"""Time grids placed by a rule: where a sampler evaluates the model (DESIGN.md, "Public API").

Every grid answers :meth:`Grid.times`: a strictly decreasing float64 tensor of ``steps + 1`` times from
``process.t_max`` to ``process.t_min``, endpoints included exactly. The Gaussian grids are built in the
process' log-SNR :math:`\lambda_t` (or its noise-to-signal ratio :math:`\tilde\sigma_t = \sigma_t/\alpha_t =
e^{-\lambda_t/2}`, the VE form of Karras et al.) and mapped back to time by the process' own inverse,
:meth:`~probdiff.GaussianProcess.time_of_log_snr`. Grids fitted to a model or a solver live in
:mod:`probdiff.tuning`; :mod:`probdiff.grids` re-exports both.

:class:`LogitObservation` is the Blackout observation grid (Santos et al., "Blackout Diffusion", ICML 2023,
§4 and App. B): the original code observes the process at times where the survival probability
:math:`p_t = e^{-t}` is uniform in logit between :math:`e^{-t_{max}}` and :math:`1 - e^{-t_{max}}` (1000
points); here those ``steps`` points run from ``t_max`` down, and ``t_min`` is appended as the last time so
the grid ends at the data: ``steps + 1`` times in all.
"""

from __future__ import annotations

import abc
import math

import torch

from ._util import check_finite, check_positive_int, logit_half_range
from .processes.gaussian import GaussianProcess, as_gaussian
from .processes.interpolating import InterpolatingChain

__all__ = ["Grid", "Uniform", "Explicit", "LogSNR", "Karras", "LogitObservation", "log_snr_ends", "ScheduleUniform"]


class Grid(abc.ABC):
    """Abstract time grid with a number of ``steps``."""

    def __init__(self, steps: int):
        self.steps = check_positive_int("steps", steps)

    @abc.abstractmethod
    def times(self, process) -> torch.Tensor:
        """Strictly decreasing times ``t_max = t_0 > t_1 > ... > t_steps = t_min`` (float64)."""

    @staticmethod
    def _finish(ts: torch.Tensor, process) -> torch.Tensor:
        """Pin the endpoints exactly and check strict monotonicity."""
        ts = ts.to(torch.float64).clone()
        ts[0], ts[-1] = process.t_max, process.t_min
        if not bool((ts[1:] < ts[:-1]).all()):
            raise ValueError("grid times must be strictly decreasing; use fewer steps or another grid")
        return ts

    def __repr__(self) -> str:
        return f"{type(self).__name__}(steps={self.steps})"


class Uniform(Grid):
    """Equally spaced times from ``t_max`` to ``t_min``."""

    def times(self, process) -> torch.Tensor:
        return self._finish(torch.linspace(process.t_max, process.t_min, self.steps + 1, dtype=torch.float64), process)


class Explicit(Grid):
    """A grid of given times: strictly decreasing, from the ``t_max`` to the ``t_min`` of the process it is
    used with (e.g. a published schedule, or one fitted by :class:`~probdiff.grids.ScoreOptimal` or
    :class:`~probdiff.grids.EndpointOptimal`, which subclass it).

    Args:
        times: 1-D sequence of at least two finite, strictly decreasing times.

    Example:
        >>> import probdiff as pd
        >>> pd.grids.Explicit([1.0, 0.5, 0.1, 1e-3]).times(pd.VPSDE(t_min=1e-3)).tolist()
        [1.0, 0.5, 0.1, 0.001]
    """

    def __init__(self, times):
        ts = torch.as_tensor(times, dtype=torch.float64).detach().cpu()
        if ts.dim() != 1 or ts.shape[0] < 2:
            raise ValueError(f"times must be a 1-D tensor of at least two times, got shape {tuple(ts.shape)}")
        check_finite("times", ts)
        if not bool((ts[1:] < ts[:-1]).all()):
            raise ValueError("times must be strictly decreasing (from t_max to t_min)")
        super().__init__(ts.shape[0] - 1)
        self._ts = ts

    def times(self, process) -> torch.Tensor:
        ts = self._ts.clone()
        tol = 1e-9 * max(1.0, abs(process.t_max), abs(process.t_min))
        if abs(float(ts[0]) - process.t_max) > tol or abs(float(ts[-1]) - process.t_min) > tol:
            raise ValueError(f"this {type(self).__name__} grid spans [{float(ts[-1])}, {float(ts[0])}] but the "
                             f"process has [t_min, t_max] = [{process.t_min}, {process.t_max}]; build it for "
                             "this process")
        return self._finish(ts, process)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({[round(t, 6) for t in self._ts.tolist()]})"


# ==================================================================== Gaussian: by noise level
def log_snr_ends(grid, process: GaussianProcess) -> tuple[float, float]:
    """``(lambda(t_max), lambda(t_min))`` as floats; ``ValueError`` naming ``grid`` (an instance or a class) if
    either is infinite."""
    ends = process.log_snr(torch.tensor([process.t_max, process.t_min], dtype=torch.float64))
    if not bool(torch.isfinite(ends).all()):
        raise ValueError(f"{(grid if isinstance(grid, type) else type(grid)).__name__} needs a finite log-SNR at t_min and t_max, got "
                         f"{ends.tolist()} for {process!r}; choose t_max < 1 (LinearBlend) or use Uniform")
    return float(ends[0]), float(ends[1])


class LogSNR(Grid):
    r"""Times equally spaced in log-SNR :math:`\lambda_t` (the variable of DPM-Solver, Lu et al. 2022, §3.3;
    Kingma et al., "Variational Diffusion Models", 2021)."""

    def times(self, process) -> torch.Tensor:
        process = as_gaussian(process, needed_for=f"{type(self).__name__} places times by noise level")
        lam_max_t, lam_min_t = log_snr_ends(self, process)
        lam = torch.linspace(lam_max_t, lam_min_t, self.steps + 1, dtype=torch.float64)
        return self._finish(process.time_of_log_snr(lam), process)


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
        process = as_gaussian(process, needed_for=f"{type(self).__name__} places times by noise level")
        lam_max_t, lam_min_t = log_snr_ends(self, process)
        # sigma~^(1/rho) = exp(-lambda / (2 rho)); interpolate there, then lambda = -2 rho log(.)
        lo, hi = math.exp(-lam_min_t / (2 * self.rho)), math.exp(-lam_max_t / (2 * self.rho))
        u = torch.linspace(0.0, 1.0, self.steps + 1, dtype=torch.float64)
        lam = -2.0 * self.rho * torch.log(hi + u * (lo - hi))
        return self._finish(process.time_of_log_snr(lam), process)

    def __repr__(self) -> str:
        return f"Karras(steps={self.steps}, rho={self.rho:g})"


# ==================================================================== Blackout observation grid
class LogitObservation(Grid):
    r"""Times with :math:`\mathrm{logit}(e^{-t})` equally spaced from :math:`\mathrm{logit}(e^{-t_{max}})`
    to :math:`\mathrm{logit}(1 - e^{-t_{max}})`, then ``t_min``.

    With :math:`u = \mathrm{logit}(p)` the time is :math:`t = \log(1 + e^{-u})` (a softplus), exact at
    both ends. Needs ``steps >= 2`` and ``t_min < -log(1 - e^{-t_max})`` (≈ :math:`e^{-t_{max}}`).
    """

    def __init__(self, steps: int = 1000):
        super().__init__(steps)
        if self.steps < 2:
            raise ValueError(f"steps must be >= 2 for the logit observation grid, got {steps}")

    def times(self, process) -> torch.Tensor:
        t_max = float(process.t_max)
        hi = logit_half_range(t_max)                  # logit(1 - e^{-T}) = -logit(e^{-T})
        u = torch.linspace(-hi, hi, self.steps, dtype=torch.float64)
        ts = torch.nn.functional.softplus(-u)         # t = log(1 + e^{-u}) = -log sigmoid(u)
        t_low = float(ts[-1])
        if not process.t_min < t_low:
            raise ValueError(f"process.t_min must be < {t_low:.3g} (the last observation time) for this grid, "
                             f"got {process.t_min}")
        return self._finish(torch.cat([ts, torch.tensor([float(process.t_min)], dtype=torch.float64)]), process)


# ==================================================================== chains: uniform in the schedule
class ScheduleUniform(Grid):
    r"""Times at which the probability :math:`\alpha_t = a(t_{min}, t)` that a token is untouched is equally
    spaced, from :math:`\alpha_{t_{max}}` to 1, for an :class:`~probdiff.InterpolatingChain` (uniform noise,
    masking): each step then corrupts the same expected number of tokens. This is the default of masked
    diffusion samplers (Shi et al. 2024, MD4, §3; the discrete solver of flow_matching, uniform in
    :math:`\kappa_t = 1 - \alpha_t`) and the chains' default grid in :mod:`probdiff.recipes`.
    """

    def times(self, process) -> torch.Tensor:
        if not isinstance(process, InterpolatingChain):
            raise ValueError(f"{type(self).__name__} places times by the schedule of an InterpolatingChain (uniform "
                             f"noise, masking), got {type(process).__name__}; use Uniform")
        a_end = math.exp(float(process.log_keep(process.t_min, process.t_max)))
        alphas = torch.linspace(a_end, 1.0, self.steps + 1, dtype=torch.float64)
        return self._finish(process.time_of_keep(torch.log(alphas)), process)
