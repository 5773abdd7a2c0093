"""Issue 13, "no silent NaN from the API": each case of the issue raises ValueError/TypeError naming the
argument, or returns a correct finite result (an empty batch gives an empty result)."""

import math

import pytest
import torch

import probdiff as pd

CHAINS = [pd.UniformChain(4), pd.AbsorbingChain(4), pd.Blackout(15)]
MIX = pd.oracles.GaussianMixture(torch.tensor([1.0]), torch.zeros(1, 2), torch.eye(2)[None])


@pytest.mark.parametrize("chain", CHAINS, ids=repr)
@pytest.mark.parametrize("s,t,message", [(3.0, 1.0, "s must be <= t"), (0.0, math.nan, "t must be finite"),
                                         (0.0, 1e3, "t must lie in"), (-1.0, 1.0, "s must lie in")])
def test_transition_matrix_times(chain, s, t, message):
    with pytest.raises(ValueError, match=message):
        chain.transition_matrix(s, t)
    with pytest.raises(ValueError, match=message):
        chain.log_transition_matrix(s, t)


@pytest.mark.parametrize("chain", CHAINS, ids=repr)
def test_transition_matrix_of_a_zero_interval_is_the_identity(chain):
    p = chain.transition_matrix(0.5, 0.5)
    assert torch.allclose(p, torch.eye(chain.num_states, dtype=p.dtype))


@pytest.mark.parametrize("probs,message", [(math.nan, "x0_probs must be finite"), (3.0, "x0_probs must hold"),
                                           (0.1, "x0_probs must sum to 1")])
def test_reverse_rates_check_probabilities(probs, message):
    chain = pd.UniformChain(4)
    x = torch.zeros(2, 3, dtype=torch.long)
    with pytest.raises(ValueError, match=message):
        chain.reverse_rates(torch.full((2, 3, 4), probs), x, 1.0)
    with pytest.raises(ValueError, match="x0_probs must have shape"):
        chain.reverse_rates(torch.full((2, 4, 4), 0.25), x, 1.0)


def _one_bad_entry(value, fix_row):
    """Valid (2, 3, 4) probabilities with one entry set to ``value`` (and, with ``fix_row``, its neighbour set
    so that the row still sums to 1)."""
    probs = torch.full((2, 3, 4), 0.25)
    probs[1, 2, 1] = value
    if fix_row:
        probs[1, 2, 2] = 0.75 - value
    return probs


@pytest.mark.parametrize("chain", [pd.UniformChain(4), pd.AbsorbingChain(4),
                                   pd.UniformAbsorbingChain(4, uniform_rate=0.5, mask_rate=0.5),
                                   pd.MarkovChain(pd.UniformChain(4).generator)], ids=repr)
@pytest.mark.parametrize("value,fix_row,message", [
    (math.nan, False, "x0_probs must be finite"), (math.inf, False, "x0_probs must be finite"),
    (-math.inf, False, "x0_probs must be finite"), (-0.2, True, r"x0_probs must hold probabilities in \[0, 1\]"),
    (0.9, False, "x0_probs must sum to 1")])
def test_dense_reverse_queries_refuse_one_bad_entry(chain, value, fix_row, message):
    """The closed forms validate from the row sums they compute anyway plus one minimum: a single NaN, infinity,
    negative entry (in a row summing to 1) or unnormalised row among valid ones is still refused."""
    x = torch.tensor([[0, 1, 2], [3, 3, 0]])
    good = torch.full((2, 3, 4), 0.25)
    assert torch.isfinite(chain.reverse_rates(good, x, 0.5)).all()
    assert torch.isfinite(chain.reverse_kernel_log_probs(good, x, 0.25, 0.5).exp()).all()
    bad = _one_bad_entry(value, fix_row)
    with pytest.raises(ValueError, match=message):
        chain.reverse_rates(bad, x, 0.5)
    with pytest.raises(ValueError, match=message):
        chain.reverse_kernel_log_probs(bad, x, 0.25, 0.5)


@pytest.mark.parametrize("chain", CHAINS, ids=repr)
def test_empty_batches_on_chains(chain):
    x = torch.zeros(0, 3, dtype=torch.long)
    t = chain.t_min + 0.5 * (chain.t_max - chain.t_min)
    assert chain.marginal(x, t).log_prob(x).shape == (0,)
    assert chain.transition(x, t / 2, t).log_prob(x).shape == (0,)
    assert chain.posterior(x, x, t / 2, t).log_prob(x).shape == (0,)
    assert chain.sample_marginal(x, t).shape == (0, 3)
    assert chain.prior_kl(x).shape == (0,)
    data = torch.tensor([[0, 1, 2], [1, 1, 0]]).to(x.dtype)
    model = pd.oracles.Empirical(data).model(chain)
    assert pd.elbo(chain, model, x).shape == (0,)                   # continuous time
    assert pd.elbo(chain, model, x, grid=pd.grids.Uniform(4)).shape == (0,)


def test_empty_batches_on_gaussians_and_likelihood():
    process = pd.VPSDE()
    x = torch.zeros(0, 2)
    assert process.marginal(x, 0.5).log_prob(x).shape == (0,)
    model = MIX.model(process)
    assert pd.log_likelihood(model, x).shape == (0,)
    lp, stats = pd.log_likelihood(model, x, return_stats=True)
    assert lp.shape == (0,) and stats.nfe == 0


def test_half_precision_chain_times_are_refused():
    with pytest.raises(TypeError, match="t must be float32 or float64"):
        pd.Blackout(15).marginal(torch.zeros(2, 3, dtype=torch.long), torch.tensor(1.0, dtype=torch.float16))


@pytest.mark.parametrize("process", [pd.VPSDE(), pd.VESDE(), pd.SubVPSDE(), pd.CosineVP(), pd.LinearBlend()], ids=repr)
def test_complex_data_is_refused(process):
    with pytest.raises(TypeError, match="x0 must be a real tensor"):
        process.marginal(torch.zeros(2, 3, dtype=torch.complex64), 0.5)


def test_integer_x_init_is_refused():
    rev = pd.reverse(MIX.model(pd.VPSDE()), 0.0)
    with pytest.raises(TypeError, match="x_init must be a floating-point tensor"):
        pd.sample(rev, x_init=torch.zeros(2, 2, dtype=torch.long), solver=pd.solvers.Euler(), grid=pd.grids.Uniform(3))


@pytest.mark.parametrize("build,error,message", [
    (lambda: pd.VPSDE(beta_min="a"), TypeError, "beta_min must be a real number"),
    (lambda: pd.VPSDE(beta_min=torch.tensor(0.1)), TypeError, "beta_min must be a real number"),
    (lambda: pd.VPSDE(validate_args="yes"), TypeError, "validate_args must be True or False"),
    (lambda: pd.VESDE(t_min=-1), ValueError, "t_min must be >= 0"),
    (lambda: pd.VESDE(sigma_min=math.nan), ValueError, "sigma_min must be finite"),
    (lambda: pd.LinearSDE(lambda t: -0.5 * t, lambda t: 1 + t, table_size=3.7), ValueError, "table_size"),
    (lambda: pd.LinearSDE(lambda t: -0.5 * t, lambda t: 1 + t, table_size="9"), TypeError, "table_size"),
    (lambda: pd.UniformChain("4"), TypeError, "num_states"),
])
def test_constructors(build, error, message):
    with pytest.raises(error, match=message):
        build()


def test_log_likelihood_refuses_unknown_options():
    with pytest.raises(ValueError, match=r"options has keys \['bogus'\]"):
        pd.log_likelihood(MIX.model(pd.VPSDE()), torch.zeros(2, 2), options={"bogus": 1})


def nan_net(x, t):
    return torch.full_like(x, math.nan)


@pytest.mark.parametrize("cls", [pd.DenoiserModel, pd.EpsilonModel, pd.ScoreModel, pd.VelocityModel])
@pytest.mark.parametrize("net,error,message", [
    (nan_net, ValueError, "the network returned non-finite values"),
    (lambda x, t: torch.zeros(x.shape, dtype=torch.long), TypeError, "the network returned dtype torch.int64"),
    (lambda x, t: [1, 2], TypeError, "the network returned list"),
    (lambda x, t: torch.zeros(3), ValueError, r"the network returned shape \(3,\)"),
])
def test_gaussian_models_check_the_network(cls, net, error, message):
    model = cls(net, pd.VPSDE())
    x = torch.zeros(2, 2)
    for query in (model.denoise, model.epsilon, model.score, model.velocity):
        with pytest.raises(error, match=message):
            query(x, 0.5)


def test_a_nan_network_is_reported_as_the_networks_in_log_likelihood():
    with pytest.raises(ValueError, match=r"network returned non-finite.*DenoiserModel.net = nan_net"):
        pd.log_likelihood(pd.DenoiserModel(nan_net, pd.VPSDE()), torch.zeros(2, 2))


def test_score_model_checks_x():
    with pytest.raises(ValueError, match="x must be finite"):
        pd.ScoreModel(lambda x, t: x, pd.VPSDE()).score(torch.full((2, 2), math.nan), 0.5)


def test_chain_models_check_the_network():
    chain, x = pd.UniformChain(4), torch.zeros(2, 3, dtype=torch.long)
    with pytest.raises(ValueError, match="non-finite.*CategoricalModel.net"):
        pd.CategoricalModel(lambda x, t: torch.full((*x.shape, 4), math.nan), chain).x0_probs(x, 1.0)
    blackout = pd.Blackout(15)
    with pytest.raises(ValueError, match="non-finite.*BlackoutModel.net"):
        pd.BlackoutModel(lambda x, t: torch.full(x.shape, math.nan), blackout).mean_births(x, 1.0)


def test_validation_off_skips_the_network_checks():
    model = pd.DenoiserModel(nan_net, pd.VPSDE(validate_args=False))
    assert torch.isnan(model.denoise(torch.zeros(2, 2), 0.5)).all()


def test_blackout_reverse_rates_are_finite_at_small_t():
    """Uniform p(n0|n_t) over 0..255 at n_t = 100: n0 is uniform on 100..255, E[n0 - n] = 77.5, so the birth
    rate is 77.5 / (e^t - 1) (Santos et al. 2023); the generic matrix path returned NaN at t = 1e-3."""
    chain, t = pd.Blackout(255), 1e-3
    rates = chain.reverse_rates(torch.full((2, 3, 256), 1 / 256, dtype=torch.float64), torch.full((2, 3), 100), t)
    assert torch.isfinite(rates).all()
    expected = 77.5 / math.expm1(t)  # (t is a float32 time: 1e-3 to 3e-8 relative)
    assert torch.allclose(rates[..., 101], torch.tensor(expected, dtype=torch.float64), rtol=1e-6)
    assert torch.allclose(rates[..., 100], torch.tensor(-expected, dtype=torch.float64), rtol=1e-6)
    assert float(rates.abs().sum()) == pytest.approx(2 * 6 * expected, rel=1e-6)


@pytest.mark.parametrize("t", [0.05, 0.5, 2.0, 8.0])
def test_blackout_reverse_rates_agree_with_the_generic_path(t):
    chain = pd.Blackout(15)
    g = torch.Generator().manual_seed(0)
    probs = torch.rand(4, 3, 16, generator=g, dtype=torch.float64)
    probs = probs / probs.sum(-1, keepdim=True)
    x = torch.randint(0, 16, (4, 3), generator=g)
    closed = chain.reverse_rates(probs, x, t)
    generic = pd.MarkovChain.reverse_rates(chain, probs, x, t)
    assert torch.allclose(closed, generic, rtol=1e-6, atol=1e-9)


def test_blackout_reverse_rates_at_t_zero_are_refused():
    with pytest.raises(ValueError, match="t must be > 0"):
        pd.Blackout(7).reverse_rates(torch.full((1, 2, 8), 1 / 8), torch.zeros(1, 2, dtype=torch.long), 0.0)


def test_a_million_state_uniform_chain_costs_o_s_not_s_squared():
    """UniformChain(10**6) once tried to allocate 8 TB (S x S matrices); its closed forms cost O(S) per token."""
    chain = pd.UniformChain(10**6)
    x0 = torch.tensor([[0, 999_999, 123_456]])
    q = chain.marginal(x0, 0.5)
    lp = q.log_prob(x0)
    keep = math.exp(-0.5)                   # P(no jump) = e^{-rate t}; a jump lands on x0 with prob 1/S
    expected = 3 * math.log(keep + (1 - keep) / 10**6)
    assert torch.isfinite(lp).all() and abs(float(lp) - expected) < 1e-6      # float32 rounding
