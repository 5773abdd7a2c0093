"""Checks that hold for any :class:`~probdiff.ForwardProcess`, written against its four queries only.

Families register sharper versions (exact moments, exact matrix products) over these; a user's new
family gets these for free.
"""

from __future__ import annotations

import math

import torch
from torch.distributions import kl_divergence

from ..processes.base import ForwardProcess
from ._config import CheckConfig
from ._core import fail_worst
from ._inputs import Inputs
from ._numerics import sample_with, seed_from
from ._identities import BAD_INPUT, BAYES, CHAPMAN_KOLMOGOROV, PRIOR, SHAPES

__all__ = ["event_size", "bad_input_rejected"]


def event_size(x: torch.Tensor) -> int:
    """Number of event elements of ``x`` of shape ``(batch, *event)``."""
    return max(1, math.prod(x.shape[1:]))


# ==================================================================== shape law
def _check_law(process, what: str, d, batch_shape, event_shape, value: torch.Tensor, gen) -> torch.Tensor:
    problems = []
    if tuple(d.batch_shape) != tuple(batch_shape):
        problems.append(f"batch_shape {tuple(d.batch_shape)}, expected {tuple(batch_shape)}")
    if tuple(d.event_shape) != tuple(event_shape):
        problems.append(f"event_shape {tuple(d.event_shape)}, expected {tuple(event_shape)}")
    if not problems:
        draw = sample_with(d, gen)
        if tuple(draw.shape) != tuple(batch_shape) + tuple(event_shape):
            problems.append(f"sample() has shape {tuple(draw.shape)}, expected {tuple(batch_shape) + tuple(event_shape)}")
        elif draw.dtype != value.dtype:
            problems.append(f"sample() has dtype {draw.dtype}, expected the data's {value.dtype}")
        lp = d.log_prob(draw)
        if tuple(lp.shape) != tuple(batch_shape):
            problems.append(f"log_prob(sample) has shape {tuple(lp.shape)}, expected {tuple(batch_shape)}")
        elif not bool(torch.isfinite(lp).all()):
            problems.append("log_prob(sample) is not finite")
    if problems:
        SHAPES.fail(process, f"  {what}: " + "; ".join(problems))
    return draw


@SHAPES.register(ForwardProcess)
def _shapes(process, inputs: Inputs, config: CheckConfig):
    x0, s, t, gen = inputs.x0, inputs.s, inputs.t, inputs.generator
    batch, event = (x0.shape[0],), x0.shape[1:]
    xs = _check_law(process, "marginal(x0, s)", process.marginal(x0, s), batch, event, x0, gen)
    xt = _check_law(process, "transition(xs, s, t)", process.transition(xs, s, t), batch, event, x0, gen)
    _check_law(process, "posterior(x0, xt, s, t)", process.posterior(x0, xt, s, t), batch, event, x0, gen)
    _check_law(process, "marginal(x0, t)", process.marginal(x0, t), batch, event, x0, gen)
    prior = process.prior(event, device=x0.device, dtype=x0.dtype if x0.is_floating_point() else None)
    _check_law(process, "prior(event_shape)", prior, (), event, x0, gen)
    draws = process.sample_prior(batch[0], event, generator=_fork(gen), device=x0.device,
                                 dtype=x0.dtype if x0.is_floating_point() else None)
    if tuple(draws.shape) != tuple(x0.shape) or draws.dtype != x0.dtype:
        SHAPES.fail(process, f"  sample_prior({batch[0]}, {tuple(event)}): shape {tuple(draws.shape)} dtype "
                             f"{draws.dtype}, expected {tuple(x0.shape)} {x0.dtype}")
    # a scalar (0-d) time means that time for every sample
    for k in (0, x0.shape[0] - 1):
        lp_vec = process.marginal(x0, torch.full_like(t, float(t[k]))).log_prob(xt)
        lp_scalar = process.marginal(x0, t[k].clone()).log_prob(xt)
        rtol, atol = config.tol
        fail_worst(SHAPES, process, "marginal(x0, t: 0-d tensor).log_prob vs marginal(x0, t: (batch,)).log_prob",
                   lp_scalar, lp_vec, atol + rtol * lp_vec.abs(), {"t": float(t[k]), "x0": x0, "xt": xt})
    return None


def _fork(gen: torch.Generator) -> torch.Generator:
    g = torch.Generator(device=gen.device)
    g.manual_seed(seed_from(gen))
    return g


# ==================================================================== bad input
@BAD_INPUT.register(ForwardProcess)
def bad_input_rejected(process, inputs: Inputs, config: CheckConfig):
    """The generic bad-input check (times, NaN data, mismatched batches); chains add their state checks."""
    if not process.validate_args:
        return "not checked: the process was built with validate_args=False"
    x0, s, t = inputs.x0, inputs.s, inputs.t
    span = process.t_max - process.t_min
    nan_x0 = x0.clone()
    if nan_x0.is_floating_point():
        nan_x0.view(-1)[0] = float("nan")
    xt = x0.clone()
    cases = [
        ("marginal(x0, t=t_max + 0.1 (t_max - t_min))", lambda: process.marginal(x0, process.t_max + 0.1 * span)),
        ("marginal(x0, t=t_min - 0.1 (t_max - t_min))", lambda: process.marginal(x0, process.t_min - 0.1 * span)),
        ("marginal(x0, t=nan)", lambda: process.marginal(x0, float("nan"))),
        ("marginal(x0, t of shape (batch + 1,))", lambda: process.marginal(x0, torch.cat([t, t[:1]]))),
        ("transition(xs, s=t, t=s) with s > t", lambda: process.transition(x0, t, s)),
        ("transition(xs, s=t, t=t) with s == t", lambda: process.transition(x0, t, t)),
        ("posterior(x0, xt, s=t, t=s) with s > t", lambda: process.posterior(x0, xt, t, s)),
        ("posterior(x0, xt[:-1], s, t) with mismatched batch", lambda: process.posterior(x0, xt[:-1], s, t)),
    ]
    if x0.is_floating_point():
        cases.append(("marginal(x0 containing NaN, t)", lambda: process.marginal(nan_x0, t)))
    for what, call in cases:
        try:
            call()
        except ValueError:
            continue
        except Exception as err:  # noqa: BLE001 - any other exception is the violation being reported
            BAD_INPUT.fail(process, f"  {what} raised {type(err).__name__}: {err}; expected ValueError")
        BAD_INPUT.fail(process, f"  {what} returned normally; expected ValueError")
    return None


# ==================================================================== Bayes
@BAYES.register(ForwardProcess)
def _bayes(process, inputs: Inputs, config: CheckConfig):
    """Pointwise: the joint q(x_s, x_t | x_0) factorises both ways (Bayes' rule)."""
    x0, s, t, gen = inputs.x0, inputs.s, inputs.t, inputs.generator
    marg_s = process.marginal(x0, s)
    xs = sample_with(marg_s, gen)
    trans = process.transition(xs, s, t)
    xt = sample_with(trans, gen)
    a = process.posterior(x0, xt, s, t).log_prob(xs)
    b = process.marginal(x0, t).log_prob(xt)
    c = trans.log_prob(xt)
    d = marg_s.log_prob(xs)
    rtol, atol = config.tol
    scale = a.abs() + b.abs() + c.abs() + d.abs()
    fail_worst(BAYES, process, "log q(x_s|x_t,x_0) + log q(x_t|x_0) vs log q(x_t|x_s) + log q(x_s|x_0)",
               a + b, c + d, atol + rtol * scale,
               {"s": s, "t": t, "x0": x0, "x_s": xs, "x_t": xt, "log q(x_s|x_t,x_0)": a, "log q(x_t|x_0)": b,
                "log q(x_t|x_s)": c, "log q(x_s|x_0)": d})
    return None


# ==================================================================== Chapman-Kolmogorov by Monte Carlo
@CHAPMAN_KOLMOGOROV.register(ForwardProcess)
def _chapman_kolmogorov_mc(process, inputs: Inputs, config: CheckConfig):
    """Monte Carlo, by the laws of total expectation and variance over x_s ~ q(x_s | x_0):
    E[x_t] = E[m(x_s)], Var[x_t] = E[v(x_s)] + Var[m(x_s)] with m, v the transition's moments."""
    n = min(8, inputs.x0.shape[0])
    m = max(config.num_samples // n, 50)
    x0, s, t = (v[:n] for v in (inputs.x0, inputs.s, inputs.t))
    xs = sample_with(process.marginal(x0, s), inputs.generator, (m,))            # (m, n, *event)
    flat = xs.reshape(m * n, *x0.shape[1:])
    rep = lambda v: v.repeat(m)  # noqa: E731
    trans = process.transition(flat, rep(s), rep(t))
    mean_m = trans.mean.reshape(m, n, -1)
    var_v = trans.variance.reshape(m, n, -1)
    marg_t = process.marginal(x0, t)
    mu, var = marg_t.mean.reshape(n, -1), marg_t.variance.reshape(n, -1)
    est_mean = mean_m.mean(0)
    est_var = var_v.mean(0) + mean_m.var(0)
    se_mean = mean_m.std(0) / math.sqrt(m)
    se_var = (var_v + (mean_m - est_mean) ** 2).std(0) / math.sqrt(m)
    ctx = {"s": s, "t": t, "x0": x0, "Monte Carlo samples": m}
    fail_worst(CHAPMAN_KOLMOGOROV, process, "E over x_s of transition mean vs marginal(x0, t).mean",
               est_mean, mu, config.z * se_mean + 1e-12 + config.tol[0] * mu.abs(), ctx)
    fail_worst(CHAPMAN_KOLMOGOROV, process, "E[transition variance] + Var[transition mean] vs marginal(x0, t).variance",
               est_var, var, config.z * se_var + 1e-12 + config.tol[0] * var, ctx)
    return f"Monte Carlo, {m} samples per input"


# ==================================================================== prior
def _kl(process, marg, prior, gen, m: int) -> tuple[torch.Tensor, str]:
    """KL(marg || prior) per sample: closed form when torch registers one, else Monte Carlo plus
    ``5`` standard errors (an upper confidence bound)."""
    try:
        return kl_divergence(marg, prior), "closed form"
    except NotImplementedError:
        y = sample_with(marg, gen, (m,))
        diff = marg.log_prob(y) - prior.log_prob(y)
        return diff.mean(0) + 5 * diff.std(0) / math.sqrt(m), f"Monte Carlo upper bound, {m} samples"


@PRIOR.register(ForwardProcess)
def _prior(process, inputs: Inputs, config: CheckConfig):
    x0, gen = inputs.x0, inputs.generator
    t_max = torch.full((x0.shape[0],), process.t_max, dtype=config.dtype, device=x0.device)
    fdtype = x0.dtype if x0.is_floating_point() else None
    prior = process.prior(x0.shape[1:], device=x0.device, dtype=fdtype)
    kl, how = _kl(process, process.marginal(x0, t_max), prior, gen, 256)
    per_element = kl / event_size(x0)
    fail_worst(PRIOR, process, "KL(q(x_{t_max}|x_0) || prior) per element (nats)", per_element,
               torch.zeros_like(per_element), torch.full_like(per_element, config.prior_kl),
               {"t_max": process.t_max, "x0": x0, "KL (" + how + ")": kl})
    # sample_prior draws from prior: compare the mean log-density of its draws with the prior's own
    n = config.num_samples
    draws = process.sample_prior(n, x0.shape[1:], generator=_fork(gen), device=x0.device, dtype=fdtype)
    lp_a = prior.log_prob(draws).to(torch.float64)
    lp_b = prior.log_prob(sample_with(prior, gen, (n,))).to(torch.float64)
    se = torch.sqrt((lp_a.var() + lp_b.var()) / n)
    fail_worst(PRIOR, process, "mean prior log-density of sample_prior draws vs of prior.sample draws",
               lp_a.mean()[None], lp_b.mean()[None], (config.z * se + 1e-9 * lp_b.mean().abs())[None],
               {"samples": n})
    return f"max KL per element {float(per_element.max()):.3g} nats ({how})"
