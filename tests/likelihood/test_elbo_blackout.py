"""The continuous-time Blackout ELBO estimator (probdiff.likelihood.chain.blackout_elbo): its time proposal
integrates exactly; the default estimator (mixed time proposal, decoder folded into the draws) is unbiased for
the same bound as the logit-uniform estimator of Santos et al. 2023 (the exact oracle's bound is log(1/N); an
imperfect model's means agree; the discrete-time bound agrees on a fine grid), and its per-draw spread is lower
at equal cost (two network evaluations per draw) on the 3-point oracle of the issue."""

import math

import pytest
import torch

import probdiff as pd
from probdiff.likelihood import prior_kl
from probdiff.oracles import Empirical

pytestmark = pytest.mark.usefixtures("float64")

DATA_3 = torch.tensor([[8, 0], [3, 5], [1, 1]])          # the 3-point set of issue 16 (2 pixels, counts 0..8)
OLD = dict(time=pd.LogitTime(), fold_decoder=False)      # Santos et al.'s estimator: logit times, decoder each draw


def draws(process, model, data, reps, seed, **options):
    x = data.repeat_interleave(reps, 0)
    e = pd.elbo(process, model, x, generator=torch.Generator().manual_seed(seed), **options)
    return e.reshape(len(data), reps)


def test_time_proposal_integrates_exactly():
    # midpoints of a fine grid of u: sum f(t) / density -> the integral of f over [t_lo, t_max] (closed form)
    b = pd.Blackout(max_count=8, t_max=10.0)
    t_lo, t_max = b.elbo_time_range()
    assert t_lo == pytest.approx(-math.log1p(-math.exp(-10.0)), rel=1e-12)
    n = 400_000
    t, inv = b.sample_elbo_times((torch.arange(n, dtype=torch.float64) + 0.5) / n)
    assert bool(((t >= t_lo) & (t <= t_max)).all())
    assert (inv.mean().item()) == pytest.approx(t_max - t_lo, rel=1e-4)
    assert (torch.exp(-t) * inv).mean().item() == pytest.approx(math.exp(-t_lo) - math.exp(-t_max), rel=1e-4)
    # the weight of the bound, p/(1-p) / density, is bounded by 2L (L = 2 logit(1 - e^{-t_max}))
    half = t_max + math.log1p(-math.exp(-t_max))
    assert float((b.birth_weight(t) * inv).max()) <= 4 * half * (1 + 1e-9)


def test_default_estimator_is_unbiased_for_the_oracle_bound():
    # exact model: the bound is log(1/3) up to the prior KL and the decoder (both < 1e-3), within 4 SE
    b = pd.Blackout(max_count=8, t_max=10.0)
    e = draws(b, Empirical(DATA_3).model(b), DATA_3, 6000, 0)
    se = e.std(1) / math.sqrt(e.shape[1])
    want = math.log(1 / 3) - prior_kl(b, DATA_3)
    assert ((e.mean(1) - want).abs() < 4 * se + 2e-3).all(), (e.mean(1), se)


def test_default_and_old_estimators_agree_for_an_imperfect_model():
    # a model that is not the oracle (a fixed function of n_t and t): both estimate the same bound
    b = pd.Blackout(max_count=8, t_max=6.0)
    model = pd.BlackoutModel(lambda x, t: 0.3 * (8 - x.to(t.dtype)) * torch.sigmoid(t - 1.0)[:, None] - 0.5, b)
    new, old = draws(b, model, DATA_3, 4000, 1), draws(b, model, DATA_3, 4000, 2, **OLD)
    se = torch.sqrt(new.var(1) / new.shape[1] + old.var(1) / old.shape[1])
    assert ((new.mean(1) - old.mean(1)).abs() < 4 * se).all(), (new.mean(1), old.mean(1), se)
    assert (new.mean(1) < -1.0).all()                       # a real gap: the model is far from the data law


def test_continuous_bound_agrees_with_the_discrete_one_on_a_fine_grid():
    b = pd.Blackout(max_count=4, t_max=8.0)
    data = torch.tensor([[4, 1], [1, 0], [2, 3]])
    oracle = Empirical(data).model(b)
    ct = draws(b, oracle, data, 3000, 3)
    dt = draws(b, oracle, data, 200, 4, grid=pd.grids.LogitObservation(64))
    se = torch.sqrt(ct.var(1) / ct.shape[1] + dt.var(1) / dt.shape[1])
    assert ((ct.mean(1) - dt.mean(1)).abs() < 4 * se + 0.02).all(), (ct.mean(1), dt.mean(1), se)


def test_spread_per_draw_is_lower_at_equal_cost_on_the_3_point_oracle():
    # both estimators spend two network evaluations per draw. Exact (enumeration of n_t on a fine time grid): rms
    # of the per-point standard deviations about 6.0 (old) vs 2.6 (default), ratio 2.3; measured with 20,000
    # draws per point over seeds 0-5: 2.0-2.8 (the old estimator's sample spread is itself heavy-tailed);
    # asserted with a margin at 1.6. (The goal of 4 is reached with importance-sampled counts and a control
    # variate: tests/likelihood/test_elbo_blackout_counts.py.)
    b = pd.Blackout(max_count=8, t_max=10.0)
    oracle = Empirical(DATA_3).model(b)
    new, old = draws(b, oracle, DATA_3, 20000, 5), draws(b, oracle, DATA_3, 20000, 5, **OLD)
    ratio = float(old.std(1).pow(2).mean().sqrt() / new.std(1).pow(2).mean().sqrt())
    assert ratio > 1.6, ratio
    assert float(new.min()) > float(old.min())             # the heavy lower tail shrinks


def test_bad_options():
    b = pd.Blackout(max_count=4)
    model = pd.BlackoutModel(lambda x, t: torch.zeros(x.shape, dtype=t.dtype), b)
    x = torch.tensor([[1, 2]])
    with pytest.raises(ValueError, match="decoder_share"):
        pd.elbo(b, model, x, decoder_share=0.0)
    with pytest.raises(ValueError, match="TimeVariable"):
        pd.elbo(b, model, x, time="logit")
    assert pd.elbo(b, model, x[:0]).shape == (0,)


def test_fitted_time_proposal_integrates_exactly_and_keeps_the_bound():
    from probdiff.likelihood import FittedBlackoutTime
    b = pd.Blackout(max_count=8, t_max=10.0)
    oracle = Empirical(DATA_3).model(b)
    # the share fixed at 0.3, with which the ratio below was measured: chosen by the fit (cross-fitted) for this
    # time proposal alone, whose integrand is heavy-tailed over the counts, it is 0.05 for this seed, with a spread
    # of 4.3-5.6 over draw seeds 7-8 against 2.5 at 0.3 (the pilot's held-out draws miss the rare large values)
    fit = FittedBlackoutTime.fit(b, oracle, DATA_3, pilot=2000, generator=torch.Generator().manual_seed(6),
                                 defensive=0.3)
    t_lo, t_max = b.elbo_time_range()
    n = 400_000
    u = (torch.arange(n, dtype=torch.float64) + 0.5) / n
    t = fit.time(b, u)
    inv = fit.inverse_density(b, t)
    assert bool(((t >= t_lo) & (t <= t_max)).all())
    assert inv.mean().item() == pytest.approx(t_max - t_lo, rel=1e-3)
    assert (torch.exp(-t) * inv).mean().item() == pytest.approx(math.exp(-t_lo) - math.exp(-t_max), rel=1e-3)
    # the defensive share bounds the weight: 1/density <= 1/(defensive * default density)
    assert bool((inv <= 1 / (fit.defensive * b.elbo_time_density(t)) * (1 + 1e-9)).all())
    # unbiased for the oracle bound, and the spread falls further than with the default proposal (ratio to the
    # old estimator measured 2.05-3.7 over draw seeds 0-7 with this fit; asserted > 1.8)
    new, old = draws(b, oracle, DATA_3, 20000, 7, time=fit), draws(b, oracle, DATA_3, 20000, 7, **OLD)
    se = new.std(1) / math.sqrt(new.shape[1])
    want = math.log(1 / 3) - prior_kl(b, DATA_3)
    assert ((new.mean(1) - want).abs() < 4 * se + 2e-3).all(), (new.mean(1), se)
    assert float(old.std(1).pow(2).mean().sqrt() / new.std(1).pow(2).mean().sqrt()) > 1.8
    with pytest.raises(ValueError, match="defensive"):
        FittedBlackoutTime(b, torch.ones(4), defensive=0.0)
    with pytest.raises(ValueError, match="bin_probs"):
        FittedBlackoutTime(b, torch.zeros(4))
    with pytest.raises(ValueError, match="Blackout"):
        FittedBlackoutTime(pd.UniformChain(3), torch.ones(4))
