"""ELBOs of Markov chains (THEORY.md §4-5): with the Empirical oracle the bound of a training point tends to
log(1/N); it is exact in one dimension on any grid; the continuous-time Blackout bound; the prior KL by
independent computation; the bound lies below the data entropy for a wrong model; bad input."""

import math

import numpy as np
import pytest
import scipy.linalg
import scipy.stats
import torch

import probdiff as pd
from probdiff.likelihood import prior_kl
from probdiff.oracles import Empirical

pytestmark = pytest.mark.usefixtures("float64")


def test_prior_kl_by_independent_computation():
    chain = pd.UniformChain(4, rate=0.5, t_max=3.0)
    x0 = torch.tensor([[0, 3, 1]])
    p = scipy.linalg.expm(3.0 * chain.generator.numpy())
    want = sum(scipy.stats.entropy(p[i], np.full(4, 0.25)) for i in (0, 3, 1))
    np.testing.assert_allclose(prior_kl(chain, x0).item(), want, rtol=1e-10)
    b = pd.Blackout(max_count=6, t_max=4.0)
    q = math.exp(-4.0)
    pi = np.mean([scipy.stats.binom.pmf(np.arange(7), n, q) for n in range(7)], axis=0)
    want = sum(scipy.stats.entropy(scipy.stats.binom.pmf(np.arange(7), n, q), pi) for n in (6, 0, 2))
    np.testing.assert_allclose(prior_kl(b, torch.tensor([[6, 0, 2]])).item(), want, rtol=1e-9)


@pytest.mark.parametrize("make", [lambda: pd.UniformChain(4, t_max=9.0), lambda: pd.AbsorbingChain(5, t_max=12.0),
                                  lambda: pd.Blackout(max_count=3, t_max=10.0),
                                  lambda: pd.UniformChain(4, t_min=0.3, t_max=9.0)])     # data at t_min > 0
def test_oracle_elbo_is_exact_in_one_dimension_on_any_grid(make):
    # One dimension: the mixture-of-posteriors step is the exact reversal, so ELBO = log p(x) - prior mismatch.
    chain = make()
    data = torch.tensor([[0], [1], [1], [3]])
    oracle = Empirical(data).model(chain)
    x = torch.tensor([[0], [1], [3]])
    want = torch.log(torch.tensor([0.25, 0.5, 0.25]))
    for steps in (1, 3, 12):
        e = pd.elbo(chain, oracle, x.repeat(200, 1), grid=pd.grids.Uniform(steps),
                    generator=torch.Generator().manual_seed(steps)).reshape(200, 3)
        mean, se = e.mean(0), e.std(0) / math.sqrt(200)
        assert (mean - want).abs().max() < 4 * se.max() + 2e-3, (steps, mean, want)


def test_oracle_elbo_tends_to_log_one_over_n_as_the_grid_refines():
    chain = pd.UniformChain(3, t_max=8.0)
    data = torch.tensor([[0, 1], [2, 2], [1, 0]])
    oracle = Empirical(data).model(chain)
    gaps = []
    for steps in (4, 16, 128):
        e = pd.elbo(chain, oracle, data, grid=pd.grids.LogitObservation(steps), num_samples=64,
                    generator=torch.Generator().manual_seed(0))
        gaps.append(float(math.log(1 / 3) - e.mean()))
    assert gaps[0] > gaps[1] > gaps[2] > -0.02
    assert gaps[2] < 0.1


def test_blackout_continuous_time_elbo_with_oracle():
    b = pd.Blackout(max_count=16, t_max=10.0)
    # one data point: the model's birth rate is the conditioned one, so only the prior KL remains
    one = torch.tensor([[16, 0, 5, 9]])
    e = pd.elbo(b, Empirical(one).model(b), one.repeat(50, 1), generator=torch.Generator().manual_seed(0))
    assert torch.allclose(e, -prior_kl(b, one).expand(50), atol=1e-9)
    # N points: the continuous-time bound with the exact model is log p(x) (McAllester), up to Monte Carlo
    data = torch.tensor([[3, 0], [16, 2], [7, 7], [3, 1]])
    oracle = Empirical(data).model(b)
    est = pd.elbo(b, oracle, data.repeat_interleave(3000, 0), generator=torch.Generator().manual_seed(2))
    est = est.reshape(4, 3000)
    se = est.std(1) / math.sqrt(3000)
    np.testing.assert_array_less((est.mean(1) - math.log(0.25)).abs().numpy(), (4 * se + 0.01).numpy())


def test_blackout_discrete_and_continuous_time_agree_with_the_oracle():
    b = pd.Blackout(max_count=4, t_max=8.0)
    data = torch.tensor([[4], [1], [2]])
    oracle = Empirical(data).model(b)
    ct = pd.elbo(b, oracle, data, num_samples=2000, generator=torch.Generator().manual_seed(3))
    dt = pd.elbo(b, oracle, data, grid=pd.grids.LogitObservation(16), num_samples=500,
                 generator=torch.Generator().manual_seed(4))
    assert torch.allclose(ct, torch.full((3,), math.log(1 / 3)), atol=0.08)
    assert torch.allclose(dt, torch.full((3,), math.log(1 / 3)), atol=0.08)


def test_wrong_model_bound_is_below_data_log_likelihood():
    # E_data[ELBO(model)] <= E_data[log p_model] <= E_data[log p_data] = log(1/N) (Gibbs) for distinct points.
    chain = pd.UniformChain(4, t_max=6.0)
    data = torch.tensor([[0, 1, 2], [3, 3, 0], [1, 2, 3], [2, 0, 0]])
    flat = pd.CategoricalModel(lambda x, t: torch.zeros(*x.shape, 4, dtype=t.dtype), chain)
    e = pd.elbo(chain, flat, data, grid=pd.grids.Uniform(20), num_samples=20,
                generator=torch.Generator().manual_seed(5))
    assert e.mean() < math.log(1 / 4) - 1.0
    # the flat model's data law is uniform: its log-likelihood is 3 log(1/4); the bound lies below it
    assert (e < 3 * math.log(1 / 4) + 1e-6).all()


def test_bits_per_dim_of_a_blackout_model_and_bad_input():
    b = pd.Blackout(max_count=16, t_max=10.0)
    model = pd.BlackoutModel(lambda x, t: torch.zeros(x.shape, dtype=t.dtype), b)
    x = torch.tensor([[3, 16, 0, 0]])
    e = pd.elbo(b, model, x, num_samples=10, generator=torch.Generator().manual_seed(6))
    assert e.shape == (1,) and torch.isfinite(e).all() and e.item() < 0
    with pytest.raises(ValueError, match="x0_probs"):
        pd.elbo(b, model, x, grid=pd.grids.Uniform(4))
    chain = pd.UniformChain(4)
    flat = pd.CategoricalModel(lambda x, t: torch.zeros(*x.shape, 4, dtype=t.dtype), chain)
    with pytest.raises(ValueError, match="grid must be given"):
        pd.elbo(chain, flat, torch.tensor([[0, 1]]))
    with pytest.raises(ValueError, match="0..3"):
        pd.elbo(chain, flat, torch.tensor([[0, 4]]), grid=pd.grids.Uniform(4))
    with pytest.raises(ValueError, match="num_samples"):
        pd.elbo(chain, flat, torch.tensor([[0, 1]]), grid=pd.grids.Uniform(4), num_samples=0)
