r"""Checks and strategies of discrete-state Markov chains (THEORY.md §5).

For a chain with generator :math:`R_t = \beta(t) R` per dimension, :math:`P(s,t) = \exp((B(t)-B(s))R)`:

* generator law: off-diagonal rates :math:`\ge 0`, rows of :math:`R_t` summing to zero, stochastic
  :math:`P(s,t)` equal to ``scipy.linalg.expm`` of :math:`\int_s^t R_u\,du` integrated by Gauss–Legendre
  quadrature of ``rate`` (independent of ``integrated_beta`` and of torch's ``matrix_exp``), and the
  semigroup law :math:`P(s,u)P(u,t) = P(s,t)`;
* Chapman–Kolmogorov by exact enumeration of the states,
  :math:`\sum_{x_s} q(x_s|x_0)\,q(x_t|x_s) = q(x_t|x_0)`, and every query equal to its row of :math:`P`;
* forward simulation by exact jumps (Gillespie in the clock :math:`B(t)`), compared with the marginals;
* time reversal with an exact data law: :math:`p_t(x)\hat R_t(x\to y) = p_t(y) R_t(y\to x)` for
  :math:`t > t_{min}` (Campbell et al. 2022, Prop. 1), so the reverse chain has the forward marginals;
* closed forms (Blackout's binomials, the uniform and absorbing kernels) equal the generic chain.
"""

from __future__ import annotations

import numpy as np
import scipy.linalg
import torch

from ..processes.chain import MarkovChain
from ..processes.matrices import sample_categorical
from ._config import CheckConfig
from ._core import fail_worst
from ._inputs import DATA, Inputs
from ._numerics import sample_with
from ._generic import bad_input_rejected
from ._identities import (
    BAD_INPUT,
    CHAPMAN_KOLMOGOROV,
    CLOSED_FORMS,
    GENERATOR,
    REVERSE_MARGINALS,
    SIMULATION,
)

__all__ = ["state_probs", "MAX_ENUMERATED_STATES"]

#: Chains with more states than this are checked through their matrices instead of by enumeration.
MAX_ENUMERATED_STATES = 64


@DATA.register(MarkovChain)
def _chain_data(process, shape, generator, dtype, device):
    """States uniform over ``0 .. S-1`` (``torch.long``)."""
    return torch.randint(0, process.num_states, shape, generator=generator, device=device)


def state_probs(distribution, like: torch.Tensor, num_states: int) -> torch.Tensor:
    """Per-dimension probabilities ``(batch, *event, S)`` of a distribution over states with an
    ``Independent`` event (evaluates ``base_dist.log_prob`` at every state)."""
    base = distribution.base_dist
    cols = [torch.exp(base.log_prob(torch.full_like(like, j))) for j in range(num_states)]
    return torch.stack(cols, -1).to(torch.float64)


# ==================================================================== generator law
def _quadrature_integral(process, s: torch.Tensor, t: torch.Tensor, nodes: int = 24) -> torch.Tensor:
    r""":math:`\int_s^t R_u du` per pair by Gauss–Legendre quadrature of ``process.rate``, ``(n, S, S)``."""
    x, w = np.polynomial.legendre.leggauss(nodes)
    x, w = torch.as_tensor(x, device=s.device), torch.as_tensor(w, device=s.device)
    half = 0.5 * (t - s)
    u = 0.5 * (t + s)[:, None] + half[:, None] * x[None]                   # (n, nodes)
    rates = process.rate(u.reshape(-1)).reshape(*u.shape, process.num_states, process.num_states)
    return (half[:, None, None, None] * w[None, :, None, None] * rates).sum(1)


@GENERATOR.register(MarkovChain)
def _generator_law(process, inputs: Inputs, config: CheckConfig):
    s, t = inputs.s.to(torch.float64), inputs.t.to(torch.float64)
    n = process.num_states
    times = torch.cat([s, t])
    rates = process.rate(times)
    scale = rates.abs().amax((-1, -2)).clamp_min(1.0)
    off = rates * (1 - torch.eye(n, dtype=rates.dtype, device=rates.device))
    fail_worst(GENERATOR, process, "smallest off-diagonal rate of rate(t) (must be >= 0)",
               off.amin((-1, -2)).clamp_max(0.0), torch.zeros_like(times), torch.zeros_like(times),
               {"t": times})
    fail_worst(GENERATOR, process, "row sums of rate(t) (must be 0)", rates.sum(-1),
               torch.zeros_like(rates.sum(-1)), 1e-9 * n * scale[:, None], {"t": times})
    k = min(s.numel(), 16)
    s, t = s[:k], t[:k]
    P = process.transition_matrix(s, t).to(torch.float64)
    fail_worst(GENERATOR, process, "row sums of transition_matrix(s, t) (must be 1)", P.sum(-1),
               torch.ones_like(P.sum(-1)), torch.full_like(P.sum(-1), 1e-9 * n), {"s": s, "t": t})
    fail_worst(GENERATOR, process, "smallest entry of transition_matrix(s, t) (must be >= 0)",
               P.amin((-1, -2)).clamp_max(0.0), torch.zeros_like(s), torch.zeros_like(s), {"s": s, "t": t})
    integral = _quadrature_integral(process, s, t)
    expm = torch.stack([torch.as_tensor(scipy.linalg.expm(m.cpu().numpy())) for m in integral]).to(P.device)
    fail_worst(GENERATOR, process, "transition_matrix(s, t) vs scipy.linalg.expm(Gauss-Legendre integral of rate "
                                   "over [s, t])", P, expm, torch.full_like(P, 1e-8), {"s": s, "t": t})
    u = s + (t - s) * torch.rand(k, generator=inputs.generator, dtype=torch.float64, device=s.device)
    prod = process.transition_matrix(s, u).to(torch.float64) @ process.transition_matrix(u, t).to(torch.float64)
    fail_worst(GENERATOR, process, "P(s, u) P(u, t) vs P(s, t) (semigroup)", prod, P, torch.full_like(P, 1e-10),
               {"s": s, "u": u, "t": t})
    return f"{n} states"


# ==================================================================== Chapman-Kolmogorov
@CHAPMAN_KOLMOGOROV.register(MarkovChain)
def _chapman_kolmogorov_chain(process, inputs: Inputs, config: CheckConfig):
    x0, s, t = inputs.x0, inputs.s, inputs.t
    n = process.num_states
    t_min = torch.full_like(s, process.t_min)
    ctx = {"s": s, "t": t, "x0": x0}
    if n > MAX_ENUMERATED_STATES:
        P0s = process.transition_matrix(t_min, s).to(torch.float64)
        P0t = process.transition_matrix(t_min, t).to(torch.float64)
        fail_worst(CHAPMAN_KOLMOGOROV, process, "P(t_min, s) P(s, t) vs P(t_min, t)",
                   P0s @ process.transition_matrix(s, t).to(torch.float64), P0t, torch.full_like(P0t, 1e-9), ctx)
        return "matrix products (too many states to enumerate)"
    q_s = state_probs(process.marginal(x0, s), x0, n)                                   # (B, *E, S)
    q_t = state_probs(process.marginal(x0, t), x0, n)
    rows = [state_probs(process.transition(torch.full_like(x0, k), s, t), x0, n) for k in range(n)]
    trans = torch.stack(rows, -2)                                                       # (B, *E, S, S)
    composite = (q_s[..., :, None] * trans).sum(-2)
    fail_worst(CHAPMAN_KOLMOGOROV, process, "sum over x_s of q(x_s|x_0) q(x_t|x_s) vs q(x_t|x_0) (exact enumeration)",
               composite, q_t, torch.full_like(q_t, 1e-9), ctx)
    # every query is its row of the transition matrix
    P0t = process.transition_matrix(t_min, t).to(torch.float64)
    idx = x0.long().reshape(x0.shape[0], -1)
    rows0 = torch.gather(P0t, 1, idx[..., None].expand(-1, -1, n)).reshape(q_t.shape)
    fail_worst(CHAPMAN_KOLMOGOROV, process, "marginal(x0, t) vs row x0 of transition_matrix(t_min, t)",
               q_t, rows0, torch.full_like(q_t, 1e-9), ctx)
    Pst = process.transition_matrix(s, t).to(torch.float64)
    fail_worst(CHAPMAN_KOLMOGOROV, process, "transition(x_s = k, s, t) vs row k of transition_matrix(s, t)",
               trans.reshape(x0.shape[0], -1, n, n)[:, 0], Pst,
               torch.full_like(Pst, 1e-9), ctx)
    return f"exact enumeration of {n} states"


# ==================================================================== bad input
@BAD_INPUT.register(MarkovChain)
def _chain_bad_input(process, inputs: Inputs, config: CheckConfig):
    note = bad_input_rejected(process, inputs, config)
    if note:
        return note
    x0, t = inputs.x0, inputs.t
    cases = [
        (f"marginal(x0 with a state = num_states = {process.num_states}, t)",
         lambda: process.marginal(torch.full_like(x0, process.num_states), t)),
        ("marginal(x0 with a negative state, t)", lambda: process.marginal(torch.full_like(x0, -1), t)),
        ("marginal(x0 = 0.5 (not a state), t)", lambda: process.marginal(torch.full(x0.shape, 0.5,
                                                                                   dtype=torch.float64), t)),
    ]
    for what, call in cases:
        try:
            call()
        except ValueError:
            continue
        except Exception as err:  # noqa: BLE001
            BAD_INPUT.fail(process, f"  {what} raised {type(err).__name__}: {err}; expected ValueError")
        BAD_INPUT.fail(process, f"  {what} returned normally; expected ValueError")
    return None


# ==================================================================== closed forms
@CLOSED_FORMS.register(MarkovChain)
def _chain_closed_forms(process, inputs: Inputs, config: CheckConfig):
    """The transition matrices and every query against :class:`~probdiff.MarkovChain`'s generic path,
    unconditionally: where the chain keeps the generic path the comparison passes trivially; where it has a
    closed form (its own or inherited) the closed form must agree."""
    x0, s, t = inputs.x0, inputs.s, inputs.t
    name_of, n = type(process).__name__, process.num_states
    ctx = {"s": s, "t": t, "x0": x0}
    tol = max(1e-9, config.tol[1])  # probabilities: 1e-9 in float64, the dtype's atol otherwise
    db = process._delta_b(s, t)
    generic = MarkovChain._matrix_of(process, db)
    fail_worst(CLOSED_FORMS, process, f"{name_of} P(s, t) vs generic matrix_exp((B(t) - B(s)) R)",
               process._matrix_of(db), generic, torch.full_like(generic, tol), ctx)
    fail_worst(CLOSED_FORMS, process, f"{name_of} log P(s, t) vs log of generic matrix_exp",
               torch.exp(process._log_matrix_of(db)), generic, torch.full_like(generic, tol), ctx)
    if n > MAX_ENUMERATED_STATES:
        return "transition matrices (too many states to compare every query by enumeration)"
    xs = sample_with(process.marginal(x0, s), inputs.generator)
    xt = sample_with(process.transition(xs, s, t), inputs.generator)
    queries = {
        "marginal": lambda c: c.marginal(process, x0, t),
        "transition": lambda c: c.transition(process, x0, s, t),
        "posterior": lambda c: c.posterior(process, x0, xt, s, t),
    }
    for name, query in queries.items():
        mine, generic = state_probs(query(type(process)), x0, n), state_probs(query(MarkovChain), x0, n)
        fail_worst(CLOSED_FORMS, process, f"{name_of}.{name} vs MarkovChain.{name} (probabilities of every state)",
                   mine, generic, torch.full_like(generic, tol), ctx)
    return f"transition matrices and {len(queries)} queries against the generic chain"


# ==================================================================== exact jump simulation
@SIMULATION.register(MarkovChain)
def _chain_simulation(process, inputs: Inputs, config: CheckConfig):
    """Gillespie's algorithm in the clock B(t) - B(t_min), where R_t = beta(t) R is homogeneous."""
    gen, n_paths, n = inputs.generator, config.num_samples, process.num_states
    starts = torch.unique(inputs.x0.reshape(-1))[:4].long()
    x = starts[None, :].expand(n_paths, -1).clone()
    device = inputs.x0.device
    R = process.generator.to(device=device, dtype=torch.float64)
    off_diag = 1 - torch.eye(n, dtype=torch.float64, device=device)
    span = process.t_max - process.t_min
    outputs = [process.t_min + 0.1 * span, process.t_min + 0.4 * span, process.t_max]
    clocks = process.integrated_beta(torch.tensor(outputs, dtype=torch.float64)) - process.integrated_beta(
        torch.tensor(process.t_min, dtype=torch.float64))
    clock = torch.zeros(x.shape, dtype=torch.float64, device=device)
    x0 = starts[None, :]
    jumps = 0
    for t_out, target in zip(outputs, clocks.tolist()):
        while True:
            out_rate = -R[x, x]
            active = (clock < target) & (out_rate > 0)
            if not bool(active.any()):
                break
            uniform = torch.rand(x.shape, generator=gen, dtype=torch.float64, device=device)
            wait = -torch.log1p(-uniform) / out_rate.clamp_min(1e-300)
            jump = active & (clock + wait <= target)
            clock = torch.where(active, torch.where(jump, clock + wait, torch.full_like(clock, target)), clock)
            dest = sample_categorical((R[x] * off_diag[x]).clamp_min(0.0), gen)
            x = torch.where(jump, dest, x)
            jumps += int(jump.sum())
        clock = torch.full_like(clock, target)
        freq = torch.nn.functional.one_hot(x, n).to(torch.float64).mean(0)                 # (E, S)
        p = state_probs(process.marginal(x0, t_out), x0, n)[0]                          # (E, S)
        tol = config.z * torch.sqrt(p * (1 - p) / n_paths) + 1.0 / n_paths
        fail_worst(SIMULATION, process, f"state frequencies of exact jump simulation at t = {t_out:.6g} vs "
                                        "marginal probabilities", freq, p, tol,
                   {"x0 (one per row)": starts, "t": t_out, "paths": n_paths})
    return f"{n_paths} paths from {starts.numel()} states, {jumps} jumps"


# ==================================================================== time reversal
@REVERSE_MARGINALS.register(MarkovChain)
def _chain_time_reversal(process, inputs: Inputs, config: CheckConfig):
    n, gen = process.num_states, inputs.generator
    device = inputs.x0.device
    p0 = torch.rand(n, generator=gen, dtype=torch.float64, device=device) + 0.1
    p0 = p0 / p0.sum()
    _, times = inputs.times()
    # at t_min exactly q(x_t|x_0) is the identity and p(x_0|x_t) a point mass: the reversal holds as t -> t_min
    times = times[times > process.t_min][:16].to(torch.float64)
    k = times.numel()
    t_min = torch.full_like(times, process.t_min)
    P = process.transition_matrix(t_min, times).to(torch.float64)                          # (k, S, S)
    p_t = torch.einsum("i,kij->kj", p0, P)                                                  # (k, S)
    states = torch.arange(n, device=device)
    x = states[None, :].expand(k, n).reshape(k * n, 1)                                      # (k S, 1)
    tt = times.repeat_interleave(n)
    post = p0[None, :, None] * P / p_t[:, None, :].clamp_min(1e-300)                       # p(x0 | x_t = x): (k, x0, x)
    x0_probs = post.transpose(1, 2).reshape(k * n, 1, n)
    rev = process.reverse_rates(x0_probs, x, tt).reshape(k, n, n).to(torch.float64)        # R_hat(x -> y)
    fwd = process.rate(times).to(torch.float64)                                             # R_t(y -> x) at [y, x]
    lhs = p_t[:, :, None] * rev                                                              # p_t(x) R_hat(x -> y)
    rhs = p_t[:, None, :] * fwd.transpose(1, 2)                                              # p_t(y) R_t(y -> x)
    off = ~torch.eye(n, dtype=torch.bool, device=device)
    scale = (lhs.abs() + rhs.abs()).amax((-1, -2), keepdim=True).clamp_min(1e-300)
    fail_worst(REVERSE_MARGINALS, process, "time reversal p_t(x) R_hat_t(x->y) vs p_t(y) R_t(y->x) (x != y), "
                                           "exact posterior of a random data law",
               torch.where(off, lhs, 0.0), torch.where(off, rhs, 0.0), 1e-9 * scale.expand_as(lhs),
               {"t": times, "data law p_0": p0})
    return f"{n} states, {k} times"
