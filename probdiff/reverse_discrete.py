r"""Reverse-time processes of Markov chains, registered in :data:`probdiff.reverse.REVERSE`.

Given a model of :math:`p(x_0 \mid x_t)` (``x0_probs``) the reverse chain has rates (Campbell et al.,
"A Continuous Time Framework for Discrete Denoising Models", NeurIPS 2022, Prop. 1)

.. math::

    \hat R_t(x \to y) = R_t(y \to x) \sum_{x_0} p(x_0 \mid x_t = x)\,\frac{q_t(y \mid x_0)}{q_t(x \mid x_0)},

and on a grid the exact step :math:`p(x_s\mid x_t) = \sum_{x_0} p(x_0\mid x_t)\,q(x_s\mid x_t, x_0)`
(Austin et al., D3PM 2021, Eq. (4)). For Blackout the only rate is the birth rate
:math:`E[n_0 - n_t\mid n_t]\,p_t/(1-p_t)` (Santos et al., "Blackout Diffusion", ICML 2023, Eq. (8)), so a
model of the mean number of missing photons suffices.

Chains have no noise family: the reverse of a chain is unique, so ``noise`` must be 1 (there is no
probability-flow ODE).
"""

from __future__ import annotations

import torch

from .processes.base import _expand
from .processes.blackout import Blackout
from .processes.discrete import MarkovChain
from .reverse import REVERSE, ReverseProcess

__all__ = ["ChainReverse", "BlackoutReverse"]


class ChainReverse(ReverseProcess):
    """The reverse-time chain of a :class:`~probdiff.MarkovChain` driven by a model of p(x_0 | x_t)."""

    def __init__(self, process: MarkovChain, model, noise: float = 1.0):
        super().__init__(process, model, noise)
        if self.noise != 1.0:
            raise ValueError(f"noise must be 1 for a Markov chain (its time reversal is unique), got {noise}")

    def x0_probs(self, x: torch.Tensor, t) -> torch.Tensor:
        """The model's :math:`p(x_0 \\mid x_t = x)`, shape ``(batch, *event, S)``."""
        if not hasattr(self.model, "x0_probs"):
            raise ValueError(f"model must provide x0_probs(x, t) (e.g. CategoricalModel or the Empirical "
                             f"oracle), got {type(self.model).__name__}")
        return self.model.x0_probs(x, t)

    def expected_x0(self, x: torch.Tensor, t) -> torch.Tensor:
        """:math:`E[x_0 \\mid x_t = x]` under the model (the denoising trajectory)."""
        return self.model.denoise(x, t)

    def rates(self, x: torch.Tensor, t) -> torch.Tensor:
        """Reverse rates :math:`\\hat R_t(x \\to y)` for every ``y``; the entry at ``y = x`` makes rows sum to 0."""
        return self.process.reverse_rates(self.x0_probs(x, t), x, t)

    def kernel_log_probs(self, x: torch.Tensor, t, s) -> tuple[torch.Tensor, torch.Tensor]:
        """``(log p(x_s | x_t = x), p(x_0 | x_t = x))``: the exact mixture-of-posteriors step and the model."""
        probs = self.x0_probs(x, t)
        return self.process.reverse_kernel_log_probs(probs, x, s, t), probs


class BlackoutReverse(ChainReverse):
    """Reverse of :class:`~probdiff.Blackout`: births at rate :math:`E[n_0 - n_t|n_t]\\,p_t/(1-p_t)`.

    Works with a model of the mean births (:class:`~probdiff.BlackoutModel`) or of the full posterior
    (``x0_probs``, e.g. the Empirical oracle), from which the mean is derived.
    """

    def mean_births(self, x: torch.Tensor, t) -> torch.Tensor:
        r""":math:`E[n_0 - n_t \mid n_t = x]`, zero at ``max_count`` (no photon can be missing there)."""
        if hasattr(self.model, "mean_births"):
            y = self.model.mean_births(x, t)
        else:
            probs = self.x0_probs(x, t)
            counts = torch.arange(probs.shape[-1], dtype=probs.dtype, device=probs.device)
            y = (probs @ counts - x.to(probs.dtype)).clamp_min(0.0)
        return torch.where(x >= self.process.max_count, torch.zeros_like(y), y)

    def expected_x0(self, x, t):
        y = self.mean_births(x, t)
        return x.to(y.dtype) + y

    def birth_rate(self, x: torch.Tensor, t) -> torch.Tensor:
        """:math:`\\hat R_t(n \\to n+1) = E[n_0 - n_t|n_t = n]\\,p_t/(1 - p_t)`."""
        y = self.mean_births(x, t)
        t = self.process._time(t, x).to(y.dtype)
        return y * _expand(self.process.birth_weight(t), y)

    def rates(self, x, t):
        """Closed form: only ``n -> n + 1`` has a positive rate."""
        birth = self.birth_rate(x, t)
        s = self.process.num_states
        up = (x.long() + 1).clamp_max(s - 1)[..., None]
        out = torch.zeros(*x.shape, s, dtype=birth.dtype, device=birth.device)
        out = out.scatter(-1, up, birth[..., None])
        return out.scatter(-1, x.long()[..., None], -birth[..., None])


@REVERSE.register(MarkovChain)
def _chain_reverse(process, model, noise):
    return ChainReverse(process, model, noise)


@REVERSE.register(Blackout)
def _blackout_reverse(process, model, noise):
    return BlackoutReverse(process, model, noise)
