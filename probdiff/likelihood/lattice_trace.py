r"""The exact divergence of a lattice denoiser, its closed-form part taken analytically (issue 15, item 7).

:class:`~probdiff.nn.LatticeDenoiser` computes, per coordinate :math:`i`,
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
each output then depends on its own input element only). Only the last term needs the network's Jacobian: the trace of the ``D x D`` Jacobian of
``u``, from one forward pass of the network and ``D`` vector-Jacobian products mapped over the basis
(:func:`~probdiff.likelihood.traces.linearized_forms`). When the logits end in a linear layer,
:math:`\ell = W h(x) + \beta` (:func:`last_linear`; :class:`~probdiff.nn.MLP`), the layer is contracted in
closed form — the cotangent of :math:`h` for basis vector :math:`i` is :math:`\sum_k c_{ik}W_{(i,k)}` — so
the ``D`` products run through the trunk :math:`h` only, not through the ``D·K``-wide output layer. The
replicated route (``ExactTrace(replicate=True)``) instead runs the network *and* the head ``D`` times per evaluation.
"""

from __future__ import annotations

import functools

import torch

from .._util import expand_like
from ..lattice import bin_posterior
from ..models.gaussian import DenoiserModel
from ..nn.lattice import LatticeDenoiser
from ..nn.mlp import MLP
from .traces import linearized_forms

__all__ = ["denoiser_divergence", "network_divergence", "last_linear"]


@functools.singledispatch
def denoiser_divergence(model, x: torch.Tensor, t: torch.Tensor):
    """``(D(x, t), div_x D)`` of ``model`` by a structure-aware exact route, or ``None`` when there is none
    (then :class:`~probdiff.ExactTrace` differentiates the whole denoiser). Extension point: register a
    model (or, for a :class:`~probdiff.DenoiserModel`, its network with :func:`network_divergence`)."""
    return None


@functools.singledispatch
def network_divergence(net, x: torch.Tensor, t: torch.Tensor):
    """``(net(x, t), div_x net)`` for the network of a :class:`~probdiff.DenoiserModel`, or ``None``."""
    return None


@denoiser_divergence.register
def _(model: DenoiserModel, x, t):
    return network_divergence(model.net, x, t)


@functools.singledispatch
def last_linear(net):
    """``(features, linear)`` when ``net(x, t)`` is ``linear(features(x, t))`` reshaped, else ``None``.
    Extension point: register a logits network to let :func:`network_divergence` contract its last layer."""
    return None


@last_linear.register
def _(net: MLP):
    return net.features, net.out


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
