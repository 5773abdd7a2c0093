r"""The exact divergence by a model's structure: extension points of :class:`~probdiff.ExactTrace` (issue 15).

:func:`probdiff.log_likelihood` with :class:`~probdiff.ExactTrace` first asks :func:`denoiser_divergence`
for :math:`(D, \nabla\!\cdot D)` computed by the model's own structure, and differentiates the whole
denoiser only when it returns ``None``. For a :class:`~probdiff.DenoiserModel` the question goes to its
network (:func:`network_divergence`); :class:`~probdiff.nn.LatticeDenoiser` answers it with its head's
divergence in closed form (``probdiff/nn/lattice.py``), and :func:`last_linear` lets such a route
contract a network's last linear layer analytically (:class:`~probdiff.nn.MLP` registers it). A
registration must give the same trace as ``ExactTrace(replicate=True)`` (the tests compare them).
"""

from __future__ import annotations

import functools

import torch

from ..models.gaussian import DenoiserModel

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
    Extension point: register a logits network to let a route such as the lattice head's contract its last
    layer analytically."""
    return None
