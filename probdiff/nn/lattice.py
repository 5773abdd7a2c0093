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

**Exact divergence.** :class:`LatticeDenoiser` computes, per coordinate :math:`i`,
:math:`D_i = \sum_k w_{ik}\mu_{ik}` with :math:`w_{ik} = \mathrm{softmax}_k(\ell_{ik}(x) + \log Z_{ik}(x_i))`,
where the logits :math:`\ell` come from the network and the bin masses :math:`Z_{ik}` and truncated means
:math:`\mu_{ik}` depend on :math:`x_i` alone, in closed form (:func:`probdiff.lattice.bin_posterior`). With
:math:`\partial w_{ik}/\partial x_i = w_{ik}(g_{ik} - \sum_j w_{ij}g_{ij})`,
:math:`g_{ik} = \partial(\ell_{ik} + \log Z_{ik})/\partial x_i`,

.. math::

    \nabla\!\cdot D = \sum_i\sum_k w_{ik}\,\frac{\partial\mu_{ik}}{\partial x_i}
    + \sum_i\sum_k c_{ik}\,\frac{\partial\log Z_{ik}}{\partial x_i}
    + \mathrm{tr}\,\frac{\partial u}{\partial x},\qquad
    c_{ik} = w_{ik}(\mu_{ik} - D_i),\quad u_i(x) = \sum_k c_{ik}\,\ell_{ik}(x)\ \ (c\ \text{held fixed}).

The first two sums are elementwise derivatives, all taken by one backward pass per output of
:func:`~probdiff.lattice.bin_posterior` evaluated on one copy of :math:`x_i` per bin (``per_bin=True``:
each output then depends on its own input element only). Only the last term needs the network's
Jacobian: the trace of the ``D x D`` Jacobian of ``u``, from one forward pass of the network and ``D``
vector-Jacobian products mapped over the basis (:func:`~probdiff.likelihood.traces.linearized_forms`).
When the logits end in a linear layer, :math:`\ell = W h(x) + \beta`
(:func:`~probdiff.likelihood.structured_trace.last_linear`; :class:`~probdiff.nn.MLP`), the layer is
contracted in closed form — the cotangent of :math:`h` for basis vector :math:`i` is :math:`\sum_k
c_{ik}W_{(i,k)}` — so
the ``D`` products run through the trunk :math:`h` only, not through the ``D·K``-wide output layer. The
replicated route (``ExactTrace(replicate=True)``) instead runs the network *and* the head ``D`` times per
evaluation. Registered with :func:`~probdiff.likelihood.structured_trace.network_divergence`, this is what
:func:`probdiff.log_likelihood` uses for a lattice model with the (default) exact trace.
"""

from __future__ import annotations

import torch
from torch import nn

from .._util import expand_like
from ..lattice import Quantization, bin_posterior
from ..likelihood.structured_trace import last_linear, network_divergence
from ..likelihood.traces import linearized_forms
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


@network_divergence.register
def _(net: LatticeDenoiser, x, t):
    b, d, k = x.shape[0], x[0].numel(), net.quantization.levels
    p = net.process
    alpha, sigma = expand_like(p.alpha(t), x), expand_like(p.sigma(t), x)
    split = last_linear(net.logits)
    with torch.enable_grad():
        if split is None:
            logits = net.logits(x, t)
        else:                                   # one forward of the trunk, linearised once
            features, linear = split
            hidden, vjp_fn = torch.func.vjp(lambda z: features(z, t), x.detach())
            logits = linear(hidden.detach())
    logits = logits.detach().double().reshape(*x.shape, k)
    # log Z, mu and their derivatives in x_i: one copy of x_i per bin, so each output depends on its own input
    # element and one backward pass per output gives every derivative
    per_bin = x.detach().double()[..., None].expand(*x.shape, k).clone().requires_grad_(True)
    with torch.enable_grad():
        log_mass, mean = bin_posterior(net.quantization, per_bin, alpha[..., None], sigma[..., None], per_bin=True)
        d_log_mass, = torch.autograd.grad(log_mass.sum(), per_bin, retain_graph=True)
        d_mean, = torch.autograd.grad(mean.sum(), per_bin)
    log_mass, mean = log_mass.detach(), mean.detach()
    weights = torch.softmax(logits + log_mass, dim=-1)
    denoised = (weights * mean).sum(-1)
    c = weights * (mean - denoised[..., None])
    closed = ((weights * d_mean).sum(-1) + (c * d_log_mass).sum(-1)).reshape(b, d).sum(1)
    if split is None:
        def u(z):                               # u_i = sum_k c_ik l_ik(z), c held fixed
            return (c * net.logits(z, t).double()).sum(-1).to(z.dtype)

        eye = torch.eye(d, dtype=x.dtype, device=x.device)
        probes = eye[:, None, :].expand(d, b, d).reshape(d, *x.shape)
        network = linearized_forms(u, x, probes)[1].double().sum(0)
    else:
        # u_i = sum_k c_ik (W h + bias)_(i,k): the cotangent of h for basis vector i is sum_k c_ik W_(i,k), so
        # tr du/dx = sum_i [(sum_k c_ik W_(i,k))^T dh/dx]_i, D products through the trunk and none through W.
        weight = linear.weight.reshape(d, k, -1)
        cot = torch.einsum("bdk,dkh->dbh", c.reshape(b, d, k).to(weight.dtype), weight)
        with torch.enable_grad():
            rows, = torch.func.vmap(vjp_fn)(cot)                                 # (d, B, *event)
        network = torch.diagonal(rows.reshape(d, b, d), dim1=0, dim2=2).double().sum(-1)
    return denoised.detach().to(x.dtype), (closed + network).detach().to(x.dtype)
