r"""The classic discrete-time bound of a DDPM in bits/dim (THEORY.md §9).

Ho, Jain & Abbeel, "Denoising Diffusion Probabilistic Models" (NeurIPS 2020), Eq. (5) and §3.3, as Nichol &
Dhariwal's improved-diffusion evaluates it (``calc_bpd_loop``; "Improved Denoising Diffusion Probabilistic
Models", ICML 2021, §2.1 and §3): for one image :math:`x_0` on the 8-bit lattice and a table of N steps
(0-based :math:`k`, :math:`\bar\alpha_{-1} = 1`),

.. math::

    L = \underbrace{\mathrm{KL}\big(q(x_{N-1}\mid x_0)\,\|\,\mathcal N(0, I)\big)}_{\text{prior}}
      + \sum_{k=1}^{N-1} \underbrace{\mathrm{KL}\big(q(x_{k-1}\mid x_k, x_0)\,\|\,
        \mathcal N(\mu_\theta(x_k, k), s_k^2 I)\big)}_{x_k \sim q(x_k\mid x_0)}
      \underbrace{- \log \textstyle\prod_d \int_{\mathrm{bin}(x_{0,d})}
        \mathcal N(y; \mu_\theta(x_0', 0)_d, s_0^2)\,dy}_{\text{decoder},\ x_0' \sim q(x_0'\mid x_0)}

where :math:`\mu_\theta(x_k, k)` is the posterior mean :math:`c_1 \hat x_0 + c_2 x_k` with the model's
:math:`\hat x_0` (:math:`c_1 = \beta_k\sqrt{\bar\alpha_{k-1}}/(1-\bar\alpha_k)`,
:math:`c_2 = (1-\bar\alpha_{k-1})\sqrt{1-\beta_k}/(1-\bar\alpha_k)`; at :math:`k = 0` it is :math:`\hat x_0`),
:math:`s_k^2 = \tilde\beta_k = \beta_k(1-\bar\alpha_{k-1})/(1-\bar\alpha_k)` ("small") or :math:`\beta_k`
("large"), and :math:`s_0^2 = \tilde\beta_1` for both (improved-diffusion's clipped log-variance, as
:math:`\tilde\beta_0 = 0`). Each step draws its own :math:`x_k`: the sum is a one-sample Monte-Carlo
estimate of the bound, as in ``calc_bpd_loop``. Every term is averaged over the dimensions and divided by
:math:`\ln 2`, so the total is in bits per dimension. The bins are those of the data lattice with the outer
ones open, so the decoder is a proper distribution and the bound is on a log-*probability* (no +7 offset, no
dequantisation). One difference from improved-diffusion: the normal CDF is exact (``log_ndtr``), not the
tanh approximation, and no 1e-12 floor is applied.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pyro.distributions as dist
import torch

from .._util import check_positive_int
from ..lattice import Quantization
from ..models.base import bind
from ..processes.discrete_vp import DiscreteVP
from .decoders import DiscretizedNormal

__all__ = ["ddpm_vlb", "VLBTerms"]

VARIANCES = ("small", "large")


@dataclass
class VLBTerms:
    """The terms of :func:`ddpm_vlb` in bits/dim: ``prior`` ``(batch,)`` and ``steps`` ``(batch, N)``, where
    ``steps[:, 0]`` is the decoder term and ``steps[:, k]`` the KL of step ``k`` (improved-diffusion's
    ``prior_bpd`` and ``vb``); ``nfe`` model evaluations."""

    prior: torch.Tensor
    steps: torch.Tensor
    nfe: int

    @property
    def total(self) -> torch.Tensor:
        """``prior + steps.sum(1)``: the bound in bits/dim, ``(batch,)``."""
        return self.prior + self.steps.sum(1)


def _lattice(levels: int, data_range) -> Quantization:
    """The lattice whose *end levels* are ``data_range`` (DDPM: :math:`x = 2n/255 - 1`)."""
    levels = check_positive_int("levels", levels)
    lo, hi = (float(v) for v in data_range)
    if not lo < hi:
        raise ValueError(f"data_range must satisfy lo < hi, got {data_range!r}")
    if levels < 2:
        raise ValueError(f"levels must be >= 2, got {levels}")
    half = 0.5 * (hi - lo) / (levels - 1)
    return Quantization(levels, (lo - half, hi + half))


def _normal(loc, var, event_dims):
    return dist.Normal(loc, torch.sqrt(var).expand_as(loc), validate_args=False).to_event(event_dims)


def ddpm_vlb(process_or_model, model=None, x: torch.Tensor | None = None, *, levels: int = 256,
             data_range=(-1.0, 1.0), variance="small", clip_denoised: bool = False,
             generator: torch.Generator | None = None, return_terms: bool = False):
    r"""Ho et al.'s variational bound on :math:`-\log_2 P(x_0)` per dimension, computed as improved-diffusion's
    ``calc_bpd_loop`` (see the module docstring for every term).

    Short form ``ddpm_vlb(model, x, ...)`` (the model carries its process); long form
    ``ddpm_vlb(process, model, x, ...)``.

    Args:
        process: a :class:`~probdiff.DiscreteVP` (its table is the one the bound sums over).
        model: a Gaussian model of ``process`` (any parameterisation; its ``denoise`` gives :math:`\hat x_0`).
        x: images on the lattice, ``(batch, *event)``: the ``levels`` values spaced evenly from
            ``data_range[0]`` to ``data_range[1]`` (DDPM: :math:`2n/255 - 1`, so ``(-1, 1)`` are the *values*
            of the end levels, unlike :class:`~probdiff.Quantization`'s bin edges).
        levels: number of levels per dimension (256 for 8-bit images).
        data_range: the values of the lowest and highest levels.
        variance: ``"small"`` (:math:`\tilde\beta_k`, the posterior's), ``"large"`` (:math:`\beta_k`), or a
            callable ``log_variance(x_k, k)`` returning :math:`\log s_k^2` per element (broadcastable to ``x``)
            for models that predict their variance (improved-diffusion's learned range:
            :math:`\log s_k^2 = f\log\beta_k + (1-f)\log\tilde\beta_k` with the network's
            :math:`f \in [0, 1]`, :math:`\tilde\beta_0` replaced by :math:`\tilde\beta_1`); it is also used by
            the decoder at :math:`k = 0`.
        clip_denoised: clamp :math:`\hat x_0` to ``data_range`` before forming the mean.
        generator: source of the N noise draws (one per step, as ``calc_bpd_loop``).
        return_terms: also return the :class:`VLBTerms`.

    Returns:
        Bits/dim per image ``(batch,)``, or ``(bpd, terms)`` with ``return_terms=True``.

    Raises:
        ValueError: ``process`` is not a DiscreteVP or not the model's, ``x`` is not on the lattice, or a bad
        ``variance``.
    """
    if x is None:                         # ddpm_vlb(model, x, ...)
        model, x = None, model
    process, model = bind(process_or_model, model, entry="ddpm_vlb")
    if not isinstance(process, DiscreteVP):
        raise ValueError(f"process must be a DiscreteVP (a beta table), got {type(process).__name__}; "
                         "use pd.elbo for continuous-time processes")
    if not callable(variance) and variance not in VARIANCES:
        raise ValueError(f"variance must be one of {VARIANCES} or a callable log_variance(x_k, k), got {variance!r}")
    if not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.dim() < 2:
        raise ValueError("x must be a floating tensor of shape (batch, *event)")
    lattice = _lattice(levels, data_range)
    lattice.index(x)                                # ValueError if x is not on the lattice
    lo, hi = float(data_range[0]), float(data_range[1])
    x = x.detach()
    batch, event_dims, dims = x.shape[0], x.dim() - 1, x[0].numel()
    opts = {"dtype": x.dtype, "device": x.device}
    log_abar, log_1m_abar = (v.to(**opts) for v in process.log_alphas_cumprod)
    n = process.num_steps
    ln2d = math.log(2.0) * dims

    # prior: KL(N(sqrt(abar) x0, (1 - abar) I) || N(0, I)), Gaussian closed form per dimension
    a2, s2 = torch.exp(log_abar[-1]), torch.exp(log_1m_abar[-1])
    prior = 0.5 * (a2 * x.pow(2) + s2 - 1.0 - log_1m_abar[-1]).flatten(1).sum(1) / ln2d

    betas = process.betas.to(**opts)
    steps = torch.empty(batch, n, **opts)
    for k in range(n - 1, -1, -1):
        t = torch.full((batch,), float(process.time_of_step(k)), **opts)
        eps = torch.randn(x.shape, generator=generator, **opts)
        xk = torch.exp(0.5 * log_abar[k]) * x + torch.exp(0.5 * log_1m_abar[k]) * eps
        with torch.no_grad():
            x0_hat = model.denoise(xk, t)
        if clip_denoised:
            x0_hat = x0_hat.clamp(lo, hi)
        learned = torch.exp(torch.as_tensor(variance(xk, k), **opts)).expand_as(x) if callable(variance) else None
        if k == 0:
            # decoder: discretised N(x0_hat, beta~_1) on the lattice; the mean is x0_hat (c1 = 1, c2 = 0)
            var = betas[1] * -torch.expm1(log_abar[0]) / -torch.expm1(log_abar[1]) if learned is None else learned
            nll = -DiscretizedNormal(x0_hat, torch.sqrt(var).expand_as(x0_hat), lattice).log_prob(x)
            steps[:, 0] = nll.flatten(1).sum(1) / ln2d
            continue
        # posterior q(x_{k-1} | x_k, x0) with mean c1 x0 + c2 x_k and variance beta~_k (Ho et al. Eq. (7))
        c1 = betas[k] * torch.exp(0.5 * log_abar[k - 1] - log_1m_abar[k])
        c2 = torch.exp(log_1m_abar[k - 1] - log_1m_abar[k]) * torch.sqrt(1.0 - betas[k])
        var_q = betas[k] * torch.exp(log_1m_abar[k - 1] - log_1m_abar[k])
        var_p = learned if learned is not None else (var_q if variance == "small" else betas[k])
        q = _normal(c1 * x + c2 * xk, var_q, event_dims)
        p = _normal(c1 * x0_hat + c2 * xk, var_p, event_dims)
        steps[:, k] = torch.distributions.kl_divergence(q, p) / ln2d
    terms = VLBTerms(prior=prior, steps=steps, nfe=n)
    return (terms.total, terms) if return_terms else terms.total
