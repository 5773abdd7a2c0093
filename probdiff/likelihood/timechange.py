r"""Monotone changes of the time variable, and the inverse of the log-SNR (THEORY.md §4).

An ODE :math:`dx/dt = h(x, t)` integrated from :math:`t_{min}` to :math:`t_{max}` may be integrated in any
variable :math:`u = \phi(t)` with :math:`\phi` strictly increasing and differentiable:

.. math::

    \frac{dx}{du} = h\big(x, t(u)\big)\,\frac{dt}{du}, \qquad \frac{dt}{du} = \frac{1}{\phi'(t(u))}.

The solution at :math:`u_{max} = \phi(t_{max})` is the same; only the work of an adaptive solver changes.
The log-SNR variable :math:`u = -\lambda_t` spreads the work evenly over noise *levels* (the flow and the
bound depend on the schedule only through :math:`\lambda`: Kingma et al., "Variational Diffusion Models",
NeurIPS 2021, §3.3; Lu et al., "DPM-Solver", NeurIPS 2022, §3.1 integrate in :math:`\lambda`). Which
variable is cheaper depends on the data: on the Gaussian-mixture and empirical oracles of
``benchmarks/likelihood.py`` the process' own time needed fewer evaluations (the flow of data with a
smooth density is smooth in :math:`t` near :math:`t_{min}`, where log-SNR time spends many steps on
nothing), so :class:`PhysicalTime` is the default of :func:`probdiff.log_likelihood`.

:math:`t(u)` inverts :math:`\lambda` with :func:`probdiff.grids.gaussian.time_of_log_snr` (closed forms where
registered, bisection otherwise), the same inverse the log-SNR grids and the ELBO's sampler of
:math:`t` use.
"""

from __future__ import annotations

import abc

import torch

from ..grids.gaussian import time_of_log_snr
from ..processes.gaussian import GaussianProcess

__all__ = ["TimeVariable", "PhysicalTime", "LogSNRTime"]


class TimeVariable(abc.ABC):
    r"""A strictly increasing reparameterisation :math:`u = \phi(t)` of the integration variable.

    Subclasses give the interval :meth:`bounds` (images of ``t_min`` and ``t_max``), the inverse map
    :meth:`time` and :meth:`dt_du` :math:`= 1/\phi'(t)` evaluated at a time ``t``. All in float64.
    """

    @abc.abstractmethod
    def bounds(self, process) -> tuple[float, float]:
        """``(phi(t_min), phi(t_max))`` with the first < the second."""

    @abc.abstractmethod
    def time(self, process, u: torch.Tensor) -> torch.Tensor:
        """:math:`t(u)`, clamped into ``[t_min, t_max]``."""

    @abc.abstractmethod
    def dt_du(self, process, t: torch.Tensor) -> torch.Tensor:
        """:math:`dt/du` at the time ``t`` (not at ``u``: callers already hold ``t``)."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class PhysicalTime(TimeVariable):
    """The process' own time :math:`u = t` (the protocol of Song et al. 2021's likelihood code)."""

    def bounds(self, process):
        return process.t_min, process.t_max

    def time(self, process, u):
        return torch.as_tensor(u, dtype=torch.float64).clamp(process.t_min, process.t_max)

    def dt_du(self, process, t):
        return torch.ones_like(torch.as_tensor(t, dtype=torch.float64))


class LogSNRTime(TimeVariable):
    r"""The negated log signal-to-noise ratio :math:`u = -\lambda_t` (increasing in t).

    :math:`dt/du = -1/\lambda_t'`. Needs a :class:`~probdiff.GaussianProcess` with finite
    :math:`\lambda` at both ends (``LinearBlend(t_max=1.0)`` has :math:`\lambda_{t_{max}} = -\infty`:
    use :class:`PhysicalTime` or ``t_max < 1`` there).
    """

    def _check(self, process):
        if not isinstance(process, GaussianProcess):
            raise ValueError(f"LogSNRTime needs a GaussianProcess, got {type(process).__name__}")

    def bounds(self, process):
        self._check(process)
        ends = torch.tensor([process.t_min, process.t_max], dtype=torch.float64)
        lam = process.log_snr(ends)
        if not bool(torch.isfinite(lam).all()):
            raise ValueError(f"LogSNRTime needs a finite log-SNR at t_min and t_max, got {lam.tolist()}; "
                             "use PhysicalTime() or a smaller t_max")
        return -float(lam[0]), -float(lam[1])

    def time(self, process, u):
        # Solvers may probe just beyond the interval (initial-step selection); clamp like PhysicalTime.
        lo, hi = self.bounds(process)
        return time_of_log_snr(process, -torch.as_tensor(u, dtype=torch.float64).clamp(lo, hi))

    def dt_du(self, process, t):
        return -1.0 / process.d_log_snr(torch.as_tensor(t, dtype=torch.float64))
