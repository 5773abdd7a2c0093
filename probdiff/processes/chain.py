r"""Discrete-state forward processes: continuous-time Markov chains acting independently per dimension.

A :class:`MarkovChain` is declared by a per-dimension generator :math:`R_t = \beta(t) R` on ``S`` states
(rows sum to zero, off-diagonals non-negative); everything else is derived (THEORY.md §5):

.. math::

    P(s, t) = \exp\big((B(t) - B(s)) R\big),\quad B(t) = \int_0^t \beta, \qquad
    q(x_t = j \mid x_0 = i) = P(t_{min}, t)[i, j],

    q(x_s \mid x_t, x_0) \propto P(t_{min}, s)[x_0, x_s]\, P(s, t)[x_s, x_t],

    \hat R_t(x \to y) = R_t(y \to x) \sum_{x_0} p(x_0 \mid x_t = x)\, \frac{q_t(y \mid x_0)}{q_t(x \mid x_0)} .

References: Campbell et al., "A Continuous Time Framework for Discrete Denoising Models" (NeurIPS 2022),
Prop. 1 (reverse rates) and §4 (tau-leaping); Austin et al., "Structured Denoising Diffusion Models in
Discrete State-Spaces" (D3PM, NeurIPS 2021), Eqs. (1)-(5) (posterior, mixture-of-posteriors step) and
App. A (uniform and absorbing kernels).

States are integers ``0 .. S-1`` held in any dtype (integer dtypes recommended); every sample this
module draws is ``torch.long``. All queries return Pyro distributions with ``batch_shape == (batch,)`` and
``event_shape == x.shape[1:]``.
"""

from __future__ import annotations

import math
from typing import Callable

import pyro.distributions as dist
import torch

from .._util import (as_tensor, check_out, check_positive_int, check_prob_shape, check_probs, expand_like, sum_free,
                     to_event, write_out)
from .base import ForwardProcess
from .matrices import Batched, check_generator, sample_categorical, uniformized_expm, with_diagonal, xlogy_ratio

__all__ = ["MarkovChain"]


class MarkovChain(ForwardProcess):
    r"""A continuous-time Markov chain on ``S`` states per dimension, dimensions independent.

    Args:
        generator: the ``(S, S)`` base rate matrix :math:`R` (off-diagonals :math:`\ge 0`, rows sum to 0).
        beta: optional callable, the rate multiplier :math:`\beta(t) \ge 0` (default 1).
        integrated_beta: callable :math:`B(t) = \int_0^t\beta`; required with ``beta``.
        t_min, t_max: the time domain; data at ``t_min`` (``0`` allowed), reference at ``t_max``.
        validate_args: validate arguments (see :class:`ForwardProcess`).

    Subclasses may instead override :meth:`beta` and :meth:`integrated_beta`, and closed forms of
    :meth:`transition_matrix` / :meth:`log_transition_matrix` (tested against the generic matrix
    exponential). The generic path evaluates :math:`\exp(\Delta B\,R)` with a batched
    ``torch.linalg.matrix_exp`` in float64, once per distinct :math:`\Delta B` in the batch.

    Raises:
        ValueError: a generator that is not square, not finite, has a negative off-diagonal entry or a
            row that does not sum to zero.
    """

    def __init__(self, generator, *, beta: Callable | None = None, integrated_beta: Callable | None = None,
                 t_min: float = 0.0, t_max: float = 1.0, validate_args: bool | None = None):
        super().__init__(t_min, t_max, validate_args=validate_args)
        self._R = check_generator(generator)
        self._set_schedule(beta, integrated_beta)

    def _set_schedule(self, beta, integrated_beta) -> None:
        """Validate and store :math:`\\beta` and :math:`B`, and bound the increments of :math:`B`."""
        if (beta is None) != (integrated_beta is None):
            raise ValueError("beta and integrated_beta must be given together (B(t) = int_0^t beta)")
        if beta is not None and not (callable(beta) and callable(integrated_beta)):
            raise ValueError("beta and integrated_beta must be callables of t")
        self._beta, self._integrated_beta = beta, integrated_beta
        ends = torch.tensor([self.t_min, self.t_max], dtype=torch.float64)
        self._db_max = float(self._delta_b(ends[0], ends[1]))       # bounds every increment B(t) - B(s)

    # ---------------------------------------------------------------- declaration
    @property
    def num_states(self) -> int:
        """Number of states ``S`` per dimension."""
        return self._R.shape[0]

    @property
    def generator(self) -> torch.Tensor:
        """The base rate matrix :math:`R` (float64, CPU)."""
        return self._R

    def _generator_on(self, device, dtype) -> torch.Tensor:
        """:math:`R` on ``device`` in ``dtype``, copied once per (device, dtype) rather than once per step."""
        return self._cached_on("_R", device, dtype)

    def _cached_on(self, name: str, device, dtype) -> torch.Tensor:
        """The tensor attribute ``name`` on ``device`` in ``dtype``, copied once per (name, device, dtype)."""
        key = (name, torch.device(device), dtype)
        cache = self.__dict__.setdefault("_device_cache", {})
        if key not in cache:
            cache[key] = getattr(self, name).to(device=key[1], dtype=dtype)
        return cache[key]

    def beta(self, t) -> torch.Tensor:
        """Rate multiplier :math:`\\beta(t)`."""
        t = as_tensor(t)
        return torch.ones_like(t) if self._beta is None else as_tensor(self._beta(t), like=t)

    def integrated_beta(self, t) -> torch.Tensor:
        """:math:`B(t) = \\int_0^t \\beta(u)\\,du`."""
        t = as_tensor(t)
        return t if self._integrated_beta is None else as_tensor(self._integrated_beta(t), like=t)

    def rate(self, t) -> torch.Tensor:
        """The generator :math:`R_t = \\beta(t) R`, shape ``t.shape + (S, S)``."""
        t = as_tensor(t)
        return self.beta(t)[..., None, None] * self._generator_on(t.device, t.dtype)

    def _delta_b(self, s, t) -> torch.Tensor:
        s, t = torch.broadcast_tensors(as_tensor(s), as_tensor(t))
        return self.integrated_beta(t.to(torch.float64)) - self.integrated_beta(s.to(torch.float64))

    # ---------------------------------------------------------------- transition matrices
    def _matrix_of(self, db: torch.Tensor) -> torch.Tensor:
        """:math:`\\exp(\\Delta B\\,R)` for a vector ``db`` of float64 increments, shape ``(U, S, S)``.

        Generic path: :func:`uniformized_expm`. Subclasses with a closed form override this and
        :meth:`_log_matrix_of`.
        """
        return uniformized_expm(self._generator_on(db.device, torch.float64), db, self._db_max * (1 + 1e-9))

    def _log_matrix_of(self, db: torch.Tensor) -> torch.Tensor:
        """:math:`\\log\\exp(\\Delta B\\,R)` elementwise (``-inf`` where a transition is impossible)."""
        return torch.log(self._matrix_of(db))

    def matrices(self, s, t, *, log: bool = False) -> Batched:
        """:math:`P(s, t)` (or its log) for ``(batch,)`` times, computed once per distinct increment.

        Times expanded from one value (stride 0, as in a sampling step) give one matrix without
        ``torch.unique``, which would synchronise with the host on a GPU.
        """
        s, t = torch.broadcast_tensors(as_tensor(s), as_tensor(t))
        if s.dim() == 1 and s.shape[0] > 0 and s.stride(0) == 0 and t.stride(0) == 0:
            uniq = self._delta_b(s[:1], t[:1])
            inv = torch.zeros(s.shape[0], dtype=torch.long, device=s.device)
        else:
            uniq, inv = torch.unique(self._delta_b(s, t).reshape(-1), return_inverse=True)
        return Batched(self._log_matrix_of(uniq) if log else self._matrix_of(uniq), inv)

    def transition_matrix(self, s, t) -> torch.Tensor:
        """:math:`P(s, t) = \\exp((B(t)-B(s))R)`, shape ``(*batch, S, S)`` in ``t``'s dtype and device."""
        self.check_interval(s, t)
        shape = torch.broadcast_shapes(as_tensor(s).shape, as_tensor(t).shape)
        full = self.matrices(s, t).full()
        return full.reshape(*shape, *full.shape[-2:]).to(as_tensor(t).dtype)

    def log_transition_matrix(self, s, t) -> torch.Tensor:
        """:math:`\\log P(s, t)` elementwise (``-inf`` for impossible transitions)."""
        self.check_interval(s, t)
        shape = torch.broadcast_shapes(as_tensor(s).shape, as_tensor(t).shape)
        full = self.matrices(s, t, log=True).full()
        return full.reshape(*shape, *full.shape[-2:]).to(as_tensor(t).dtype)

    # ---------------------------------------------------------------- validation helpers
    def check_time(self, t, x: torch.Tensor | None = None, name: str = "t") -> torch.Tensor:
        """As :meth:`ForwardProcess.check_time`; with integer states a floating ``t`` keeps its dtype
        (float64 grids stay float64), other ``t`` get torch's default dtype."""
        if isinstance(x, torch.Tensor) and x.dim() >= 1 and not x.is_floating_point():
            floating = isinstance(t, torch.Tensor) and t.is_floating_point()
            dtype = t.dtype if floating else torch.get_default_dtype()
            x = torch.empty((x.shape[0], 0), dtype=dtype, device=x.device)
        t = super().check_time(t, x, name)
        if self._validate and t.dtype in (torch.float16, torch.bfloat16):
            raise TypeError(f"{name} must be float32 or float64 for a Markov chain, got {t.dtype}")
        return t

    def check_states(self, name: str, x, like: torch.Tensor | None = None) -> None:
        """Validate states ``x`` (as :meth:`~probdiff.ForwardProcess.check_data`, plus integer values in
        ``0 .. S-1``); ``ValueError`` naming ``name`` otherwise. No-op when validation is off."""
        if not self._validate:
            return
        if not isinstance(x, torch.Tensor):
            raise ValueError(f"{name} must be a tensor of integer states, got {type(x).__name__}")
        self.check_data(name, x, like)
        if x.is_floating_point() and bool((x != torch.round(x)).any()):
            raise ValueError(f"{name} must hold integer states in 0..{self.num_states - 1}, got non-integer values")
        if x.is_complex() or x.dtype == torch.bool:
            raise ValueError(f"{name} must hold integer states in 0..{self.num_states - 1}, got dtype {x.dtype}")
        if bool((x < 0).any()) or bool((x >= self.num_states).any()):
            raise ValueError(f"{name} must hold integer states in 0..{self.num_states - 1}, "
                             f"got values in [{float(x.min())}, {float(x.max())}]")

    def check_state(self, name: str, x) -> None:
        """A state of the chain: :meth:`check_states`."""
        self.check_states(name, x)

    def check_x0_probs(self, x0_probs, x: torch.Tensor, name: str = "x0_probs", *, sums=None) -> None:
        """Validate ``p(x_0 | x_t)``: finite, normalised, shape ``(*x.shape, S)`` (when validation is on).
        ``sums``: ``x0_probs``' row sums if the caller has them (saves a read of ``x0_probs``); a
        caller computing them from ``x0_probs`` first checks its shape with :meth:`check_x0_probs_shape`."""
        if self._validate:
            if sums is None:            # (with sums, the caller has checked x with check_x0_probs_shape)
                self.check_states("x", x)
            check_probs(name, x0_probs, self.num_states, shape=(*x.shape, self.num_states), sums=sums)

    def check_x0_probs_shape(self, x0_probs, x: torch.Tensor, name: str = "x0_probs") -> None:
        """The O(1)-per-token part of :meth:`check_x0_probs`: the states ``x`` and the shape of ``x0_probs``."""
        if self._validate:
            self.check_states("x", x)
            check_prob_shape(name, x0_probs, self.num_states, shape=(*x.shape, self.num_states))

    def _index(self, x: torch.Tensor) -> torch.Tensor:
        return x.long()

    @staticmethod
    def _time_of(x: torch.Tensor) -> torch.dtype:
        return x.dtype if x.is_floating_point() else torch.get_default_dtype()

    def _categorical(self, logits: torch.Tensor, event_dims: int):
        # torch's support check reshapes with -1: it fails on an empty batch, which has nothing to check
        kwargs = {} if self._validate and logits.numel() else {"validate_args": False}
        return to_event(dist.Categorical(logits=logits, **kwargs), event_dims)

    # ---------------------------------------------------------------- the four queries
    def _from_data(self, t: torch.Tensor, *, log: bool = False) -> Batched:
        """:math:`P(t_{min}, t)` for ``(batch,)`` times."""
        return self.matrices(torch.tensor(self.t_min, dtype=t.dtype, device=t.device).expand_as(t), t, log=log)

    def marginal(self, x0: torch.Tensor, t):
        """q(x_t | x_0): per dimension the row ``x_0`` of :math:`P(t_{min}, t)`."""
        self.check_states("x0", x0)
        t = self.check_time(t, x0)
        logits = self._from_data(t, log=True).rows(self._index(x0)).to(t.dtype)
        return self._categorical(logits, x0.dim() - 1)

    def sample_marginal(self, x0: torch.Tensor, t, *, generator: torch.Generator | None = None) -> torch.Tensor:
        """A draw of :math:`x_t \\sim q(x_t \\mid x_0)` as ``torch.long``, reproducible from ``generator``."""
        self.check_states("x0", x0)
        t = self.check_time(t, x0)
        return sample_categorical(self._from_data(t).rows(self._index(x0)), generator)

    def transition(self, xs: torch.Tensor, s, t):
        """q(x_t | x_s): per dimension the row ``x_s`` of :math:`P(s, t)`."""
        self.check_states("xs", xs)
        s, t = self.check_times(s, t, xs)
        logits = self.matrices(s, t, log=True).rows(self._index(xs)).to(t.dtype)
        return self._categorical(logits, xs.dim() - 1)

    def posterior_logits(self, x0: torch.Tensor, xt: torch.Tensor, s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Unnormalised :math:`\\log q(x_s|x_t,x_0) = \\log P(t_{min},s)[x_0,x_s] + \\log P(s,t)[x_s,x_t]`
        (float64)."""
        return (self._from_data(s, log=True).rows(self._index(x0))
                + self.matrices(s, t, log=True).cols(self._index(xt)))

    def posterior(self, x0: torch.Tensor, xt: torch.Tensor, s, t):
        """q(x_s | x_t, x_0) ∝ P(t_min, s)[x_0, x_s] P(s, t)[x_s, x_t] per dimension (Bayes).

        Raises:
            ValueError: ``x_t`` cannot be reached from ``x_0`` (the posterior is undefined).
        """
        s, t = self._posterior_times(x0, xt, s, t)
        logits = self.posterior_logits(x0, xt, s, t)
        self._check_reachable(torch.isneginf(logits).all(-1))
        return self._categorical(logits.to(t.dtype), x0.dim() - 1)

    def _posterior_times(self, x0: torch.Tensor, xt: torch.Tensor, s, t):
        """The validated ``(s, t)`` of a posterior query, after checking the states ``x0`` and ``xt``."""
        self.check_states("x0", x0)
        self.check_states("xt", xt, like=x0)
        return self.check_times(s, t, x0)

    def _check_reachable(self, unreachable: torch.Tensor) -> None:
        """Refuse a posterior query where some ``x_t`` cannot be reached from its ``x_0`` (when validating)."""
        if self._validate and bool(unreachable.any()):
            raise ValueError("xt must be reachable from x0 at time t (q(x_t | x_0) > 0); the posterior is undefined")

    def prior_probs(self, *, device=None, dtype=None) -> torch.Tensor:
        r"""The reference law :math:`\pi = \tfrac1S\mathbf 1^\top P(t_{min}, t_{max})` per dimension.

        This is the law at ``t_max`` of data drawn uniformly over the states; it is the stationary law
        for :class:`UniformChain`, nearly the mask state for :class:`AbsorbingChain` and nearly the
        empty image for Blackout, and (unlike a point mass) gives a finite prior KL in the ELBO.
        """
        dtype = dtype or torch.get_default_dtype()
        t = torch.tensor([self.t_max], dtype=torch.float64, device=device)
        logp = self._from_data(t, log=True).full()[0]
        return torch.exp(torch.logsumexp(logp, dim=0) - math.log(self.num_states)).to(dtype)

    def prior(self, event_shape, *, device=None, dtype=None):
        """The reference at ``t_max`` (:meth:`prior_probs` in every dimension), ``batch_shape == ()``."""
        event_shape = torch.Size(event_shape)
        probs = self.prior_probs(device=device, dtype=dtype)
        logits = torch.log(probs).expand(*event_shape, self.num_states)
        return self._categorical(logits, len(event_shape))

    def sample_prior(self, num_samples: int, event_shape, *, generator=None, device=None, dtype=None):
        """Draws from :meth:`prior` as ``torch.long`` states, reproducible from ``generator``."""
        check_positive_int("num_samples", num_samples)
        probs = self.prior_probs(device=device, dtype=torch.float64)
        probs = probs.expand(int(num_samples), *event_shape, self.num_states)
        return sample_categorical(probs, generator)

    # ---------------------------------------------------------------- derived reverse-time quantities
    def marginal_log_likelihood(self, xt: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        r""":math:`\log q_t(x_t \mid x_0 = k)` for every state ``k``, shape ``(batch, *event, S)`` (float64):
        the column ``x_t`` of :math:`\log P(t_{min}, t)`, what the exact model of a data set weighs."""
        return self._from_data(t, log=True).cols(self._index(xt))

    def prior_kl(self, x0: torch.Tensor, observed: torch.Tensor | None = None) -> torch.Tensor:
        r""":math:`\mathrm{KL}(q(x_{t_{max}}|x_0)\,\|\,\pi)` summed over dimensions, float64, ``(batch,)``;
        ``observed`` (boolean, ``x0``'s shape): dimensions left out of the sum (held at the data, never noised)."""
        b = x0.shape[0]
        tmax = torch.full((b,), self.t_max, dtype=torch.float64, device=x0.device)
        logq = self._from_data(tmax, log=True).rows(self._index(x0)).double()
        logpi = torch.log(self.prior_probs(device=x0.device, dtype=torch.float64))
        per = xlogy_ratio(torch.exp(logq), logq, logpi.expand_as(logq))              # per dimension
        return sum_free(per, observed)

    def _mixture_weights(self, x0_probs: torch.Tensor, xt: torch.Tensor, t: torch.Tensor):
        r"""Log of :math:`w(x_0)/q_t(x_t|x_0)` with the weights restricted to the :math:`x_0` that can
        reach :math:`x_t` and renormalised, plus the row maximum (for a stable matrix product)."""
        logq = self.marginal_log_likelihood(xt, t).to(x0_probs.dtype)
        ok = torch.isfinite(logq)
        w = torch.where(ok, x0_probs, torch.zeros_like(x0_probs))
        w = w / w.sum(-1, keepdim=True).clamp_min(torch.finfo(w.dtype).tiny)
        a = torch.where(ok & (w > 0), torch.log(w) - logq, torch.full_like(w, -math.inf))
        amax = a.amax(-1, keepdim=True).clamp_min(torch.finfo(a.dtype).min)
        return a, amax

    def reverse_kernel_log_probs(self, x0_probs: torch.Tensor, xt: torch.Tensor, s, t, *,
                                 out: torch.Tensor | None = None) -> torch.Tensor:
        r"""Log of the mixture of posteriors :math:`p(x_s|x_t) = \sum_{x_0} p(x_0|x_t)\,q(x_s|x_t,x_0)`.

        Computed as :math:`P(s,t)[x_s,x_t]\sum_{x_0}\frac{p(x_0|x_t)}{q(x_t|x_0)}P(t_{min},s)[x_0,x_s]`
        (Austin et al. 2021, Eq. (4)), per dimension, with :math:`p(x_0|x_t)` restricted to the
        :math:`x_0` that can reach :math:`x_t`. Shape ``(batch, *event, S)`` in ``x0_probs``' dtype.
        The product over dimensions is the exact joint step only as the step shrinks (one dimension
        jumps at a time in continuous time; Campbell et al. 2022, §4). ``out``: a preallocated result to write
        into (contiguous, that shape and dtype, not ``x0_probs``' memory), as every chain's dense queries take.
        """
        s, t = self.check_times(s, t, xt)
        self.check_x0_probs(x0_probs, xt)
        check_out(out, x0_probs.shape, x0_probs.dtype, x0_probs.device, x0_probs)
        a, amax = self._mixture_weights(x0_probs, xt, t)
        mix = self._from_data(s).left_mul(torch.exp(a - amax))
        logst = self.matrices(s, t, log=True).cols(self._index(xt)).to(x0_probs.dtype)
        log_mix = torch.log(mix) + amax + logst
        return write_out(out, log_mix - torch.logsumexp(log_mix, dim=-1, keepdim=True))

    def sample_elbo_times(self, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Times for the continuous-time ELBO from uniforms ``u`` in (0, 1): ``(t, 1/density)``, float64.
        Generic: uniform on ``[t_min, t_max]``; chains with a schedule place them where the noise changes."""
        span = self.t_max - self.t_min
        return self.t_min + span * u.to(torch.float64), torch.full_like(u, span, dtype=torch.float64)

    def sample_reverse_kernel(self, x0_probs: torch.Tensor, xt: torch.Tensor, s, t,
                              generator: torch.Generator | None = None) -> torch.Tensor:
        """A draw of :math:`x_s` from :meth:`reverse_kernel_log_probs` per dimension (``torch.long``)."""
        return sample_categorical(torch.exp(self.reverse_kernel_log_probs(x0_probs, xt, s, t)), generator)

    def reverse_rates(self, x0_probs: torch.Tensor, x: torch.Tensor, t, *,
                      out: torch.Tensor | None = None) -> torch.Tensor:
        r"""Reverse rates :math:`\hat R_t(x\to y)` for every ``y`` (Campbell et al. 2022, Prop. 1).

        :math:`\hat R_t(x\to y) = R_t(y\to x)\sum_{x_0} p(x_0|x_t=x)\,q_t(y|x_0)/q_t(x|x_0)` per dimension
        for ``y != x``; the entry at ``y == x`` is the negative total rate, so rows sum to zero.
        Shape ``(batch, *event, S)``; written into ``out`` if given (as :meth:`reverse_kernel_log_probs`).
        """
        t = self.check_time(t, x)
        self.check_x0_probs(x0_probs, x)
        check_out(out, x0_probs.shape, x0_probs.dtype, x0_probs.device, x0_probs)
        a, amax = self._mixture_weights(x0_probs, x, t)
        ratio = self._from_data(t).left_mul(torch.exp(a - amax)) * torch.exp(amax)
        gen = self._generator_on(x.device, x0_probs.dtype)
        into_x = gen.T[self._index(x)]
        into_x = into_x * expand_like(self.beta(t).to(x0_probs.dtype), into_x)
        return write_out(out, with_diagonal(into_x * ratio, x))

    def conditional_reverse_rates(self, x0: torch.Tensor, x: torch.Tensor, t) -> torch.Tensor:
        """Reverse rates of the chain conditioned on the data, :math:`R_t(y\\to x) q_t(y|x_0)/q_t(x|x_0)`."""
        probs = torch.nn.functional.one_hot(self._index(x0), self.num_states).to(self._time_of(x))
        return self.reverse_rates(probs, x, t)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(num_states={self.num_states}, t_min={self.t_min:g}, t_max={self.t_max:g})"
