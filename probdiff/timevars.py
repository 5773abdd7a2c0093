r"""Time variables: one object for the ODE time change, importance sampling of t, and the ELBO (THEORY.md §4).

A time variable is a strictly increasing map :math:`u = \phi(t)` from an interval of time onto
:math:`[u_0, u_1]`. The same object serves three purposes:

* *Changing the variable of an ODE.* :math:`dx/dt = h(x, t)` integrated from :math:`t_{min}` to
  :math:`t_{max}` may be integrated in :math:`u`, :math:`dx/du = h(x, t(u))\,dt/du`; the solution is the
  same, only the work of an adaptive solver changes (:func:`probdiff.log_likelihood`).
* *Importance sampling of t.* :math:`u \sim U[u_0, u_1]`, :math:`t = t(u)` has density
  :math:`\pi(t) = \phi'(t)/(u_1 - u_0)`; :meth:`TimeVariable.sample` returns the times and
  :math:`1/\pi(t)`, so that :math:`E_\pi[f(t)/\pi(t)] = \int f\,dt` (the training losses).
* *The ELBO integral over log-SNR.* :meth:`TimeVariable.weight` is :math:`w(t) = -\lambda_t'/\pi(t)`, so that
  :math:`E_\pi[w\,\tfrac12 e^{\lambda_t}\|x_0 - D\|^2]` is the diffusion term of the continuous-time bound.

The log-SNR variable :math:`u = -\lambda_t` spreads the work evenly over noise *levels* (the flow and the
bound depend on the schedule only through :math:`\lambda`: Kingma et al., "Variational Diffusion Models",
NeurIPS 2021, §3.3; Lu et al., "DPM-Solver", NeurIPS 2022, §3.1). Which variable is cheaper for the ODE
depends on the data: on the Gaussian-mixture and empirical oracles of ``benchmarks/likelihood.py`` the
process' own time needed fewer evaluations (the flow of data with a smooth density is smooth in :math:`t`
near :math:`t_{min}`), so :class:`PhysicalTime` is the default of :func:`probdiff.log_likelihood`.
:class:`LogitTime` is Blackout's observation variable (Santos et al., "Blackout Diffusion", ICML 2023).
"""

from __future__ import annotations

import abc
import math

import torch

from ._util import deprecated_alias, logit_half_range
from .processes.gaussian import as_gaussian

__all__ = ["TimeVariable", "PhysicalTime", "LogSNRTime", "LogitTime", "TimeSampler", "UniformTime",
           "UniformLogSNR"]


class TimeVariable(abc.ABC):
    r"""A strictly increasing reparameterisation :math:`u = \phi(t)` of time; configuration only.

    Subclasses give the interval :meth:`bounds` (images of the ends of their time interval), the inverse
    map :meth:`time` and :meth:`dt_du` :math:`= 1/\phi'(t)` evaluated at a time ``t``. All in float64.
    """

    @abc.abstractmethod
    def bounds(self, process) -> tuple[float, float]:
        """``(u_0, u_1)``, the images of the first and the last time, with ``u_0 < u_1``."""

    @abc.abstractmethod
    def time(self, process, u: torch.Tensor) -> torch.Tensor:
        """:math:`t(u)`, clamped into the time interval."""

    @abc.abstractmethod
    def dt_du(self, process, t: torch.Tensor) -> torch.Tensor:
        """:math:`dt/du` at the time ``t`` (not at ``u``: callers already hold ``t``)."""

    @staticmethod
    def uniform(shape, generator=None, device=None, *, stratified: bool = False) -> torch.Tensor:
        """Uniforms on ``[0, 1)`` of ``shape`` (float64); ``stratified`` puts the ``k``-th of the ``K =
        shape[0]`` draws of every point in ``[k/K, (k+1)/K)`` (unbiased, lower variance: VDM, App. I.1)."""
        u = torch.rand(shape, generator=generator, dtype=torch.float64, device=device)
        if not stratified:
            return u
        k = shape[0]
        return (torch.arange(k, dtype=torch.float64, device=device).reshape(k, *([1] * (len(shape) - 1))) + u) / k

    def sample(self, process, shape, *, generator=None, device=None, stratified: bool = False):
        r"""``(t, 1/\pi(t))``: times with :math:`u = \phi(t)` uniform on ``bounds`` and their inverse density,
        float64 tensors of ``shape``."""
        u0, u1 = self.bounds(process)
        t = self.time(process, u0 + (u1 - u0) * self.uniform(shape, generator, device, stratified=stratified))
        return t, self.inverse_density(process, t)

    def inverse_density(self, process, t: torch.Tensor) -> torch.Tensor:
        r""":math:`1/\pi(t) = (u_1 - u_0)\,dt/du`."""
        u0, u1 = self.bounds(process)
        return (u1 - u0) * self.dt_du(process, t)

    def weight(self, process, t: torch.Tensor) -> torch.Tensor:
        r""":math:`w(t) = -\lambda_t'/\pi(t)`: the weight of a draw of :math:`t` in an integral over log-SNR."""
        u0, u1 = self.bounds(process)
        return -process.d_log_snr(t) * (u1 - u0) * self.dt_du(process, t)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class PhysicalTime(TimeVariable):
    """The process' own time :math:`u = t` on ``[t_min, t_max]`` (the protocol of Song et al. 2021's
    likelihood code; VDM's uniform sampling of t)."""

    def bounds(self, process):
        return process.t_min, process.t_max

    def time(self, process, u):
        return torch.as_tensor(u, dtype=torch.float64).clamp(process.t_min, process.t_max)

    def dt_du(self, process, t):
        return torch.ones_like(torch.as_tensor(t, dtype=torch.float64))

    def weight(self, process, t):
        return -process.d_log_snr(t) * (process.t_max - process.t_min)


class LogSNRTime(TimeVariable):
    r"""The negated log signal-to-noise ratio :math:`u = -\lambda_t` (increasing in t).

    :math:`dt/du = -1/\lambda_t'`; the ELBO weight is the constant :math:`\lambda_{t_{min}} - \lambda_{t_{max}}`.
    Needs a :class:`~probdiff.GaussianProcess` with finite :math:`\lambda` at both ends
    (``LinearBlend(t_max=1.0)`` has :math:`\lambda_{t_{max}} = -\infty`: use :class:`PhysicalTime` or
    ``t_max < 1`` there).
    """

    def bounds(self, process):
        as_gaussian(process, needed_for="LogSNRTime")
        ends = torch.tensor([process.t_min, process.t_max], dtype=torch.float64)
        lam = process.log_snr(ends)
        if not bool(torch.isfinite(lam).all()):
            raise ValueError(f"LogSNRTime needs a finite log-SNR at t_min and t_max, got {lam.tolist()}; "
                             "use PhysicalTime() or a smaller t_max")
        return -float(lam[0]), -float(lam[1])

    def time(self, process, u):
        # Solvers may probe just beyond the interval (initial-step selection); clamp like PhysicalTime.
        lo, hi = self.bounds(process)
        return process.time_of_log_snr(-torch.as_tensor(u, dtype=torch.float64).clamp(lo, hi))

    def dt_du(self, process, t):
        return -1.0 / process.d_log_snr(torch.as_tensor(t, dtype=torch.float64))

    def weight(self, process, t):
        lo, hi = self.bounds(process)
        return torch.full_like(torch.as_tensor(t, dtype=torch.float64), hi - lo)


class LogitTime(TimeVariable):
    r"""Blackout's variable :math:`u = \log(e^t - 1) = -\mathrm{logit}(e^{-t})` on
    :math:`[t_{lo}, t_{max}]`, :math:`t_{lo} = -\log(1 - e^{-t_{max}})`, so :math:`u \in [-L/2, L/2]` with
    :math:`L/2 = \mathrm{logit}(1 - e^{-t_{max}})`.

    :math:`t = \mathrm{softplus}(u)`, :math:`dt/du = 1 - e^{-t}`, density :math:`\pi(t) = 1/(L\,(1 - p_t))`, so
    :math:`\int_{t_{lo}}^{t_{max}} f\,dt = E_\pi[f(t)\,L\,(1 - p_t)]`: more draws at small t, where the
    ELBO's reconstruction terms live.
    """

    @staticmethod
    def half_range(process) -> float:
        """:math:`L/2 = \\mathrm{logit}(1 - e^{-t_{max}})`."""
        return logit_half_range(process.t_max)

    @staticmethod
    def lowest(process) -> float:
        """:math:`t_{lo} = -\\log(1 - e^{-t_{max}})`, the smallest time drawn."""
        return -math.log1p(-math.exp(-float(process.t_max)))

    def bounds(self, process):
        h = self.half_range(process)
        return -h, h

    def time(self, process, u):
        return torch.nn.functional.softplus(torch.as_tensor(u, dtype=torch.float64))

    def dt_du(self, process, t):
        return -torch.expm1(-torch.as_tensor(t, dtype=torch.float64))

    def sample(self, process, shape, *, generator=None, device=None, stratified: bool = False):
        h = self.half_range(process)
        u = (2 * self.uniform(shape, generator, device, stratified=stratified) - 1) * h
        t = torch.nn.functional.softplus(-u)           # u and -u have the same law
        return t, self.inverse_density(process, t)


#: Deprecated names of the ELBO's samplers of t, now the time variables themselves.
TimeSampler = deprecated_alias("probdiff.likelihood.TimeSampler", TimeVariable)
UniformTime = deprecated_alias("probdiff.likelihood.UniformTime", PhysicalTime)
UniformLogSNR = deprecated_alias("probdiff.likelihood.UniformLogSNR", LogSNRTime)
