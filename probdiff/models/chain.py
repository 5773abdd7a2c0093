r"""Model parameterisations for discrete-state processes (THEORY.md §5).

* :class:`CategoricalModel` — the network returns logits of :math:`p(x_0 \mid x_t)` per dimension,
  shape ``(batch, *event, S)`` (Austin et al., D3PM 2021, §3.3 "x0-parameterisation"; Campbell et al.
  2022, §3).
* :class:`BlackoutModel` — the network returns, through a softplus, the expected number of missing
  photons :math:`E[n_0 - n_t \mid n_t]` per pixel, the sufficient statistic of the Blackout reverse
  rates (Santos et al., "Blackout Diffusion", ICML 2023, Eq. (10)).

The network is called as ``net(x, t)`` with the states converted to the time's floating dtype and ``t``
of shape ``(batch,)``.
"""

from __future__ import annotations

import torch

from .._util import deprecated_alias
from ..processes.blackout import Blackout
from ..processes.chain import MarkovChain
from ..processes.uniform_masking import AbsorbingChain
from .base import Model

__all__ = ["ChainModel", "CategoricalModel", "BlackoutModel", "DiscreteModel", "SUBSModel"]


class ChainModel(Model):
    """Base of models of a :class:`~probdiff.MarkovChain`: holds ``net`` and ``process``, validates inputs.

    Every model exposes :meth:`denoise`, the expected data :math:`E[x_0 \\mid x_t]` (float), which the
    samplers report as the denoising trajectory.
    """

    process_type: type = MarkovChain

    def _prepare(self, x: torch.Tensor, t) -> torch.Tensor:
        """Validate the states and return the time, shape ``(batch,)``."""
        self._check_batch(x)
        self.process.check_states("x", x)
        t = self.process.check_time(t, x)
        return t.to(x.dtype if x.is_floating_point() else torch.get_default_dtype())

    def denoise(self, x: torch.Tensor, t) -> torch.Tensor:
        """Expected data :math:`E[x_0 \\mid x_t = x]`."""
        raise NotImplementedError

    def mean_births(self, x: torch.Tensor, t) -> torch.Tensor:
        """:math:`E[x_0 - x_t \\mid x_t = x]` clamped at 0: Blackout's statistic (the expected number of missing
        photons), from :meth:`denoise` unless the model predicts it directly (:class:`BlackoutModel`)."""
        d = self.denoise(x, t)
        return (d - x.to(d.dtype)).clamp_min(0.0)


class CategoricalModel(ChainModel):
    """The network predicts logits of :math:`p(x_0 \\mid x_t)`, shape ``(batch, *event, S)``."""

    def x0_logits(self, x: torch.Tensor, t) -> torch.Tensor:
        t = self._prepare(x, t)
        out = self.net(x.to(t.dtype), t)
        expected = (*x.shape, self.process.num_states)
        if not self.process.validate_args and tuple(out.shape) != expected:
            raise ValueError(f"net(x, t) must return logits of shape {expected}, got {tuple(out.shape)}")
        return self._checked(out, expected, logits=True)

    def x0_probs(self, x: torch.Tensor, t) -> torch.Tensor:
        """:math:`p(x_0 \\mid x_t = x)` per dimension (softmax of the logits)."""
        return torch.softmax(self.x0_logits(x, t), dim=-1)

    def denoise(self, x, t):
        probs = self.x0_probs(x, t)
        return probs @ torch.arange(probs.shape[-1], dtype=probs.dtype, device=probs.device)

    def mean_births(self, x: torch.Tensor, t) -> torch.Tensor:
        """:math:`E[x_0 - x_t \\mid x_t = x]` clamped at 0, summed term by term,
        :math:`\\sum_k p(k \\mid x)\\,(k - x)`: the difference :math:`E[x_0 \\mid x] - x` of
        :meth:`ChainModel.mean_births` cancels to 0 when the births are tiny (a posterior of 1e-26 on a far data
        point), which would make Blackout's ELBO integrand infinite at such states."""
        probs = self.x0_probs(x, t)
        states = torch.arange(probs.shape[-1], dtype=probs.dtype, device=probs.device)
        return (probs * (states - x.to(probs.dtype)[..., None])).sum(-1).clamp_min(0.0)


class BlackoutModel(ChainModel):
    r"""The network predicts :math:`y = E[n_0 - n_t \mid n_t]` through a softplus (so :math:`y > 0`).

    The reverse (birth) rate at count ``n`` is :math:`y\,p_t/(1 - p_t)`.
    """

    process_type = Blackout

    def mean_births(self, x: torch.Tensor, t) -> torch.Tensor:
        """Expected number of missing photons :math:`E[n_0 - n_t \\mid n_t = x]`, shape ``x.shape``."""
        t = self._prepare(x, t)
        out = self.net(x.to(t.dtype), t)
        if not self.process.validate_args and tuple(out.shape) != tuple(x.shape):
            raise ValueError(f"net(x, t) must return a tensor of shape {tuple(x.shape)}, got {tuple(out.shape)}")
        return torch.nn.functional.softplus(self._checked(out, x.shape))

    def denoise(self, x, t):
        births = self.mean_births(x, t)
        return x.to(births.dtype) + births


class SUBSModel(CategoricalModel):
    r"""Masked diffusion's SUBS parameterisation (Sahoo et al., "Simple and Effective Masked Diffusion Language
    Models", NeurIPS 2024, §3.2.3) for an :class:`~probdiff.AbsorbingChain`.

    The network's logits get two substitutions: the mask state has probability 0 (zero masking
    probabilities: the data never hold the mask), and a token that is not masked is carried over (carry-over
    unmasking: under masking an unmasked :math:`x_t^i` equals :math:`x_0^i`). With it the continuous-time
    ELBO reduces to the weighted cross-entropy (THEORY.md §10)

    .. math::

        \int -\frac{\alpha_t'}{1-\alpha_t}\,E\sum_{i:\,x_t^i = m} -\log p_\theta(x_0^i \mid x_t)\,dt .

    Args:
        net: ``net(x, t)`` returning logits of shape ``(batch, *event, S)``.
        process: the masking chain.
        time_conditioned: whether ``net`` uses ``t``. With ``False`` (MDLM's choice: under SUBS the masked
            positions tell the time) the model depends on :math:`x_t` alone, so a sampler may reuse it while
            no token changes (:class:`~probdiff.solvers.MaskedAncestral`).
    """

    process_type = AbsorbingChain

    def __init__(self, net, process, *, time_conditioned: bool = True):
        super().__init__(net, process)
        self.time_conditioned = bool(time_conditioned)

    def x0_logits(self, x: torch.Tensor, t) -> torch.Tensor:
        logits = super().x0_logits(x, t)
        mask = self.process.mask_state
        logits = logits.clone()
        logits[..., mask] = -torch.inf
        carried = torch.full_like(logits, -torch.inf).scatter_(-1, x.long()[..., None], 0.0)   # 0 at x, -inf elsewhere
        return torch.where((x == mask)[..., None], torch.log_softmax(logits, -1), carried)


#: Deprecated name of :class:`ChainModel` (the family is called "chain" throughout).
DiscreteModel = deprecated_alias("probdiff.models.DiscreteModel", ChainModel)
