r"""Samplers for Markov chains: the exact ancestral step, tau-leaping and the Blackout binomial bridge.

* ``Ancestral`` (registered for :class:`~probdiff.MarkovChain`): draw :math:`x_s` from the mixture of
  posteriors :math:`p(x_s|x_t) = \sum_{x_0} p(x_0|x_t)\,q(x_s|x_t,x_0)` (Austin et al., D3PM 2021, Eq. (4));
  exact for any step size given the exact :math:`p(x_0|x_t)`.
* :class:`TauLeaping`: hold the reverse rates fixed over the step and fire a Poisson number of jumps of
  each kind (Campbell et al., NeurIPS 2022, §4.1); for ordinal states the jumps add up. For Blackout the
  births over a step have mean :math:`\hat y\,(p_s - p_t)/(1 - p_t)`.
* :class:`BinomialBridge` (Blackout): births :math:`\sim\mathrm{Bin}(\mathrm{round}(\hat y), (p_s-p_t)/(1-p_t))`,
  the exact posterior bridge with the missing count replaced by its estimate (Santos et al.,
  "Blackout Diffusion", ICML 2023, Alg. 2).

Everything runs in torch on the state's device; no host round trip per step. States stay integers in the
dtype of the start; each step reports the model's :math:`E[x_0|x_t]` as ``denoised``.
"""

from __future__ import annotations

import torch

from .._registry import Registry
from ..processes.base import _expand
from ..processes.blackout import Blackout
from ..processes.discrete import MarkovChain, sample_categorical
from ..reverse_discrete import BlackoutReverse, ChainReverse
from .ancestral import Ancestral
from .base import Solver, Step

__all__ = ["TauLeaping", "BinomialBridge"]


def _check_chain(reverse, solver_name: str, kind=ChainReverse) -> None:
    if not isinstance(reverse, kind):
        raise ValueError(f"{solver_name} needs the reverse of a "
                         f"{'Blackout process' if kind is BlackoutReverse else 'MarkovChain'} "
                         f"(probdiff.reverse(process, model)), got {type(reverse).__name__}")


def _step_times(reverse, x: torch.Tensor, t, s, dtype):
    p = reverse.process
    s, t = p._times(s, t, x)
    return t.to(dtype), s.to(dtype)


@Ancestral.register(MarkovChain)
def _chain_ancestral(solver, reverse, x, t, s, state, generator) -> Step:
    """Exact mixture-of-posteriors step; ``eta`` must be 1 (a chain has no deterministic variant)."""
    if solver.noise_level(reverse) != 1.0:
        raise ValueError(f"eta must be 1 (or None with noise 1) for a Markov chain, got {solver.noise_level(reverse)}")
    _check_chain(reverse, "Ancestral")
    log_probs, probs = reverse.kernel_log_probs(x, t, s)
    x_new = sample_categorical(torch.exp(log_probs), generator).to(x.dtype)
    denoised = probs @ torch.arange(probs.shape[-1], dtype=probs.dtype, device=probs.device)
    return Step(x_new, denoised, state, 1)


class TauLeaping(Solver):
    """Tau-leaping for ordinal chains: Poisson jump counts with the rates frozen at the step's start.

    Generic chains: for every target ``y`` draw :math:`N_y \\sim \\mathrm{Poisson}(\\hat R_t(x\\to y)(t-s))`
    and move to :math:`x + \\sum_y N_y (y - x)`, clamped to ``0 .. S-1`` (Campbell et al. 2022, §4.1).
    Family-specific jump laws are registered in :attr:`TauLeaping.leaps` (Blackout: births only).
    """

    order = 1
    leaps = Registry("tau-leaping step")

    @classmethod
    def register(cls, process_type: type):
        """Decorator registering ``leap(reverse, x, t, s, generator) -> (x_s, denoised)`` for a family."""
        return cls.leaps.register(process_type)

    def check(self, reverse) -> None:
        _check_chain(reverse, "TauLeaping")
        self.leaps.lookup(reverse.process)

    def step(self, reverse, x, t, s, state, generator) -> Step:
        x_new, denoised = self.leaps.lookup(reverse.process)(reverse, x, t, s, generator)
        return Step(x_new, denoised, state, 1)


@TauLeaping.register(MarkovChain)
def _chain_leap(reverse, x, t, s, generator):
    probs = reverse.x0_probs(x, t)
    t_, s_ = _step_times(reverse, x, t, s, probs.dtype)
    rates = reverse.process.reverse_rates(probs, x, t_)
    off = rates.scatter(-1, x.long()[..., None], 0.0).clamp_min(0.0)
    jumps = torch.poisson(off * _expand(t_ - s_, off), generator=generator)
    states = torch.arange(rates.shape[-1], dtype=rates.dtype, device=rates.device)
    moved = x.to(rates.dtype) + (jumps * (states - x.to(rates.dtype)[..., None])).sum(-1)
    x_new = moved.clamp(0, rates.shape[-1] - 1).to(x.dtype)
    denoised = probs @ states
    return x_new, denoised


def _blackout_births(reverse, x, t, s):
    """Estimated missing photons and the bridge probability :math:`(p_s - p_t)/(1 - p_t)`."""
    y = reverse.mean_births(x, t)
    t_, s_ = _step_times(reverse, x, t, s, y.dtype)
    log_p, _ = reverse.process.bridge_log_probs(s_, t_)
    return y, _expand(torch.exp(log_p), x)


@TauLeaping.register(Blackout)
def _blackout_leap(reverse, x, t, s, generator):
    y, prob = _blackout_births(reverse, x, t, s)
    births = torch.poisson(y * prob, generator=generator)
    x_new = torch.minimum(x.to(y.dtype) + births, torch.full_like(y, reverse.process.max_count))
    return x_new.to(x.dtype), x.to(y.dtype) + y


class BinomialBridge(Solver):
    """Blackout's binomial bridge: births ~ Binomial(round(y_hat), (p_s - p_t)/(1 - p_t)).

    The count is capped at ``max_count - x`` (no state above ``max_count``). With the exact missing count
    this is the exact posterior :math:`q(n_s|n_t,n_0)`.
    """

    order = 1

    def check(self, reverse) -> None:
        _check_chain(reverse, "BinomialBridge", BlackoutReverse)

    def step(self, reverse, x, t, s, state, generator) -> Step:
        y, prob = _blackout_births(reverse, x, t, s)
        xf = x.to(y.dtype)
        count = torch.minimum(torch.round(y), reverse.process.max_count - xf)
        births = torch.binomial(count, prob.expand_as(count).contiguous(), generator=generator)
        return Step((xf + births).to(x.dtype), xf + y, state, 1)
