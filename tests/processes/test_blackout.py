"""Blackout diffusion (THEORY.md §5): binomial closed forms equal the generic chain, binomial moments,
stability at the ends of time, the birth rate, the observation grid, the losses and bad input.

Expected values come from the generic matrix-exponential chain, scipy.stats.binom and closed forms.
"""

import itertools
import math

import numpy as np
import pytest
import scipy.stats
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import probdiff as pd
from probdiff.losses import BlackoutLikelihood, BlackoutLoss, BlackoutOriginal, LogitTime
from probdiff.oracles import Empirical

pytestmark = pytest.mark.usefixtures("float64")

K = 4                                  # max_count for exact enumeration


def grid_states(d=2):
    return torch.tensor(list(itertools.product(range(K + 1), repeat=d)))


@settings(max_examples=15)
@given(s=st.floats(0.0, 5.9), dt=st.floats(1e-6, 6.0))
def test_closed_forms_equal_generic_chain(s, dt):
    t = min(s + dt, 6.0)
    if not s < t:
        return
    b = pd.Blackout(max_count=K, t_max=6.0)
    generic = pd.MarkovChain(b.generator, t_max=6.0)
    np.testing.assert_allclose(b.transition_matrix(torch.tensor(s), torch.tensor(t)).numpy(),
                               generic.transition_matrix(torch.tensor(s), torch.tensor(t)).numpy(), atol=1e-9)
    states = grid_states()
    x0 = states.flip(0)
    for x in (states, x0):
        np.testing.assert_allclose(b.marginal(x0, t).log_prob(x).exp().numpy(),
                                   generic.marginal(x0, t).log_prob(x).exp().numpy(), atol=1e-9)
        np.testing.assert_allclose(b.transition(x0, s, t).log_prob(x).exp().numpy(),
                                   generic.transition(x0, s, t).log_prob(x).exp().numpy(), atol=1e-9)
    xt = torch.minimum(states, x0)                   # reachable from x0
    for xs in (states, x0, xt):
        np.testing.assert_allclose(b.posterior(x0, xt, s, t).log_prob(xs).exp().numpy(),
                                   generic.posterior(x0, xt, s, t).log_prob(xs).exp().numpy(), atol=1e-8)


def test_closed_forms_match_scipy_binomial_at_the_ends_of_time():
    b = pd.Blackout()                                                  # max_count 255, t_max 15
    n0 = torch.tensor([[0, 1, 100, 255]])
    def logpmf(k, n, t):            # in Python floats with expm1: scipy's 1 - exp(-t) loses digits at t = 1e-12
        return (math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1) - k * t
                + ((n - k) * math.log(-math.expm1(-t)) if n > k else 0.0))
    for t in (1e-12, 1e-3, 7.5, 15.0):
        k = torch.tensor([[0, 1, 37, 255]]).clamp_max(n0)
        want = sum(logpmf(ki, ni, t) for ki, ni in zip(k[0].tolist(), n0[0].tolist()))
        got = b.marginal(n0, t).log_prob(k)
        assert torch.isfinite(got).all()
        np.testing.assert_allclose(got.item(), want, rtol=1e-12)
        if t >= 1e-3:
            np.testing.assert_allclose(got.item(), scipy.stats.binom.logpmf(k.numpy(), n0.numpy(), math.exp(-t)).sum(),
                                       rtol=1e-9)
    lp = b.log_transition_matrix(torch.tensor(0.0), torch.tensor(1e-12))
    assert not torch.isnan(lp).any()
    assert torch.allclose(lp.exp().sum(-1), torch.ones(256))
    # posterior near t -> 0 with s = 0: all missing photons are back for sure
    x0, xt = torch.tensor([[9, 3]]), torch.tensor([[8, 3]])
    post = b.posterior(x0, xt, 0.0, 1e-9)
    assert post.log_prob(x0).item() == 0.0


@pytest.mark.parametrize("t", [0.01, 0.8, 4.0])
def test_binomial_moments(t):
    b = pd.Blackout(max_count=255)
    n0 = torch.tensor([[0, 7, 120, 255]]).repeat(40_000, 1)
    p = math.exp(-t)
    d = b.marginal(n0, t)
    want_mean, want_var = n0[0] * p, n0[0] * p * (1 - p)
    np.testing.assert_allclose(d.mean[0].numpy(), want_mean.numpy(), rtol=1e-12)
    np.testing.assert_allclose(d.variance[0].numpy(), want_var.numpy(), rtol=1e-12)
    torch.manual_seed(0)
    x = d.sample().double()
    se = (want_var / n0.shape[0]).sqrt()
    assert ((x.mean(0) - want_mean).abs() <= 5 * se + 1e-12).all()
    assert torch.allclose(x.var(0), want_var, rtol=0.05, atol=1e-12)
    # posterior: n_t + Bin(n0 - n_t, (p_s - p_t)/(1 - p_t))
    s = t / 3
    xt = b.sample_marginal(n0[:4], t, generator=torch.Generator().manual_seed(1))
    post = b.posterior(n0[:4], xt, s, t)
    q = (math.exp(-s) - p) / (1 - p)
    np.testing.assert_allclose(post.mean.numpy(), (xt + (n0[:4] - xt) * q).numpy(), rtol=1e-10)


def test_birth_rate_equals_generic_reverse_rate():
    b = pd.Blackout(max_count=K, t_max=6.0)
    data = torch.tensor([[4, 1], [2, 2], [3, 0], [4, 4]])
    oracle = Empirical(data).model(b)
    rev = pd.reverse(b, oracle)
    x = grid_states()
    for t in (0.02, 1.0, 5.0):
        generic = b.reverse_rates(oracle.x0_probs(x, t), x, t)       # Campbell et al.'s formula
        closed = rev.rates(x, t)                                     # E[n0 - n_t] p_t / (1 - p_t) into n + 1
        reachable = torch.isfinite(oracle.log_prob(x, t))
        np.testing.assert_allclose(closed[reachable].numpy(), generic[reachable].numpy(), rtol=1e-9, atol=1e-12)
        # the mean births is E[n0 - n_t | n_t] under the exact posterior
        want = (oracle.x0_probs(x, t) * torch.arange(K + 1.0)).sum(-1) - x
        np.testing.assert_allclose(rev.mean_births(x, t)[reachable].numpy(), want[reachable].numpy(), atol=1e-12)


def test_logit_observation_grid():
    b = pd.Blackout(max_count=255, t_max=15.0)
    ts = pd.grids.LogitObservation(1000).times(b)
    assert ts.shape == (1001,) and ts[0] == 15.0 and ts[-1] == 0.0
    assert (ts[1:] < ts[:-1]).all()
    logit = -torch.log(torch.expm1(ts[:-1]))                           # logit(e^{-t})
    np.testing.assert_allclose(torch.diff(logit).numpy(), np.full(999, 2 * logit[-1].item() / 999), rtol=1e-9)
    np.testing.assert_allclose(math.exp(-ts[-2].item()), 1 - math.exp(-15.0), rtol=1e-12)
    with pytest.raises(ValueError, match="steps"):
        pd.grids.LogitObservation(1)


def test_loss_weightings_and_time_proposal():
    b = pd.Blackout(max_count=16, t_max=10.0)
    t = torch.tensor([1e-4, 0.5, 9.0])
    np.testing.assert_allclose(BlackoutLikelihood()(b, t).numpy(), np.exp(-t.numpy()) / -np.expm1(-t.numpy()))
    np.testing.assert_allclose(BlackoutOriginal()(b, t).numpy(), np.exp(-t.numpy()))
    # importance sampling: E_pi[f(t) / pi(t)] = int f dt; f = p_t / (1 - p_t) on [t_lo, t_max] integrates to
    # log(1 - e^{-t_max}) - log(1 - e^{-t_lo})
    prop = LogitTime()
    ts, _ = prop.sample(b, 400_000, generator=torch.Generator().manual_seed(0))
    lo = prop.lowest(b)
    assert ts.min() >= lo * (1 - 1e-9) and ts.max() <= 10.0
    vals = BlackoutOriginal()(b, ts) * prop.inverse_density(b, ts)
    np.testing.assert_allclose(vals.mean().item(), math.exp(-lo) - math.exp(-10.0), rtol=3 * vals.std().item()
                               / math.sqrt(len(ts)) / (math.exp(-lo) - math.exp(-10.0)))
    vals = BlackoutLikelihood()(b, ts) * prop.inverse_density(b, ts)
    want = math.log1p(-math.exp(-10.0)) - math.log1p(-math.exp(-lo))
    assert abs(vals.mean().item() - want) < 4 * vals.std().item() / math.sqrt(len(ts))


def test_loss_vanishes_at_the_exact_model_of_one_point_and_is_larger_elsewhere():
    b = pd.Blackout(max_count=16, t_max=10.0)
    data = torch.tensor([[16, 3, 0, 9]])
    oracle = Empirical(data).model(b)
    loss = BlackoutLoss(b)
    x0 = data.repeat(64, 1)
    assert torch.allclose(loss(oracle, x0, generator=torch.Generator().manual_seed(0)), torch.zeros(64), atol=1e-9)

    class Scaled(pd.BlackoutModel):
        def mean_births(self, x, t):
            return 1.3 * oracle.mean_births(x, t) + 1e-3
    assert (loss(Scaled(None, b), x0, generator=torch.Generator().manual_seed(0)) > 0).all()
    with pytest.raises(ValueError, match="weighting"):
        BlackoutLoss(b, weighting="likelihood")


def test_blackout_model_softplus_and_validation():
    b = pd.Blackout(max_count=16, t_max=10.0)
    model = pd.BlackoutModel(lambda x, t: x - 8.0, b)
    x = torch.tensor([[0, 8, 16]])
    np.testing.assert_allclose(model.mean_births(x, 1.0).numpy(), np.log1p(np.exp([[-8.0, 0.0, 8.0]])), rtol=1e-12)
    with pytest.raises(ValueError, match="shape"):
        pd.BlackoutModel(lambda x, t: x[:, :1].double(), b).mean_births(x, 1.0)
    with pytest.raises(ValueError, match="Blackout"):
        pd.BlackoutModel(lambda x, t: x, pd.UniformChain(3))


def test_bad_input():
    b = pd.Blackout(max_count=16, t_max=10.0)
    with pytest.raises(ValueError, match="0..16"):
        b.marginal(torch.tensor([[17, 0]]), 1.0)
    with pytest.raises(ValueError, match="0..16"):
        b.marginal(torch.tensor([[-1, 0]]), 1.0)
    with pytest.raises(ValueError, match="integer"):
        b.marginal(torch.tensor([[1.5, 0.0]]), 1.0)
    with pytest.raises(ValueError, match="xt must be <= x0"):
        b.posterior(torch.tensor([[3, 0]]), torch.tensor([[4, 0]]), 0.5, 1.0)
    with pytest.raises(ValueError, match="max_count"):
        pd.Blackout(max_count=0)
    with pytest.raises(ValueError, match="t must lie"):
        b.marginal(torch.tensor([[3, 0]]), 10.5)


def test_logit_half_range_spans_the_elbo_times():
    from probdiff._util import logit_half_range
    for t_max in (0.5, 3.0, 10.0, 30.0):
        t_lo, hi = pd.Blackout(8, t_max=t_max).elbo_time_range()
        half = logit_half_range(t_max)
        # v = log(e^t - 1) maps [t_lo, t_max] onto [-L/2, L/2]
        assert math.log(math.expm1(t_max)) == pytest.approx(half, rel=1e-12)
        assert math.log(math.expm1(t_lo)) == pytest.approx(-half, rel=1e-9, abs=1e-12)
