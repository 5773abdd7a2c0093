r"""The negative continuous-time ELBO of a chain as a training loss, with times stratified across the batch.

Per sample it is the estimator of :func:`~probdiff.likelihood.chain.chain_elbo` with ``grid=None`` (Campbell et
al. 2022, Prop. 2; THEORY.md §10): :math:`\mathrm{KL}(q(x_{t_{max}}|x_0)\|\pi)` plus the integrand
:func:`~probdiff.likelihood.chain.chain_elbo_integrand` at one time drawn from the chain's ELBO proposal
(:meth:`~probdiff.MarkovChain.sample_elbo_times`: uniform in :math:`\alpha_t` for the interpolating chains),
divided by its density. For masking with :class:`~probdiff.SUBSModel` it is the weighted cross-entropy of
MDLM / MD4 (Sahoo et al. 2024, Eq. (10); Shi et al. 2024, Eq. (5)).

The batch's uniforms are :math:`u_i = 1 - \{U + i/B\}` with one shared :math:`U \sim U[0, 1)` — the
low-discrepancy sampler of Kingma et al. 2021 ("Variational Diffusion Models", App. I.2) that MDLM uses
(Sahoo et al. 2024, §3.5): each sample's time is still marginally uniform in the proposal, so the batch
mean is unbiased, and the batch covers the times evenly, which lowers the variance of the mean.
"""

from __future__ import annotations

import torch

from .._util import observed_mask
from ..likelihood.chain import continuous_elbo_terms
from ..models.base import bind
from ..processes.chain import MarkovChain
from ..reverse.base import build_reverse

__all__ = ["ChainELBOLoss"]


class ChainELBOLoss:
    """Per-sample negative continuous-time ELBO of a chain in nats, shape ``(batch,)`` (average it to train).

    Args:
        process: a :class:`~probdiff.MarkovChain` (its closed forms are used where it has them).
        stratified: spread the batch's times evenly (one shared offset, see the module notes); ``False``
            draws every time independently.
    """

    def __init__(self, process: MarkovChain, *, stratified: bool = True):
        if not isinstance(process, MarkovChain):
            raise ValueError(f"process must be a MarkovChain, got {type(process).__name__}")
        if not isinstance(stratified, bool):
            raise TypeError(f"stratified must be True or False, got {stratified!r}")
        self.process, self.stratified = process, stratified

    def __call__(self, model, x0: torch.Tensor, *, generator=None, observed: torch.Tensor | None = None
                 ) -> torch.Tensor:
        """The loss of the batch ``x0``; ``observed`` (boolean, ``x0``'s shape or its event shape): dimensions
        held at the data, the conditional bound of :func:`~probdiff.likelihood.chain.chain_elbo` (train on it
        with clean contexts, e.g. prefixes, to score the model's conditionals)."""
        bind(self.process, model, entry="ChainELBOLoss")
        p = self.process
        p.check_states("x0", x0)
        obs = observed_mask(observed, x0)
        b = x0.shape[0]
        if b == 0:                  # (the chains' prior KL cannot reshape an empty batch)
            return torch.zeros(0, dtype=torch.float64, device=x0.device)
        if self.stratified:
            shift = torch.rand((), generator=generator, dtype=torch.float64, device=x0.device)
            u = 1 - torch.remainder(shift + torch.arange(b, dtype=torch.float64, device=x0.device) / b, 1.0)
        else:
            u = 1 - torch.rand(b, generator=generator, dtype=torch.float64, device=x0.device)   # in (0, 1]
        kl, weighted = continuous_elbo_terms(p, build_reverse(p, model, 1.0), x0, u, generator=generator,
                                             observed=obs)
        return kl + weighted

    def __repr__(self) -> str:
        return f"ChainELBOLoss({self.process!r}, stratified={self.stratified})"
