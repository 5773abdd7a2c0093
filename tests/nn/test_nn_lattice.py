"""LatticeDenoiser and the truncated-normal helpers, against mpmath and numerical integration."""

import math

import mpmath
import pytest
import torch
from hypothesis import given, strategies as st
from scipy import integrate

import probdiff as pd
from probdiff.likelihood import Quantization
from probdiff.nn import MLP, FourierLogSNR, LatticeDenoiser
from probdiff.lattice import bin_posterior, truncated_normal

mpmath.mp.dps = 50


def mp_truncated(a, b):
    """log(Phi(b) - Phi(a)) and the mean of N(0, 1) truncated to [a, b], in 50-digit arithmetic."""
    a, b = mpmath.mpf(a), mpmath.mpf(b)
    # the lower tail on the side of the interval, or the difference of two numbers near 1 loses the digits
    mass = mpmath.ncdf(-a) - mpmath.ncdf(-b) if a > 0 else mpmath.ncdf(b) - mpmath.ncdf(a)
    mean = (mpmath.npdf(a) - mpmath.npdf(b)) / mass
    return float(mpmath.log(mass)), float(mean)


@given(st.floats(-38.0, 38.0), st.floats(1e-3, 30.0))
def test_truncated_normal_matches_mpmath(a, width):
    b = a + width
    log_mass, mean = truncated_normal(torch.tensor([a], dtype=torch.float64), torch.tensor([b], dtype=torch.float64))
    ref_log_mass, ref_mean = mp_truncated(a, b)
    assert float(log_mass) == pytest.approx(ref_log_mass, rel=1e-9, abs=1e-9)
    assert float(mean) == pytest.approx(ref_mean, rel=1e-9, abs=1e-9 * max(1.0, abs(a)))


class ConstantLogits(torch.nn.Module):
    """A 'network' returning fixed level log-probabilities for every coordinate."""

    def __init__(self, log_probs):
        super().__init__()
        self.log_probs = log_probs

    def forward(self, x, t):
        return self.log_probs.expand(*x.shape, -1)


def quad_denoiser(probs, q, xt, alpha, sigma):
    """E[x0 | x_t] for i.i.d. coordinates with the piecewise-constant density of the dequantised levels."""
    num = den = 0.0
    for k, pk in enumerate(probs):
        lo, hi = q.lo + k * q.width, q.lo + (k + 1) * q.width
        like = lambda x: math.exp(-0.5 * ((xt - alpha * x) / sigma) ** 2)  # noqa: E731
        mass = integrate.quad(like, lo, hi, epsabs=0, epsrel=1e-12)[0]
        first = integrate.quad(lambda x: (x - lo) * like(x), lo, hi, epsabs=0, epsrel=1e-12)[0]  # >= 0 integrand
        den += pk / q.width * mass
        num += pk / q.width * (first + lo * mass)
    return num / den


@pytest.mark.parametrize("t", [0.005, 0.05, 0.3])
def test_lattice_denoiser_is_the_exact_denoiser_of_independent_levels(float64, t):
    # Exact when the network outputs the true level probabilities of independent coordinates.
    q = Quantization(5, (-1.0, 1.0))
    probs = torch.tensor([0.5, 0.05, 0.1, 0.15, 0.2], dtype=torch.float64)
    process = pd.VPSDE(t_min=1e-3)
    model = pd.DenoiserModel(LatticeDenoiser(ConstantLogits(probs.log()), process, q), process)
    alpha, sigma = float(process.alpha(torch.tensor(t))), float(process.sigma(torch.tensor(t)))
    xt = torch.tensor([[-1.02, -0.93, -0.6, -0.21, 0.0, 0.19, 0.55, 0.61, 0.97, 1.1]], dtype=torch.float64) * alpha
    got = model.denoise(xt, torch.tensor([t], dtype=torch.float64))[0]
    want = [quad_denoiser(probs.tolist(), q, float(x), alpha, sigma) for x in xt[0]]
    assert got.tolist() == pytest.approx(want, rel=1e-8, abs=1e-10)


def test_zero_logits_start_at_the_uniform_denoiser(float64):
    # An MLP starts with zero output: the denoiser of coordinates uniform on data_range (all levels equal).
    q = Quantization(17, (-1.0, 1.0))
    process = pd.VPSDE(t_min=1e-3)
    net = MLP((1, 2, 2), out_shape=(1, 2, 2, 17), time=FourierLogSNR(process)).double()
    head = LatticeDenoiser(net, process, q)
    x, t = torch.tensor([[[[-1.0, -0.4], [0.33, 0.9]]]], dtype=torch.float64), torch.tensor([0.2], dtype=torch.float64)
    alpha, sigma = float(process.alpha(t)), float(process.sigma(t))
    want = [quad_denoiser([1 / 17] * 17, q, float(v), alpha, sigma) for v in x.flatten()]
    assert head(x, t).flatten().tolist() == pytest.approx(want, rel=1e-8)


def test_bin_posterior_masses_sum_to_the_probability_of_data_range():
    q = Quantization(17, (-1.0, 1.0))
    x = torch.linspace(-1.5, 1.5, 31, dtype=torch.float64)[:, None]
    alpha, sigma = torch.tensor(0.9, dtype=torch.float64), torch.tensor(0.3, dtype=torch.float64)
    log_mass, mean = bin_posterior(q, x, alpha, sigma)
    m, s = x / alpha, sigma / alpha
    inside = torch.special.ndtr((1 - m) / s) - torch.special.ndtr((-1 - m) / s)
    torch.testing.assert_close(log_mass.exp().sum(-1), inside, rtol=1e-12, atol=1e-14)
    edges = -1 + q.width * torch.arange(18, dtype=torch.float64)
    assert bool((mean >= edges[:-1]).all() and (mean <= edges[1:]).all())


def test_gradients_and_float32():
    q = Quantization(17, (-1.0, 1.0))
    process = pd.VPSDE(t_min=1e-3)
    net = MLP((1, 4, 4), out_shape=(1, 4, 4, 17), time=FourierLogSNR(process))
    head = LatticeDenoiser(net, process, q)
    x = torch.rand(3, 1, 4, 4) * 2 - 1
    out = head(x, torch.tensor([1e-3, 0.5, 1.0]))
    assert out.dtype == torch.float32 and out.shape == x.shape and bool(torch.isfinite(out).all())
    out.sum().backward()
    assert all(p.grad is not None for p in net.parameters())


def test_bad_arguments():
    q = Quantization(17, (-1.0, 1.0))
    process = pd.VPSDE()
    with pytest.raises(ValueError, match="process must be a GaussianProcess"):
        LatticeDenoiser(MLP(4), pd.Blackout(max_count=3), q)
    with pytest.raises(ValueError, match="quantization must be"):
        LatticeDenoiser(MLP(4), process, (17, (-1, 1)))
    head = LatticeDenoiser(MLP(4), process, q)  # one output per coordinate, not one per level
    with pytest.raises(ValueError, match=r"one logit per level"):
        head(torch.zeros(2, 4), torch.tensor([0.5, 0.5]))
