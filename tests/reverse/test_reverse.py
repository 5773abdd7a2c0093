"""The reverse family (THEORY.md §3): drift and diffusion, and its Fokker–Planck equation.

For data p_0 with exact marginals p_t, the family dx = b_eta dt + eta g dW run backwards in time has
marginals p_t iff the backward Fokker–Planck residual

    R = d/dt p_t + div(b_eta p_t) + (eta^2 g^2 / 2) Laplacian p_t

vanishes (reverse time tau = T - t: d_tau p = div(b_eta p) + eta^2 g^2/2 Lap p, and d_tau = -d_t). The
residual is computed here by autograd from the exact mixture density, independently of the solvers.
"""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import probdiff as pd


def _mixture():
    means = torch.tensor([[-1.5, 0.5], [1.0, -0.5], [0.5, 2.0]], dtype=torch.float64)
    covs = torch.stack([torch.tensor([[0.3, 0.1], [0.1, 0.2]]), 0.5 * torch.eye(2),
                        torch.tensor([[0.2, -0.05], [-0.05, 0.4]])])
    return pd.oracles.GaussianMixture(torch.tensor([0.3, 0.5, 0.2], dtype=torch.float64), means,
                                      covs.to(torch.float64))


PROCESSES = [pd.VPSDE(), pd.VESDE(), pd.CosineVP(), pd.LinearBlend(), pd.SubVPSDE()]


@pytest.mark.parametrize("process", PROCESSES, ids=lambda p: type(p).__name__)
@settings(max_examples=10)
@given(noise=st.sampled_from([0.0, 0.5, 1.0, 2.0]), u=st.floats(0.1, 0.9))
def test_backward_fokker_planck_residual_vanishes(process, noise, u):
    mix = _mixture()
    rev = pd.reverse(process, mix.model(process), noise)
    t0 = process.t_min + u * (process.t_max - process.t_min)
    x = (torch.randn(6, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 1.5).requires_grad_(True)
    t = torch.full((6,), t0, dtype=torch.float64, requires_grad=True)

    def density(x_, t_):
        return mix.marginal_log_prob(process, x_, t_).exp()

    p = density(x, t)
    (dp_dt,) = torch.autograd.grad(p.sum(), t, create_graph=True)
    flux = rev.drift(x, t) * p[:, None]
    div = sum(torch.autograd.grad(flux[:, i].sum(), x, create_graph=True)[0][:, i] for i in range(2))
    (grad_p,) = torch.autograd.grad(p.sum(), x, create_graph=True)
    lap = sum(torch.autograd.grad(grad_p[:, i].sum(), x, create_graph=True)[0][:, i] for i in range(2))
    g2 = rev.process.diffusion(t) ** 2
    residual = dp_dt + div + 0.5 * noise**2 * g2 * lap
    scale = dp_dt.abs() + div.abs() + (0.5 * noise**2 * g2 * lap).abs() + 1e-12
    assert float((residual.abs() / scale).max().detach()) < 1e-6


@pytest.mark.parametrize("process", PROCESSES, ids=lambda p: type(p).__name__)
def test_drift_and_diffusion_formulas(process):
    mix = _mixture()
    model = mix.model(process)
    x = torch.randn(4, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    t = torch.tensor(0.37, dtype=torch.float64)
    # score by autograd of the exact log-density, coefficients from alpha, sigma by finite differences
    xg = x.clone().requires_grad_(True)
    score = torch.autograd.grad(mix.marginal_log_prob(process, xg, t).sum(), xg)[0]
    h = 1e-6
    log_alpha = lambda v: math.log(float(process.alpha(torch.tensor(v, dtype=torch.float64))))  # noqa: E731
    log_var = lambda v: 2 * math.log(float(process.sigma(torch.tensor(v, dtype=torch.float64))))  # noqa: E731
    f = (log_alpha(0.37 + h) - log_alpha(0.37 - h)) / (2 * h)
    sigma2 = float(process.sigma(t)) ** 2
    g2 = sigma2 * ((log_var(0.37 + h) - log_var(0.37 - h)) / (2 * h) - 2 * f)  # d sigma^2/dt - 2 f sigma^2
    for noise in (0.0, 0.5, 2.0):
        rev = pd.reverse(process, model, noise)
        expected = f * x - 0.5 * (1 + noise**2) * g2 * score
        torch.testing.assert_close(rev.drift(x, t), expected, rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(rev.diffusion(t), torch.tensor(noise * math.sqrt(g2), dtype=torch.float64),
                                   rtol=1e-6, atol=1e-9)
    assert pd.probability_flow(process, model).noise == 0.0


def test_reverse_arguments_are_validated():
    process = pd.VPSDE()
    model = _mixture().model(process)
    with pytest.raises(ValueError, match="noise"):
        pd.reverse(process, model, -0.5)
    with pytest.raises(ValueError, match="noise"):
        pd.reverse(process, model, float("nan"))
    with pytest.raises(ValueError, match="registered"):
        pd.reverse("vp", model, 1.0)
