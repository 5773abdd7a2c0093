r"""A denoiser head for uniformly dequantised ``K``-level data: per-bin logits, exact within-bin posterior.

Data dequantised on a lattice (:class:`probdiff.Quantization`: bins
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

import torch
from torch import nn

from .._util import expand_like
from ..lattice import Quantization, bin_posterior
from ..processes.gaussian import GaussianProcess, as_gaussian

__all__ = ["LatticeDenoiser"]

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
        quantization: the data's :class:`~probdiff.Quantization`.
    """

    def __init__(self, logits: nn.Module, process: GaussianProcess, quantization):
        super().__init__()
        as_gaussian(process)
        if not isinstance(quantization, Quantization):
            raise ValueError(f"quantization must be a probdiff.Quantization, "
                             f"got {type(quantization).__name__}")
        self.logits, self.process, self.quantization = logits, process, quantization

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        logits = self.logits(x, t)
        k = self.quantization.levels
        if logits.shape != (*x.shape, k):
            raise ValueError(f"logits(x, t) must have shape {(*x.shape, k)} (one logit per level), "
                             f"got {tuple(logits.shape)}")
        p = self.process
        log_mass, mean = bin_posterior(self.quantization, x, expand_like(p.alpha(t), x), expand_like(p.sigma(t), x))
        weights = torch.softmax(logits.double() + log_mass, dim=-1)
        return (weights * mean).sum(-1).to(x.dtype)
