"""Model parameterisations (THEORY.md §1): each wrapper, fed a net returning the oracle's native quantity,
reproduces all four quantities of the exact Gaussian-mixture oracle under every Gaussian process.

The oracle's denoiser and score are themselves checked against Tweedie/autograd and scipy in
test_oracles.py; here the velocity is checked against quantities computed independently in this file:
:math:`E[x_1 - x_0 | x_t] = (x_t - D)/t` for the linear blend and :math:`\\alpha_t' D + \\sigma_t'\\epsilon`
with :math:`\\alpha_t', \\sigma_t'` by central finite differences of the schedule.
"""

from __future__ import annotations

import pytest
import torch

import probdiff as pd
from probdiff.oracles import GaussianMixture

F64 = torch.float64

# the closed-form Gaussian processes of the public fixture list
PROCESSES = {f.id: f.make for f in pd.testing.BUILT_IN if f.id in ("VPSDE", "SubVPSDE", "VESDE", "CosineVP", "LinearBlend")}
QUANTITIES = ("denoise", "epsilon", "score", "velocity")
WRAPPERS = {"denoise": pd.DenoiserModel, "epsilon": pd.EpsilonModel, "score": pd.ScoreModel,
            "velocity": pd.VelocityModel}


@pytest.fixture(scope="module")
def mixture():
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(3, 2, 2, generator=gen, dtype=F64)
    covs = a @ a.transpose(-1, -2) / 2 + 0.1 * torch.eye(2, dtype=F64)
    return GaussianMixture(torch.tensor([0.2, 0.5, 0.3], dtype=F64), 2 * torch.randn(3, 2, generator=gen, dtype=F64),
                           covs)


def _points(p, gen, n=6):
    """x_t drawn from p_t-like locations, and per-sample times across the interior of the domain."""
    t = torch.linspace(p.t_min + 0.05 * (p.t_max - p.t_min), p.t_max - 0.05 * (p.t_max - p.t_min), n, dtype=F64)
    x = 2 * torch.randn(n, 2, generator=gen, dtype=F64)
    return x, t


def _schedule_derivatives(p, t, h=1e-6):
    """alpha_t', sigma_t' by central finite differences (independent of the autograd/closed-form paths)."""
    return ((p.alpha(t + h) - p.alpha(t - h)) / (2 * h), (p.sigma(t + h) - p.sigma(t - h)) / (2 * h))


@pytest.mark.parametrize("name", PROCESSES)
@pytest.mark.parametrize("native", QUANTITIES)
def test_wrapper_reproduces_all_oracle_quantities(name, native, mixture):
    p = PROCESSES[name]()
    oracle = mixture.model(p)
    net = getattr(oracle, native)                       # net(x, t) returning the oracle's native quantity
    model = WRAPPERS[native](net, p)
    x, t = _points(p, torch.Generator().manual_seed(1))
    for q in QUANTITIES:
        torch.testing.assert_close(getattr(model, q)(x, t), getattr(oracle, q)(x, t), rtol=1e-8, atol=1e-8,
                                   msg=lambda m: f"{native} -> {q}: {m}")


@pytest.mark.parametrize("name", PROCESSES)
def test_conversions_are_the_closed_forms(name, mixture):
    """eps = (x - alpha D)/sigma, score = -eps/sigma = (alpha D - x)/sigma^2 (Tweedie), v = alpha' D + sigma' eps."""
    p = PROCESSES[name]()
    oracle = mixture.model(p)
    x, t = _points(p, torch.Generator().manual_seed(2))
    a, s = p.alpha(t)[:, None], p.sigma(t)[:, None]
    d = oracle.denoise(x, t)
    eps = oracle.epsilon(x, t)
    torch.testing.assert_close(eps, (x - a * d) / s, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(oracle.score(x, t), -eps / s, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(oracle.score(x, t), (a * d - x) / s**2, rtol=1e-8, atol=1e-8)
    a_dot, s_dot = _schedule_derivatives(p, t)
    torch.testing.assert_close(oracle.velocity(x, t), a_dot[:, None] * d + s_dot[:, None] * eps, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("native", QUANTITIES)
def test_linear_blend_velocity_is_expected_displacement(native, mixture):
    """x_t = (1-t) x0 + t x1: E[x1 - x0 | x_t] = (x_t - (1-t) D)/t - D = (x_t - D)/t."""
    p = pd.LinearBlend()
    oracle = mixture.model(p)
    model = WRAPPERS[native](getattr(oracle, native), p)
    x, t = _points(p, torch.Generator().manual_seed(3))
    expected = (x - oracle.denoise(x, t)) / t[:, None]
    torch.testing.assert_close(model.velocity(x, t), expected, rtol=1e-8, atol=1e-8)


def test_scalar_time_and_event_shapes():
    """A net on (batch, C, H, W) data with a scalar t: outputs keep x's shape; the net sees t of shape (batch,)."""
    p = pd.VPSDE()
    seen = []

    def net(x, t):
        seen.append(t.shape)
        return 0.5 * x

    x = torch.randn(3, 2, 4, 4)
    for cls in WRAPPERS.values():
        model = cls(net, p)
        for q in QUANTITIES:
            out = getattr(model, q)(x, 0.3)
            assert out.shape == x.shape and out.dtype == x.dtype
    assert set(seen) == {torch.Size([3])}


def test_epsilon_model_closed_forms_by_hand():
    """EpsilonModel with net = constant e: D = (x - sigma e)/alpha, score = -e/sigma (hand-computed VE case)."""
    p = pd.VESDE(sigma_min=0.5, sigma_max=8.0)           # alpha = 1, sigma_t = 0.5 * 16^t
    e = torch.tensor([[1.0, -2.0]], dtype=F64)
    model = pd.EpsilonModel(lambda x, t: e.expand_as(x), p)
    x = torch.tensor([[3.0, 1.0]], dtype=F64)
    sigma = 0.5 * 16**0.5
    torch.testing.assert_close(model.denoise(x, 0.5), x - sigma * e)
    torch.testing.assert_close(model.score(x, 0.5), -e / sigma)
    # VE: alpha' = 0, sigma' = sigma ln 16, so v = sigma' eps
    torch.testing.assert_close(model.velocity(x, 0.5), sigma * torch.log(torch.tensor(16.0, dtype=F64)) * e)


def test_bad_net_output_and_process():
    p = pd.VPSDE()
    with pytest.raises(ValueError, match="net"):
        pd.DenoiserModel(lambda x, t: x[:, :1], p).denoise(torch.randn(2, 3), 0.5)
    with pytest.raises(ValueError, match="process"):
        pd.DenoiserModel(lambda x, t: x, object())
    with pytest.raises(ValueError, match="net"):
        pd.DenoiserModel(3, p)
    with pytest.raises(ValueError, match="x"):
        pd.DenoiserModel(lambda x, t: x, p).denoise(torch.randn(3), 0.5)
    with pytest.raises(ValueError, match="t"):
        pd.DenoiserModel(lambda x, t: x, p).denoise(torch.randn(2, 3), 1.5)
