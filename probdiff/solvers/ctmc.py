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

from ..reverse.chain import BlackoutReverse
from .base import CTMCSolver, Step

__all__ = ["TauLeaping", "BinomialBridge", "Rounding", "StochasticRounding", "NearestRounding"]


class TauLeaping(CTMCSolver):
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


class Rounding(abc.ABC):
    """How :class:`BinomialBridge` turns the estimated missing count :math:`\\hat y \\ge 0` into an integer."""

    @abc.abstractmethod
    def __call__(self, y: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """An integer-valued tensor of ``y``'s shape and dtype."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class StochasticRounding(Rounding):
    r""":math:`\lfloor\hat y\rfloor + \mathrm{Bernoulli}(\hat y - \lfloor\hat y\rfloor)`: unbiased,
    :math:`E[N] = \hat y`, so the expected births over a step are :math:`\hat y\,(p_s-p_t)/(1-p_t)`, the
    reverse rate integrated over the step; the sampler converges to the data law as the grid refines
    (as tau-leaping does). The default."""

    def __call__(self, y, generator):
        low = torch.floor(y)
        return low + (torch.rand(y.shape, generator=generator, dtype=y.dtype, device=y.device) < y - low).to(y.dtype)


class NearestRounding(Rounding):
    r"""Round :math:`\hat y` to the nearest integer (Santos et al., "Blackout Diffusion", ICML 2023, Alg. 2).

    **Inconsistent**: a pixel whose expected number of missing photons stays below 0.5 never gets a birth, so
    even with the exact model the sampled law does not converge to the data law as the grid refines (on a
    3-point data set one point gets about 37% of the samples instead of 33%, at 500 and at 2000 steps).
    Kept to reproduce the paper."""

    def __call__(self, y, generator):
        return torch.round(y)


class BinomialBridge(CTMCSolver):
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
        y, prob = reverse.bridge(x, t, s)
        xf = x.to(y.dtype)
        count = torch.minimum(self.rounding(y, generator), reverse.process.max_count - xf)
        births = torch.binomial(count, prob.expand_as(count).contiguous(), generator=generator)
        return Step((xf + births).to(x.dtype), xf + y, state, 1)
