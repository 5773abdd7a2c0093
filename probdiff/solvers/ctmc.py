r"""Samplers for Markov chains: the exact ancestral step, tau-leaping and the Blackout binomial bridge.

* ``Ancestral`` (:meth:`~probdiff.reverse.ChainReverse.ancestral_step`): draw :math:`x_s` from the mixture of
  posteriors :math:`p(x_s|x_t) = \sum_{x_0} p(x_0|x_t)\,q(x_s|x_t,x_0)` (Austin et al., D3PM 2021, Eq. (4));
  exact for any step size given the exact :math:`p(x_0|x_t)`.
* :class:`TauLeaping`: hold the reverse rates fixed over the step and fire a Poisson number of jumps of
  each kind (Campbell et al., NeurIPS 2022, §4.1); for ordinal states the jumps add up. For Blackout the
  births over a step have mean :math:`\hat y\,(p_s - p_t)/(1 - p_t)`.
* :class:`BinomialBridge` (Blackout): births :math:`\sim\mathrm{Bin}(N, (p_s-p_t)/(1-p_t))`, the exact
  posterior bridge with the missing count replaced by an integer :math:`N` of mean :math:`\hat y`
  (:class:`StochasticRounding`, the default; the paper's nearest rounding, :class:`NearestRounding`, is
  inconsistent) (Santos et al., "Blackout Diffusion", ICML 2023, Alg. 2).

Everything runs in torch on the state's device; no host round trip per step. States stay integers in the
dtype of the start; each step reports the model's :math:`E[x_0|x_t]` as ``denoised``.
"""

from __future__ import annotations

import abc

import torch

from ..models.chain import SUBSModel
from ..reverse.chain import BlackoutReverse, step_kernel
from .base import CTMCSolver, HasKernel, Step

__all__ = ["TauLeaping", "BinomialBridge", "Rounding", "StochasticRounding", "NearestRounding", "MaskedAncestral"]


class TauLeaping(CTMCSolver, HasKernel):
    """Tau-leaping for ordinal chains: Poisson jump counts with the rates frozen at the step's start.

    Generic chains: for every target ``y`` draw :math:`N_y \\sim \\mathrm{Poisson}(\\hat R_t(x\\to y)(t-s))`
    and move to :math:`x + \\sum_y N_y (y - x)`, clamped to ``0 .. S-1`` (Campbell et al. 2022, §4.1).
    The jump law is the reverse process' :meth:`~probdiff.reverse.ChainReverse.tau_leap` (Blackout: births
    only).
    """

    order = 1

    def step(self, reverse, x, t, s, state, generator) -> Step:
        x_new, denoised = reverse.tau_leap(x, t, s, generator)
        return Step(x_new, denoised, state, 1)

    def kernel_and_denoised(self, reverse, x, t, s):
        """The leap's law, :meth:`reverse.tau_leap_kernel <probdiff.reverse.ChainReverse.tau_leap_kernel>`
        (closed form for Blackout: capped Poisson births), and :math:`E[x_0|x_t]`."""
        return reverse.tau_leap_kernel(x, t, s)


class Rounding(abc.ABC):
    """How :class:`BinomialBridge` turns the estimated missing count :math:`\\hat y \\ge 0` into an integer."""

    @abc.abstractmethod
    def split(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(low, weight_high)``: the rounding is ``low + Bernoulli(weight_high)`` elementwise (the law the
        bridge's kernel mixes over)."""

    def __call__(self, y: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """A draw of the rounding: an integer-valued tensor of ``y``'s shape and dtype."""
        low, w = self.split(y)
        return low + (torch.rand(y.shape, generator=generator, dtype=y.dtype, device=y.device) < w).to(y.dtype)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class StochasticRounding(Rounding):
    r""":math:`\lfloor\hat y\rfloor + \mathrm{Bernoulli}(\hat y - \lfloor\hat y\rfloor)`: unbiased,
    :math:`E[N] = \hat y`, so the expected births over a step are :math:`\hat y\,(p_s-p_t)/(1-p_t)`, the
    reverse rate integrated over the step; the sampler converges to the data law as the grid refines
    (as tau-leaping does). The default."""

    def split(self, y):
        low = torch.floor(y)
        return low, y - low


class NearestRounding(Rounding):
    r"""Round :math:`\hat y` to the nearest integer (Santos et al., "Blackout Diffusion", ICML 2023, Alg. 2).

    **Inconsistent**: a pixel whose expected number of missing photons stays below 0.5 never gets a birth, so
    even with the exact model the sampled law does not converge to the data law as the grid refines (on a
    3-point data set one point gets about 37% of the samples instead of 33%, at 500 and at 2000 steps).
    Kept to reproduce the paper."""

    def split(self, y):
        return torch.round(y), torch.zeros_like(y)


class BinomialBridge(CTMCSolver, HasKernel):
    """Blackout's binomial bridge: births ~ Binomial(N, (p_s - p_t)/(1 - p_t)), N an integer rounding of y_hat.

    Args:
        rounding: how :math:`\\hat y` becomes the count :math:`N` (:class:`StochasticRounding` by default,
            consistent; :class:`NearestRounding` is the paper's choice and is not).

    The count is capped at ``max_count - x`` (no state above ``max_count``). With the exact missing count
    this is the exact posterior :math:`q(n_s|n_t,n_0)`.
    """

    order = 1

    def __init__(self, rounding: Rounding | None = None):
        rounding = StochasticRounding() if rounding is None else rounding
        if not isinstance(rounding, Rounding):
            raise ValueError(f"rounding must be a probdiff.solvers.Rounding (StochasticRounding() or "
                             f"NearestRounding()), got {rounding!r}")
        self.rounding = rounding

    def check(self, reverse) -> None:
        super().check(reverse)
        if not isinstance(reverse, BlackoutReverse):
            raise ValueError(f"BinomialBridge needs the reverse of a Blackout process (probdiff.reverse(model)), "
                             f"got {type(reverse).__name__}")

    def step(self, reverse, x, t, s, state, generator) -> Step:
        kernel, denoised = reverse.bridge_kernel(x, t, s, self.rounding.split)
        return Step(kernel.draw(generator), denoised, state, 1)

    def kernel_and_denoised(self, reverse, x, t, s):
        """The bridge's law, :meth:`reverse.bridge_kernel <probdiff.reverse.BlackoutReverse.bridge_kernel>` with
        this solver's rounding (a mixture of two shifted binomials), and :math:`E[n_0|n_t]`."""
        return reverse.bridge_kernel(x, t, s, self.rounding.split)


class MaskedAncestral(CTMCSolver, HasKernel):
    r"""Exact ancestral steps of masked diffusion that skip the network while no token changes.

    The step is the mixture of posteriors drawn as :meth:`~probdiff.MarkovChain.sample_reverse_kernel` does
    (draw :math:`x_0` from the model, then :math:`x_s` from the posterior). With a
    :class:`~probdiff.SUBSModel` that does not use time (``time_conditioned=False``), :math:`p(x_0 \mid x_t)`
    depends on :math:`x_t` alone, so the network runs only on the samples that a step changed, and not at all
    when it changed none: with more steps than tokens most steps change nothing (Sahoo et al., MDLM, NeurIPS
    2024, §4.1, caching). Steps that skip the network entirely show in :attr:`probdiff.Solution.nfe` (steps
    minus ``nfe``).
    """

    order = 1

    def check(self, reverse) -> None:
        super().check(reverse)
        model = reverse.model
        if not (isinstance(model, SUBSModel) and not model.time_conditioned):
            raise ValueError("MaskedAncestral reuses p(x0 | x_t) across steps, which is exact only for a "
                             "SUBSModel(net, chain, time_conditioned=False); got "
                             f"{type(model).__name__}; use Ancestral")

    def step(self, reverse, x, t, s, state, generator) -> Step:
        if state is None:
            probs, nfe = reverse.x0_probs(x, t), 1
        else:                                   # evaluate the network on the samples that changed, if any
            changed = (state[0] != x).reshape(x.shape[0], -1).any(1)
            probs, nfe = state[1], 0
            if bool(changed.any()):
                t_changed = t if t.dim() == 0 else t[changed]
                probs = probs.clone()
                probs[changed] = reverse.x0_probs(x[changed], t_changed)
                nfe = 1
        x_new = reverse.process.sample_reverse_kernel(probs, x, s, t, generator).to(x.dtype)
        denoised = probs @ torch.arange(probs.shape[-1], dtype=probs.dtype, device=probs.device)
        return Step(x_new, denoised, (x, probs), nfe)

    def kernel_and_denoised(self, reverse, x, t, s):
        """The step's law given ``x``: the mixture of posteriors, the same law as
        :class:`~probdiff.solvers.Ancestral`'s kernel (:func:`probdiff.reverse.chain.step_kernel`), which draws
        as the step draws, and :math:`E[x_0|x_t]`. It evaluates the network (no cache: a kernel is a function
        of ``x`` alone)."""
        probs = reverse.x0_probs(x, t)
        kernel = step_kernel(reverse.process, probs, x, t, s)
        return kernel, probs @ torch.arange(probs.shape[-1], dtype=probs.dtype, device=probs.device)
