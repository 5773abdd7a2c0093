r"""Evidence lower bounds for Markov chains, registered with :func:`probdiff.likelihood.family_elbo` (THEORY.md §5).

*Discrete time* (any :class:`~probdiff.MarkovChain`, model with ``x0_probs``), on a grid
:math:`t_{max} = t_0 > \dots > t_K = t_{min}` (Austin et al., D3PM 2021, Eq. (1); Sohl-Dickstein et al. 2015):

.. math::

    \log p(x_0) \ge -\mathrm{KL}(q(x_{t_0}|x_0)\,\|\,\pi)
      - \sum_{k} E_{q(x_{t_k}|x_0)}\mathrm{KL}\big(q(x_{t_{k+1}}|x_{t_k},x_0)\,\|\,p(x_{t_{k+1}}|x_{t_k})\big),

every KL exact (a sum over the ``S`` states per dimension), only :math:`x_{t_k}` sampled. The data sit
at ``t_min`` (:math:`q(x_{t_{min}}|x_0)` is a point mass), so the last KL is the reconstruction term
:math:`-\log p(x_0|x_{t_1})`. With the exact
:math:`p(x_0|x_t)` of a data set the mixture-of-posteriors step is the exact time reversal, so the bound
equals :math:`\log p(x_0)` up to the prior mismatch on every grid.

*Continuous time* (Blackout, model with ``mean_births``): the path-space KL between the reverse counting
process conditioned on :math:`n_0` (birth rate :math:`m\,p_t/(1-p_t)`, :math:`m = n_0 - n_t`) and the
model's (rate :math:`\hat y\,p_t/(1-p_t)`) gives (Santos et al., "Blackout Diffusion", ICML 2023, §3.3;
Campbell et al. 2022, Prop. 2)

.. math::

    \log p(n_0) \ge -\mathrm{KL}(q(n_{t_{max}}|n_0)\,\|\,\pi)
      - \int_{t_{lo}}^{t_{max}} \tfrac{p_t}{1-p_t}\,E\textstyle\sum_{px}\big(\hat y - m\log\hat y + m\log m - m\big)\,dt
      + E\log\mathrm{Poisson}(m_{t_{lo}};\hat y(n_{t_{lo}}, t_{lo})),

with :math:`t` drawn on :math:`[t_{lo}, t_{max}]` by :meth:`Blackout.sample_elbo_times <probdiff.Blackout.sample_elbo_times>`,
:math:`t_{lo} = -\log(1 - e^{-t_{max}})`, and a Poisson decoder for the photons still missing at
:math:`t_{lo}`. Both bounds are in nats per sample; the data are discrete, so ``-elbo / (D ln 2)`` is a
lossless bits/dim, no dequantisation.
"""

from __future__ import annotations

import functools
import math

import torch

from .._util import check_positive_int, hold_observed, observed_mask, sum_event, sum_free
from ..models.chain import CategoricalModel
from ..processes.blackout import Blackout
from ..processes.chain import MarkovChain
from ..processes.matrices import poisson_kl, xlogy_ratio
from ..processes.uniform_masking import AbsorbingChain
from ..reverse.base import build_reverse
from ..timevars import TimeVariable
from .blackout_counts import CountsControlVariate, DefensiveCounts
from .elbo import family_elbo

__all__ = ["chain_elbo", "blackout_elbo", "prior_kl", "chain_elbo_integrand", "continuous_elbo_terms"]


def prior_kl(process: MarkovChain, x0: torch.Tensor, observed: torch.Tensor | None = None) -> torch.Tensor:
    """:math:`\\mathrm{KL}(q(x_{t_{max}}|x_0)\\,\\|\\,\\pi)` summed over the dimensions not ``observed``, float64,
    shape ``(batch,)`` (:meth:`MarkovChain.prior_kl <probdiff.MarkovChain.prior_kl>`, closed forms where the chain
    has them)."""
    if observed is None:                    # (as called before the mask existed: older chains keep working)
        return process.prior_kl(x0)
    return process.prior_kl(x0, observed_mask(observed, x0))


@functools.singledispatch
def chain_elbo_integrand(process: MarkovChain, rev, x0: torch.Tensor, xt: torch.Tensor,
                         t: torch.Tensor, observed: torch.Tensor | None = None) -> torch.Tensor:
    r"""The integrand of the continuous-time bound at ``(t, x_t)``, summed over dimensions, float64 ``(batch,)``:
    :math:`\sum_{y \ne x_t} \hat R - R^{x_0}\log\hat R + R^{x_0}\log R^{x_0} - R^{x_0}` (THEORY.md §10), with
    ``rev`` the model's reverse process (:func:`probdiff.reverse`). ``observed`` (``None`` or a boolean mask of
    ``x0``'s shape): dimensions held at the data, left out of the sum (the conditional bound of
    :func:`chain_elbo`).

    A single-dispatch function on the chain's type: a chain family whose integrand has a closed form registers
    it (``@chain_elbo_integrand.register(MyChain)``, same signature), as :class:`~probdiff.AbsorbingChain`
    does; this generic form forms the dense model and data rates."""
    probs = rev.x0_probs(xt, t).double()                                # (the model casts t for its network)
    model = process.reverse_rates(probs, xt, t).clamp_min(0)           # the diagonal entry (negative) drops out
    cond = process.conditional_reverse_rates(x0, xt, t).double().clamp_min(0)
    kl = poisson_kl(cond, model)
    return sum_event(kl) if observed is None else sum_free(kl.sum(-1), observed)


@chain_elbo_integrand.register(AbsorbingChain)
def _masked_integrand(process: AbsorbingChain, rev, x0: torch.Tensor, xt: torch.Tensor,
                      t: torch.Tensor, observed: torch.Tensor | None = None) -> torch.Tensor:
    r"""Masking in closed form, one read of the model's logits. Only masked tokens (:math:`x_t = m`) have
    rates; every :math:`x_0` reaches :math:`m`, so :math:`\hat R(m \to y) = c\,\hat p(y)` and
    :math:`R^{x_0}(m \to y) = c\,[y = x_0]` with :math:`c = r\beta(t)\,\alpha_t/(1-\alpha_t) = -\alpha'_t/(1-\alpha_t)`,
    and the Poisson KL summed over :math:`y \ne m` is

    .. math:: c\,\big(1 - \hat p(m)\big) - [x_0 \ne m]\;c\,\big(1 + \log \hat p(x_0)\big),

    i.e. :math:`-c\log\hat p(x_0)` under SUBS (:math:`\hat p(m) = 0`): the weighted cross-entropy of MDLM
    (Sahoo et al. 2024, Eq. (10)) and MD4 (Shi et al. 2024, Eq. (5)). Models that are not a
    :class:`~probdiff.CategoricalModel` (no logits) take the generic path."""
    if not isinstance(rev.model, CategoricalModel):
        return chain_elbo_integrand.dispatch(MarkovChain)(process, rev, x0, xt, t, observed)
    m = process.mask_state
    logits = rev.model.x0_logits(xt, t)
    masked = xt.long() == m
    if observed is not None:
        masked = masked & ~observed
    rows = logits[masked]                                                   # (masked tokens, S)
    rows = rows.to(torch.promote_types(rows.dtype, torch.float32))          # (bfloat16 under autocast)
    log_z = torch.logsumexp(rows, -1, keepdim=True)
    target = x0.long()[masked]
    real = target != m
    picked = (rows.gather(-1, torch.stack([target.clamp_max(m - 1), torch.full_like(target, m)], -1))
              - log_z).double()                                             # log p(x_0), log p(m)
    p_mask = torch.exp(picked[:, 1])
    per_token = (1 - p_mask) - torch.where(real, 1 + picked[:, 0], torch.zeros_like(p_mask))
    la = process.log_keep(process.t_min, t)                                # log alpha_t, (batch,)
    c = process.rate_scale * process.beta(t).double() * torch.exp(la) / -torch.expm1(la)
    rows_of = masked.reshape(masked.shape[0], math.prod(masked.shape[1:])).nonzero()[:, 0]   # each token's row
    out = torch.zeros(xt.shape[0], dtype=torch.float64, device=xt.device)
    return out.index_add(0, rows_of, c[rows_of] * per_token)


def chain_elbo(process: MarkovChain, model, x: torch.Tensor, *, grid=None, num_samples: int = 1,
               generator: torch.Generator | None = None, observed: torch.Tensor | None = None) -> torch.Tensor:
    r"""ELBO of a chain in nats, shape ``(batch,)``, averaged over ``num_samples`` draws per data point.

    ``grid`` given: the discrete-time bound with exact KLs. ``grid=None``: the continuous-time bound of Campbell
    et al. 2022 (Prop. 2; THEORY.md §10),

    .. math::

        \log p(x_0) \ge -\mathrm{KL}(q(x_{t_{max}}|x_0)\,\|\,\pi) - \int_{t_{min}}^{t_{max}} E_{q(x_t|x_0)}
        \sum_{y\ne x_t}\big(\hat R_t - R^{x_0}_t\log\hat R_t + R^{x_0}_t\log R^{x_0}_t - R^{x_0}_t\big)(x_t\to y)\,dt,

    with :math:`R^{x_0}_t(x\to y) = R_t(y\to x)\,q_t(y|x_0)/q_t(x|x_0)` the reverse rate conditioned on the data
    and :math:`\hat R_t` the model's. The ``num_samples`` times per point are stratified (one in each of
    ``num_samples`` equal slices of the chain's time proposal, :meth:`~probdiff.MarkovChain.sample_elbo_times`:
    uniform in :math:`\alpha_t` for uniform noise and masking, where it is the weighted cross-entropy of
    MDLM/MD4, Sahoo et al. 2024, Eq. (10); Shi et al. 2024, Eq. (5)). No decoder term: the data sit at
    ``t_min``, where :math:`q(x_{t_{min}}|x_0)` is a point mass.

    ``observed`` (``None``, or a boolean tensor of ``x``'s shape or its event shape): the conditional bound on
    :math:`\log p(x_U \mid x_O)`, :math:`O` the ``True`` dimensions. Only :math:`x_U` is noised; :math:`x_O` stays
    at its data value in every :math:`x_t` the model sees, and only the dimensions in :math:`U` enter the prior
    KL, the integrand and the discrete-time KLs — the bound of the reverse process that starts from
    :math:`x_O` and the prior on :math:`U` and never moves :math:`x_O` (for masking: unmasking the rest given
    the observed tokens; block diffusion's conditional, Arriola et al. 2025). Summing such bounds over
    consecutive blocks, each given the ones before it, bounds the codelength of a long sequence (the chain
    rule). The model is used as it is: it must have learned to read clean context (for masking, a clean token
    is an unmasked one, which SUBS carries over). All ``True`` gives 0. A model that weighs :math:`x_O` by the
    forward marginal, such as the exact model of a data set, is undefined at times where a clean :math:`x_O` has
    probability 0 under every :math:`x_0` (masking at :math:`\alpha_t = 0`, a grid's first time).
    """
    process.check_states("x", x)
    obs = observed_mask(observed, x)
    k = check_positive_int("num_samples", num_samples)
    if obs is not None:
        obs = obs.repeat_interleave(k, dim=0)
    if grid is None:
        return _continuous_chain_elbo(process, model, x, k, generator, obs)
    rev = build_reverse(process, model, 1.0)
    x0 = x.repeat_interleave(k, dim=0)
    b = x0.shape[0]
    ts = grid.times(process).to(device=x.device)
    total = -prior_kl(process, x0, obs)
    for i in range(len(ts) - 1):
        t = ts[i].expand(b)
        s = ts[i + 1].expand(b)
        xt = hold_observed(obs, x0, process.sample_marginal(x0, t, generator=generator))
        logq = process.posterior_logits(x0, xt, s, t).double()
        logq = logq - torch.logsumexp(logq, dim=-1, keepdim=True)
        probs = rev.x0_probs(xt, t).double()
        logp = process.reverse_kernel_log_probs(probs, xt, s, t)
        kl = xlogy_ratio(torch.exp(logq), logq, logp)
        total = total - sum_free(kl, obs)                                   # (kl: per dimension)
    return total.reshape(x.shape[0], k).mean(1)


def _continuous_chain_elbo(process, model, x, k, generator, observed):
    rev = build_reverse(process, model, 1.0)
    x0 = x.repeat_interleave(k, dim=0)
    u = 1 - torch.rand(x0.shape[0], generator=generator, dtype=torch.float64, device=x.device)     # in (0, 1]
    strata = torch.arange(k, dtype=torch.float64, device=x.device).repeat(x.shape[0])
    kl, weighted = continuous_elbo_terms(process, rev, x0, (strata + u) / k, generator=generator, observed=observed)
    return (-kl - weighted).reshape(x.shape[0], k).mean(1)             # stratified: one time per slice


def continuous_elbo_terms(process: MarkovChain, rev, x0: torch.Tensor, u: torch.Tensor, *, generator=None,
                          observed: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """One draw per sample of the continuous-time bound's two terms, float64 ``(batch,)`` each: the prior KL and
    the integrand over its density, at the time :meth:`~probdiff.MarkovChain.sample_elbo_times` makes of ``u``
    (uniforms in (0, 1], one per sample) and a draw of :math:`x_t` with the ``observed`` dimensions (``None`` or a
    mask of ``x0``'s shape) held at ``x0``, both summed over the dimensions not observed. Their sum is what
    :func:`chain_elbo` averages (negated) and :class:`~probdiff.losses.ChainELBOLoss` trains on. Without a mask
    the chain's ``prior_kl`` and the integrand are called as before the mask existed (a chain or integrand
    registered with the earlier signature keeps working)."""
    t, inverse_density = process.sample_elbo_times(u)
    xt = hold_observed(observed, x0, process.sample_marginal(x0, t, generator=generator))
    if observed is None:
        return prior_kl(process, x0), inverse_density * chain_elbo_integrand(process, rev, x0, xt, t)
    return prior_kl(process, x0, observed), inverse_density * chain_elbo_integrand(process, rev, x0, xt, t, observed)


def blackout_elbo(process: Blackout, model, x: torch.Tensor, *, grid=None, num_samples: int = 1,
                  generator: torch.Generator | None = None, time: TimeVariable | None = None,
                  fold_decoder: bool = True, decoder_share: float = 0.05,
                  counts: DefensiveCounts | None = None,
                  control: CountsControlVariate | None = None,
                  observed: torch.Tensor | None = None) -> torch.Tensor:
    r"""Blackout ELBO in nats, shape ``(batch,)``: continuous time (``grid=None``, model with ``mean_births``)
    or the discrete-time chain bound on ``grid`` (model with ``x0_probs``).

    Continuous time, every draw costs two network evaluations. The bound is
    :math:`-\mathrm{KL}_{prior} - \int_{t_{lo}}^{t_{max}} I(t)\,dt + \mathrm{Dec}` (module docstring), with
    times from ``time`` (default :meth:`Blackout.sample_elbo_times <probdiff.Blackout.sample_elbo_times>`,
    half logit-uniform and half uniform in :math:`p_t`; any :class:`~probdiff.TimeVariable` on
    :math:`[t_{lo}, t_{max}]` such as :class:`~probdiff.LogitTime` instead).

    * ``fold_decoder=True`` (default): the ``2 * num_samples`` evaluations of a point are stratified draws of
      one uniform :math:`u`: :math:`u < \rho` (``decoder_share``) scores the decoder, weighted :math:`1/\rho`;
      otherwise a time from the proposal at :math:`(u - \rho)/(1 - \rho)`, weighted :math:`1/(1-\rho)`. The
      decoder term is tiny beside the integral (about 0.1 nats on the digits), so the evaluation it used to
      take every draw goes to the integral. Unbiased for the same bound.
    * ``fold_decoder=False``: one time (stratified over the ``num_samples`` draws) and one decoder draw each;
      with ``time=LogitTime()`` this is the estimator of Santos et al. 2023, §3.3.
    * ``counts``: :math:`n_t \sim q(n_t|n_0)` (``None``, default), or importance-sampled from a
      :class:`~probdiff.likelihood.DefensiveCounts` mixture and weighted back to :math:`q` (every draw, the
      decoder's too): the same bound, at the same cost, with the rare many-death draws that dominate the spread
      on an exact oracle drawn more often at a small weight.
    * ``control``: a :class:`~probdiff.likelihood.CountsControlVariate` subtracted from every time draw's
      integrand (mean 0 at every time: the same bound), with coefficients fitted on pilot draws.
    * ``observed``: the conditional bound of :func:`chain_elbo`, on a grid only.
    """
    if grid is not None:
        return chain_elbo(process, model, x, grid=grid, num_samples=num_samples, generator=generator,
                          observed=observed)
    if observed is not None:
        raise ValueError("observed must be None for Blackout's continuous-time bound (grid=None); the "
                         "discrete-time bound (grid=...) takes it")
    process.check_states("x", x)
    k = check_positive_int("num_samples", num_samples)
    if time is not None and not isinstance(time, TimeVariable):
        raise ValueError(f"time must be None or a TimeVariable such as LogitTime(), got {time!r}")
    if counts is not None and not isinstance(counts, DefensiveCounts):
        raise ValueError(f"counts must be None or a DefensiveCounts, got {counts!r}")
    if control is not None and not isinstance(control, CountsControlVariate):
        raise ValueError(f"control must be None or a CountsControlVariate, got {control!r}")
    rho = float(decoder_share)
    if not 0.0 < rho < 1.0:
        raise ValueError(f"decoder_share must be in (0, 1), got {decoder_share!r}")
    rev = build_reverse(process, model, 1.0)
    dtype = torch.get_default_dtype() if not x.is_floating_point() else x.dtype
    slots = 2 * k if fold_decoder else k
    x0 = x.repeat_interleave(slots, dim=0)
    b = x0.shape[0]
    u = torch.rand(b, generator=generator, dtype=torch.float64, device=x.device)
    u = (torch.arange(slots, dtype=torch.float64, device=x.device).repeat(x.shape[0]) + u) / slots   # stratified
    t_lo = process.elbo_time_range()[0]
    if not fold_decoder:
        t, inverse_density = _elbo_times(process, time, u)
        diffusion = _blackout_terms(process, rev, x0, t, dtype, generator, counts, control)[0]
        lo = torch.full((b,), t_lo, dtype=torch.float64, device=x.device)
        decoder = _blackout_terms(process, rev, x0, lo, dtype, generator, counts)[1]
        total = -prior_kl(process, x0) - inverse_density * diffusion + decoder
        return total.reshape(x.shape[0], k).mean(1)
    dec = u < rho
    t, inverse_density = _elbo_times(process, time, ((u - rho) / (1 - rho)).clamp(0.0, 1.0))
    t = torch.where(dec, torch.full_like(t, t_lo), t)
    diffusion, decoder, _, _ = _blackout_terms(process, rev, x0, t, dtype, generator, counts, control)
    value = torch.where(dec, decoder / rho, -inverse_density * diffusion / (1 - rho))
    return -prior_kl(process, x) + value.reshape(x.shape[0], slots).mean(1)


def _elbo_times(process: Blackout, time, u):
    """``(t, 1/density)`` from uniforms ``u``: the process' own proposal, or a time variable's."""
    if time is None:
        return process.sample_elbo_times(u)
    u0, u1 = time.bounds(process)
    t = time.time(process, u0 + (u1 - u0) * u)
    return t, time.inverse_density(process, t)


def _blackout_terms(process: Blackout, rev, x0, t, dtype, generator, counts=None, control=None):
    r"""At one draw :math:`n_t \sim q(n_t|n_0)` and one evaluation :math:`\hat y(n_t, t)`: the integrand
    :math:`\frac{p_t}{1-p_t}\sum_{px}(\hat y - m\log\hat y + m\log m - m)` and the decoder's
    :math:`\sum_{px}\log\mathrm{Poisson}(m; \hat y)`, :math:`m = n_0 - n_t`, float64 ``(batch,)`` each; with
    ``counts`` (a :class:`DefensiveCounts`), :math:`n_t` from its mixture and both terms weighted by :math:`q/r`;
    with ``control``, its correction subtracted from the integrand. Also returns the draw and its weight."""
    b = x0.shape[0]
    if counts is None:
        nt, weight = process.sample_marginal(x0, t, generator=generator), 1.0
    else:
        nt, weight = counts.sample(process, x0, t, generator)
    y = rev.mean_births(nt, t.to(dtype)).double()
    m = (x0 - nt).double()
    d = math.prod(x0.shape[1:])
    diffusion = process.birth_weight(t) * poisson_kl(m, y).reshape(b, d).sum(1)
    decoder = (torch.xlogy(m, y) - y - torch.lgamma(m + 1)).reshape(b, d).sum(1)
    diffusion = diffusion * weight
    if control is not None:
        diffusion = diffusion - control.correction(x0, nt, t, weight)
    return diffusion, decoder * weight, nt, weight


family_elbo.register(MarkovChain)(chain_elbo)
family_elbo.register(Blackout)(blackout_elbo)
