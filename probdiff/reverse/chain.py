r"""Reverse-time processes of Markov chains, registered with :func:`probdiff.reverse.build_reverse`.

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

import functools

import torch

from .._util import expand_like
from ..models.chain import CategoricalModel
from ..processes.blackout import Blackout
from ..processes.chain import MarkovChain
from ..processes.interpolating import InterpolatingChain
from .base import ReverseProcess, build_reverse
from .jumps import clamped_jump_probs, draw_clamped_jumps
from .kernels import CappedPoisson, CategoricalKernel, MixtureKernel, RoundedBinomialKernel

__all__ = ["ChainReverse", "BlackoutReverse", "step_kernel"]


@functools.singledispatch
def step_kernel(process: MarkovChain, x0_probs: torch.Tensor, x: torch.Tensor, t, s):
    """The exact step's law :math:`p(x_s|x_t) = \\sum_{x_0} p(x_0|x_t)\\,q(x_s|x_t,x_0)` as a
    :class:`~probdiff.reverse.kernels.StepKernel`: dense categorical in general, registered per chain family
    (an :class:`~probdiff.InterpolatingChain` gives a :class:`~probdiff.reverse.kernels.MixtureKernel`)."""
    return CategoricalKernel(process.reverse_kernel_log_probs(x0_probs, x, s, t), x.dtype)


@step_kernel.register(InterpolatingChain)
def _interpolating_step_kernel(process, x0_probs, x, t, s):
    return MixtureKernel(process.reverse_kernel(x0_probs, x, s, t), x.dtype)


class ChainReverse(ReverseProcess):
    """The reverse-time chain of a :class:`~probdiff.MarkovChain` driven by a model of p(x_0 | x_t)."""

    def __init__(self, process: MarkovChain, model, noise: float = 1.0):
        super().__init__(process, model, noise)
        if self.noise != 1.0:
            raise ValueError(f"noise must be 1 for a Markov chain (its time reversal is unique), got {noise}")

    def x0_probs(self, x: torch.Tensor, t) -> torch.Tensor:
        """The model's :math:`p(x_0 \\mid x_t = x)`, shape ``(batch, *event, S)``."""
        if not isinstance(self.model, CategoricalModel):
            raise ValueError(f"model must provide x0_probs(x, t) (a CategoricalModel, e.g. the Empirical "
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

    def ancestral_step(self, x, t, s, eta, generator):
        """Draw :math:`x_s` from the mixture of posteriors :math:`p(x_s|x_t) = \\sum_{x_0} p(x_0|x_t)\\,q(x_s|x_t,x_0)`
        (Austin et al., D3PM 2021, Eq. (4)); exact for any step with the exact model. ``eta`` must be 1 (a
        chain has no deterministic variant). The draw is :meth:`ancestral_kernel`'s."""
        kernel, denoised = self.ancestral_kernel(x, t, s, eta)
        return kernel.draw(generator), denoised

    def ancestral_kernel(self, x, t, s, eta=1.0):
        """The law of :meth:`ancestral_step`: :func:`step_kernel` of the process (a
        :class:`~probdiff.reverse.kernels.CategoricalKernel` with probabilities :math:`p(x_s|x_t)` per element,
        structured for interpolating chains), and :math:`E[x_0|x_t]`. Returns ``(kernel, denoised)``."""
        if eta != 1.0:
            raise ValueError(f"eta must be 1 (or None with noise 1) for a Markov chain, got {eta}")
        probs = self.x0_probs(x, t)
        denoised = probs @ torch.arange(probs.shape[-1], dtype=probs.dtype, device=probs.device)
        return step_kernel(self.process, probs, x, t, s), denoised

    def _step_times(self, x: torch.Tensor, t, s, dtype):
        s, t = self.process.check_times(s, t, x)
        return t.to(dtype), s.to(dtype)

    def tau_leap(self, x, t, s, generator):
        """Tau-leaping: for every target ``y`` draw :math:`N_y \\sim \\mathrm{Poisson}(\\hat R_t(x\\to y)(t-s))` and
        move to :math:`x + \\sum_y N_y (y - x)`, clamped to ``0 .. S-1`` (Campbell et al. 2022, §4.1).
        Returns ``(x_s, denoised)``; the draw is :meth:`tau_leap_kernel`'s (without computing its law)."""
        means, probs = self._jump_means(x, t, s)
        states = torch.arange(probs.shape[-1], dtype=probs.dtype, device=probs.device)
        return draw_clamped_jumps(x, means, generator), probs @ states

    def _jump_means(self, x, t, s):
        """``(means, probs)``: expected jump counts :math:`\\hat R_t(x\\to y)(t-s)` to every ``y`` (0 at ``y = x``)
        and the model's :math:`p(x_0|x_t)`."""
        probs = self.x0_probs(x, t)
        t_, s_ = self._step_times(x, t, s, probs.dtype)
        rates = self.process.reverse_rates(probs, x, t_)
        off = rates.scatter(-1, x.long()[..., None], 0.0).clamp_min(0.0)
        return off * expand_like(t_ - s_, off), probs

    def tau_leap_kernel(self, x, t, s):
        """The law of :meth:`tau_leap`: the clamped sum of Poisson jumps as a categorical over ``0 .. S-1`` per
        element (:func:`~probdiff.reverse.jumps.clamped_jump_probs`, Panjer's recursion), whose draw is the
        step's own Poisson draw (:func:`~probdiff.reverse.jumps.draw_clamped_jumps`), and :math:`E[x_0|x_t]`.
        Returns ``(kernel, denoised)``."""
        means, probs = self._jump_means(x, t, s)
        logits = torch.log(clamped_jump_probs(x, means)).to(means.dtype)
        kernel = CategoricalKernel(logits, x.dtype, sampler=functools.partial(draw_clamped_jumps, x, means))
        states = torch.arange(probs.shape[-1], dtype=probs.dtype, device=probs.device)
        return kernel, probs @ states


class BlackoutReverse(ChainReverse):
    """Reverse of :class:`~probdiff.Blackout`: births at rate :math:`E[n_0 - n_t|n_t]\\,p_t/(1-p_t)`.

    Works with a model of the mean births (:class:`~probdiff.BlackoutModel`) or of the full posterior
    (``x0_probs``, e.g. the Empirical oracle), from which the mean is derived.
    """

    def mean_births(self, x: torch.Tensor, t) -> torch.Tensor:
        r""":math:`E[n_0 - n_t \mid n_t = x]` from the model, zero at ``max_count`` (no photon can be
        missing there)."""
        y = self.model.mean_births(x, t)
        return torch.where(x >= self.process.max_count, torch.zeros_like(y), y)

    def expected_x0(self, x, t):
        y = self.mean_births(x, t)
        return x.to(y.dtype) + y

    def birth_rate(self, x: torch.Tensor, t) -> torch.Tensor:
        """:math:`\\hat R_t(n \\to n+1) = E[n_0 - n_t|n_t = n]\\,p_t/(1 - p_t)`."""
        y = self.mean_births(x, t)
        t = self.process.check_time(t, x).to(y.dtype)
        return y * expand_like(self.process.birth_weight(t), y)

    def rates(self, x, t):
        """Closed form: only ``n -> n + 1`` has a positive rate."""
        birth = self.birth_rate(x, t)
        s = self.process.num_states
        up = (x.long() + 1).clamp_max(s - 1)[..., None]
        out = torch.zeros(*x.shape, s, dtype=birth.dtype, device=birth.device)
        out = out.scatter(-1, up, birth[..., None])
        return out.scatter(-1, x.long()[..., None], -birth[..., None])


    def bridge(self, x: torch.Tensor, t, s) -> tuple[torch.Tensor, torch.Tensor]:
        """Estimated missing photons :math:`\\hat y` and the bridge probability :math:`(p_s - p_t)/(1 - p_t)`."""
        y = self.mean_births(x, t)
        t_, s_ = self._step_times(x, t, s, y.dtype)
        log_p, _ = self.process.bridge_log_probs(s_, t_)
        return y, expand_like(torch.exp(log_p), x)

    def bridge_kernel(self, x: torch.Tensor, t, s, split=None):
        r"""The law of :class:`~probdiff.solvers.BinomialBridge`'s step: :math:`n_s = n_t + B`,
        :math:`B \sim \mathrm{Bin}(\min(N, \mathrm{max\_count} - n_t), (p_s - p_t)/(1 - p_t))` with :math:`N` an
        integer rounding of :math:`\hat y`: ``split(y) -> (low, weight_high)`` gives
        :math:`N = \mathrm{low} + \mathrm{Bernoulli}(\mathrm{weight\_high})` (default: nearest rounding, the
        paper's rule). A :class:`~probdiff.reverse.kernels.RoundedBinomialKernel`, and :math:`E[n_0|n_t]`.
        Returns ``(kernel, denoised)``."""
        y = self.mean_births(x, t)
        t_, s_ = self._step_times(x, t, s, y.dtype)
        log_p, log_q = self.process.bridge_log_probs(s_, t_)
        xf = x.to(y.dtype)
        low, weight_high = (torch.round(y), torch.zeros_like(y)) if split is None else split(y)
        return RoundedBinomialKernel(xf, low, weight_high, self.process.max_count - xf, expand_like(log_p, x),
                                     expand_like(log_q, x), x.dtype), xf + y

    def tau_leap_kernel(self, x: torch.Tensor, t, s):
        r"""The law of :meth:`tau_leap`: :math:`n_s = n_t + \min(N, \mathrm{max\_count} - n_t)`,
        :math:`N \sim \mathrm{Poisson}(\hat y\,(p_s - p_t)/(1 - p_t))` (a
        :class:`~probdiff.reverse.kernels.CappedPoisson`), and :math:`E[n_0|n_t]`. Returns
        ``(kernel, denoised)``."""
        y, prob = self.bridge(x, t, s)
        xf = x.to(y.dtype)
        return CappedPoisson(xf, y * prob, self.process.max_count - xf, x.dtype), xf + y

    def tau_leap(self, x, t, s, generator):
        """Births over the step :math:`\\sim \\mathrm{Poisson}(\\hat y\\,(p_s - p_t)/(1 - p_t))`, capped at
        ``max_count``. Returns ``(x_s, denoised)``."""
        kernel, denoised = self.tau_leap_kernel(x, t, s)
        return kernel.draw(generator), denoised


@build_reverse.register
def _chain_reverse(process: MarkovChain, model, noise: float) -> ChainReverse:
    return ChainReverse(process, model, noise)


@build_reverse.register
def _blackout_reverse(process: Blackout, model, noise: float) -> BlackoutReverse:
    return BlackoutReverse(process, model, noise)
