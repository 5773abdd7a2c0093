r"""A categorical law on ``S`` states stored in O(1) per element: a few point masses plus a shared base law.

The laws of the interpolating chains (uniform noise, masking and their mixture,
:mod:`probdiff.processes.interpolating`) are all of the form

.. math::

    p(j) = \sum_{k=1}^{K} w_k\,\mathbb 1[j = a_k] + w_\pi\,\pi_j ,

with ``K <= 2`` atoms :math:`a_k` per element and one base law :math:`\pi` shared by every element (Austin et
al., "Structured Denoising Diffusion Models in Discrete State-Spaces", NeurIPS 2021, App. A.2; Shi et al.,
"Simplified and Generalized Masked Diffusion for Discrete Data", NeurIPS 2024, §2). Storing the weights and
:math:`\log\pi` instead of the ``S`` probabilities of every element makes ``log_prob`` O(K) and ``sample``
O(K + log S) per element, so a batch of ``8 x 1024`` tokens over a 50,257-word vocabulary costs kilobytes
rather than gigabytes. :attr:`AtomicCategorical.logits` materialises the dense ``(..., S)`` logits when asked.
"""

from __future__ import annotations

import math

import torch
from pyro.distributions import TorchDistribution
from torch.distributions import Categorical, constraints, register_kl

__all__ = ["AtomicCategorical", "sample_base", "kl_atomic"]


def sample_base(log_pi: torch.Tensor, shape, generator: torch.Generator | None = None) -> torch.Tensor:
    """``shape`` independent draws from the law :math:`\\pi` given by ``log_pi`` ``(S,)``, as ``torch.long``.

    Inverse CDF by binary search on the cumulative sum of :math:`\\pi` (computed once, O(S)), then
    O(log S) per draw; states of zero probability are never drawn.
    """
    cdf = torch.cumsum(torch.exp(log_pi.to(torch.float64)), 0)
    u = torch.rand(tuple(shape), generator=generator, dtype=torch.float64, device=log_pi.device) * cdf[-1]
    return torch.searchsorted(cdf, u, right=True).clamp_max(log_pi.shape[0] - 1)


class AtomicCategorical(TorchDistribution):
    r""":math:`p(j) \propto \sum_k e^{\ell_k}\mathbb 1[j = a_k] + e^{\ell_\pi}\pi_j` on ``0 .. S-1``.

    Args:
        atoms: integer tensor ``(*batch, K)``, the states :math:`a_k` (``K`` may be 0; atoms may coincide,
            their weights then add up).
        atom_log_weights: ``(*batch, K)``, :math:`\ell_k` (``-inf`` for an absent atom).
        base_log_weight: ``(*batch,)``, :math:`\ell_\pi`.
        log_pi: ``(S,)``, :math:`\log\pi` of a normalised law (``-inf`` allowed).
        validate_args: as in ``torch.distributions``.

    The weights are normalised on construction (the total mass is :math:`\sum_k e^{\ell_k} + e^{\ell_\pi}`
    whether or not atoms coincide). Samples are ``torch.long``, like
    :class:`~pyro.distributions.Categorical`'s.
    """

    arg_constraints = {}
    has_enumerate_support = False

    def __init__(self, atoms, atom_log_weights, base_log_weight, log_pi, validate_args=None):
        dtype = base_log_weight.dtype
        lw = torch.cat([atom_log_weights.to(dtype), base_log_weight[..., None]], -1)
        lw = lw - torch.logsumexp(lw, -1, keepdim=True)
        self.atoms = atoms.long()
        self.atom_log_weights, self.base_log_weight = lw[..., :-1], lw[..., -1]
        self.log_pi = log_pi.to(device=lw.device, dtype=dtype)
        super().__init__(self.base_log_weight.shape, torch.Size(), validate_args=validate_args)

    @property
    def num_states(self) -> int:
        return self.log_pi.shape[0]

    @constraints.dependent_property(is_discrete=True, event_dim=0)
    def support(self):
        return constraints.integer_interval(0, self.num_states - 1)

    @property
    def logits(self) -> torch.Tensor:
        """Dense normalised log-probabilities, shape ``(*batch, S)`` (O(S) per element)."""
        out = (self.base_log_weight[..., None] + self.log_pi).clone()
        for k in range(self.atoms.shape[-1]):
            idx = self.atoms[..., k:k + 1]
            here = torch.logaddexp(out.gather(-1, idx), self.atom_log_weights[..., k:k + 1])
            out = out.scatter(-1, idx, here)
        return out

    @property
    def probs(self) -> torch.Tensor:
        """Dense probabilities, shape ``(*batch, S)``."""
        return torch.exp(self.logits)

    def expand(self, batch_shape, _instance=None):
        batch_shape = torch.Size(batch_shape)
        k = self.atoms.shape[-1]
        return AtomicCategorical(self.atoms.expand(*batch_shape, k), self.atom_log_weights.expand(*batch_shape, k),
                                 self.base_log_weight.expand(batch_shape), self.log_pi, validate_args=False)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """:math:`\\log p(\\text{value})` in O(K) per element (``-inf`` off ``0 .. S-1``)."""
        value = torch.as_tensor(value, device=self.log_pi.device)
        inside = (value >= 0) & (value < self.num_states) & (value == torch.round(value.to(self.log_pi.dtype)))
        v = torch.where(inside, value, torch.zeros_like(value)).long()
        shape = torch.broadcast_shapes(v.shape, self.batch_shape)
        hit = v[..., None] == self.atoms
        atom = torch.where(hit, self.atom_log_weights, torch.full_like(self.atom_log_weights, -math.inf))
        terms = torch.cat([atom.expand(*shape, atom.shape[-1]),
                           (self.base_log_weight + self.log_pi[v]).expand(shape)[..., None]], -1)
        out = torch.logsumexp(terms, -1)
        return torch.where(inside, out, torch.full_like(out, -math.inf))

    def sample(self, sample_shape=torch.Size(), generator: torch.Generator | None = None) -> torch.Tensor:
        """Choose a component by its weight, then its state (O(K + log S) per draw)."""
        shape = self._extended_shape(sample_shape)
        with torch.no_grad():
            lw = torch.cat([self.atom_log_weights, self.base_log_weight[..., None]], -1).expand(*shape, -1)
            cdf = torch.cumsum(torch.exp(lw.to(torch.float64)), -1)
            u = torch.rand(shape, generator=generator, dtype=torch.float64, device=lw.device)[..., None] * cdf[..., -1:]
            comp = (cdf <= u).sum(-1).clamp_max(lw.shape[-1] - 1)
            base = sample_base(self.log_pi, shape, generator)
            atoms = self.atoms.expand(*shape, self.atoms.shape[-1])
            picked = atoms.gather(-1, comp.clamp_max(max(atoms.shape[-1] - 1, 0))[..., None])[..., 0] \
                if atoms.shape[-1] else base
            return torch.where(comp == atoms.shape[-1], base, picked)

    def entropy(self) -> torch.Tensor:
        """Entropy in nats (dense, O(S) per element)."""
        p = self.probs
        return -torch.xlogy(p, p).sum(-1)


@register_kl(AtomicCategorical, AtomicCategorical)
@register_kl(AtomicCategorical, Categorical)
@register_kl(Categorical, AtomicCategorical)
def kl_atomic(p, q) -> torch.Tensor:
    """:math:`\\mathrm{KL}(p\\,\\|\\,q) = \\sum_j p_j(\\log p_j - \\log q_j)` (0 log 0 = 0), dense over the ``S`` states
    (registered with ``torch.distributions.kl_divergence``, so ``Independent`` wrappers work too)."""
    lp, lq = p.logits, q.logits
    return torch.where(lp > -math.inf, torch.exp(lp) * (lp - lq), torch.zeros_like(lp)).sum(-1)
