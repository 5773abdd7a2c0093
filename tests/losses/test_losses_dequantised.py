"""DenoisingScoreMatching(quantization=...): Rao-Blackwellised targets for uniformly dequantised data."""

import math

import pytest
import torch
from scipy import integrate

import probdiff as pd
from probdiff.likelihood import Quantization
from probdiff.losses import DenoisingScoreMatching, ImportanceSampled, Natural
from probdiff.nn import LatticeDenoiser

Q = Quantization(5, (-1.0, 1.0))
PROBS = torch.tensor([0.5, 0.05, 0.1, 0.15, 0.2])


def dequantised(n, seed):
    g = torch.Generator().manual_seed(seed)
    levels = torch.multinomial(PROBS, n * 3, replacement=True, generator=g).reshape(n, 3)
    return Q.dequantize(levels, generator=g, dtype=torch.float64)


class Constant(torch.nn.Module):
    def __init__(self, value):
        super().__init__()
        self.value = value

    def forward(self, x, t):
        return torch.full_like(x, self.value)


def test_target_is_the_mean_of_x0_in_its_bin_given_xt(float64):
    # Natural weighting (w = 1) and a denoiser predicting -10: the loss is (x0_bar + 10)^2 per coordinate.
    process = pd.VPSDE(t_min=1e-3)
    loss = DenoisingScoreMatching(process, Natural(), quantization=Q)
    model = pd.DenoiserModel(Constant(-10.0), process)
    x0 = torch.tensor([[-0.95], [-0.35], [0.13], [0.99]])
    t = torch.tensor([0.01, 0.05, 0.2, 0.02])
    eps = torch.tensor([[1.3], [-0.4], [2.0], [-1.1]])
    got = loss.evaluate(model, x0, t, eps).sqrt() - 10.0
    for i in range(4):
        a, s = float(process.alpha(t[i])), float(process.sigma(t[i]))
        xt = a * float(x0[i]) + s * float(eps[i])
        lo = Q.lo + Q.width * math.floor((float(x0[i]) - Q.lo) / Q.width)
        like = lambda x: math.exp(-0.5 * ((xt - a * x) / s) ** 2)  # noqa: E731
        mass = integrate.quad(like, lo, lo + Q.width, epsabs=0, epsrel=1e-12)[0]
        first = integrate.quad(lambda x: (x - lo) * like(x), lo, lo + Q.width, epsabs=0, epsrel=1e-12)[0]
        assert float(got[i]) == pytest.approx(lo + first / mass, rel=1e-9, abs=1e-9)


def test_same_expected_gradient_and_less_variance(float64):
    # E[x0 | x_t] = E[x0_bar | x_t]: the gradient is unbiased for the same objective; its variance drops.
    process = pd.VPSDE(t_min=2e-4)
    plain = DenoisingScoreMatching(process, ImportanceSampled())
    rb = DenoisingScoreMatching(process, ImportanceSampled(), quantization=Q)
    net = torch.nn.Linear(3, 3)
    model = pd.EpsilonModel(lambda x, t: net(x), process)
    n = 20000
    x0 = dequantised(n, seed=1)
    g = torch.Generator().manual_seed(2)
    t = ImportanceSampled().sample_time(process, n, generator=g)
    eps = torch.randn(x0.shape, generator=g)

    def grads(loss):
        out = []
        for chunk in range(0, n, 500):
            net.zero_grad()
            loss.evaluate(model, x0[chunk:chunk + 500], t[chunk:chunk + 500], eps[chunk:chunk + 500]).sum().backward()
            out.append(torch.cat([p.grad.flatten() for p in net.parameters()]).clone())
        return torch.stack(out)  # (40, 12): sums over 40 independent blocks of 500

    a, b = grads(plain), grads(rb)
    diff = a - b
    se = diff.std(0) / math.sqrt(diff.shape[0])
    assert bool((diff.mean(0).abs() < 4 * se).all()), (diff.mean(0) / se)
    # At the optimum (the exact denoiser of these i.i.d. levels) what is left of the plain loss' variance is
    # mostly the within-bin part, which the Rao-Blackwellised target removes.
    exact = pd.DenoiserModel(LatticeDenoiser(lambda x, t: PROBS.log().expand(*x.shape, -1), process, Q), process)
    with torch.no_grad():
        var_plain, var_rb = plain.evaluate(exact, x0, t, eps).var(), rb.evaluate(exact, x0, t, eps).var()
    assert float(var_rb) < 0.5 * float(var_plain)


def test_loss_drops_by_the_within_bin_variance_only(float64):
    # With w = 1 and a fixed model the two losses differ by E||x0 - x0_bar||^2 (cross term of mean zero).
    process = pd.VPSDE(t_min=1e-3)
    model = pd.DenoiserModel(Constant(0.3), process)
    x0 = dequantised(40000, seed=3)
    g = torch.Generator().manual_seed(4)
    t = Natural().sample_time(process, x0.shape[0], generator=g)
    eps = torch.randn(x0.shape, generator=g)
    plain = DenoisingScoreMatching(process, Natural()).evaluate(model, x0, t, eps)
    rb = DenoisingScoreMatching(process, Natural(), quantization=Q).evaluate(model, x0, t, eps)
    zero = pd.DenoiserModel(Constant(-5.0), process)
    gap_a = plain - rb
    gap_b = (DenoisingScoreMatching(process, Natural()).evaluate(zero, x0, t, eps)
             - DenoisingScoreMatching(process, Natural(), quantization=Q).evaluate(zero, x0, t, eps))
    d = gap_a - gap_b  # the model-dependent part of the gap: mean zero
    assert abs(float(d.mean())) < 4 * float(d.std()) / math.sqrt(d.numel())
    assert float(gap_a.mean()) > 0


def test_bad_quantization():
    with pytest.raises(ValueError, match="quantization must be"):
        DenoisingScoreMatching(pd.VPSDE(), quantization=17)
