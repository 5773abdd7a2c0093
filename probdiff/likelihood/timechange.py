r"""Monotone changes of the time variable, and the inverse of the log-SNR (THEORY.md §4).

An ODE :math:`dx/dt = h(x, t)` integrated from :math:`t_{min}` to :math:`t_{max}` may be integrated in any
variable :math:`u = \phi(t)` with :math:`\phi` strictly increasing and differentiable:

.. math::

    \frac{dx}{du} = h\big(x, t(u)\big)\,\frac{dt}{du}, \qquad \frac{dt}{du} = \frac{1}{\phi'(t(u))}.

The solution at :math:`u_{max} = \phi(t_{max})` is the same; only the work of an adaptive solver changes.
In the log-SNR variable :math:`u = -\lambda_t` the probability-flow ODE of a Gaussian process is far less
stiff near the data end, where :math:`\sigma_t \to 0` (Kingma et al., "Variational Diffusion Models",
NeurIPS 2021, §3.3: the bound and the flow are invariant to the schedule except at its ends;
Lu et al., "DPM-Solver", NeurIPS 2022, §3.1, integrate in :math:`\lambda` for the same reason).

:func:`inverse_log_snr` solves :math:`\lambda_t = \ell` for :math:`t` by safeguarded Newton iterations in
float64; it serves both the time change here and the importance sampling of :math:`t` in the ELBO.
"""

from __future__ import annotations

import abc

import torch

from ..processes.gaussian import GaussianProcess

__all__ = ["TimeVariable", "PhysicalTime", "LogSNRTime", "inverse_log_snr"]


def _f64(process: GaussianProcess, t: torch.Tensor) -> torch.Tensor:
    return process.log_snr(t.to(torch.float64))


def inverse_log_snr(process: GaussianProcess, lam: torch.Tensor, *, max_iters: int = 100) -> torch.Tensor:
    r"""The time :math:`t \in [t_{min}, t_{max}]` with :math:`\lambda_t = \ell`, elementwise (float64).

    :math:`\lambda_t` is strictly decreasing, so the root is unique. Newton steps
    :math:`t \leftarrow t - (\lambda_t - \ell)/\lambda_t'` are kept inside a bracket that shrinks with every
    evaluation; a step leaving it is replaced by bisection, so convergence is guaranteed, and quadratic near
    the root. Values of ``lam`` outside :math:`[\lambda_{t_{max}}, \lambda_{t_{min}}]` by more than rounding
    raise ``ValueError``.

    Args:
        process: a :class:`~probdiff.GaussianProcess` with finite log-SNR at both ends.
        lam: log-SNR values, any shape.

    Returns:
        Tensor of times, float64, shape of ``lam``.
    """
    lam = torch.as_tensor(lam).to(torch.float64)
    device = lam.device
    lo = torch.full_like(lam, process.t_min)
    hi = torch.full_like(lam, process.t_max)
    lam_lo = _f64(process, torch.tensor(process.t_min, dtype=torch.float64, device=device))
    lam_hi = _f64(process, torch.tensor(process.t_max, dtype=torch.float64, device=device))
    if not (bool(torch.isfinite(lam_lo)) and bool(torch.isfinite(lam_hi))):
        raise ValueError(f"process must have a finite log-SNR at t_min and t_max to invert it, got "
                         f"lambda(t_min)={float(lam_lo)}, lambda(t_max)={float(lam_hi)}")
    slack = 1e-9 * (1.0 + float(lam_lo.abs().max(lam_hi.abs())))
    if bool(((lam > lam_lo + slack) | (lam < lam_hi - slack) | ~torch.isfinite(lam)).any()):
        raise ValueError(f"lam must lie in [lambda(t_max), lambda(t_min)] = [{float(lam_hi)}, {float(lam_lo)}]")
    lam = lam.clamp(float(lam_hi), float(lam_lo))
    # Linear interpolation in lambda is a good start: lambda is nearly linear in t away from the ends.
    t = lo + (hi - lo) * (lam_lo - lam) / (lam_lo - lam_hi)
    tol = 4 * torch.finfo(torch.float64).eps * max(1.0, abs(process.t_max))
    for _ in range(max_iters):
        resid = _f64(process, t) - lam
        # lambda decreases: a positive residual means t is left of the root
        lo = torch.where(resid > 0, t, lo)
        hi = torch.where(resid <= 0, t, hi)
        slope = process.d_log_snr(t)
        t_new = t - resid / slope
        outside = ~((t_new > lo) & (t_new < hi))
        t_new = torch.where(outside, 0.5 * (lo + hi), t_new)
        done = bool(((t_new - t).abs() <= tol).all()) or bool(((hi - lo) <= tol).all())
        t = t_new
        if done:
            break
    return t.clamp(process.t_min, process.t_max)


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
        return inverse_log_snr(process, -torch.as_tensor(u, dtype=torch.float64).clamp(lo, hi))

    def dt_du(self, process, t):
        return -1.0 / process.d_log_snr(torch.as_tensor(t, dtype=torch.float64))
