r"""Interpolating chains: uniform noise, masking and their mixture, in closed form at O(S) per token.

Each dimension forgets its state at rate :math:`r\beta(t)` and redraws it from a fixed law :math:`\pi`, so the
generator is :math:`R_t = r\beta(t)(\mathbf 1\pi^\top - I)` and, with
:math:`a(s, t) = e^{-r(B(t) - B(s))}` the probability of no jump in :math:`(s, t]`,

.. math::

    P(s, t) = a\,I + (1 - a)\,\mathbf 1\pi^\top ,\qquad q(x_t \mid x_0) = a_t\,\delta_{x_0} + (1 - a_t)\,\pi,
    \quad a_t = a(t_{min}, t)

(Austin et al., "Structured Denoising Diffusion Models in Discrete State-Spaces", NeurIPS 2021, App. A.2;
Shi et al., "Simplified and Generalized Masked Diffusion for Discrete Data" (MD4), NeurIPS 2024, Eq. (1);
Sahoo et al., "Simple and Effective Masked Diffusion Language Models" (MDLM), NeurIPS 2024, §3).
:math:`\pi` uniform is :class:`~probdiff.UniformChain`, a point mass on the mask
:class:`~probdiff.AbsorbingChain`, and a mix of the two :class:`~probdiff.UniformAbsorbingChain`
(:mod:`probdiff.processes.uniform_masking`). Every query is written through that structure (THEORY.md §5):

* marginal, transition and posterior are :class:`~probdiff.processes.atomic.AtomicCategorical` laws (at most
  two atoms and :math:`\pi`), O(1) per token to store, score and sample;
* with :math:`v(k) = p(x_0 = k \mid x_t)/q_t(x_t \mid k)` the reverse rates and the mixture-of-posteriors
  step are :math:`c_w\,p(x_0 = \cdot \mid x_t) + c_\pi\,\pi` off :math:`x_t`, two per-token coefficients and
  one fused pass over the model's ``(batch, *event, S)`` output;
* the prior KL is one O(S) sum shared by all tokens plus O(1) per token.

No ``S x S`` matrix is formed except by the generic paths (:meth:`~probdiff.MarkovChain.transition_matrix`,
:attr:`generator`), which the tests compare with these closed forms for small ``S``.
"""

from __future__ import annotations

import math
from typing import Callable

import torch

from .._util import check_finite, check_positive, check_positive_int, expand_like, sum_free, to_event
from .atomic import AtomicCategorical, sample_base
from .posterior_mixture import PosteriorMixture, block_sums, fill_rows
from .base import ForwardProcess
from .chain import MarkovChain
from .schedules import ChainSchedule, ConstantRate, DeclaredRate

__all__ = ["InterpolatingChain"]


def _log1mexp(neg_log: torch.Tensor) -> torch.Tensor:
    """:math:`\\log(1 - e^{x})` for ``x <= 0`` (``-inf`` at 0, 0 at ``-inf``)."""
    return torch.log(-torch.expm1(neg_log))


class InterpolatingChain(MarkovChain):
    r"""Generator :math:`r\beta(t)(\mathbf 1\pi^\top - I)`: jump at rate :math:`r\beta(t)` to a draw from ``pi``.

    Args:
        pi: the law redrawn from, ``(S,)`` non-negative and summing to 1 (``S >= 2``).
        rate: the constant :math:`r > 0`.
        schedule: a :class:`~probdiff.processes.schedules.ChainSchedule` (default: ``ConstantRate(1)``), e.g.
            ``Cosine()`` or ``LogLinear()`` of masked diffusion.
        beta, integrated_beta: alternatively callables :math:`\beta(t)` and :math:`B(t) = \int_0^t\beta`,
            as for :class:`~probdiff.MarkovChain`.
        t_min, t_max, validate_args: as for :class:`~probdiff.MarkovChain`; ``t_max`` defaults to the end of the
            schedule's domain (1 for the :math:`\alpha`-declared schedules), else 10.

    Costs: O(1) per token for ``marginal``, ``transition``, ``posterior`` and their samples; O(S) per token for
    the dense queries (``reverse_rates``, ``reverse_kernel_log_probs``, ``posterior_logits``), whose inputs
    or outputs are dense; O(S) once plus O(1) per token for :meth:`prior_kl`.
    """

    def __init__(self, pi, *, rate: float = 1.0, schedule: ChainSchedule | None = None, beta: Callable | None = None,
                 integrated_beta: Callable | None = None, t_min: float = 0.0, t_max: float | None = None,
                 validate_args: bool | None = None):
        if schedule is not None and not isinstance(schedule, ChainSchedule):
            raise ValueError(f"schedule must be a probdiff.processes.schedules.ChainSchedule, got {schedule!r}")
        declared = beta is not None or integrated_beta is not None
        if schedule is not None and declared:
            raise ValueError("give either schedule or beta and integrated_beta, not both")
        schedule = ConstantRate(1.0) if schedule is None else schedule
        end = None if declared else schedule.t_end
        t_max = (10.0 if end is None else end) if t_max is None else t_max
        if end is not None and t_max > end:
            raise ValueError(f"t_max must be <= {end} (the end of {schedule!r}), got {t_max}")
        ForwardProcess.__init__(self, t_min, t_max, validate_args=validate_args)
        pi = torch.as_tensor(pi, dtype=torch.float64).detach().cpu()
        if pi.dim() != 1 or pi.shape[0] < 2:
            raise ValueError(f"pi must be a vector of S >= 2 probabilities, got shape {tuple(pi.shape)}")
        check_finite("pi", pi)
        if bool((pi < 0).any()) or abs(float(pi.sum()) - 1.0) > 1e-9:
            raise ValueError(f"pi must be non-negative and sum to 1, got sum {float(pi.sum()):.6g}")
        check_positive("rate", rate)
        self.rate_scale = float(rate)
        self._log_pi = torch.log(pi)
        if declared:
            self._set_schedule(beta, integrated_beta)                 # validates the pair
            schedule = DeclaredRate(beta, integrated_beta)
        elif not (isinstance(schedule, ConstantRate) and schedule.value == 1.0):
            self._set_schedule(schedule.rate, schedule.integrated)
        else:
            self._set_schedule(None, None)                            # beta = 1: the fast default path
        #: The noise schedule (:mod:`probdiff.processes.schedules`).
        self.schedule = schedule

    def time_of_keep(self, log_keep) -> torch.Tensor:
        """The time ``t`` with :math:`\\log a(t_{min}, t) =` ``log_keep`` (the inverse of the schedule), float64."""
        b0 = self.integrated_beta(torch.tensor(self.t_min, dtype=torch.float64))
        b = b0 - torch.as_tensor(log_keep, dtype=torch.float64) / self.rate_scale
        return self.schedule.time_of(b, self.t_min, self.t_max)

    def sample_elbo_times(self, u):
        r"""Times uniform in :math:`\alpha_t = a(t_{min}, t)` between :math:`\alpha_{t_{max}}` and 1 (each step of
        noise equally likely), with :math:`1/p(t) = (1 - \alpha_{t_{max}})/(r\beta(t)\alpha_t)`; the weight
        :math:`-\alpha'/(1-\alpha)` of masked diffusion then becomes :math:`(1 - \alpha_{t_{max}})/(1 - \alpha_t)`."""
        a_end = math.exp(float(self.log_keep(self.t_min, self.t_max)))
        # the ends are kept open (by the spacing of doubles at 1): at u = 1 a schedule with alpha = 0 at t_max
        # has an infinite rate and a zero alpha, and at u = 0 the masked weight 1/(1 - alpha_t) is infinite
        u = u.to(torch.float64).clamp(2.0 ** -53, 1 - 2.0 ** -53)
        alpha = 1 - (1 - a_end) * u                                             # in (a_end, 1)
        t = self.time_of_keep(torch.log(alpha)).clamp(self.t_min, self.t_max)
        density = self.rate_scale * self.beta(t).double() * alpha / (1 - a_end)
        return t, 1 / density

    # ---------------------------------------------------------------- declaration
    @property
    def num_states(self) -> int:
        return self._log_pi.shape[0]

    @property
    def pi(self) -> torch.Tensor:
        """The law :math:`\\pi` redrawn from (float64, CPU)."""
        return torch.exp(self._log_pi)

    @property
    def _R(self) -> torch.Tensor:
        """:math:`r(\\mathbf 1\\pi^\\top - I)`, materialised only when asked (``S x S``: generic paths, small ``S``)."""
        n = self.num_states
        return self.rate_scale * (self.pi.expand(n, n) - torch.eye(n, dtype=torch.float64))

    def log_pi_on(self, device, dtype) -> torch.Tensor:
        """:math:`\\log\\pi` on ``device`` in ``dtype``, cached."""
        return self._cached_on("_log_pi", device, dtype)

    def log_keep(self, s, t) -> torch.Tensor:
        """:math:`\\log a(s, t) = -r(B(t) - B(s))`, the log-probability of no jump in :math:`(s, t]` (float64)."""
        return -self.rate_scale * self._delta_b(s, t)

    def _log_matrix_of(self, db):
        la = (-self.rate_scale * db)[:, None, None]
        off = _log1mexp(la) + self._log_pi.to(db.device)[None, None, :]
        eye = torch.eye(self.num_states, dtype=torch.bool, device=db.device)
        return torch.where(eye, torch.logaddexp(la, off), off)

    def _matrix_of(self, db):
        return torch.exp(self._log_matrix_of(db))

    # ---------------------------------------------------------------- per-token coefficients
    def _coef(self, c: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """A ``(batch,)`` coefficient broadcast to ``x``'s full shape."""
        return expand_like(c, x).expand(x.shape)

    def _keep(self, x, s, t, dtype):
        la = self._coef(self.log_keep(s, t), x).to(dtype)
        return la, _log1mexp(la)

    def _jump_law(self, x: torch.Tensor, s, t, dtype, event_dims: int):
        la, lb = self._keep(x, s, t, torch.float64)
        law = AtomicCategorical(x[..., None], la[..., None].to(dtype), lb.to(dtype),
                                self.log_pi_on(x.device, dtype), validate_args=False)
        return to_event(law, event_dims)

    # ---------------------------------------------------------------- the four queries
    def marginal(self, x0: torch.Tensor, t):
        """:math:`q(x_t|x_0) = a_t\\,\\delta_{x_0} + (1 - a_t)\\,\\pi` (O(1) per token)."""
        self.check_states("x0", x0)
        t = self.check_time(t, x0)
        return self._jump_law(x0, torch.full_like(t, self.t_min), t, t.dtype, x0.dim() - 1)

    def sample_marginal(self, x0: torch.Tensor, t, *, generator: torch.Generator | None = None) -> torch.Tensor:
        """Keep each token with probability :math:`a_t`, else draw it from :math:`\\pi` (``torch.long``)."""
        self.check_states("x0", x0)
        t = self.check_time(t, x0)
        return self._redraw(x0, torch.full_like(t, self.t_min), t, generator)

    def _redraw(self, x, s, t, generator):
        la, _ = self._keep(x, s, t, torch.float64)
        keep = torch.rand(x.shape, generator=generator, dtype=torch.float64, device=x.device) < torch.exp(la)
        return torch.where(keep, x.long(), sample_base(self._log_pi.to(x.device), x.shape, generator))

    def transition(self, xs: torch.Tensor, s, t):
        """:math:`q(x_t|x_s) = a(s,t)\\,\\delta_{x_s} + (1 - a(s,t))\\,\\pi` (O(1) per token)."""
        self.check_states("xs", xs)
        s, t = self.check_times(s, t, xs)
        return self._jump_law(xs, s, t, t.dtype, xs.dim() - 1)

    def _posterior_parts(self, x0, xt, s, t):
        r"""Atoms ``(x_0, x_t)``, their log-weights, the weight of :math:`\pi` and :math:`\log q_t(x_t|x_0)`.

        :math:`P_s[x_0, x_s]\,P_{st}[x_s, x_t]` expands into four terms: :math:`a_s a_{st}` on
        :math:`x_s = x_0 = x_t`, :math:`a_s(1-a_{st})\pi_{x_t}` on :math:`x_s = x_0`,
        :math:`(1-a_s)a_{st}\pi_{x_t}` on :math:`x_s = x_t` and :math:`(1-a_s)(1-a_{st})\pi_{x_t}\pi_{x_s}`.
        """
        f64 = torch.float64
        las, lbs = self._keep(x0, torch.full_like(s, self.t_min), s, f64)
        last, lbst = self._keep(x0, s, t, f64)
        lat, lbt = self._keep(x0, torch.full_like(t, self.t_min), t, f64)
        lpt = self._log_pi.to(x0.device)[xt.long()]
        same = x0.long() == xt.long()
        neg = torch.full_like(las, -math.inf)
        on_x0 = torch.logaddexp(torch.where(same, las + last, neg), las + lbst + lpt)
        weights = torch.stack([on_x0, lbs + last + lpt], -1)
        log_z = torch.logaddexp(torch.where(same, lat, neg), lbt + lpt)
        return torch.stack([x0.long(), xt.long()], -1), weights, lbs + lbst + lpt, log_z

    def posterior(self, x0: torch.Tensor, xt: torch.Tensor, s, t):
        """:math:`q(x_s|x_t,x_0)`: atoms at :math:`x_0` and :math:`x_t` plus :math:`\\pi` (O(1) per token).

        Raises:
            ValueError: ``x_t`` cannot be reached from ``x_0`` (the posterior is undefined).
        """
        s, t = self._posterior_times(x0, xt, s, t)
        atoms, weights, base, log_z = self._posterior_parts(x0, xt, s, t)
        self._check_reachable(torch.isneginf(log_z))
        law = AtomicCategorical(atoms, weights.to(t.dtype), base.to(t.dtype), self.log_pi_on(x0.device, t.dtype),
                                validate_args=False)
        return to_event(law, x0.dim() - 1)

    def posterior_logits(self, x0, xt, s, t):
        """Dense :math:`\\log P(t_{min},s)[x_0,x_s] + \\log P(s,t)[x_s,x_t]`, float64 (O(S) per token)."""
        atoms, weights, base, log_z = self._posterior_parts(x0, xt, s, t)
        law = AtomicCategorical(atoms, weights, base, self._log_pi.to(x0.device), validate_args=False)
        return law.logits + log_z[..., None]

    def prior_probs(self, *, device=None, dtype=None) -> torch.Tensor:
        """:math:`\\pi_{ref} = a_{t_{max}}/S + (1 - a_{t_{max}})\\,\\pi` (the law at ``t_max`` of uniform data)."""
        la = float(self.log_keep(self.t_min, self.t_max))
        out = math.exp(la) / self.num_states + (-math.expm1(la)) * self.pi
        return out.to(device=device, dtype=dtype or torch.get_default_dtype())

    def prior(self, event_shape, *, device=None, dtype=None):
        """The reference at ``t_max`` in every dimension, stored in O(1) per token."""
        event_shape = torch.Size(event_shape)
        dtype = dtype or torch.get_default_dtype()
        log_ref = torch.log(self.prior_probs(device=device, dtype=torch.float64)).to(dtype)
        base = torch.zeros(event_shape, dtype=dtype, device=device)
        empty = torch.zeros((*event_shape, 0), dtype=dtype, device=device)
        law = AtomicCategorical(empty.long(), empty, base, log_ref, validate_args=False)
        return to_event(law, len(event_shape))

    def sample_prior(self, num_samples: int, event_shape, *, generator=None, device=None, dtype=None):
        """Draws from :meth:`prior` as ``torch.long`` states (O(log S) per token)."""
        check_positive_int("num_samples", num_samples)
        log_ref = torch.log(self.prior_probs(device=device, dtype=torch.float64))
        return sample_base(log_ref, (int(num_samples), *event_shape), generator)

    def marginal_log_likelihood(self, xt, t):
        """:math:`\\log q_t(x_t|x_0 = k) = \\log((1-a_t)\\pi_{x_t} + a_t[k = x_t])`, dense, float64."""
        lat, lbt = self._keep(xt, torch.full_like(t, self.t_min), t, torch.float64)
        lpt = self._log_pi.to(xt.device)[xt.long()]
        out = (lbt + lpt)[..., None].expand(*xt.shape, self.num_states).clone()
        return out.scatter(-1, xt.long()[..., None], torch.logaddexp(lat, lbt + lpt)[..., None])

    def prior_kl(self, x0: torch.Tensor, observed: torch.Tensor | None = None) -> torch.Tensor:
        r""":math:`\mathrm{KL}(q(x_{t_{max}}|x_0)\,\|\,\pi_{ref})` summed over dimensions, float64 ``(batch,)``,
        leaving out the ``observed`` ones (boolean, ``x0``'s shape; held at the data, never noised).

        With :math:`f_j = (1-a)\pi_j\log\frac{(1-a)\pi_j}{\pi_{ref,j}}` and :math:`q_{x_0} = a + (1-a)\pi_{x_0}`,
        the KL of a token is :math:`\sum_j f_j - f_{x_0} + q_{x_0}\log(q_{x_0}/\pi_{ref,x_0})`: one O(S) sum
        shared by every token.
        """
        la = self.log_keep(self.t_min, self.t_max).to(x0.device)
        lb = _log1mexp(la)
        log_ref = torch.log(self.prior_probs(device=x0.device, dtype=torch.float64))
        log_pi = self._log_pi.to(x0.device)
        f = torch.where(torch.isfinite(log_pi), torch.exp(lb + log_pi) * (lb + log_pi - log_ref),
                        torch.zeros_like(log_pi))
        idx = x0.long()
        log_q = torch.logaddexp(la, lb + log_pi[idx])
        own = torch.where(log_q > -math.inf, torch.exp(log_q) * (log_q - log_ref[idx]), torch.zeros_like(log_q))
        per = f.sum() - f[idx] + own
        return sum_free(per, observed)

    # ---------------------------------------------------------------- reverse time
    def _restricted(self, w: torch.Tensor, xt: torch.Tensor, t: torch.Tensor, wsum: torch.Tensor | None = None):
        r"""Per-token pieces of :math:`v(k) = \tilde w(k)/q_t(x_t|k)`, :math:`\tilde w` the model's weights
        restricted to the :math:`x_0` that reach :math:`x_t` and renormalised.

        Returns ``(g, W - w_x, w_x, Wr, a_t, pi_x)`` in float64: ``g`` says whether every :math:`x_0` reaches
        :math:`x_t` (:math:`(1-a_t)\pi_{x_t} > 0`; otherwise only :math:`x_0 = x_t` does), ``W`` is the total
        weight (``wsum`` if the caller has it), ``w_x`` the weight of :math:`x_t` and ``Wr`` the reachable weight.
        """
        lat, lbt = self._keep(xt, torch.full_like(t, self.t_min), t, torch.float64)
        pi_x = torch.exp(self._log_pi.to(xt.device)[xt.long()])
        g = torch.isfinite(lbt) & (pi_x > 0)
        if wsum is None:
            wsum = w.sum(-1).double()              # torch sums pairwise: float32 is accurate, and needs no copy
        wx = w.gather(-1, xt.long()[..., None])[..., 0].double()
        wr = torch.where(g, wsum, wx).clamp_min(torch.finfo(torch.float64).tiny)
        rest = torch.where(g, wsum - wx, torch.zeros_like(wsum))
        return g, rest, wx, wr, torch.exp(lat), pi_x, lbt

    def reverse_kernel(self, x0_probs: torch.Tensor, xt: torch.Tensor, s, t) -> PosteriorMixture:
        r"""The mixture of posteriors :math:`p(x_s|x_t) = \sum_{x_0} p(x_0|x_t)\,q(x_s|x_t,x_0)` as a structured
        law (:class:`~probdiff.processes.posterior_mixture.PosteriorMixture`, O(1) per token plus a reference to
        ``x0_probs``): ``log_prob`` O(1) per token, ``draw`` one read of ``x0_probs``, dense ``probs`` on demand.

        Off :math:`x_t` it is :math:`c_w\,p(x_0 = x_s|x_t) + c_\pi\,\pi_{x_s}` with
        :math:`c_w = a_s\frac{1-a_{st}}{1-a_t}/W_r` and
        :math:`c_\pi = (1-a_s)\big(\frac{1-a_{st}}{1-a_t}(W - w_{x_t})
        + \frac{(1-a_{st})\pi_{x_t} w_{x_t}}{q_t(x_t|x_t)}\big)/W_r`;
        the entry at :math:`x_t` is :math:`P_{st}[x_t,x_t]\big(a_s\frac{w_{x_t}}{q_t(x_t|x_t)} +
        (1-a_s)\pi_{x_t}V\big)/W_r`, :math:`V = \sum_k v(k)` (see :meth:`_restricted`).
        """
        self.check_x0_probs_shape(x0_probs, xt)
        s, t = self.check_times(s, t, xt)
        blocks = block_sums(x0_probs.reshape(-1, self.num_states))      # one read: W, and the draw's first level
        wsum = blocks.sum(-1).reshape(xt.shape)
        self.check_x0_probs(x0_probs, xt, sums=wsum)                   # (the validation's second read)
        g, rest, wx, wr, a_t, pi_x, lbt = self._restricted(x0_probs, xt, t, wsum)
        las, lbs = self._keep(xt, torch.full_like(s, self.t_min), s, torch.float64)
        last, lbst = self._keep(xt, s, t, torch.float64)
        a_s, b_s, b_st = torch.exp(las), torch.exp(lbs), torch.exp(lbst)
        ratio = torch.where(g, torch.exp(lbst - lbt), torch.zeros_like(a_s))      # (1 - a_st) / (1 - a_t)
        d1 = a_t + torch.exp(lbt) * pi_x                                            # q_t(x_t | x_0 = x_t)
        e0, e1 = b_st * pi_x, torch.exp(last) + b_st * pi_x         # P_st[x_s != x_t, x_t] and P_st[x_t, x_t]
        c_w = a_s * ratio / wr
        c_pi = b_s * (ratio * rest + e0 * wx / d1) / wr
        # pi_x V = (W - w_x)/(1 - a_t) + pi_x w_x / q_t(x_t|x_t)  (the first term only when every x_0 reaches x_t)
        pi_v = torch.where(g, rest / torch.exp(lbt).clamp_min(1e-300), torch.zeros_like(rest)) + pi_x * wx / d1
        diag = e1 * (a_s * wx / d1 + b_s * pi_v) / wr
        return PosteriorMixture(x0_probs, xt, c_w, c_pi, diag, self.log_pi_on(xt.device, torch.float64), w_off=rest,
                                blocks=blocks)

    def reverse_kernel_log_probs(self, x0_probs: torch.Tensor, xt: torch.Tensor, s, t, *,
                                 out: torch.Tensor | None = None) -> torch.Tensor:
        """Log of :meth:`reverse_kernel`'s probabilities, dense ``(batch, *event, S)`` in the dtype of
        ``x0_probs`` (one fused pass over the model's output), written into ``out`` if given."""
        return self.reverse_kernel(x0_probs, xt, s, t).dense(log=True, out=out)

    def sample_reverse_kernel(self, x0_probs, xt, s, t, generator=None) -> torch.Tensor:
        """A draw from :meth:`reverse_kernel` without forming it (one read of ``x0_probs``, ``torch.long``)."""
        return self.reverse_kernel(x0_probs, xt, s, t).draw(generator)

    def reverse_rates(self, x0_probs: torch.Tensor, x: torch.Tensor, t, *,
                      out: torch.Tensor | None = None) -> torch.Tensor:
        r"""Reverse rates :math:`\hat R_t(x \to y) = r\beta(t)\pi_x\,(a_t v(y) + (1-a_t)\pi_y V)` in closed form.

        Off ``x``: :math:`c_w\,p(x_0 = y|x_t) + c_\pi\pi_y` with :math:`c_w = r\beta\,\frac{a_t}{1-a_t}/W_r` and
        :math:`c_\pi = r\beta\big((W - w_x) + \frac{(1-a_t)\pi_x w_x}{q_t(x|x)}\big)/W_r`; the entry at ``x`` is
        minus the row's total. O(S) per token; shape and dtype of ``x0_probs``; written into ``out`` if given.
        """
        self.check_x0_probs_shape(x0_probs, x)
        t = self.check_time(t, x)
        wsum = x0_probs.sum(-1).double()
        self.check_x0_probs(x0_probs, x, sums=wsum)
        g, rest, wx, wr, a_t, pi_x, lbt = self._restricted(x0_probs, x, t, wsum)
        rb = self.rate_scale * self._coef(self.beta(t).double(), x)
        d1 = a_t + torch.exp(lbt) * pi_x
        odds = torch.where(g, a_t / torch.exp(lbt).clamp_min(1e-300), torch.zeros_like(a_t))
        c_w = rb * odds / wr
        c_pi = rb * (rest + torch.exp(lbt) * pi_x * wx / d1) / wr
        off = c_w * rest + c_pi * (1 - pi_x)                      # the row's total off x, in closed form
        return fill_rows(x0_probs, c_w, c_pi, self.log_pi_on(x.device, torch.float64), x, -off, log=False, out=out)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(num_states={self.num_states}, rate={self.rate_scale:g}, "
                f"t_min={self.t_min:g}, t_max={self.t_max:g})")
