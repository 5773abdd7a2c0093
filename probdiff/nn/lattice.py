r"""A denoiser head for uniformly dequantised ``K``-level data: per-bin logits, exact within-bin posterior.

Data dequantised on a lattice (:class:`probdiff.likelihood.Quantization`: bins
:math:`[e_k, e_{k+1})` of width :math:`w`, :math:`x_0 = e_n + wu`, :math:`u\sim U[0,1)`) have a density
that is constant on every bin. Given :math:`x_t = \alpha_t x_0 + \sigma_t\epsilon` and the bin :math:`n`
of one coordinate, the posterior of that coordinate is the normal :math:`N(m, s^2)`,
:math:`m = x_t/\alpha_t`, :math:`s = \sigma_t/\alpha_t`, truncated to the bin (uniform prior times a
Gaussian likelihood), whose normalising mass and mean are

.. math::

    Z_k = \Phi(b_k) - \Phi(a_k),\qquad
    \mu_k = m + s\,\frac{\varphi(a_k) - \varphi(b_k)}{\Phi(b_k) - \Phi(a_k)},\qquad
    a_k = \frac{e_k - m}{s},\ b_k = \frac{e_{k+1} - m}{s}

(Johnson, Kotz & Balakrishnan, *Continuous Univariate Distributions*, vol. 1, §13.10). Hence, for any
distribution of the levels, :math:`E[x_0\mid x_t] = \sum_k P(n = k\mid x_t)\,\mu_k` per coordinate, and
:math:`P(n = k \mid x_t) \propto \pi_k Z_k` where :math:`\pi_k` is the probability of level ``k`` given
everything else the network sees. :class:`LatticeDenoiser` lets the network output the logits
:math:`\log\pi_k` and computes :math:`Z_k` and :math:`\mu_k` in closed form: at small noise, where the
coordinates of :math:`x_0` are conditionally independent given :math:`x_t` and the denoiser has to resolve
the bin edges at the scale of :math:`s`, the sharp part is exact and the network only has to learn smooth
level probabilities — the categorical output of Dieleman et al., "Continuous diffusion for categorical
data" (2022, score interpolation), with the within-bin part of dequantised data made exact.

:func:`bin_posterior` is also the Rao–Blackwellised regression target of
:class:`probdiff.losses.DenoisingScoreMatching` with ``quantization=``.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..processes.gaussian import GaussianProcess, _expand

__all__ = ["LatticeDenoiser", "bin_posterior", "truncated_normal"]

_LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)


def truncated_normal(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Log-mass :math:`\log(\Phi(b) - \Phi(a))` and mean :math:`(\varphi(a)-\varphi(b))/(\Phi(b)-\Phi(a))`
    of the standard normal truncated to :math:`[a, b]`, elementwise, for :math:`a < b`.

    Stable in the tails: the interval is reflected to the side where :math:`a + b \le 0`, where
    :func:`torch.special.log_ndtr` is accurate, and the difference of the two CDFs is formed as
    :math:`\Phi(b)\,(1 - e^{\log\Phi(a) - \log\Phi(b)})` with ``expm1``. Compute in float64: a bin much
    narrower than the noise has :math:`b - a` of order :math:`w/s` (about 1e-3 at the end of a VP SDE).
    """
    flip = (a + b) > 0
    lo, hi = torch.where(flip, -b, a), torch.where(flip, -a, b)
    log_cdf_lo, log_cdf_hi = torch.special.log_ndtr(lo), torch.special.log_ndtr(hi)
    rel = -torch.expm1(log_cdf_lo - log_cdf_hi)  # (Phi(hi) - Phi(lo)) / Phi(hi), in (0, 1]
    log_mass = log_cdf_hi + torch.log(rel)
    pdf_lo = torch.exp(-0.5 * lo * lo - _LOG_SQRT_2PI - log_cdf_hi)
    pdf_hi = torch.exp(-0.5 * hi * hi - _LOG_SQRT_2PI - log_cdf_hi)
    mean = (pdf_lo - pdf_hi) / rel
    return log_mass, torch.where(flip, -mean, mean)


def bin_posterior(quantization, x: torch.Tensor, alpha: torch.Tensor, sigma: torch.Tensor):
    r"""For every coordinate of ``x`` = :math:`x_t` and every bin ``k``: :math:`\log Z_k` and :math:`\mu_k`.

    Args:
        quantization: the :class:`~probdiff.likelihood.Quantization` of the data.
        x: :math:`x_t`, ``(batch, *event)``.
        alpha, sigma: :math:`\alpha_t`, :math:`\sigma_t` broadcastable against ``x``.

    Returns:
        ``(log_mass, mean)``, each ``(batch, *event, K)`` in float64: the log-probability that
        :math:`N(x_t/\alpha_t, (\sigma_t/\alpha_t)^2)` gives bin ``k``, and the mean of that normal
        truncated to bin ``k`` (clamped into the bin against rounding).
    """
    q = quantization
    edges = q.lo + q.width * torch.arange(q.levels + 1, dtype=torch.float64, device=x.device)
    m = (x.double() / alpha.double())[..., None]
    s = (sigma.double() / alpha.double())[..., None]
    return _truncated_moments(edges[:-1], edges[1:], m, s)


def _truncated_moments(lo: torch.Tensor, hi: torch.Tensor, m: torch.Tensor, s: torch.Tensor):
    r""":math:`\log P(N(m, s^2) \in [lo, hi])` and the mean of :math:`N(m, s^2)` truncated to
    :math:`[lo, hi]` (clamped into the interval against rounding), elementwise with broadcasting: what
    :func:`bin_posterior` computes for every bin, and the loss computes for the own bin of each value."""
    log_mass, offset = truncated_normal((lo - m) / s, (hi - m) / s)
    return log_mass, torch.minimum(torch.maximum(m + s * offset, lo), hi)


class LatticeDenoiser(nn.Module):
    r"""Denoiser network for dequantised ``K``-level data: :math:`D = \sum_k \mathrm{softmax}_k(\ell_k +
    \log Z_k)\,\mu_k` per coordinate, with :math:`\ell = ` ``logits(x, t)`` (see the module docstring).

    Use it as the network of a :class:`~probdiff.DenoiserModel`::

        head = LatticeDenoiser(MLP(event, out_shape=(*event, K), time=FourierLogSNR(process)), process, q)
        model = DenoiserModel(head, process)

    A logits network whose output starts at zero (as :class:`~probdiff.nn.MLP`'s does) starts as the exact
    denoiser of i.i.d. coordinates uniform on ``data_range``. The posterior is computed in float64 and
    returned in ``x``'s dtype.

    Args:
        logits: ``logits(x, t)`` -> ``(batch, *event, K)``.
        process: the :class:`~probdiff.GaussianProcess` (for :math:`\alpha_t`, :math:`\sigma_t`).
        quantization: the data's :class:`~probdiff.likelihood.Quantization`.
    """

    def __init__(self, logits: nn.Module, process: GaussianProcess, quantization):
        super().__init__()
        from ..likelihood.bpd import Quantization

        if not isinstance(process, GaussianProcess):
            raise ValueError(f"process must be a GaussianProcess, got {type(process).__name__}")
        if not isinstance(quantization, Quantization):
            raise ValueError(f"quantization must be a probdiff.likelihood.Quantization, "
                             f"got {type(quantization).__name__}")
        self.logits, self.process, self.quantization = logits, process, quantization

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        logits = self.logits(x, t)
        k = self.quantization.levels
        if logits.shape != (*x.shape, k):
            raise ValueError(f"logits(x, t) must have shape {(*x.shape, k)} (one logit per level), "
                             f"got {tuple(logits.shape)}")
        p = self.process
        log_mass, mean = bin_posterior(self.quantization, x, _expand(p.alpha(t), x), _expand(p.sigma(t), x))
        weights = torch.softmax(logits.double() + log_mass, dim=-1)
        return (weights * mean).sum(-1).to(x.dtype)
