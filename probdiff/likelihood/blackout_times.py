r"""A time proposal for the continuous-time Blackout ELBO fitted to a model (importance sampling of t).

The diffusion term of the bound is :math:`\int_{t_{lo}}^{t_{max}} I(t)\,dt` with
:math:`I(t) = \frac{p_t}{1-p_t}E_{n_t}\sum_{px}(\hat y - m\log\hat y + m\log m - m)`
(:func:`probdiff.likelihood.blackout_elbo`). Drawn with density :math:`\pi`, one draw has second moment
:math:`\int E[I_1(t)^2]/\pi(t)\,dt`, smallest for :math:`\pi \propto \sqrt{E[I_1(t)^2]}` (:math:`I_1` the
single-draw integrand; e.g. Owen, "Monte Carlo theory, methods and examples", 2013, §9.1). Where that profile
lies depends on the model: for an exact data oracle in the middle of the time range, where the data points
become confusable; for a trained network at small :math:`t` too, where it cannot tell which photons are
missing. :class:`FittedBlackoutTime` estimates it from pilot draws, as a piecewise-constant density over equal
bins of the logit variable :math:`v = \log(e^t - 1)` (bin probabilities :math:`\propto` the square root of the
bin's estimated :math:`\int E[I_1^2]\,dt\,dv/dt`), mixed with the process' default proposal (share
``defensive``), so that the weight of every draw stays within :math:`1/\text{defensive}` of the default's. The
fitted proposal is fixed before the draws of the bound, so the bound stays unbiased; its pilot draws cost
network evaluations (``pilot`` per data point of the fitting batch), which a benchmark must count.
"""

from __future__ import annotations

import math

import torch

from .._util import check_positive_int
from ..processes.blackout import Blackout
from ..reverse.base import build_reverse
from ..timevars import TimeVariable

__all__ = ["FittedBlackoutTime"]


class FittedBlackoutTime(TimeVariable):
    """A fitted proposal over :math:`[t_{lo}, t_{max}]` of a :class:`~probdiff.Blackout` process, as a
    :class:`~probdiff.TimeVariable` with ``bounds = (0, 1)`` (pass it as ``time=`` to :func:`probdiff.elbo`).

    Args:
        process: the Blackout process.
        bin_probs: probabilities of ``K`` equal bins of :math:`v = \\log(e^t - 1)` on :math:`[-L/2, L/2]`.
        defensive: share of :meth:`Blackout.sample_elbo_times <probdiff.Blackout.sample_elbo_times>` in the
            mixture, in (0, 1].
    """

    def __init__(self, process: Blackout, bin_probs, defensive: float = 0.3):
        if not isinstance(process, Blackout):
            raise ValueError(f"process must be a probdiff.Blackout, got {type(process).__name__}")
        probs = torch.as_tensor(bin_probs, dtype=torch.float64).detach().cpu()
        if probs.dim() != 1 or probs.numel() < 1 or bool((probs < 0).any()) or not float(probs.sum()) > 0:
            raise ValueError("bin_probs must be a non-empty vector of non-negative weights with a positive sum")
        if not 0.0 < float(defensive) <= 1.0:
            raise ValueError(f"defensive must be in (0, 1], got {defensive!r}")
        self.process = process
        self.bin_probs = probs / probs.sum()
        self.defensive = float(defensive)
        self._cdf = torch.cat([torch.zeros(1, dtype=torch.float64), torch.cumsum(self.bin_probs, 0)])
        self._half = float(process.t_max) + math.log1p(-math.exp(-float(process.t_max)))

    @classmethod
    def fit(cls, process: Blackout, model, x: torch.Tensor, *, pilot: int = 32, bins: int = 24,
            defensive: float = 0.3, generator: torch.Generator | None = None) -> "FittedBlackoutTime":
        """Fit to ``model`` from ``pilot`` draws per data point of ``x`` (``pilot * len(x)`` evaluations),
        drawn from the process' default proposal (stratified)."""
        from .chain import _blackout_terms               # the integrand, shared with the bound
        process.check_states("x", x)
        k = check_positive_int("pilot", pilot)
        nb = check_positive_int("bins", bins)
        rev = build_reverse(process, model, 1.0)
        x0 = x.repeat_interleave(k, dim=0)
        u = torch.rand(x0.shape[0], generator=generator, dtype=torch.float64, device=x.device)
        u = (torch.arange(k, dtype=torch.float64, device=x.device).repeat(x.shape[0]) + u) / k
        t, inverse_density = process.sample_elbo_times(u)
        dtype = torch.get_default_dtype() if not x.is_floating_point() else x.dtype
        with torch.no_grad():
            integrand, _ = _blackout_terms(process, rev, x0, t, dtype, generator)
        proposal = cls(process, torch.ones(nb), defensive)
        j = proposal._bin(t.cpu())
        # estimate of the integral over the bin of E[I_1^2] dt/dv (the bins are equal in v): draws / density
        second = (integrand.cpu() ** 2 * -torch.expm1(-t.cpu()) * inverse_density.cpu()) / x0.shape[0]
        mass = torch.zeros(nb, dtype=torch.float64).index_add_(0, j, second)
        return cls(process, torch.sqrt(mass) + 1e-12 * float(torch.sqrt(mass).max().clamp_min(1e-300)), defensive)

    def _bin(self, t: torch.Tensor) -> torch.Tensor:
        v = torch.log(torch.expm1(t.clamp_min(1e-300)))
        k = self.bin_probs.numel()
        return ((v + self._half) / (2 * self._half) * k).floor().long().clamp(0, k - 1)

    def bounds(self, process):
        return 0.0, 1.0

    def time(self, process, u):
        u = torch.as_tensor(u, dtype=torch.float64)
        d = self.defensive
        default = process.sample_elbo_times((u / d).clamp(0.0, 1.0))[0]
        w = ((u - d) / (1 - d)).clamp(0.0, 1.0) if d < 1 else torch.zeros_like(u)
        cdf = self._cdf.to(u.device)
        j = (torch.searchsorted(cdf, w, right=True) - 1).clamp(0, self.bin_probs.numel() - 1)
        frac = (w - cdf[j]) / self.bin_probs.to(u.device)[j].clamp_min(1e-300)
        k = self.bin_probs.numel()
        v = -self._half + (j + frac.clamp(0.0, 1.0)) * (2 * self._half / k)
        t_lo, t_max = process.elbo_time_range()
        fitted = torch.nn.functional.softplus(v).clamp(t_lo, t_max)
        return torch.where(u < d, default, fitted)

    def density(self, t: torch.Tensor) -> torch.Tensor:
        """The proposal's density at ``t`` (float64)."""
        t = torch.as_tensor(t, dtype=torch.float64)
        k = self.bin_probs.numel()
        per_v = self.bin_probs.to(t.device)[self._bin(t)] * k / (2 * self._half)      # density over v
        fitted = per_v / -torch.expm1(-t)                                            # dv/dt = 1/(1 - e^{-t})
        return self.defensive * self.process.elbo_time_density(t) + (1 - self.defensive) * fitted

    def dt_du(self, process, t):
        return 1.0 / self.density(t)

    def __repr__(self) -> str:
        return f"FittedBlackoutTime(bins={self.bin_probs.numel()}, defensive={self.defensive:g})"
