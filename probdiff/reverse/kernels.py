r"""Step kernels: the law of one sampler step as a Pyro distribution over :math:`x_s` (THEORY.md §12).

A stochastic step from ``t`` to ``s < t`` is a draw from a distribution that depends on the state
:math:`x_t`. Each class here *is* that distribution (``log_prob``, ``sample``, ``batch_shape ==
(batch,)``, ``event_shape == x.shape[1:]``, usable as a ``pyro.sample`` site) and also carries
:meth:`StepKernel.draw`, the draw from a ``torch.Generator`` that the samplers use. Because the step *is*
``kernel.draw(generator)``, the sample a solver returns and the log-probability that
:func:`probdiff.sample` (``log_prob=True``) and :func:`probdiff.path_log_prob` report cannot disagree.

Dimensions are independent given :math:`x_t` in every kernel (the samplers act per element), so each kernel
is a product over the event and its ``log_prob`` sums the per-element terms.

* :class:`GaussianKernel` — :math:`\mathcal N(\mu, \mathrm{diag}(\varsigma^2))`: Euler–Maruyama and the
  ancestral (DDPM / DDIM with :math:`\eta > 0`) steps of Gaussian processes.
* :class:`CategoricalKernel` — per-element categorical over ``0 .. S-1``: the exact step of a Markov chain
  (mixture of posteriors, Austin et al. 2021, Eq. (4)).
* :class:`MixtureKernel` — the same step of an interpolating chain (uniform noise, masking, their mixture) as a
  :class:`~probdiff.processes.posterior_mixture.PosteriorMixture`: O(1) per element plus a reference to the
  model's output; the dense probabilities only when asked.
* :class:`BinomialKernel` — :math:`x_t + \mathrm{Bin}(n, p)`: Blackout's binomial bridge.
* :class:`CappedPoisson` — :math:`x_t + \min(\mathrm{Poisson}(r), c)`: Blackout tau-leaping with the
  births capped at ``max_count``; the cap collects the Poisson tail,
  :math:`P(N \ge c) = P(c, r)` (the regularised lower incomplete gamma function).
"""

from __future__ import annotations

import abc
import math
from collections.abc import Callable

import pyro.distributions as dist
import torch
from torch.distributions import constraints

from ..processes.blackout import ShiftedBinomial
from ..processes.matrices import sample_categorical

__all__ = ["StepKernel", "GaussianKernel", "CategoricalKernel", "MixtureKernel", "BinomialKernel", "CappedPoisson", "RoundedBinomialKernel"]

_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


class StepKernel(dist.TorchDistribution, abc.ABC):
    """Base of step kernels: a distribution over ``x_s`` of shape ``(batch, *event)``, factorised over the
    event, with :meth:`draw` (the solver's draw) and :meth:`element_log_prob` (per-element terms).

    Subclasses implement :meth:`element_log_prob` (``-inf`` outside the support, never NaN) and
    :meth:`draw`; ``log_prob`` sums the first over the event and ``sample`` is ``draw`` from torch's global
    generator.
    """

    arg_constraints: dict = {}
    has_enumerate_support = False

    def __init__(self, shape: torch.Size, validate_args=None):
        shape = torch.Size(shape)
        if len(shape) < 1:
            raise ValueError(f"a step kernel is over x of shape (batch, *event), got shape {tuple(shape)}")
        super().__init__(shape[:1], shape[1:], validate_args=False)

    @abc.abstractmethod
    def element_log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """Per-element log-probability (density for continuous kernels), shaped like ``value``."""

    @abc.abstractmethod
    def draw(self, generator: torch.Generator | None = None) -> torch.Tensor:
        """One draw of ``x_s`` (shape ``(batch, *event)``) from ``generator``: what the solver's step returns."""

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        shape = self.batch_shape + self.event_shape
        if value.shape[-len(shape):] != shape:
            raise ValueError(f"value must end in shape {tuple(shape)} (batch, *event), got {tuple(value.shape)}")
        lp = self.element_log_prob(value)
        n = len(self.event_shape)
        return lp.sum(tuple(range(-n, 0))) if n else lp

    def sample(self, sample_shape=torch.Size()):
        with torch.no_grad():
            draws = [self.draw(None) for _ in range(math.prod(sample_shape))]
        if not sample_shape:
            return draws[0]
        return torch.stack(draws).reshape(torch.Size(sample_shape) + self.batch_shape + self.event_shape)

    def expand(self, batch_shape, _instance=None):
        if torch.Size(batch_shape) != self.batch_shape:
            raise ValueError(f"{type(self).__name__} cannot be expanded from batch shape {tuple(self.batch_shape)}")
        return self


class GaussianKernel(StepKernel):
    r"""Independent Gaussian :math:`\mathcal N(\mu, \varsigma^2)` per element; ``draw`` is
    :math:`\mu + \varsigma z` with :math:`z \sim \mathcal N(0, I)` from the generator.

    Args:
        loc: :math:`\mu`, shape ``(batch, *event)``.
        scale: :math:`\varsigma \ge 0`, broadcastable to ``loc``; an element with scale 0 is a point mass
            at ``loc`` (log-probability 0 there, ``-inf`` elsewhere), as on a step onto :math:`\sigma_s = 0`.
    """

    support = constraints.real
    has_rsample = True

    def __init__(self, loc: torch.Tensor, scale, validate_args=None):
        self.loc = loc
        self.scale = torch.as_tensor(scale, dtype=loc.dtype, device=loc.device).expand_as(loc)
        super().__init__(loc.shape)

    @property
    def mean(self):
        return self.loc

    @property
    def variance(self):
        return self.scale**2

    def element_log_prob(self, value):
        z = (value - self.loc) / self.scale
        lp = -0.5 * z**2 - torch.log(self.scale) - _HALF_LOG_2PI
        # An element with scale 0 (a step onto sigma = 0) is a point mass: log-probability 0 at loc.
        point = torch.where(value == self.loc, torch.zeros_like(lp), torch.full_like(lp, -math.inf))
        return torch.where(self.scale > 0, lp, point)

    def draw(self, generator=None):
        z = torch.randn(self.loc.shape, generator=generator, device=self.loc.device, dtype=self.loc.dtype)
        return self.loc + self.scale * z

    def rsample(self, sample_shape=torch.Size()):
        shape = torch.Size(sample_shape) + self.loc.shape
        return self.loc + self.scale * torch.randn(shape, device=self.loc.device, dtype=self.loc.dtype)


class CategoricalKernel(StepKernel):
    """Independent categorical per element over the states ``0 .. S-1``.

    Args:
        logits: ``(batch, *event, S)`` unnormalised log-probabilities (normalised here).
        dtype: dtype of the drawn states (that of the chain's state tensor).
        sampler: ``sampler(generator) -> x_s``, the step's own draw of this same law when the solver draws it
            another way than by inverting the categorical (x_0 first and then the posterior, or Poisson jump
            counts); default: a categorical draw from ``probs``.
    """

    def __init__(self, logits: torch.Tensor, dtype: torch.dtype = torch.long, validate_args=None, *,
                 sampler: Callable[[torch.Generator | None], torch.Tensor] | None = None):
        self.logits = logits - torch.logsumexp(logits, dim=-1, keepdim=True)
        self.state_dtype = dtype
        self.sampler = sampler
        super().__init__(logits.shape[:-1])

    @property
    def support(self):
        return constraints.integer_interval(0, self.logits.shape[-1] - 1)

    @property
    def probs(self) -> torch.Tensor:
        return torch.exp(self.logits)

    def element_log_prob(self, value):
        k = value.to(self.logits.dtype)
        inside = (k >= 0) & (k <= self.logits.shape[-1] - 1) & (k == torch.round(k))
        idx = torch.where(inside, k, torch.zeros_like(k)).long()
        logits = self.logits.expand(value.shape + self.logits.shape[-1:])
        lp = torch.gather(logits, -1, idx[..., None])[..., 0]
        return torch.where(inside, lp, torch.full_like(lp, -math.inf))

    def draw(self, generator=None):
        if self.sampler is not None:
            return self.sampler(generator)
        return sample_categorical(self.probs, generator).to(self.state_dtype)


class MixtureKernel(StepKernel):
    """The mixture-of-posteriors step of an interpolating chain, per element a
    :class:`~probdiff.processes.posterior_mixture.PosteriorMixture` (``log_prob`` O(1) per element, ``draw``
    one read of the model's output); :attr:`probs` and :attr:`logits` are dense, formed when asked.

    Args:
        law: the per-element law, batch shape ``(batch, *event)``.
        dtype: dtype of the drawn states (that of the chain's state tensor).
    """

    def __init__(self, law, dtype: torch.dtype = torch.long, validate_args=None):
        self.law = law
        self.state_dtype = dtype
        super().__init__(law.batch_shape)

    @property
    def support(self):
        return self.law.support

    @property
    def probs(self) -> torch.Tensor:
        return self.law.probs

    @property
    def logits(self) -> torch.Tensor:
        return self.law.logits

    def element_log_prob(self, value):
        return self.law.log_prob(value)

    def draw(self, generator=None):
        return self.law.draw(generator).to(self.state_dtype)


class BinomialKernel(StepKernel):
    r""":math:`x_s = x_t + B`, :math:`B \sim \mathrm{Bin}(n, p)` per element (Blackout's bridge): the
    element law is the process' :class:`~probdiff.processes.ShiftedBinomial` (exact for tiny :math:`p` or
    :math:`1 - p`), folded over the event, with a draw from a generator.

    Args:
        shift: :math:`x_t`, shape ``(batch, *event)`` (float).
        total_count: :math:`n \ge 0`, integer-valued, shaped like ``shift``.
        log_p, log_q: :math:`\log p` and :math:`\log(1 - p)`, broadcastable to ``shift``.
        dtype: dtype of the drawn states.
    """

    def __init__(self, shift, total_count, log_p, log_q, dtype=None, validate_args=None):
        self.law = ShiftedBinomial(shift, total_count, log_p, log_q, validate_args=False)
        self.state_dtype = dtype or shift.dtype
        super().__init__(self.law.batch_shape)

    @property
    def support(self):
        return self.law.support

    @property
    def mean(self):
        return self.law.mean

    def element_log_prob(self, value):
        return self.law.log_prob(value)

    def draw(self, generator=None):
        probs = torch.exp(self.law.log_p)
        births = torch.binomial(self.law.total_count.contiguous(), probs.contiguous(), generator=generator)
        return (self.law.shift + births).to(self.state_dtype)


class RoundedBinomialKernel(StepKernel):
    r""":math:`x_s = x_t + B`, :math:`B \sim \mathrm{Bin}(\min(N, c), p)` with a randomly rounded count
    :math:`N = \ell + \mathrm{Bernoulli}(w)` per element: the mixture
    :math:`(1 - w)\,\mathrm{Bin}(\min(\ell, c), p) + w\,\mathrm{Bin}(\min(\ell + 1, c), p)` (Blackout's bridge
    with the estimated missing count rounded by :class:`~probdiff.solvers.StochasticRounding`; ``w = 0`` is a
    deterministic rounding). The draw rounds first, then draws the births, from one generator.

    Args:
        shift: :math:`x_t` (float), shape ``(batch, *event)``.
        low, weight_high: :math:`\ell` (integer-valued) and :math:`w \in [0, 1)`, shaped like ``shift``.
        cap: :math:`c`, the most births possible (``max_count - x_t``).
        log_p, log_q: :math:`\log p`, :math:`\log(1 - p)`, broadcastable to ``shift``.
        dtype: dtype of the drawn states.
    """

    def __init__(self, shift, low, weight_high, cap, log_p, log_q, dtype=None, validate_args=None):
        self.low = BinomialKernel(shift, torch.minimum(low, cap), log_p, log_q, dtype)
        self.high = BinomialKernel(shift, torch.minimum(low + 1, cap), log_p, log_q, dtype)
        self.weight_high, self.base, self.cap = weight_high, low, cap
        self.state_dtype = dtype or shift.dtype
        super().__init__(self.low.batch_shape + self.low.event_shape)

    @property
    def support(self):
        return self.high.support

    @property
    def mean(self):
        return (1 - self.weight_high) * self.low.mean + self.weight_high * self.high.mean

    def element_log_prob(self, value):
        w = self.weight_high
        return torch.logaddexp(torch.log1p(-w) + self.low.element_log_prob(value),
                               torch.log(w) + self.high.element_log_prob(value))

    def draw(self, generator=None):
        w = self.weight_high
        count = self.base + (torch.rand(w.shape, generator=generator, dtype=w.dtype, device=w.device) < w).to(w.dtype)
        probs = torch.exp(self.low.law.log_p)
        births = torch.binomial(torch.minimum(count, self.cap).contiguous(), probs.contiguous(), generator=generator)
        return (self.low.law.shift + births).to(self.state_dtype)


class CappedPoisson(StepKernel):
    r""":math:`x_s = x_t + \min(N, c)`, :math:`N \sim \mathrm{Poisson}(r)` per element (Blackout tau-leaping
    with the count capped at ``max_count``). :math:`P(x_s = x_t + c) = P(N \ge c) = P(c, r)`, the
    regularised lower incomplete gamma function (``torch.special.gammainc``).

    Args:
        shift: :math:`x_t` (float), shape ``(batch, *event)``.
        rate: :math:`r \ge 0`, shaped like ``shift``.
        cap: :math:`c \ge 0`, integer-valued, shaped like ``shift``.
        dtype: dtype of the drawn states.
    """

    def __init__(self, shift, rate, cap, dtype=None, validate_args=None):
        self.shift, self.rate, self.cap = shift, rate.expand_as(shift), cap.expand_as(shift)
        self.state_dtype = dtype or shift.dtype
        super().__init__(shift.shape)

    @property
    def support(self):
        return constraints.integer_interval(self.shift, self.shift + self.cap)

    def element_log_prob(self, value):
        k = value.to(self.shift.dtype) - self.shift
        inside = (k >= 0) & (k <= self.cap) & (k == torch.round(k))
        kk = torch.where(inside, k, torch.zeros_like(k))
        below = torch.xlogy(kk, self.rate) - self.rate - torch.lgamma(kk + 1)
        # P(N >= c) for c >= 1; at c = 0 every draw is capped to 0, probability 1.
        tail = torch.log(torch.special.gammainc(self.cap.clamp_min(1), self.rate))
        tail = torch.where(self.cap > 0, tail, torch.zeros_like(tail))
        lp = torch.where(kk < self.cap, below, tail)
        return torch.where(inside, lp, torch.full_like(lp, -math.inf))

    def draw(self, generator=None):
        births = torch.poisson(self.rate.contiguous(), generator=generator)
        return (self.shift + torch.minimum(births, self.cap)).to(self.state_dtype)
