"""pd.as_distribution: shapes, validation, sampling, log_prob equal to pd.log_likelihood and close to the
mixture's exact log-density, the ELBO as a bound, and the same log-joint as a Pyro observed site."""

import pyro
import pyro.poutine as poutine
import pytest
import torch

import probdiff as pd

MIXTURE = pd.oracles.GaussianMixture(torch.tensor([0.4, 0.6]), torch.tensor([[-1.0, 0.5], [1.0, -0.5]]),
                                     torch.stack([0.3 * torch.eye(2), torch.tensor([[0.5, 0.2], [0.2, 0.2]])]))


@pytest.fixture(scope="module")
def model():
    return MIXTURE.to(torch.float64).model(pd.VPSDE())


def test_shapes_sampling_and_validation(model):
    d = pd.as_distribution(model, (2,))
    assert d.batch_shape == () and d.event_shape == (2,)
    x = d.sample((4, 3), generator=torch.Generator().manual_seed(0))
    assert x.shape == (4, 3, 2)
    assert d.sample((0,)).shape == (0, 2)
    assert d.log_prob(torch.zeros(0, 2, dtype=torch.float64)).shape == (0,)
    with pytest.raises(ValueError, match="shape"):
        d.log_prob(torch.zeros(3, 5))
    with pytest.raises(ValueError, match="ODE"):
        pd.as_distribution(model, (2,), log_prob="exact")
    with pytest.raises(ValueError, match="Model"):
        pd.as_distribution(MIXTURE, (2,))
    with pytest.raises(ValueError, match="finite"):
        pd.as_distribution(model, (2,), validate_args=True).log_prob(torch.full((1, 2), float("nan")))


def test_samples_follow_the_mixture(model):
    d = pd.as_distribution(model, (2,), sampler=pd.Sampler(grid=pd.grids.LogSNR(100)))
    x = d.sample((4000,), generator=torch.Generator().manual_seed(1))
    exact_mean = (MIXTURE.weights[:, None] * MIXTURE.means).sum(0).double()
    se = x.std(0) / 4000**0.5
    assert ((x.mean(0) - exact_mean).abs() < 5 * se + 0.02).all()


def test_ode_log_prob_is_log_likelihood_and_matches_the_exact_density(model):
    d = pd.as_distribution(model, (2,), log_prob=pd.ODE(rtol=1e-6, atol=1e-6))
    x = MIXTURE.sample(5, generator=torch.Generator().manual_seed(2)).double()
    lp = d.log_prob(x.reshape(5, 1, 2))
    assert lp.shape == (5, 1)
    torch.testing.assert_close(lp.flatten(), pd.log_likelihood(model, x, rtol=1e-6, atol=1e-6))
    # the flow's density differs from p_0 by log p_T - log p_ref at the endpoint, tiny for the VP
    torch.testing.assert_close(lp.flatten(), MIXTURE.to(torch.float64).log_prob(x), rtol=0, atol=5e-3)


def test_elbo_is_a_bound(model):
    d = pd.as_distribution(model, (2,), log_prob=pd.ELBO(num_samples=64))
    x = MIXTURE.sample(20, generator=torch.Generator().manual_seed(3)).double()
    torch.manual_seed(0)
    bound = d.log_prob(x)
    assert bound.shape == (20,)
    exact = MIXTURE.to(torch.float64).log_prob(x)
    gap = exact - bound
    assert float(gap.mean()) > -3 * float(gap.std()) / 20**0.5


def test_observed_pyro_site_has_the_same_log_joint(model):
    d = pd.as_distribution(model, (2,))
    x = MIXTURE.sample(6, generator=torch.Generator().manual_seed(4)).double()

    def program(data):
        with pyro.plate("data", len(data)):
            pyro.sample("x", d, obs=data)

    trace = poutine.trace(program).get_trace(x)
    trace.compute_log_prob()
    torch.testing.assert_close(trace.nodes["x"]["log_prob"], pd.log_likelihood(model, x))
    torch.testing.assert_close(trace.log_prob_sum(), pd.log_likelihood(model, x).sum())
