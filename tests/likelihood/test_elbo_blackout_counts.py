"""Importance-sampled counts and control variates of the continuous-time Blackout ELBO
(probdiff.likelihood.DefensiveCounts, CountsControlVariate, FittedBlackoutTime.fit(counts=..., control=True)):
weights and feature means checked against scipy's binomial law by enumeration; the estimator stays unbiased
for the exact oracle's bound log(1/N) and agrees with Santos et al.'s estimator for an imperfect model; its
per-draw spread on the 3-point oracle is at least 4x lower at equal cost."""

import itertools
import math

import numpy as np
import pytest
import torch
from scipy.stats import binom

import probdiff as pd
from probdiff.likelihood import CountsControlVariate, DefensiveCounts, FittedBlackoutTime, prior_kl
from probdiff.oracles import Empirical

pytestmark = pytest.mark.usefixtures("float64")

DATA_3 = torch.tensor([[8, 0], [3, 5], [1, 1]])
OLD = dict(time=pd.LogitTime(), fold_decoder=False)      # Santos et al.'s estimator


def states_of(n0):
    return torch.tensor(list(itertools.product(*[range(k + 1) for k in n0])))


def scipy_laws(n0, t, share, delay):
    """q(n) and r(n) for every state n <= n0 (product binomials, scipy), numpy vectors."""
    st = states_of(n0).numpy()
    p = math.exp(-t)
    q = np.prod([binom.pmf(st[:, j], n0[j], p) for j in range(len(n0))], 0)
    later = np.prod([binom.pmf(st[:, j], n0[j], p * math.exp(-delay)) for j in range(len(n0))], 0)
    return st, q, (1 - share) * q + share * later


@pytest.mark.parametrize("t", [1e-4, 0.44, 3.0])
def test_weights_are_q_over_r(t):
    n0, share, delay = [8, 3, 0], 0.3, 0.7
    st, q, r = scipy_laws(n0, t, share, delay)
    c = DefensiveCounts(share, delay)
    x0 = torch.tensor([n0]).expand(len(st), -1)
    lw = c.log_weight(x0, torch.tensor(st), torch.full((len(st),), t))
    ok = q > 1e-250
    assert np.allclose(lw.numpy()[ok], np.log(q[ok]) - np.log(r[ok]), rtol=1e-9, atol=1e-9)
    assert float(lw.max()) <= -math.log1p(-share) + 1e-12


def test_draws_follow_the_mixture():
    n0, t, share, delay = [8, 5], 0.6, 0.5, 0.5
    st, q, r = scipy_laws(n0, t, share, delay)
    c = DefensiveCounts(share, delay)
    n = 40_000
    x0 = torch.tensor([n0]).expand(n, -1)
    nt, w = c.sample(pd.Blackout(8), x0, torch.full((n,), t), torch.Generator().manual_seed(0))
    idx = nt[:, 0] * (n0[1] + 1) + nt[:, 1]
    freq = torch.bincount(idx, minlength=len(st)).double().numpy() / n
    se = np.sqrt(r * (1 - r) / n)
    assert (np.abs(freq - r) < 5 * se + 1e-4).all()
    # and each draw's weight is q/r at its state
    assert torch.allclose(w, torch.tensor(q / r)[idx], rtol=1e-9)


def test_control_features_have_mean_zero():
    b = pd.Blackout(max_count=8)
    n0, t, share, delay = [8, 3, 1], 0.8, 0.5, 0.5
    st, q, r = scipy_laws(n0, t, share, delay)
    x0 = torch.tensor([n0]).expand(len(st), -1)
    tt = torch.full((len(st),), t)
    for law, weight in ((q, 1.0), (r, torch.tensor(q / r))):
        z = CountsControlVariate.features(b, x0, torch.tensor(st), tt, weight).numpy()
        assert np.abs((law[:, None] * z).sum(0)).max() < 1e-10
    # the mean of m log m - m by scipy: m ~ Bin(n0, 1 - p)
    m = np.arange(9)
    want = sum((binom.pmf(m, k, 1 - math.exp(-t)) * (np.where(m > 0, m * np.log(np.maximum(m, 1)), 0) - m)).sum()
               for k in n0)
    z0 = CountsControlVariate.features(b, torch.tensor([n0]), torch.tensor([n0]), torch.tensor([t]))
    assert float(z0[0, 1]) == pytest.approx(float(b.birth_weight(torch.tensor(t))) * -want, rel=1e-10)


def draws(process, model, data, reps, seed, **options):
    x = data.repeat_interleave(reps, 0)
    e = pd.elbo(process, model, x, generator=torch.Generator().manual_seed(seed), **options)
    return e.reshape(len(data), reps)


def fitted(process, model, data, seed, pilot=2000):
    fit = FittedBlackoutTime.fit(process, model, data, pilot=pilot, generator=torch.Generator().manual_seed(seed),
                                 counts=(None, DefensiveCounts()), control=True)
    return fit, dict(time=fit, counts=fit.counts, control=fit.control)


def test_unbiased_for_the_oracle_bound_and_lower_spread_at_equal_cost():
    b = pd.Blackout(max_count=8, t_max=10.0)
    oracle = Empirical(DATA_3).model(b)
    fit, options = fitted(b, oracle, DATA_3, 9)
    assert isinstance(fit.counts, DefensiveCounts) and isinstance(fit.control, CountsControlVariate)
    new = draws(b, oracle, DATA_3, 20000, 11, **options)
    se = new.std(1) / math.sqrt(new.shape[1])
    want = math.log(1 / 3) - prior_kl(b, DATA_3)                  # the exact oracle's bound, up to the decoder
    assert ((new.mean(1) - want).abs() < 4 * se + 2e-3).all(), (new.mean(1), se)
    # equal cost: two network evaluations per draw for both. Exact (enumeration of n_t on a fine logit-time grid)
    # rms per-point std of the old estimator 6.12; measured here for the new one 1.09-1.18 over fit seeds 9-10 and
    # draw seeds 0-11 with the share fixed at 0.3 (ratio 5.2-5.6 to the exact value), 1.06-1.17 over fit seeds 9-14
    # and draw seeds 0-1 with the fit's default (share chosen: 0.05 for each of these seeds); the old estimator's own sample std is heavy-tailed
    # (5.0-6.5 at 20,000 draws), so the goal of 4 is asserted against the exact value, with a margin, and the
    # sampled ratio at 3.5.
    sd_new = float(new.std(1).pow(2).mean().sqrt())
    assert 6.12 / sd_new > 4.4, sd_new
    old = draws(b, oracle, DATA_3, 20000, 11, **OLD)
    assert float(old.std(1).pow(2).mean().sqrt()) / sd_new > 3.5
    assert float(new.min()) > float(old.min())


def test_agrees_with_the_old_estimator_for_an_imperfect_model():
    b = pd.Blackout(max_count=8, t_max=6.0)
    model = pd.BlackoutModel(lambda x, t: 0.3 * (8 - x.to(t.dtype)) * torch.sigmoid(t - 1.0)[:, None] - 0.5, b)
    _, options = fitted(b, model, DATA_3, 3, pilot=300)
    new, old = draws(b, model, DATA_3, 4000, 1, **options), draws(b, model, DATA_3, 4000, 2, **OLD)
    se = torch.sqrt(new.var(1) / new.shape[1] + old.var(1) / old.shape[1])
    assert ((new.mean(1) - old.mean(1)).abs() < 4 * se).all(), (new.mean(1), old.mean(1), se)
    # a fixed DefensiveCounts without the fit, and the counts with the old estimator's decoder: same bound
    for opts in (dict(counts=DefensiveCounts(0.3, 1.0)), dict(OLD, counts=DefensiveCounts())):
        other = draws(b, model, DATA_3, 4000, 5, **opts)
        se = torch.sqrt(other.var(1) / other.shape[1] + old.var(1) / old.shape[1])
        assert ((other.mean(1) - old.mean(1)).abs() < 4 * se).all(), (other.mean(1), old.mean(1), se)


def test_the_fit_keeps_the_plain_counts_where_the_mixture_does_worse():
    # many pixels, a model that knows nothing: the later counts' draws get weight ~0 and the others weight 2
    b = pd.Blackout(max_count=4, t_max=6.0)
    model = pd.BlackoutModel(lambda x, t: torch.zeros(x.shape, dtype=t.dtype), b)
    data = torch.randint(0, 5, (8, 64), generator=torch.Generator().manual_seed(0))
    fit = FittedBlackoutTime.fit(b, model, data, pilot=32, generator=torch.Generator().manual_seed(1),
                                 counts=(None, DefensiveCounts()))
    assert fit.counts is None and fit.control is None


def test_oracle_births_do_not_cancel_to_zero():
    # [8,0] -> [1,0] at t = 1e-4 (7 deaths): p([8,0] | n_t) is about 1e-24, so E[births] for pixel 0 is about 7e-24,
    # which E[x_0 | n_t] - n_t used to round to 0 (an infinite integrand)
    b = pd.Blackout(max_count=8, t_max=10.0)
    oracle = Empirical(torch.tensor([[8, 0], [1, 1]])).model(b)
    t = 1e-4
    y = oracle.mean_births(torch.tensor([[1, 0]]), torch.tensor([t]))
    p = math.exp(-t)
    like_80 = binom.pmf(1, 8, p) * binom.pmf(0, 0, p)             # q([1,0] | [8,0]): 7 deaths
    like_11 = binom.pmf(1, 1, p) * binom.pmf(0, 1, p)             # q([1,0] | [1,1]): 1 death
    want = 7 * like_80 / (like_80 + like_11)
    assert float(y[0, 0]) == pytest.approx(want, rel=1e-9)
    assert float(y[0, 1]) == pytest.approx(like_11 / (like_80 + like_11), rel=1e-9)


def test_bad_options():
    b = pd.Blackout(max_count=4)
    model = pd.BlackoutModel(lambda x, t: torch.zeros(x.shape, dtype=t.dtype), b)
    x = torch.tensor([[1, 2]])
    for bad in (0.0, 1.0, -0.5):
        with pytest.raises(ValueError, match="share"):
            DefensiveCounts(share=bad)
    with pytest.raises(ValueError, match="delay"):
        DefensiveCounts(delay=0.0)
    with pytest.raises(TypeError, match="share"):
        DefensiveCounts(share="half")
    with pytest.raises(ValueError, match="counts"):
        pd.elbo(b, model, x, counts=0.5)
    with pytest.raises(ValueError, match="control"):
        pd.elbo(b, model, x, control=True)
    with pytest.raises(ValueError, match="coefs"):
        CountsControlVariate(b, torch.zeros(3, 3))
    with pytest.raises(ValueError, match="Blackout"):
        CountsControlVariate(pd.UniformChain(3), torch.zeros(3, 2))
    with pytest.raises(ValueError, match="counts"):
        FittedBlackoutTime.fit(b, model, x, pilot=4, counts=("later",))
    with pytest.raises(ValueError, match="counts"):
        FittedBlackoutTime.fit(b, model, x, pilot=4, counts=())
    with pytest.raises(TypeError, match="control"):
        FittedBlackoutTime.fit(b, model, x, pilot=4, control="yes")
    fit = FittedBlackoutTime.fit(b, model, x, pilot=4, counts=DefensiveCounts(), control=True)
    assert pd.elbo(b, model, x[:0], time=fit, counts=DefensiveCounts(), control=fit.control).shape == (0,)
