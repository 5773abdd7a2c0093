"""Denoising score matching: irreducible values with exact oracles, parameterisation identities."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, strategies as st
from scipy import integrate

import probdiff as pd
from probdiff.losses import (
    DenoisingScoreMatching,
    ImportanceSampled,
    LikelihoodWeighting,
    Natural,
)

B0, B1 = 0.1, 20.0
D, S2, MEAN = 3, 0.5, 0.7  # single Gaussian N(MEAN, S2 I) in D dims


def vp_alpha_sigma(t):
    """Independent numpy closed form of the VP schedule (THEORY.md §1 table)."""
    log_a = -0.25 * t**2 * (B1 - B0) - 0.5 * t * B0
    a2 = np.exp(2 * log_a)
    return math.sqrt(a2), math.sqrt(-np.expm1(2 * log_a))


def posterior_var(t):
    """Var(x0_i | x_t) for x0 ~ N(m, S2): S2 sigma^2 / (alpha^2 S2 + sigma^2)."""
    a, s = vp_alpha_sigma(t)
    return S2 * s**2 / (a**2 * S2 + s**2)


def log_snr(t):
    a, s = vp_alpha_sigma(t)
    return 2 * math.log(a / s)


def dlog_snr(t, h=1e-6):
    return (log_snr(t + h) - log_snr(t - h)) / (2 * h)


def mixture():
    return pd.oracles.GaussianMixture(torch.ones(1), torch.full((1, D), MEAN), S2 * torch.eye(D)[None])


def wrapped(kind, process, model):
    """The oracle wrapped as a network predicting the quantity of the given parameterisation."""
    nets = {
        pd.DenoiserModel: model.denoise,
        pd.EpsilonModel: model.epsilon,
        pd.ScoreModel: model.score,
        pd.VelocityModel: model.velocity,
    }
    return kind(nets[kind], process)


def monte_carlo(loss, model, n=40000, seed=0):
    g = torch.Generator().manual_seed(seed)
    x0 = mixture().sample(n, generator=g)
    values = loss(model, x0, generator=g)
    return values.mean().item(), values.std().item() / math.sqrt(n)


def scale_sq(kind, t):
    """c_P(t)^2 from the closed forms (error of P = c_P * error of the denoiser)."""
    a, s = vp_alpha_sigma(t)
    return {
        pd.DenoiserModel: 1.0,
        pd.EpsilonModel: (a / s) ** 2,
        pd.ScoreModel: (a / s**2) ** 2,
        pd.VelocityModel: (0.5 * a * dlog_snr(t)) ** 2,
    }[kind]


@pytest.mark.parametrize("kind", [pd.DenoiserModel, pd.EpsilonModel, pd.ScoreModel, pd.VelocityModel])
def test_natural_loss_of_oracle_is_irreducible_value(float64, kind):
    # t_min = 0.05 keeps the score loss' variance finite enough for a Monte-Carlo check
    process = pd.VPSDE(t_min=0.05)
    model = wrapped(kind, process, mixture().model(process))
    expected = integrate.quad(lambda t: D * scale_sq(kind, t) * posterior_var(t), 0.05, 1.0, limit=200)[0] / 0.95
    mean, err = monte_carlo(DenoisingScoreMatching(process, Natural()), model)
    assert abs(mean - expected) < 4 * err + 1e-9, (mean, expected, err)


@pytest.mark.parametrize("weighting", [LikelihoodWeighting(), ImportanceSampled()])
@pytest.mark.parametrize("kind", [pd.DenoiserModel, pd.EpsilonModel, pd.VelocityModel])
def test_likelihood_weighted_oracle_loss_is_elbo_diffusion_term(float64, kind, weighting):
    # Integral of -lambda'/2 e^lambda D Var(x0|x_t) dt = D/2 [log(1 + S2 e^lambda)] between the ends.
    process = pd.VPSDE(t_min=1e-3)
    model = wrapped(kind, process, mixture().model(process))
    expected = 0.5 * D * (math.log1p(S2 * math.exp(log_snr(1e-3))) - math.log1p(S2 * math.exp(log_snr(1.0))))
    mean, err = monte_carlo(DenoisingScoreMatching(process, weighting), model)
    assert abs(mean - expected) < 4 * err, (mean, expected, err)


def test_importance_sampling_reduces_variance(float64):
    process = pd.VPSDE(t_min=1e-3)
    model = wrapped(pd.EpsilonModel, process, mixture().model(process))
    _, err_uniform = monte_carlo(DenoisingScoreMatching(process, LikelihoodWeighting()), model, n=4000)
    _, err_importance = monte_carlo(DenoisingScoreMatching(process, ImportanceSampled()), model, n=4000)
    assert err_importance < 0.5 * err_uniform


def test_importance_sampled_times_are_uniform_in_log_snr(float64):
    process = pd.VPSDE()
    t = ImportanceSampled().sample_time(process, 20000, generator=torch.Generator().manual_seed(1))
    lam = process.log_snr(t)
    lo, hi = float(process.log_snr(torch.tensor(1.0))), float(process.log_snr(torch.tensor(1e-5)))
    u = ((lam - lo) / (hi - lo)).numpy()
    from scipy import stats
    assert stats.kstest(u, "uniform").pvalue > 1e-3
    assert float(t.min()) >= process.t_min and float(t.max()) <= process.t_max


@given(t=st.floats(0.01, 0.99), bias=st.floats(-1.0, 1.0))
def test_elbo_weighted_loss_is_the_same_in_every_parameterisation(t, bias):
    # A biased denoiser converted to each parameterisation has errors c_P e_D; the ELBO weightings
    # divide c_P^2 out, so the per-sample losses at equal (t, eps) coincide.
    torch.set_default_dtype(torch.float64)
    try:
        process = pd.VPSDE()
        oracle = mixture().model(process)
        base = pd.DenoiserModel(lambda x, tt: oracle.denoise(x, tt) + bias, process)
        g = torch.Generator().manual_seed(3)
        x0, eps = mixture().sample(5, generator=g), torch.randn(5, D, generator=g)
        tt = torch.full((5,), t)
        for weighting in (LikelihoodWeighting(), ImportanceSampled()):
            loss = DenoisingScoreMatching(process, weighting)
            ref = loss.evaluate(base, x0, tt, eps)
            for kind in (pd.EpsilonModel, pd.ScoreModel, pd.VelocityModel):
                other = wrapped(kind, process, base)
                torch.testing.assert_close(loss.evaluate(other, x0, tt, eps), ref, rtol=1e-8, atol=1e-10)
    finally:
        torch.set_default_dtype(torch.float32)


def test_oracle_is_the_minimum(float64):
    process = pd.VPSDE(t_min=0.05)
    oracle = mixture().model(process)
    loss = DenoisingScoreMatching(process)
    g = torch.Generator().manual_seed(0)
    x0 = mixture().sample(4000, generator=g)
    t, eps = torch.rand(4000, generator=g) * 0.95 + 0.05, torch.randn(4000, D, generator=g)
    best = loss.evaluate(oracle, x0, t, eps).mean()
    for delta in (0.1, -0.1):
        worse = pd.DenoiserModel(lambda x, tt: oracle.denoise(x, tt) + delta, process)
        assert loss.evaluate(worse, x0, t, eps).mean() > best


def test_bad_arguments():
    process = pd.VPSDE()
    with pytest.raises(ValueError, match="process"):
        DenoisingScoreMatching("vp")
    with pytest.raises(ValueError, match="weighting"):
        DenoisingScoreMatching(process, "elbo")
    with pytest.raises(ValueError, match="model"):
        DenoisingScoreMatching(process)(object(), torch.zeros(2, 3))
    with pytest.raises(ValueError, match="log-SNR"):
        ImportanceSampled().sample_time(pd.LinearBlend(t_max=1.0), 4)
