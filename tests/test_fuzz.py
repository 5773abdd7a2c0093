"""Issue 13: a fuzz suite over the public API. Every process × query, model query and sampler entry point
is called with valid and broken inputs (NaN/inf, wrong shapes, empty batches, wrong dtypes, out-of-range
times and states); each call must return finite values (an empty result for an empty batch) or raise
``ValueError``/``TypeError`` whose message names one of the call's arguments. Anything else (another
exception, a NaN, a clean error that names no argument) is an unclassified outcome and fails the test.

The bounded run is in the default suite; ``-m slow`` runs a longer one. ``python tests/test_fuzz.py N``
prints the counts of N examples (calls, clean errors, results)."""

from __future__ import annotations

import collections
import math
import re
import sys
import warnings

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import probdiff as pd

PROCESSES = [pd.VPSDE(), pd.VESDE(), pd.SubVPSDE(), pd.CosineVP(), pd.LinearBlend(),
             pd.UniformChain(5), pd.AbsorbingChain(5), pd.Blackout(7)]
EVENT = (3,)
COUNTS: collections.Counter = collections.Counter()


def is_chain(process):
    return isinstance(process, pd.MarkovChain)


def good_x(process, n):
    if is_chain(process):
        return torch.randint(0, process.num_states - (1 if isinstance(process, pd.AbsorbingChain) else 0),
                             (n, *EVENT), generator=torch.Generator().manual_seed(n))
    return torch.randn(n, *EVENT, generator=torch.Generator().manual_seed(n))


def broken_x(process, kind, n):
    x = good_x(process, n)
    if kind == "good":
        return x
    if kind == "empty":
        return x[:0]
    if kind == "nan":
        return torch.full((n, *EVENT), math.nan)
    if kind == "inf":
        return torch.full((n, *EVENT), math.inf)
    if kind == "flat":
        return x.reshape(-1)
    if kind == "complex":
        return x.to(torch.complex64)
    if kind == "bool":
        return x > 0
    if kind == "int_or_frac":  # integers for a Gaussian, fractions for a chain
        return x.float() + 0.5 if is_chain(process) else x.round().long()
    if kind == "huge_state":
        return torch.full((n, *EVENT), 10**6, dtype=torch.long) if is_chain(process) else x * 1e30
    if kind == "negative_state":
        return -torch.ones(n, *EVENT, dtype=torch.long) if is_chain(process) else -x
    if kind == "list":
        return x.tolist()
    raise AssertionError(kind)


X_KINDS = ["good", "good", "empty", "nan", "inf", "flat", "complex", "bool", "int_or_frac", "huge_state",
           "negative_state", "list"]


def a_time(process, kind, n):
    lo, hi = process.t_min, process.t_max
    mid = lo + 0.5 * (hi - lo)
    return {"mid": mid, "low": lo, "high": hi, "nan": math.nan, "inf": math.inf, "below": lo - 1.0,
            "above": hi + 1.0, "vector": torch.full((n,), mid), "wrong_len": torch.full((n + 1,), mid),
            "matrix": torch.full((n, 2), mid), "string": "0.5", "none": None, "complex": complex(mid, 1.0),
            "f16": torch.tensor(mid, dtype=torch.float16)}[kind]


T_KINDS = ["mid", "mid", "low", "high", "nan", "inf", "below", "above", "vector", "wrong_len", "matrix", "string",
           "none", "complex", "f16"]


def finite(value) -> bool:
    """Finite values; ``-inf`` is allowed in log-probabilities (a density that underflows far in a tail)."""
    if isinstance(value, LogProb):
        return not bool((torch.isnan(value.value) | (value.value == math.inf)).any())
    if isinstance(value, torch.Tensor):
        return not value.is_floating_point() or bool(torch.isfinite(value).all())
    if isinstance(value, (tuple, list)):
        return all(finite(v) for v in value)
    return True


def classify(call, names):
    """Run ``call``; count and return 'result' or 'clean'; raise AssertionError on anything else."""
    COUNTS["calls"] += 1
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out = call()
    except (ValueError, TypeError) as exc:
        text = str(exc)
        if not any(re.search(rf"(?<![A-Za-z0-9_]){re.escape(n)}(?![A-Za-z0-9_])", text) for n in names):
            COUNTS["unclassified"] += 1
            raise AssertionError(f"clean error that names none of {names}: {type(exc).__name__}: {text}") from exc
        COUNTS["clean errors"] += 1
        return "clean"
    except Exception as exc:  # noqa: BLE001
        COUNTS["unclassified"] += 1
        raise AssertionError(f"unclassified exception {type(exc).__name__}: {exc}") from exc
    if not finite(out):
        COUNTS["unclassified"] += 1
        raise AssertionError(f"non-finite result {out}")
    COUNTS["results"] += 1
    return "result"


class LogProb:
    def __init__(self, value):
        self.value = value


def score(dist, x, good):
    """A distribution's log-probability at a value of its own shape (what a user does with an answer)."""
    value = good[: x.shape[0]] if isinstance(x, torch.Tensor) and x.dim() >= 2 else good
    return LogProb(dist.log_prob(value))


NETWORK = "network"  # a message naming the network names the argument net


def query_calls(process, x, t, s, n):
    good = good_x(process, n)
    calls = [
        (lambda: score(process.marginal(x, t), x, good), ["x0", "t"]),
        (lambda: score(process.transition(x, s, t), x, good), ["xs", "s", "t"]),
        (lambda: score(process.posterior(good, x, s, t), x, good), ["x0", "xt", "s", "t"]),
        # (the prior's log_prob is torch's distribution, validated by torch: not fuzzed here)
    ]
    if is_chain(process):
        calls.append((lambda: process.transition_matrix(s, t), ["s", "t"]))
        calls.append((lambda: process.sample_marginal(x, t), ["x0", "t"]))
        probs = torch.full((*good.shape, process.num_states), 1.0 / process.num_states)
        calls.append((lambda: process.reverse_rates(probs, x, t), ["x", "t", "x0_probs"]))
    return calls


def model_calls(process, x, t, n):
    if is_chain(process):
        s = process.num_states
        nets = {"good": lambda x, t: torch.zeros(*x.shape, s), "nan": lambda x, t: torch.full((*x.shape, s), math.nan),
                "shape": lambda x, t: torch.zeros(1), "int": lambda x, t: torch.zeros(*x.shape, s, dtype=torch.long)}
        if isinstance(process, pd.Blackout):
            nets = {"good": lambda x, t: torch.zeros(x.shape), "nan": lambda x, t: torch.full(x.shape, math.nan),
                    "shape": lambda x, t: torch.zeros(1), "int": lambda x, t: torch.zeros(x.shape, dtype=torch.long)}
            return [(lambda net=net: pd.BlackoutModel(net, process).mean_births(x, t), ["x", "t", NETWORK])
                    for net in nets.values()]
        return [(lambda net=net: pd.CategoricalModel(net, process).x0_probs(x, t), ["x", "t", NETWORK])
                for net in nets.values()]
    nets = [lambda x, t: torch.zeros_like(x), lambda x, t: torch.full_like(x, math.nan),
            lambda x, t: torch.zeros(1), lambda x, t: [0.0]]
    calls = []
    for cls in (pd.DenoiserModel, pd.EpsilonModel, pd.ScoreModel, pd.VelocityModel):
        for net in nets:
            model = cls(net, process)
            calls.append((lambda model=model: model.score(x, t), ["x", "t", NETWORK]))
    return calls


def sampler_calls(process, x, n):
    if is_chain(process):
        model = pd.oracles.Empirical(good_x(process, 4)).model(process)
        solver = pd.solvers.Ancestral()
    else:
        model = pd.oracles.Empirical(torch.randn(4, *EVENT, generator=torch.Generator().manual_seed(1))).model(process)
        solver = pd.solvers.Euler()
    rev = pd.reverse(model, 0.0 if not is_chain(process) else 1.0)
    grid = pd.grids.Uniform(2)
    calls = [(lambda: pd.sample(rev, x_init=x, solver=solver, grid=grid).x, ["x_init"])]
    if not is_chain(process):
        calls.append((lambda: LogProb(pd.log_likelihood(model, x, rtol=1e-2, atol=1e-2)), ["x"]))
    return calls


@st.composite
def cases(draw):
    process = draw(st.sampled_from(PROCESSES))
    n = draw(st.integers(1, 3))
    return (process, n, draw(st.sampled_from(X_KINDS)), draw(st.sampled_from(T_KINDS)),
            draw(st.sampled_from(["low", "mid", "nan", "above", "vector", "wrong_len"])),
            draw(st.sampled_from(["queries", "models", "samplers"])))


def fuzz_one(case):
    process, n, xk, tk, sk, family = case
    x = broken_x(process, xk, n)
    t = a_time(process, tk, n)
    s = a_time(process, sk, n)
    if isinstance(s, float) and isinstance(t, float) and s == t == process.t_min:
        s = t  # (s == t is refused by the queries: a clean error)
    if family == "queries":
        calls = query_calls(process, x, t, s, n)
    elif family == "models":
        calls = model_calls(process, x, t, n)
    else:
        calls = sampler_calls(process, x, n)
    for call, names in calls:
        classify(call, names + ["net"] if NETWORK in names else names)


@settings(max_examples=60, derandomize=True, deadline=None, suppress_health_check=list(HealthCheck))
@given(cases())
def test_fuzz_public_api(case):
    fuzz_one(case)


@pytest.mark.slow
@settings(max_examples=1500, derandomize=True, deadline=None, suppress_health_check=list(HealthCheck))
@given(cases())
def test_fuzz_public_api_long(case):
    fuzz_one(case)


def survey(n_examples):
    """Every failure of ``n_examples`` cases, by message (for development)."""
    import random
    rng = random.Random(0)
    found = collections.Counter()
    for _ in range(n_examples):
        case = (rng.choice(PROCESSES), rng.randint(1, 3), rng.choice(X_KINDS), rng.choice(T_KINDS),
                rng.choice(["low", "mid", "nan", "above", "vector", "wrong_len"]),
                rng.choice(["queries", "models", "samplers"]))
        process, n, xk, tk, sk, family = case
        x, t, s = broken_x(process, xk, n), a_time(process, tk, n), a_time(process, sk, n)
        calls = (query_calls(process, x, t, s, n) if family == "queries" else model_calls(process, x, t, n)
                 if family == "models" else sampler_calls(process, x, n))
        for i, (call, names) in enumerate(calls):
            try:
                classify(call, names + ["net"] if NETWORK in names else names)
            except AssertionError as exc:
                found[(type(process).__name__, family, i, xk, tk, sk, str(exc)[:150])] += 1
    return found


if __name__ == "__main__":  # python tests/test_fuzz.py N: the counts of N examples
    n_examples = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    settings(max_examples=n_examples, derandomize=True, deadline=None,
             suppress_health_check=list(HealthCheck))(given(cases())(fuzz_one))()
    print(dict(COUNTS))
