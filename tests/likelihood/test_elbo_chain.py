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
    assert torch.isfinite(pd.elbo(chain, flat, torch.tensor([[0, 1]]))).all()     # continuous time, no grid
    with pytest.raises(ValueError, match="0..3"):
        pd.elbo(chain, flat, torch.tensor([[0, 4]]), grid=pd.grids.Uniform(4))
    with pytest.raises(ValueError, match="num_samples"):
        pd.elbo(chain, flat, torch.tensor([[0, 1]]), grid=pd.grids.Uniform(4), num_samples=0)


# ==================================================================== continuous time (Campbell et al. 2022)
from probdiff.likelihood import chain_elbo_integrand  # noqa: E402
from probdiff.processes import schedules  # noqa: E402
from probdiff.testing import BUILT_IN  # noqa: E402

CHAIN_FIXTURES = [f for f in BUILT_IN if f.id in ("UniformChain", "AbsorbingChain", "MarkovChain-time-dependent")]


@pytest.mark.parametrize("fixture", CHAIN_FIXTURES, ids=lambda f: f.id)
def test_continuous_elbo_of_the_exact_oracle_tends_to_log_one_over_n(fixture):
    """The exact model's reverse rates are the true ones: the bound is log(1/N) up to the prior KL (within 4 SE)."""
    chain = fixture.make()
    n = chain.num_states - 1 if isinstance(chain, pd.AbsorbingChain) else chain.num_states
    data = torch.tensor([[0, 1, 2], [2, 2, 0], [1, 0, 0]]) % n
    exact = Empirical(data).model(chain)
    draws = pd.elbo(chain, exact, data.repeat(200, 1), num_samples=4, generator=torch.Generator().manual_seed(0))
    mean, se = draws.mean().item(), draws.std().item() / math.sqrt(len(draws))
    gap = prior_kl(chain, data).mean().item()
    assert abs(mean - (math.log(1 / 3) - gap)) < 4 * se + 1e-9, (mean, se, gap)


def mdlm_bound(alpha, alpha_prime, x0, xt, log_probs, mask):
    """MDLM, Sahoo et al. 2024, Eq. (10) (MD4 Eq. (5)), transcribed: the weight -alpha'/(1 - alpha) times the
    cross-entropy of the clean tokens at the masked positions (the negative integrand; nats)."""
    ce = -log_probs.gather(-1, x0[..., None])[..., 0]
    return (-alpha_prime / (1 - alpha)) * (ce * (xt == mask)).sum(1)


def subs_probs(logits, xt, mask):
    """SUBS (Sahoo et al. 2024, §3.2.3): the mask gets probability 0, unmasked tokens are carried over."""
    logits = logits.clone()
    logits[..., mask] = -math.inf
    probs = torch.softmax(logits, -1)
    keep = torch.nn.functional.one_hot(xt, logits.shape[-1]).double()
    return torch.where((xt == mask)[..., None], probs, keep)


@pytest.mark.parametrize("schedule", [schedules.Cosine(), schedules.LogLinear(1e-3), schedules.ConstantRate(1.0)],
                         ids=lambda s: type(s).__name__)
def test_masked_integrand_is_the_weighted_cross_entropy_of_mdlm(schedule):
    s = 6
    chain = pd.AbsorbingChain(s, schedule=schedule, t_max=0.99 if schedule.t_end else 5.0)
    g = torch.Generator().manual_seed(3)
    x0 = torch.randint(0, s - 1, (5, 7), generator=g)
    t = torch.tensor([0.05, 0.2, 0.5, 0.8, 0.95]) * chain.t_max
    xt = chain.sample_marginal(x0, t, generator=g)
    weights = torch.randn(s, s, generator=g)

    def net(x, t):                                  # a context-dependent model: logits from x_t and t
        return weights[x.long()] * (1 + t[:, None, None]) + x.sum(1, keepdim=True)[..., None] / 10

    model = pd.CategoricalModel(lambda x, t: torch.log(subs_probs(net(x, t), x.long(), s - 1)), chain)
    rev = pd.reverse(chain, model)
    got = chain_elbo_integrand(chain, rev, x0, xt, t)
    alpha = torch.exp(-schedule.integrated(t))
    alpha_prime = -schedule.rate(t) * alpha
    log_probs = torch.log(subs_probs(net(xt.double(), t), xt, s - 1))
    want = mdlm_bound(alpha, alpha_prime, x0, xt, log_probs, s - 1)
    np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("subs", [True, False], ids=["SUBS", "plain-categorical"])
def test_masked_closed_form_integrand_equals_the_generic_chain_with_gradients(float64, subs):
    """AbsorbingChain's registered integrand (one read of the logits) against the generic dense one, values
    and gradients, to 1e-10; the plain model puts mass on the mask and some data tokens are the mask itself."""
    s = 7
    chain = pd.AbsorbingChain(s, schedule=schedules.Cosine())
    generic = chain_elbo_integrand.dispatch(pd.MarkovChain)
    assert chain_elbo_integrand.dispatch(type(chain)) is not generic
    g = torch.Generator().manual_seed(5)
    x0 = torch.randint(0, s if not subs else s - 1, (6, 9), generator=g)
    t = torch.tensor([0.02, 0.2, 0.4, 0.6, 0.8, 0.97])
    xt = chain.sample_marginal(x0, t, generator=g)
    assert bool((xt == s - 1).any()) and bool((xt != s - 1).any())
    weights = torch.randn(s, s, generator=g, requires_grad=True)

    def net(x, t):
        return weights[x.long()] * (1 + t[:, None, None]) + x.sum(1, keepdim=True)[..., None] / 10

    model = pd.SUBSModel(net, chain) if subs else pd.CategoricalModel(net, chain)
    rev = pd.reverse(chain, model)
    got, want = chain_elbo_integrand(chain, rev, x0, xt, t), generic(chain, rev, x0, xt, t)
    np.testing.assert_allclose(got.detach().numpy(), want.detach().numpy(), rtol=1e-10, atol=1e-12)
    grad_got, = torch.autograd.grad(got.sum(), weights)
    grad_want, = torch.autograd.grad(want.sum(), weights)
    np.testing.assert_allclose(grad_got.numpy(), grad_want.numpy(), rtol=1e-9, atol=1e-12)


def test_context_free_subs_model_has_its_own_log_likelihood_as_bound():
    """THEORY.md §10: with masked tokens drawn from a fixed pi, the bound is sum_i log pi(x0_i) (alpha_1 = 0)."""
    s = 5
    chain = pd.AbsorbingChain(s, schedule=schedules.Cosine())
    pi = torch.tensor([0.1, 0.2, 0.3, 0.4, 0.0])
    model = pd.CategoricalModel(lambda x, t: torch.log(subs_probs(torch.log(pi).expand(*x.shape, s),
                                                                    x.long(), s - 1)), chain)
    x0 = torch.tensor([[0, 1, 2, 3, 3, 2]])
    draws = pd.elbo(chain, model, x0.repeat(400, 1), num_samples=4, generator=torch.Generator().manual_seed(1))
    want = torch.log(pi[x0]).sum().item()
    se = draws.std().item() / math.sqrt(len(draws))
    assert abs(draws.mean().item() - want) < 4 * se, (draws.mean().item(), want, se)


@pytest.mark.slow
def test_discrete_time_bound_tends_to_the_continuous_one_as_the_grid_refines():
    """A model that is not exact (fixed logits): the discrete-time bound on a fine grid agrees with the
    continuous-time one within 4 SE (a coarse grid need not be lower for such a model; it is not checked)."""
    chain = pd.UniformChain(4, t_max=6.0)
    logits = torch.tensor([1.0, 0.0, -0.5, 0.3])

    def net(x, t):
        stay = torch.nn.functional.one_hot(x.long(), 4)
        return logits.expand(*x.shape, 4) - 0.5 * stay * t[:, None, None].exp()

    model = pd.CategoricalModel(net, chain)
    x = torch.tensor([[0, 3]]).repeat(300, 1)
    g = torch.Generator().manual_seed(5)
    cont = pd.elbo(chain, model, x, num_samples=4, generator=g)
    fine = pd.elbo(chain, model, x, grid=pd.grids.ScheduleUniform(200), generator=g)
    se = math.sqrt(cont.var().item() / len(cont) + fine.var().item() / len(fine))
    assert abs(cont.mean().item() - fine.mean().item()) < 4 * se, (cont.mean(), fine.mean(), se)
