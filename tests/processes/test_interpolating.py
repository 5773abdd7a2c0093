"""Interpolating chains (uniform, masking, their mixture): every closed form equals the generic chain.

The generic chain is ``pd.MarkovChain(chain.generator, ...)`` with the same schedule: its queries go through
the uniformised matrix exponential and dense matrix rows and columns, an independent computation. Small S
(<= 8), float64, tolerance 1e-10. Samplers are checked against the exact laws by chi-square.
"""

import math

import numpy as np
import pytest
import scipy.stats
import torch

import probdiff as pd
from probdiff.processes import AtomicCategorical

pytestmark = pytest.mark.usefixtures("float64")


def beta(t):
    return 1 + t


def integrated_beta(t):
    return t + t**2 / 2


CHAINS = {
    "uniform": lambda: pd.UniformChain(5, rate=0.7, t_max=3.0),
    "absorbing": lambda: pd.AbsorbingChain(6, rate=1.3, t_max=3.0),
    "mixture": lambda: pd.UniformAbsorbingChain(7, uniform_rate=0.4, mask_rate=0.9, t_max=3.0),
    "scheduled": lambda: pd.InterpolatingChain(torch.tensor([0.1, 0.0, 0.3, 0.6]), rate=0.5, beta=beta,
                                               integrated_beta=integrated_beta, t_max=2.0),
    "tiny": lambda: pd.AbsorbingChain(2, t_max=3.0),
    "eight": lambda: pd.UniformChain(8, rate=2.0, t_max=3.0),
}


def generic_of(chain):
    if chain._beta is None:
        return pd.MarkovChain(chain.generator, t_min=chain.t_min, t_max=chain.t_max)
    return pd.MarkovChain(chain.generator, beta=chain._beta, integrated_beta=chain._integrated_beta,
                          t_min=chain.t_min, t_max=chain.t_max)


def close(a, b, tol=1e-10):
    a, b = torch.as_tensor(a), torch.as_tensor(b)
    assert a.shape == b.shape, (a.shape, b.shape)
    fin = torch.isfinite(b)
    assert torch.equal(torch.isfinite(a), fin), (a, b)
    np.testing.assert_allclose(a[fin].numpy(), b[fin].numpy(), rtol=tol, atol=tol)


def draw(chain, seed, batch=6, dims=3, s=None, t=None):
    g = torch.Generator().manual_seed(seed)
    n = chain.num_states
    # data anywhere (the mask included), times spread over the domain including the ends
    x0 = torch.randint(0, n, (batch, dims), generator=g)
    t = torch.tensor([1e-9, 0.2, 1.0, chain.t_max * 0.9, chain.t_max, 0.5])[:batch] if t is None else t
    s = t * torch.tensor([0.0, 0.5, 0.3, 0.9, 0.1, 0.999])[:batch] if s is None else s
    return x0, s, t, g


@pytest.mark.parametrize("name", CHAINS)
def test_transition_matrix_and_marginal_equal_generic(name):
    chain = CHAINS[name]()
    generic = generic_of(chain)
    x0, s, t, g = draw(chain, 1)
    close(chain.transition_matrix(s, t), generic.transition_matrix(s, t))
    for k in range(chain.num_states):
        xt = torch.full_like(x0, k)
        close(chain.marginal(x0, t).log_prob(xt), generic.marginal(x0, t).log_prob(xt))
        close(chain.transition(x0, s, t).log_prob(xt), generic.transition(x0, s, t).log_prob(xt))
    close(chain.marginal(x0, t).base_dist.logits, generic.marginal(x0, t).base_dist.logits)
    close(chain.marginal(x0, chain.t_min).base_dist.logits, generic.marginal(x0, chain.t_min).base_dist.logits)
    close(chain.marginal_log_likelihood(x0, t), generic.marginal_log_likelihood(x0, t))
    close(chain.prior_probs(dtype=torch.float64), generic.prior_probs(dtype=torch.float64))
    prior = chain.prior((3,))
    some = torch.arange(3) % chain.num_states
    close(prior.log_prob(some), generic.prior((3,)).log_prob(some))
    close(chain.prior_kl(x0), generic.prior_kl(x0))


@pytest.mark.parametrize("name", CHAINS)
def test_posterior_equals_generic(name):
    chain = CHAINS[name]()
    generic = generic_of(chain)
    x0, s, t, g = draw(chain, 2, batch=5, t=torch.tensor([1e-9, 0.2, 1.0, 2.0, chain.t_max]))
    t = t.clamp_max(chain.t_max)
    s = s.clamp_max(chain.t_max)
    xt = chain.sample_marginal(x0, t, generator=g)
    close(chain.posterior_logits(x0, xt, s, t), generic.posterior_logits(x0, xt, s, t))
    for k in range(chain.num_states):
        xs = torch.full_like(x0, k)
        close(chain.posterior(x0, xt, s, t).log_prob(xs), generic.posterior(x0, xt, s, t).log_prob(xs))


@pytest.mark.parametrize("name", CHAINS)
def test_reverse_rates_and_kernels_equal_generic(name):
    chain = CHAINS[name]()
    generic = generic_of(chain)
    x0, s, t, g = draw(chain, 3, batch=5, t=torch.tensor([1e-9, 0.2, 1.0, 2.0, chain.t_max]))
    n = chain.num_states
    xt = chain.sample_marginal(x0, t, generator=g)
    xt[0, 0] = n - 1                                     # the mask (or the last state) at least once
    # (unnormalised weights are refused by reverse_rates: tests/test_no_silent_nan.py)
    for probs in (torch.softmax(torch.randn(*x0.shape, n, generator=g) * 2, -1),
                  torch.nn.functional.one_hot(x0, n).double()):
        close(chain.reverse_rates(probs, xt, t), generic.reverse_rates(probs, xt, t))
        close(chain.reverse_kernel_log_probs(probs, xt, s, t), generic.reverse_kernel_log_probs(probs, xt, s, t))
        close(chain.conditional_reverse_rates(x0, xt, t), generic.conditional_reverse_rates(x0, xt, t))


def test_unreachable_posterior_raises():
    chain = pd.AbsorbingChain(4)
    x0, xt = torch.tensor([[0]]), torch.tensor([[1]])
    with pytest.raises(ValueError, match="reachable"):
        chain.posterior(x0, xt, 0.5, 1.0)


def test_bad_pi_is_rejected():
    for pi, match in (([0.5, 0.6], "sum to 1"), ([1.0], "S >= 2"), ([-0.5, 1.5], "non-negative"),
                      ([float("nan"), 1.0], "finite")):
        with pytest.raises(ValueError, match=match):
            pd.InterpolatingChain(torch.tensor(pi))


@pytest.mark.parametrize("name", ["uniform", "mixture", "scheduled"])
def test_samplers_follow_their_laws(name):
    """Chi-square of 20,000 draws of the marginal, the posterior and the prior against the exact laws."""
    chain = CHAINS[name]()
    n, m = chain.num_states, 20_000
    g = torch.Generator().manual_seed(7)
    x0 = torch.full((m, 1), 2)
    t, s = torch.tensor(0.8), torch.tensor(0.3)
    xt = chain.sample_marginal(x0, t, generator=g)
    expected = torch.exp(chain.marginal(x0[:1], t).base_dist.logits[0, 0]).numpy()
    checks = [(xt[:, 0], expected)]
    xt1 = torch.full((m, 1), 0)
    post = chain.posterior(x0, xt1, s, t)
    checks.append((post.base_dist.sample(generator=g)[:, 0], torch.exp(post.base_dist.logits[0, 0]).numpy()))
    checks.append((chain.sample_prior(m, (1,), generator=g)[:, 0], chain.prior_probs(dtype=torch.float64).numpy()))
    for samples, probs in checks:
        counts = np.bincount(samples.numpy(), minlength=n)
        keep = probs > 0
        assert counts[~keep].sum() == 0
        stat, p = scipy.stats.chisquare(counts[keep], m * probs[keep] / probs[keep].sum())
        assert p > 1e-3, (counts, m * probs)


def test_atomic_categorical_dense_and_sparse_agree():
    g = torch.Generator().manual_seed(0)
    log_pi = torch.log_softmax(torch.randn(6, generator=g), 0)
    atoms = torch.tensor([[1, 1], [2, 4]])
    law = AtomicCategorical(atoms, torch.tensor([[-1.0, -2.0], [-0.5, -math.inf]]), torch.tensor([0.0, -1.0]), log_pi)
    dense = law.logits
    close(torch.logsumexp(dense, -1), torch.zeros(2))
    close(law.log_prob(torch.arange(6)[:, None].expand(6, 2)), dense.T)
    assert law.log_prob(torch.tensor([6, -1])).isneginf().all()


def test_vocabulary_scale_never_forms_a_matrix():
    """S = 50,257: building the chain and the O(1) queries allocate nothing of size S^2 (20 GB would fail)."""
    chain = pd.AbsorbingChain(50_257)
    x0 = torch.randint(0, 50_256, (2, 16))
    xt = chain.sample_marginal(x0, 0.7)
    assert chain.marginal(x0, 0.7).log_prob(xt).shape == (2,)
    assert chain.posterior(x0, xt, 0.2, 0.7).sample().shape == (2, 16)
    assert chain.prior_kl(x0).shape == (2,)


@pytest.mark.parametrize("name", ["uniform", "absorbing", "mixture", "scheduled"])
def test_reverse_kernel_draws_follow_the_kernel(name):
    """sample_reverse_kernel (x_0 from the model, then the posterior) has the law of the closed-form kernel."""
    chain = CHAINS[name]()
    n, m = chain.num_states, 20_000
    g = torch.Generator().manual_seed(11)
    probs = torch.softmax(torch.randn(n, generator=g), 0)
    for state in (0, n - 1):
        xt = torch.full((m, 1), state)
        w = probs.expand(m, 1, n)
        draws = chain.sample_reverse_kernel(w, xt, 0.4, 1.1, generator=g)[:, 0]
        expected = torch.exp(chain.reverse_kernel_log_probs(w[:1], xt[:1], 0.4, 1.1)[0, 0]).numpy()
        counts = np.bincount(draws.numpy(), minlength=n)
        keep = expected > 1e-12
        assert counts[~keep].sum() == 0
        if keep.sum() > 1:                         # a point mass (an unmasked token) has nothing more to test
            stat, p = scipy.stats.chisquare(counts[keep], m * expected[keep] / expected[keep].sum())
            assert p > 1e-3, (counts, m * expected)


# ==================================================================== schedules
from probdiff.processes import schedules  # noqa: E402

SCHEDULES = [schedules.ConstantRate(0.7), schedules.LinearRate(0.1, 3.0), schedules.Linear(), schedules.LogLinear(1e-3),
             schedules.Polynomial(3.0), schedules.Cosine(),
             schedules.DeclaredRate(lambda t: 1 + t, lambda t: t + t**2 / 2)]


@pytest.mark.parametrize("schedule", SCHEDULES, ids=lambda s: type(s).__name__)
def test_schedule_rate_is_the_derivative_and_time_of_inverts(schedule):
    t = torch.linspace(0.05, 0.95, 7, dtype=torch.float64)
    h = 1e-6
    numeric = (schedule.integrated(t + h) - schedule.integrated(t - h)) / (2 * h)
    np.testing.assert_allclose(schedule.rate(t).numpy(), numeric.numpy(), rtol=1e-6)
    np.testing.assert_allclose(schedule.time_of(schedule.integrated(t)).numpy(), t.numpy(), atol=1e-9)
    assert float(schedule.integrated(torch.tensor(0.0, dtype=torch.float64))) == 0.0


def test_alpha_schedules_match_the_papers():
    """MD4 Table 1 / MDLM 3.5, transcribed independently."""
    t = torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64)
    expected = {schedules.Linear(): 1 - t, schedules.Polynomial(2.0): 1 - t**2,
                schedules.Cosine(): 1 - torch.cos(math.pi / 2 * (1 - t)), schedules.LogLinear(0.01): 1 - 0.99 * t}
    for schedule, alpha in expected.items():
        np.testing.assert_allclose(torch.exp(-schedule.integrated(t)).numpy(), alpha.numpy(), rtol=1e-12)


@pytest.mark.parametrize("schedule", [schedules.Cosine(), schedules.LinearRate(0.5, 2.0)], ids=str)
def test_scheduled_chain_equals_generic_and_reaches_the_reference(schedule):
    chain = pd.AbsorbingChain(5, schedule=schedule, t_max=0.999 if isinstance(schedule, schedules.Cosine) else 2.0)
    generic = pd.MarkovChain(chain.generator, beta=schedule.rate, integrated_beta=schedule.integrated,
                             t_max=chain.t_max)
    x0 = torch.tensor([[0, 3], [1, 2]])
    t, s = torch.tensor([0.3, 0.9]), torch.tensor([0.1, 0.5])
    close(chain.transition_matrix(s, t), generic.transition_matrix(s, t))
    probs = torch.softmax(torch.randn(2, 2, 5, generator=torch.Generator().manual_seed(0)), -1)
    xt = torch.tensor([[4, 3], [4, 4]])
    close(chain.reverse_rates(probs, xt, t), generic.reverse_rates(probs, xt, t))
    full = pd.AbsorbingChain(5, schedule=schedules.Cosine())                     # t_max = 1: alpha = 0 exactly
    assert full.t_max == 1.0
    assert torch.equal(full.sample_marginal(x0, 1.0), torch.full_like(x0, 4))
    close(full.prior_kl(x0), torch.zeros(2))
    with pytest.raises(ValueError, match="t_max must be <= 1"):
        pd.UniformChain(4, schedule=schedules.Linear(), t_max=2.0)


def test_schedule_uniform_grid_spaces_alpha_evenly():
    chain = pd.AbsorbingChain(5, schedule=schedules.Cosine())
    ts = pd.grids.ScheduleUniform(8).times(chain)
    alpha = 1 - torch.cos(math.pi / 2 * (1 - ts))
    np.testing.assert_allclose(torch.diff(alpha).numpy(), np.full(8, 1 / 8), atol=1e-9)
    const = pd.UniformChain(4)                                                   # alpha = e^-t on [0, 10]
    ts = pd.grids.ScheduleUniform(4).times(const)
    a_end = math.exp(-10.0)
    np.testing.assert_allclose(torch.exp(-ts).numpy(), np.linspace(a_end, 1, 5), atol=1e-12)
    with pytest.raises(ValueError, match="InterpolatingChain"):
        pd.grids.ScheduleUniform(4).times(pd.Blackout(4))


@pytest.mark.parametrize("schedule", SCHEDULES, ids=lambda s: type(s).__name__)
def test_elbo_times_are_finite_at_the_ends_of_the_uniforms(schedule):
    # u = 1 maps to alpha = 0 at t_max for the schedules that reach it (an infinite rate times a zero alpha),
    # u = 0 to alpha = 1 (an infinite masked weight); both ends are kept open, so neither gives NaN or inf
    for chain in (pd.AbsorbingChain(5, schedule=schedule), pd.UniformChain(5, schedule=schedule)):
        t, inverse_density = chain.sample_elbo_times(torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64))
        assert torch.isfinite(t).all() and torch.isfinite(inverse_density).all()
        assert (t >= chain.t_min).all() and (t <= chain.t_max).all() and (inverse_density >= 0).all()
