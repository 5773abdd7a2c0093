"""Exact oracles (THEORY.md §2) against scipy, numerical convolution, autograd and direct computation."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
import torch
from scipy import integrate, stats
from scipy.special import logsumexp

import probdiff as pd
from probdiff.oracles import Empirical, GaussianMixture

F64 = torch.float64

# the closed-form Gaussian processes of the public fixture list
PROCESSES = {f.id: f.make for f in pd.testing.BUILT_IN if f.id in ("VPSDE", "SubVPSDE", "VESDE", "CosineVP", "LinearBlend")}


def check_times(p):
    """Times spread over the domain, both ends included."""
    return [p.t_min, p.t_min + 0.01 * (p.t_max - p.t_min), 0.3, 0.7, p.t_max]


def random_mixture(d, k, seed, dtype=F64):
    gen = torch.Generator().manual_seed(seed)
    w = torch.rand(k, generator=gen, dtype=dtype) + 0.2
    w = w / w.sum()
    means = 2.0 * torch.randn(k, d, generator=gen, dtype=dtype)
    a = torch.randn(k, d, d, generator=gen, dtype=dtype)
    covs = a @ a.transpose(-1, -2) / d + 0.1 * torch.eye(d, dtype=dtype)
    return GaussianMixture(w, means, covs)


# ==================================================================== GaussianMixture
def test_log_prob_matches_scipy_mixture():
    gmm = random_mixture(3, 4, seed=1)
    x = torch.randn(20, 3, generator=torch.Generator().manual_seed(2), dtype=F64) * 2
    comps = [stats.multivariate_normal(m.numpy(), c.numpy()).logpdf(x.numpy())
             for m, c in zip(gmm.means, gmm.covs)]
    ref = logsumexp(np.stack(comps) + np.log(gmm.weights.numpy())[:, None], axis=0)
    np.testing.assert_allclose(gmm.log_prob(x).numpy(), ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", PROCESSES)
def test_marginal_log_prob_matches_scipy_diffused_mixture(name):
    """p_t = sum_k w_k N(alpha mu_k, alpha^2 C_k + sigma^2 I), evaluated with scipy from the closed form."""
    p = PROCESSES[name]()
    gmm = random_mixture(2, 3, seed=3)
    x = torch.randn(6, 2, generator=torch.Generator().manual_seed(4), dtype=F64) * 2
    for t in check_times(p):
        tt = torch.tensor(t, dtype=F64)
        a, s = float(p.alpha(tt)), float(p.sigma(tt))
        comps = [stats.multivariate_normal(a * m.numpy(), a**2 * c.numpy() + s**2 * np.eye(2)).logpdf(x.numpy())
                 for m, c in zip(gmm.means, gmm.covs)]
        ref = logsumexp(np.stack(comps) + np.log(gmm.weights.numpy())[:, None], axis=0)
        np.testing.assert_allclose(gmm.marginal_log_prob(p, x, t).numpy(), ref, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("name", PROCESSES)
def test_marginal_log_prob_is_numerical_convolution_1d(name):
    """In 1-D, log p_t(x) = log int p_0(y) N(x; alpha_t y, sigma_t^2) dy (scipy quad)."""
    p = PROCESSES[name]()
    gmm = GaussianMixture(torch.tensor([0.3, 0.7], dtype=F64), torch.tensor([[-1.5], [1.0]], dtype=F64),
                          torch.tensor([[[0.2]], [[0.5]]], dtype=F64))
    w, mu, var = (v.flatten().numpy() for v in (gmm.weights, gmm.means, gmm.covs))
    p0 = lambda y: float(np.sum(w * np.exp(-0.5 * (y - mu) ** 2 / var) / np.sqrt(2 * np.pi * var)))  # noqa: E731
    for t in [p.t_min, 0.05, 0.5, p.t_max]:
        tt = torch.tensor(t, dtype=F64)
        a, s = float(p.alpha(tt)), float(p.sigma(tt))
        for xv in (-2.0, 0.1, 1.3):
            if s / a < 1:   # narrow kernel: substitute y = (x - sigma z)/alpha, integrate over z
                phi = lambda z: math.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)  # noqa: E731
                val = integrate.quad(lambda z: p0((xv - s * z) / a) * phi(z) / a, -14, 14,
                                     limit=400, epsabs=0, epsrel=1e-11)[0]
            else:           # narrow data relative to the kernel: integrate over y where p_0 lives
                kernel = lambda y: math.exp(-0.5 * ((xv - a * y) / s) ** 2) / (math.sqrt(2 * math.pi) * s)  # noqa: E731
                val = integrate.quad(lambda y: p0(y) * kernel(y), -12, 12, points=[-1.5, 1.0],
                                     limit=400, epsabs=0, epsrel=1e-11)[0]
            got = gmm.marginal_log_prob(p, torch.tensor([[xv]], dtype=F64), t).item()
            assert got == pytest.approx(math.log(val), abs=1e-8), (t, xv)


@pytest.mark.parametrize("name", PROCESSES)
def test_mixture_score_is_autograd_of_marginal_log_prob(name):
    p = PROCESSES[name]()
    gmm = random_mixture(3, 3, seed=5)
    model = gmm.model(p)
    for t in check_times(p):
        x = torch.randn(8, 3, generator=torch.Generator().manual_seed(6), dtype=F64) * 2
        x.requires_grad_(True)
        (grad,) = torch.autograd.grad(gmm.marginal_log_prob(p, x, t).sum(), x)
        x = x.detach()
        torch.testing.assert_close(model.score(x, t), grad, rtol=1e-8, atol=1e-8 * grad.abs().max().item())
        # Tweedie: D = (x + sigma^2 grad log p_t) / alpha, with the autograd score
        tt = torch.full((8,), t, dtype=F64)
        a, s = p.alpha(tt)[:, None], p.sigma(tt)[:, None]
        torch.testing.assert_close(model.denoise(x, t), (x + s**2 * grad) / a, rtol=1e-7, atol=1e-7)
        torch.testing.assert_close(model.log_prob(x, t), gmm.marginal_log_prob(p, x, t))


def test_single_gaussian_denoiser_is_linear_regression():
    """K = 1: E[x0|xt] = mu + alpha C (alpha^2 C + sigma^2 I)^{-1} (x - alpha mu), by a linear solve."""
    gen = torch.Generator().manual_seed(7)
    a_ = torch.randn(4, 4, generator=gen, dtype=F64)
    cov = a_ @ a_.T + 0.05 * torch.eye(4, dtype=F64)
    mu = torch.randn(4, generator=gen, dtype=F64)
    gmm = GaussianMixture(torch.ones(1, dtype=F64), mu[None], cov[None])
    p = pd.CosineVP()
    x = torch.randn(5, 4, generator=gen, dtype=F64)
    for t in (0.01, 0.4, 0.9):
        tt = torch.tensor(t, dtype=F64)
        a, s = p.alpha(tt), p.sigma(tt)
        k = a**2 * cov + s**2 * torch.eye(4, dtype=F64)
        ref = mu + (a * cov @ torch.linalg.solve(k, (x - a * mu).T)).T
        torch.testing.assert_close(gmm.model(p).denoise(x, t), ref, rtol=1e-9, atol=1e-10)


def test_ring_is_the_mixture_of_equally_spaced_isotropic_gaussians():
    ring = GaussianMixture.ring(6, radius=3.0, variance=0.2, dtype=F64)
    x = torch.tensor([[3.0, 0.0], [0.1, -2.9], [1.0, 1.0], [-3.0, 0.2]], dtype=F64)
    # scipy on means placed at 3 (cos 60k deg, sin 60k deg), weights 1/6, covariance 0.2 I
    means = [(3 * math.cos(math.radians(60 * k)), 3 * math.sin(math.radians(60 * k))) for k in range(6)]
    dens = sum(stats.multivariate_normal(m, 0.2 * np.eye(2)).pdf(x.numpy()) / 6 for m in means)
    np.testing.assert_allclose(ring.log_prob(x).numpy(), np.log(dens), rtol=1e-10)
    assert GaussianMixture.ring().means.dtype == torch.get_default_dtype()
    for bad in (dict(modes=0), dict(radius=0.0), dict(variance=-1.0), dict(modes=True)):
        with pytest.raises(ValueError, match=next(iter(bad))):
            GaussianMixture.ring(**bad)


def test_sample_moments():
    gmm = random_mixture(2, 3, seed=8)
    n = 40000
    x = gmm.sample(n, generator=torch.Generator().manual_seed(9))
    assert x.shape == (n, 2) and x.dtype == F64
    w, mu, c = gmm.weights, gmm.means, gmm.covs
    mean = (w[:, None] * mu).sum(0)
    cov = (w[:, None, None] * (c + mu[:, :, None] * mu[:, None, :])).sum(0) - torch.outer(mean, mean)
    # 5 Monte-Carlo standard errors, each estimated from the sample itself
    se_mean = x.std(0) / math.sqrt(n)
    assert bool(((x.mean(0) - mean).abs() <= 5 * se_mean).all())
    centred = x - x.mean(0)
    prods = centred[:, :, None] * centred[:, None, :]
    se_cov = prods.std(0) / math.sqrt(n)
    assert bool(((prods.mean(0) - cov).abs() <= 5 * se_cov).all())
    # seeded: the same generator state reproduces the draw
    torch.testing.assert_close(gmm.sample(n, generator=torch.Generator().manual_seed(9)), x, rtol=0, atol=0)


def test_mixture_float32():
    gmm = random_mixture(3, 2, seed=10, dtype=torch.float32)
    p = pd.VPSDE()
    x = torch.randn(4, 3)
    for t in (p.t_min, p.t_max):
        for out in (gmm.marginal_log_prob(p, x, t), gmm.model(p).score(x, t), gmm.model(p).denoise(x, t)):
            assert out.dtype == torch.float32 and bool(torch.isfinite(out).all())


# ==================================================================== Empirical
def _direct_denoiser(data, x, alpha, sigma):
    """Softmax-weighted mean by brute force (float64, full (batch, N, D) tensor)."""
    y = data.reshape(len(data), -1).to(F64)
    xf = x.reshape(len(x), -1).to(F64)
    d2 = ((xf[:, None, :] - alpha.to(F64)[:, None, None] * y[None]) ** 2).sum(-1)
    w = torch.softmax(-d2 / (2 * sigma.to(F64)[:, None] ** 2), dim=1)
    return (w @ y).reshape(x.shape)


@pytest.mark.parametrize("name", PROCESSES)
@pytest.mark.parametrize("chunk_size", [7, 4096])
def test_empirical_denoiser_is_softmax_mean(name, chunk_size):
    p = PROCESSES[name]()
    gen = torch.Generator().manual_seed(11)
    data = torch.randn(50, 2, 3, generator=gen, dtype=F64)
    emp = Empirical(data, chunk_size=chunk_size)
    x = torch.randn(4, 2, 3, generator=gen, dtype=F64)
    t = torch.tensor([0.02, 0.2, 0.5, 0.9], dtype=F64).clamp(p.t_min, p.t_max)
    ref = _direct_denoiser(data, x, p.alpha(t), p.sigma(t))
    torch.testing.assert_close(emp.model(p).denoise(x, t), ref, rtol=1e-10, atol=1e-12)


def test_empirical_integer_data():
    """uint8 data (images as stored) give the same model as their float64 copy."""
    gen = torch.Generator().manual_seed(16)
    data = torch.randint(0, 256, (40, 1, 2, 2), generator=gen, dtype=torch.uint8)
    p = pd.VESDE(sigma_max=300.0)
    x = 255 * torch.rand(3, 1, 2, 2, generator=gen, dtype=F64)
    t = torch.tensor([0.3, 0.6, 0.9], dtype=F64)
    ref = _direct_denoiser(data.double(), x, p.alpha(t), p.sigma(t))
    torch.testing.assert_close(Empirical(data, chunk_size=9).model(p).denoise(x, t), ref, rtol=1e-10, atol=1e-9)


@pytest.mark.parametrize("name", PROCESSES)
def test_empirical_marginal_log_prob_is_direct_logsumexp(name):
    p = PROCESSES[name]()
    gen = torch.Generator().manual_seed(12)
    data = torch.randn(30, 5, generator=gen, dtype=F64)
    emp = Empirical(data, chunk_size=8)
    x = torch.randn(3, 5, generator=gen, dtype=F64) * 1.5
    for t in check_times(p):
        tt = torch.tensor(t, dtype=F64)
        comp = torch.distributions.Normal(p.alpha(tt) * data[None], p.sigma(tt)).log_prob(x[:, None]).sum(-1)
        ref = torch.logsumexp(comp, dim=1) - math.log(30)
        torch.testing.assert_close(emp.marginal_log_prob(p, x, t), ref, rtol=1e-10, atol=1e-9)
        torch.testing.assert_close(emp.model(p).log_prob(x, t), ref, rtol=1e-10, atol=1e-9)


@pytest.mark.parametrize("name", PROCESSES)
def test_empirical_score_is_autograd_of_marginal_log_prob(name):
    p = PROCESSES[name]()
    gen = torch.Generator().manual_seed(13)
    data = torch.randn(20, 3, generator=gen, dtype=F64)
    emp = Empirical(data)
    for t in (0.3, 0.7):
        x = torch.randn(4, 3, generator=gen, dtype=F64).requires_grad_(True)
        (grad,) = torch.autograd.grad(emp.marginal_log_prob(p, x, t).sum(), x)
        torch.testing.assert_close(emp.model(p).score(x.detach(), t), grad, rtol=1e-8, atol=1e-8)


@pytest.mark.parametrize("process", [pd.VESDE(sigma_min=1e-4), pd.LinearBlend(t_min=1e-4), pd.VPSDE(t_min=1e-7)],
                         ids=["VESDE", "LinearBlend", "VPSDE"])
def test_empirical_denoiser_stable_at_tiny_sigma_float32(process):
    """sigma_{t_min} ~ 1e-4: logits ~ -1e8; no NaN, and D lands on the nearest data point."""
    gen = torch.Generator().manual_seed(14)
    data = torch.rand(100, 10, generator=gen)
    nearest = torch.tensor([3, 57, 99, 0])
    x = data[nearest] + 1e-3 * torch.randn(4, 10, generator=gen)
    x[3] = 50.0                                           # far from every point: all logits hugely negative
    far_nearest = torch.cdist(x[3:4].double(), data.double()).argmin()
    model = Empirical(data, chunk_size=16).model(process)
    out = model.denoise(x, process.t_min)
    assert out.dtype == torch.float32 and bool(torch.isfinite(out).all())
    torch.testing.assert_close(out[:3], data[nearest[:3]], rtol=0, atol=1e-6)
    torch.testing.assert_close(out[3], data[far_nearest], rtol=0, atol=1e-6)
    lp = Empirical(data).marginal_log_prob(process, x, process.t_min)
    assert bool(torch.isfinite(lp).all())


@pytest.mark.slow
def test_empirical_mnist_sized_data_batch_of_8():
    """60 000 x 784 float32 data, batch 8: chunked (no (8, 60000, 784) tensor), equals the direct computation.

    The direct computation uses the (8, 60000) matrix of distances from torch.cdist (its float32 rounding
    moves the logits by ~1e-5 at sigma ~ 9, far inside the tolerance).
    """
    gen = torch.Generator().manual_seed(15)
    data = torch.rand(60000, 784, generator=gen)
    p = pd.VESDE(sigma_min=0.01, sigma_max=50.0)
    x = data[:8] + 4.0 * torch.randn(8, 784, generator=gen)
    start = time.perf_counter()
    out = Empirical(data).model(p).denoise(x, 0.8)
    elapsed = time.perf_counter() - start
    sigma = p.sigma(torch.tensor(0.8, dtype=F64))
    d2 = torch.cdist(x, data).double() ** 2
    ref = torch.softmax(-d2 / (2 * sigma**2), dim=1).float() @ data
    assert bool(torch.isfinite(out).all())
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)
    assert elapsed < 60, elapsed


def test_correlated_mixture_is_seeded_with_full_covariances_above_the_floor():
    mix = pd.oracles.GaussianMixture.correlated()
    assert (mix.num_components, mix.dim) == (4, 16) and mix.means.dtype == torch.float64
    torch.testing.assert_close(mix.weights, torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=torch.float64))
    again, other = pd.oracles.GaussianMixture.correlated(), pd.oracles.GaussianMixture.correlated(seed=1)
    assert torch.equal(mix.means, again.means) and torch.equal(mix.covs, again.covs)
    assert not torch.equal(mix.means, other.means)
    # 0.2 A A^T + 0.05 I: symmetric, every eigenvalue >= 0.05, and not diagonal (the components are correlated)
    eig = torch.linalg.eigvalsh(mix.covs)
    assert float(eig.min()) >= 0.05 - 1e-12
    off = mix.covs - torch.diag_embed(torch.diagonal(mix.covs, dim1=-2, dim2=-1))
    assert float(off.abs().max()) > 0.05
    small = pd.oracles.GaussianMixture.correlated(3, (1.0,), dtype=torch.float32)
    assert (small.num_components, small.dim, small.means.dtype) == (1, 3, torch.float32)
    with pytest.raises(ValueError, match="dim"):
        pd.oracles.GaussianMixture.correlated(0)
    with pytest.raises(ValueError, match="weights"):
        pd.oracles.GaussianMixture.correlated(weights=())
