"""Generic Markov chains (THEORY.md §5): matrix exponentials, Chapman–Kolmogorov, Bayes, closed forms,
reverse rates against brute-force time reversal, bad input.

Expected values come from scipy.linalg.expm and exact enumeration of small state spaces.
"""

import itertools
import math

import numpy as np
import pytest
import scipy.linalg
import torch
from hypothesis import given
from hypothesis import strategies as st

import probdiff as pd
from probdiff.oracles import Empirical

pytestmark = pytest.mark.usefixtures("float64")


def random_generator(seed: int, s: int) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    r = rng.exponential(1.0, (s, s)) * (rng.random((s, s)) < 0.8)
    np.fill_diagonal(r, 0.0)
    np.fill_diagonal(r, -r.sum(1))
    return torch.tensor(r)


def linear_beta_chain(gen, t_max=2.0):
    """beta(t) = 1 + t, B(t) = t + t^2 / 2: a time-inhomogeneous generator."""
    return pd.MarkovChain(gen, beta=lambda t: 1 + t, integrated_beta=lambda t: t + t**2 / 2, t_max=t_max)


def expm(gen: torch.Tensor, db: float) -> np.ndarray:
    return scipy.linalg.expm(db * gen.numpy())


@given(seed=st.integers(0, 10_000), s=st.integers(2, 5), a=st.floats(0.0, 2.0), b=st.floats(0.0, 2.0))
def test_transition_matrix_equals_scipy_expm(seed, s, a, b):
    lo, hi = min(a, b), max(a, b)
    gen = random_generator(seed, s)
    chain = linear_beta_chain(gen)
    got = chain.transition_matrix(torch.tensor([lo]), torch.tensor([hi]))[0]
    db = (hi + hi**2 / 2) - (lo + lo**2 / 2)
    np.testing.assert_allclose(got.numpy(), expm(gen, db), atol=1e-10)
    assert torch.allclose(got.sum(-1), torch.ones(s))
    rate = chain.rate(torch.tensor(hi))
    np.testing.assert_allclose(rate.numpy(), (1 + hi) * gen.numpy())


def test_closed_forms_equal_generic_expm():
    for closed in (pd.UniformChain(4, rate=1.7, t_max=3.0), pd.AbsorbingChain(5, rate=0.6, t_max=3.0)):
        generic = pd.MarkovChain(closed.generator, t_max=3.0)
        s = torch.tensor([0.0, 0.0, 0.3, 1e-9, 1.0])
        t = torch.tensor([1e-12, 0.5, 2.9, 2e-9, 3.0])
        np.testing.assert_allclose(closed.transition_matrix(s, t).numpy(), generic.transition_matrix(s, t).numpy(),
                                   atol=1e-12)
        for si, ti in zip(s.tolist(), t.tolist()):
            np.testing.assert_allclose(closed.transition_matrix(torch.tensor(si), torch.tensor(ti)).numpy(),
                                       expm(closed.generator, ti - si), atol=1e-12)


def all_states(s: int, d: int) -> torch.Tensor:
    return torch.tensor(list(itertools.product(range(s), repeat=d)))


@pytest.mark.parametrize("make", [lambda: linear_beta_chain(random_generator(3, 3)),
                                  lambda: pd.UniformChain(3, t_max=2.0), lambda: pd.AbsorbingChain(3, t_max=2.0)])
def test_chapman_kolmogorov_and_bayes_by_enumeration(make):
    chain = make()
    s_, t_ = 0.4, 1.3
    states = all_states(3, 1)                       # (3, 1): every state of one dimension
    for i in range(3):
        x0 = torch.full((3, 1), i)
        q_s = chain.marginal(x0, s_).log_prob(states)                     # over x_s
        for j in range(3):
            xt = torch.full((3, 1), j)
            ck = torch.logsumexp(q_s + chain.transition(states, s_, t_).log_prob(xt), 0)
            assert torch.allclose(ck, chain.marginal(x0[:1], t_).log_prob(xt[:1])[0], atol=1e-12)
            lhs_t = chain.marginal(x0[:1], t_).log_prob(xt[:1])
            if torch.isinf(lhs_t).all():
                continue                                                   # x_t unreachable from x_0
            post = chain.posterior(x0, xt, s_, t_).log_prob(states)
            lhs = post + lhs_t
            rhs = chain.transition(states, s_, t_).log_prob(xt) + q_s
            finite = torch.isfinite(rhs)
            assert torch.equal(finite, torch.isfinite(lhs))
            assert torch.allclose(lhs[finite], rhs[finite], atol=1e-10)


def test_shapes_and_dtypes():
    chain = pd.UniformChain(5)
    x0 = torch.randint(0, 5, (7, 2, 3))
    for d in (chain.marginal(x0, 0.5), chain.transition(x0, 0.2, 0.5),
              chain.posterior(x0, chain.marginal(x0, 0.5).sample(), 0.2, 0.5)):
        assert d.batch_shape == (7,) and d.event_shape == (2, 3)
        assert d.sample().dtype == torch.long and d.sample().shape == x0.shape
        assert d.log_prob(x0).shape == (7,)
    prior = chain.prior((2, 3))
    assert prior.batch_shape == () and prior.event_shape == (2, 3)
    assert torch.allclose(prior.base_dist.probs, torch.full((2, 3, 5), 0.2))
    draws = chain.sample_prior(11, (2, 3), generator=torch.Generator().manual_seed(0))
    assert draws.shape == (11, 2, 3) and draws.dtype == torch.long


def test_prior_is_reference_law():
    absorbing = pd.AbsorbingChain(4, t_max=10.0)
    probs = absorbing.prior_probs()
    q = math.exp(-10.0)
    np.testing.assert_allclose(probs.numpy(), [q / 4, q / 4, q / 4, 1 - 3 * q / 4], rtol=1e-9)
    gen = random_generator(7, 4)
    chain = pd.MarkovChain(gen, t_max=1.5)
    np.testing.assert_allclose(chain.prior_probs().numpy(), expm(gen, 1.5).mean(0), atol=1e-12)


def brute_force_rates(gen, beta, big_b, data, x, t):
    """R_hat(x -> y) = R_t(y -> x) p_t(y) / p_t(x), p_t by enumeration over the data points."""
    p = scipy.linalg.expm(big_b * gen.numpy())
    def p_t(z):
        return np.mean([np.prod([p[yi[d], z[d]] for d in range(len(z))]) for yi in data.tolist()])
    s, dims = gen.shape[0], len(x)
    out = np.zeros((dims, s))
    for d in range(dims):
        for k in range(s):
            if k == x[d]:
                continue
            y = list(x)
            y[d] = k
            out[d, k] = beta * gen[k, x[d]].item() * p_t(y) / p_t(x)
        out[d, x[d]] = -out[d].sum()
    return out


@pytest.mark.parametrize("t", [0.05, 0.7, 1.9])
def test_reverse_rates_of_oracle_equal_brute_force_time_reversal(t):
    gen = random_generator(11, 3)
    chain = linear_beta_chain(gen)
    data = torch.tensor([[0, 1], [2, 2], [1, 0]])
    rev = pd.reverse(chain, Empirical(data).model(chain))
    xs = all_states(3, 2)
    got = rev.rates(xs, t)
    for b, x in enumerate(xs.tolist()):
        want = brute_force_rates(gen, 1 + t, t + t**2 / 2, data, x, t)
        np.testing.assert_allclose(got[b].numpy(), want, rtol=1e-9, atol=1e-12)


def test_oracle_log_prob_and_posterior_by_enumeration():
    gen = random_generator(5, 3)
    chain = pd.MarkovChain(gen, t_max=2.0)
    data = torch.tensor([[0, 1], [2, 2], [1, 0], [0, 1]])
    oracle = Empirical(data, chunk_size=3).model(chain)           # chunks exercise the online log-sum-exp
    p = expm(gen, 0.8)
    xs = all_states(3, 2)
    lik = np.array([[p[y[0], x[0]] * p[y[1], x[1]] for y in data.tolist()] for x in xs.tolist()])   # (9, N)
    np.testing.assert_allclose(oracle.log_prob(xs, 0.8).numpy(), np.log(lik.mean(1)), rtol=1e-10)
    w = lik / lik.sum(1, keepdims=True)
    onehot = np.eye(3)[data.numpy()]                                # (N, D, S)
    np.testing.assert_allclose(oracle.x0_probs(xs, 0.8).numpy(), np.einsum("bn,nds->bds", w, onehot), atol=1e-12)


def test_bad_input():
    with pytest.raises(ValueError, match="non-negative off-diagonal"):
        pd.MarkovChain(torch.tensor([[1.0, -1.0], [0.5, -0.5]]))
    with pytest.raises(ValueError, match="sum to 0"):
        pd.MarkovChain(torch.tensor([[-1.0, 0.5], [0.5, -0.5]]))
    with pytest.raises(ValueError, match="square"):
        pd.MarkovChain(torch.zeros(2, 3))
    with pytest.raises(ValueError, match="beta and integrated_beta"):
        pd.MarkovChain(random_generator(0, 3), beta=lambda t: t)
    with pytest.raises(ValueError, match="num_states"):
        pd.UniformChain(1)
    chain = pd.UniformChain(4)
    good = torch.tensor([[0, 3]])
    for bad, what in ((torch.tensor([[0, 4]]), "0..3"), (torch.tensor([[-1, 0]]), "0..3"),
                      (torch.tensor([[0.5, 1.0]]), "integer")):
        with pytest.raises(ValueError, match=what):
            chain.marginal(bad, 0.5)
        with pytest.raises(ValueError, match=what):
            chain.posterior(good, bad, 0.1, 0.5)
    with pytest.raises(ValueError, match="t must lie"):
        chain.marginal(good, 11.0)
    with pytest.raises(ValueError, match="s must be < t"):
        chain.transition(good, 0.5, 0.5)
    absorbing = pd.AbsorbingChain(3)
    with pytest.raises(ValueError, match="reachable"):
        absorbing.posterior(torch.tensor([[0]]), torch.tensor([[1]]), 0.1, 0.5)
    with pytest.raises(ValueError, match="noise must be 1"):
        pd.probability_flow(chain, Empirical(good).model(chain))
