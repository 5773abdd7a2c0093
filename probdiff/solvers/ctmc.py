r"""Samplers for Markov chains: the exact ancestral step, tau-leaping and the Blackout binomial bridge.

* ``Ancestral`` (:meth:`~probdiff.reverse.ChainReverse.ancestral_step`): draw :math:`x_s` from the mixture of
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


from ..reverse.chain import BlackoutReverse
from .base import CTMCSolver, Step

__all__ = ["TauLeaping", "BinomialBridge"]


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

    def kernel_and_denoised(self, reverse, x, t, s):
        """The leap's law, :meth:`reverse.tau_leap_kernel <probdiff.reverse.ChainReverse.tau_leap_kernel>`
        (closed form for Blackout: capped Poisson births), and :math:`E[x_0|x_t]`."""
        return reverse.tau_leap_kernel(x, t, s)


class BinomialBridge(CTMCSolver):
    """Blackout's binomial bridge: births ~ Binomial(round(y_hat), (p_s - p_t)/(1 - p_t)).

    The count is capped at ``max_count - x`` (no state above ``max_count``). With the exact missing count
    this is the exact posterior :math:`q(n_s|n_t,n_0)`.
    """

    order = 1

    def check(self, reverse) -> None:
        super().check(reverse)
        if not isinstance(reverse, BlackoutReverse):
            raise ValueError(f"BinomialBridge needs the reverse of a Blackout process (probdiff.reverse(model)), "
                             f"got {type(reverse).__name__}")

    def step(self, reverse, x, t, s, state, generator) -> Step:
        kernel, denoised = reverse.bridge_kernel(x, t, s)
        return Step(kernel.draw(generator), denoised, state, 1)

    def kernel_and_denoised(self, reverse, x, t, s):
        """The bridge's law, :meth:`reverse.bridge_kernel <probdiff.reverse.BlackoutReverse.bridge_kernel>` (a
        shifted binomial), and :math:`E[n_0|n_t]`."""
        return reverse.bridge_kernel(x, t, s)
