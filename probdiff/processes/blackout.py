r"""Blackout diffusion: the pure-death chain on photon counts, with its binomial closed forms.

Each of the :math:`n_0` photons of a pixel dies independently at rate 1, so with :math:`p_t = e^{-t}`
(Santos et al., "Blackout Diffusion: Generative Diffusion Models in Discrete-State Spaces", ICML 2023,
§3 and Eqs. (6)-(9); THEORY.md §5):

.. math::

    n_t \mid n_0 \sim \mathrm{Bin}(n_0, p_t),\qquad n_t \mid n_s \sim \mathrm{Bin}(n_s, p_t/p_s),\qquad
    n_s \mid n_t, n_0 = n_t + \mathrm{Bin}\big(n_0 - n_t, \tfrac{p_s - p_t}{1 - p_t}\big).

As a :class:`~probdiff.MarkovChain` its generator is :math:`R[n, n-1] = n`, :math:`R[n,n] = -n`; the
closed forms override the generic matrix exponential and are tested equal to it for small
``max_count``. Probabilities are computed in log space with ``expm1`` so that ``t -> 0`` and
``t -> t_max`` stay exact.
"""

from __future__ import annotations

import math

import torch
from pyro.distributions import TorchDistribution
from torch.distributions import constraints

from .._util import as_tensor, check_out, check_positive, expand_like, logit_half_range, to_event, write_out
from .chain import MarkovChain
from .matrices import with_diagonal

__all__ = ["Blackout", "ShiftedBinomial"]


def _log1m_exp(neg: torch.Tensor) -> torch.Tensor:
    """:math:`\\log(1 - e^{-u})` for ``neg = u >= 0`` (``-inf`` at ``u = 0``)."""
    return torch.log(-torch.expm1(-neg))


def _binom_log_pmf(k: torch.Tensor, n: torch.Tensor, log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """:math:`\\log\\binom nk + k\\log p + (n-k)\\log q` with 0·log 0 = 0 and ``-inf`` off the support."""
    ok = (k >= 0) & (k <= n)
    k_, n_ = torch.where(ok, k, torch.zeros_like(k)), torch.where(ok, n, torch.zeros_like(n))
    zero = torch.zeros((), dtype=log_p.dtype, device=log_p.device)
    out = (torch.lgamma(n_ + 1) - torch.lgamma(k_ + 1) - torch.lgamma(n_ - k_ + 1)
           + torch.where(k_ > 0, k_ * log_p, zero) + torch.where(n_ - k_ > 0, (n_ - k_) * log_q, zero))
    return torch.where(ok, out, torch.full_like(out, -math.inf))


class ShiftedBinomial(TorchDistribution):
    r"""``shift + Binomial(total_count, p)`` with :math:`\log p` and :math:`\log(1-p)` given separately.

    Passing both logarithms keeps the law exact when :math:`p` or :math:`1-p` is tiny (Blackout near
    ``t = 0`` or ``t = t_max``). Samples are ``torch.long`` (like :class:`~pyro.distributions.Categorical`).

    Args:
        shift, total_count: integer-valued tensors (any dtype).
        log_p, log_q: :math:`\log p` and :math:`\log(1-p)`, floating tensors broadcastable with the counts.
    """

    arg_constraints = {}
    has_enumerate_support = False

    def __init__(self, shift, total_count, log_p, log_q, validate_args=None):
        log_p, log_q = torch.broadcast_tensors(torch.as_tensor(log_p), torch.as_tensor(log_q))
        dtype = log_p.dtype
        shift = torch.as_tensor(shift, device=log_p.device).to(dtype)
        total_count = torch.as_tensor(total_count, device=log_p.device).to(dtype)
        self.shift, self.total_count, self.log_p, self.log_q = torch.broadcast_tensors(shift, total_count, log_p, log_q)
        super().__init__(self.shift.shape, torch.Size(), validate_args=validate_args)

    @constraints.dependent_property(is_discrete=True, event_dim=0)
    def support(self):
        return constraints.integer_interval(self.shift, self.shift + self.total_count)

    @property
    def mean(self) -> torch.Tensor:
        return self.shift + self.total_count * torch.exp(self.log_p)

    @property
    def variance(self) -> torch.Tensor:
        return self.total_count * torch.exp(self.log_p + self.log_q)

    def expand(self, batch_shape, _instance=None):
        batch_shape = torch.Size(batch_shape)
        return ShiftedBinomial(self.shift.expand(batch_shape), self.total_count.expand(batch_shape),
                               self.log_p.expand(batch_shape), self.log_q.expand(batch_shape),
                               validate_args=False)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        value = torch.as_tensor(value, device=self.log_p.device).to(self.log_p.dtype)
        integer = value == torch.round(value)
        lp = _binom_log_pmf(value - self.shift, self.total_count, self.log_p, self.log_q)
        return torch.where(integer, lp, torch.full_like(lp, -math.inf))

    def sample(self, sample_shape=torch.Size()) -> torch.Tensor:
        shape = self._extended_shape(sample_shape)
        with torch.no_grad():
            n = self.total_count.expand(shape)
            births = torch.binomial(n.contiguous(), torch.exp(self.log_p).expand(shape).contiguous())
            return (self.shift.expand(shape) + births).long()


class Blackout(MarkovChain):
    r"""Blackout diffusion on counts ``0 .. max_count`` with survival probability :math:`p_t = e^{-t}`.

    Args:
        max_count: largest count (255 for 8-bit images, 16 for scikit-learn digits).
        t_max: end of time; :math:`p_{t_{max}} = e^{-t_{max}}` (15 for 8-bit images, 10 for binary).
        validate_args: validate arguments.

    The reference at ``t_max`` is :meth:`MarkovChain.prior_probs`, the law of :math:`n_{t_{max}}` for a
    uniformly drawn :math:`n_0`: the empty image up to probability about
    :math:`\text{max\_count}\,e^{-t_{max}}/2` per pixel, with full support so the ELBO stays finite.
    """

    def __init__(self, max_count: int = 255, t_max: float = 15.0, *, validate_args: bool | None = None):
        if isinstance(max_count, bool) or int(max_count) != max_count or max_count < 1:
            raise ValueError(f"max_count must be an integer >= 1, got {max_count!r}")
        check_positive("t_max", t_max)
        n = int(max_count) + 1
        gen = torch.zeros((n, n), dtype=torch.float64)
        k = torch.arange(1, n, dtype=torch.float64)
        gen[torch.arange(1, n), torch.arange(0, n - 1)] = k
        gen[torch.arange(1, n), torch.arange(1, n)] = -k
        super().__init__(gen, t_min=0.0, t_max=t_max, validate_args=validate_args)

    @property
    def max_count(self) -> int:
        return self.num_states - 1

    # ---------------------------------------------------------------- schedule
    def keep_prob(self, t) -> torch.Tensor:
        """Survival probability :math:`p_t = e^{-t}`."""
        return torch.exp(-as_tensor(t))

    def birth_weight(self, t) -> torch.Tensor:
        """:math:`p_t / (1 - p_t) = 1/(e^t - 1)`: birth rate per expected missing photon."""
        return 1.0 / torch.expm1(as_tensor(t))

    def bridge_log_probs(self, s, t) -> tuple[torch.Tensor, torch.Tensor]:
        r""":math:`\log\frac{p_s - p_t}{1 - p_t}` and :math:`\log\frac{1 - p_s}{1 - p_t}` for ``s < t``:
        the probability that a photon missing at ``t`` is back at ``s`` (and not)."""
        s, t = as_tensor(s), as_tensor(t)
        denom = _log1m_exp(t)
        return -s + _log1m_exp(t - s) - denom, _log1m_exp(s) - denom

    def elbo_time_range(self) -> tuple[float, float]:
        r"""``(t_lo, t_max)`` of the continuous-time ELBO, :math:`t_{lo} = -\log(1 - e^{-t_{max}})` (the logit
        observation interval of Santos et al. 2023; the decoder term covers :math:`[0, t_{lo}]`)."""
        return -math.log1p(-math.exp(-self.t_max)), self.t_max

    def sample_elbo_times(self, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        r"""Times on :math:`[t_{lo}, t_{max}]` for the continuous-time ELBO from uniforms ``u`` in [0, 1):
        ``(t, 1/density)``, float64.

        An equal mixture of two proposals, ``u < 1/2`` drawing from the first: logit-uniform in :math:`p_t`
        (density :math:`1/(L(1-p_t))`, Santos et al.'s observation law, where the ELBO weight
        :math:`p_t/(1-p_t)` divided by the density is at most :math:`L`) and uniform in :math:`p_t` (density
        :math:`p_t/(p_{lo} - p_{max})`, the schedule variable in which MD4 integrates masking, Shi et al. 2024,
        which puts the draws where photons actually go missing). The mixture's weight stays bounded by
        :math:`2L`; on the 3-point oracle of the tests and on the digits it halves the per-draw spread of the
        logit proposal alone (``docs/benchmarks/blackout.txt``).
        """
        u = torch.as_tensor(u, dtype=torch.float64)
        t_lo, t_max = self.elbo_time_range()
        half = logit_half_range(t_max)
        p_lo, p_max = math.exp(-t_lo), math.exp(-t_max)
        first = u < 0.5
        v = torch.where(first, 2 * u, 2 * u - 1)
        t_logit = torch.nn.functional.softplus((1 - 2 * v) * half)
        t_surv = -torch.log(p_lo - (p_lo - p_max) * v)
        t = torch.where(first, t_logit, t_surv).clamp(t_lo, t_max)
        return t, 1 / self.elbo_time_density(t)

    def elbo_time_density(self, t: torch.Tensor) -> torch.Tensor:
        """The density on :math:`[t_{lo}, t_{max}]` of :meth:`sample_elbo_times`, float64."""
        t = torch.as_tensor(t, dtype=torch.float64)
        t_lo, t_max = self.elbo_time_range()
        half = logit_half_range(t_max)
        p_lo, p_max = math.exp(-t_lo), math.exp(-t_max)
        return 0.5 / (2 * half * -torch.expm1(-t)) + 0.5 * torch.exp(-t) / (p_lo - p_max)

    # ---------------------------------------------------------------- closed forms
    def reverse_rates(self, x0_probs: torch.Tensor, x: torch.Tensor, t, *,
                      out: torch.Tensor | None = None) -> torch.Tensor:
        r"""Closed form of :meth:`MarkovChain.reverse_rates` for the death process: the only reverse move is a
        birth :math:`n \to n+1`, at rate :math:`E[n_0 - n \mid n_t = n]\,p_t/(1-p_t)` with :math:`p(n_0|n_t)`
        restricted to :math:`n_0 \ge n` (Santos et al. 2023, "Blackout Diffusion", Eq. (9)). The generic
        matrix path divides binomial probabilities that underflow at small ``t``; this one does not. Written into
        ``out`` if given (as :meth:`MarkovChain.reverse_rates`)."""
        t = self.check_time(t, x)
        self.check_x0_probs(x0_probs, x)
        check_out(out, x0_probs.shape, x0_probs.dtype, x0_probs.device, x0_probs)
        if self._validate and bool((t <= 0).any()):
            raise ValueError("t must be > 0 for Blackout's reverse rates (they diverge as p_t -> 1 at t = 0)")
        dtype = x0_probs.dtype
        states = torch.arange(self.num_states, device=x.device, dtype=dtype)
        n = x.to(dtype)[..., None]
        w = torch.where(states >= n, x0_probs, torch.zeros_like(x0_probs))
        births = (w * (states - n)).sum(-1) / w.sum(-1).clamp_min(torch.finfo(dtype).tiny)
        rate = births * expand_like(self.birth_weight(t).to(dtype), births)
        up = (x.long() + 1).clamp_max(self.max_count)[..., None]
        return write_out(out, with_diagonal(torch.zeros_like(x0_probs).scatter(-1, up, rate[..., None]), x))

    def _log_matrix_of(self, db):
        r""":math:`\log P[i,j] = \log\mathrm{Bin}(j; i, e^{-\Delta})` for increments ``db``, ``(U, S, S)``."""
        d = db[:, None, None]
        k = torch.arange(self.num_states, dtype=db.dtype, device=db.device)
        return _binom_log_pmf(k[None, :], k[:, None], -d, _log1m_exp(d))

    def _matrix_of(self, db):
        return torch.exp(self._log_matrix_of(db))

    def _counts(self, shift, total, log_p, log_q, event_dims):
        return to_event(ShiftedBinomial(shift, total, log_p, log_q, validate_args=self._validate), event_dims)

    def _expand(self, c: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return expand_like(c, x).expand(x.shape)

    def marginal(self, x0: torch.Tensor, t):
        """:math:`n_t \\mid n_0 \\sim \\mathrm{Bin}(n_0, e^{-t})`."""
        self.check_states("x0", x0)
        t = self.check_time(t, x0)
        return self._counts(torch.zeros_like(x0), x0, self._expand(-t, x0),
                            self._expand(_log1m_exp(t), x0), x0.dim() - 1)

    def sample_marginal(self, x0: torch.Tensor, t, *, generator: torch.Generator | None = None) -> torch.Tensor:
        """A draw of :math:`n_t \\sim \\mathrm{Bin}(n_0, e^{-t})` as ``torch.long`` (``torch.binomial``)."""
        self.check_states("x0", x0)
        t = self.check_time(t, x0)
        n = x0.to(t.dtype)
        return torch.binomial(n.contiguous(), self._expand(torch.exp(-t), x0).contiguous(), generator=generator).long()

    def transition(self, xs: torch.Tensor, s, t):
        """:math:`n_t \\mid n_s \\sim \\mathrm{Bin}(n_s, e^{-(t-s)})`."""
        self.check_states("xs", xs)
        s, t = self.check_times(s, t, xs)
        return self._counts(torch.zeros_like(xs), xs, self._expand(-(t - s), xs),
                            self._expand(_log1m_exp(t - s), xs), xs.dim() - 1)

    def posterior(self, x0: torch.Tensor, xt: torch.Tensor, s, t):
        """:math:`n_s \\mid n_t, n_0 = n_t + \\mathrm{Bin}(n_0 - n_t, (p_s - p_t)/(1 - p_t))`.

        Raises:
            ValueError: some ``xt > x0`` (a pure-death chain cannot gain photons).
        """
        self.check_states("x0", x0)
        self.check_states("xt", xt, like=x0)
        if self._validate and bool((xt > x0).any()):
            raise ValueError("xt must be <= x0 elementwise (counts only decrease in Blackout)")
        s, t = self.check_times(s, t, x0)
        log_p, log_q = self.bridge_log_probs(s, t)
        return self._counts(xt, x0 - xt, self._expand(log_p, x0), self._expand(log_q, x0),
                            x0.dim() - 1)

    def __repr__(self) -> str:
        return f"Blackout(max_count={self.max_count}, t_max={self.t_max:g})"
