"""pd.likelihood.ddpm_vlb against an independent transcription of Ho et al.'s bound (THEORY.md §9).

The reference below recomputes every term with numpy and scipy from the beta table (not from probdiff):
the prior KL, the Gaussian KL of each step with the posterior coefficients of Ho et al. Eq. (7), and the
discretised Gaussian decoder of Eq. (13) with open outer bins (scipy's log_ndtr, from the smaller tail), all averaged over dimensions and divided by
ln 2. It is fed the very x_k the library drew (recorded by the network) and the network's outputs.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.special import log_ndtr
from scipy.stats import norm

import probdiff as pd

F64 = torch.float64


def _reference_bpd(betas, x0, xs, x0_hats, variance, levels=256):
    """Independent: bits/dim of one image from the recorded x_k and x0_hat(x_k, k), k = 0..N-1."""
    betas = np.asarray(betas, dtype=np.float64)
    abar = np.cumprod(1 - betas)
    abar_prev = np.append(1.0, abar[:-1])
    post_var = betas * (1 - abar_prev) / (1 - abar)
    c1 = betas * np.sqrt(abar_prev) / (1 - abar)
    c2 = (1 - abar_prev) * np.sqrt(1 - betas) / (1 - abar)
    model_var = post_var.copy() if variance == "small" else betas.copy()
    model_var[0] = post_var[1]
    d = x0.size
    # prior KL(N(sqrt(abar_N) x0, 1 - abar_N) || N(0, 1))
    m, v = np.sqrt(abar[-1]) * x0, 1 - abar[-1]
    total = np.sum(0.5 * (m**2 + v - 1 - np.log(v))) / (d * math.log(2))
    for k in range(len(betas) - 1, 0, -1):
        mq = c1[k] * x0 + c2[k] * xs[k]
        mp = c1[k] * x0_hats[k] + c2[k] * xs[k]
        kl = 0.5 * (np.log(model_var[k] / post_var[k]) + (post_var[k] + (mq - mp) ** 2) / model_var[k] - 1)
        total += kl.sum() / (d * math.log(2))
    half = 1.0 / (levels - 1)
    s = math.sqrt(model_var[0])
    upper = np.where(x0 > 1 - 1e-9, np.inf, x0 + half)
    lower = np.where(x0 < -1 + 1e-9, -np.inf, x0 - half)
    a, b = (lower - x0_hats[0]) / s, (upper - x0_hats[0]) / s
    a, b = np.where(a > 0, -b, a), np.where(a > 0, -a, b)      # Phi(b) - Phi(a) from the smaller tail
    log_p = log_ndtr(b) + np.log1p(-np.exp(log_ndtr(a) - log_ndtr(b)))
    total += -log_p.sum() / (d * math.log(2))
    return total


class Recorder:
    """A denoiser network x0_hat = 0.6 tanh(x) + 0.1 that records its inputs by step."""

    def __init__(self, process):
        self.process, self.seen = process, {}

    def __call__(self, x, t):
        k = int(round(float(self.process.step_of_time(t[0]))))
        out = 0.6 * torch.tanh(x) + 0.1
        self.seen[k] = (x.clone(), out.clone())
        return out


@pytest.mark.parametrize("variance", ["small", "large"])
def test_against_independent_transcription(variance):
    betas = np.linspace(1e-3, 0.2, 40)
    p = pd.DiscreteVP(betas=betas)
    net = Recorder(p)
    model = pd.DenoiserModel(net, p)
    gen = torch.Generator().manual_seed(3)
    n = torch.randint(0, 256, (3, 2, 4, 4), generator=gen)
    n[0, 0, 0, :2] = torch.tensor([0, 255])                  # the open outer bins
    x = 2 * n.to(F64) / 255 - 1
    bpd, terms = pd.likelihood.ddpm_vlb(p, model, x, variance=variance, generator=gen, return_terms=True)
    assert bpd.shape == (3,) and terms.steps.shape == (3, 40) and terms.nfe == 40
    for i in range(3):
        xs = [net.seen[k][0][i].numpy() for k in range(40)]
        hats = [net.seen[k][1][i].numpy() for k in range(40)]
        expected = _reference_bpd(betas, x[i].numpy(), xs, hats, variance)
        assert float(bpd[i]) == pytest.approx(expected, rel=1e-9)


def test_every_step_kl_is_zero_for_the_true_x0():
    p = pd.DiscreteVP.linear(100, beta_end=0.2)
    gen = torch.Generator().manual_seed(0)
    x = 2 * torch.randint(0, 256, (4, 3, 2, 2), generator=gen).to(F64) / 255 - 1
    model = pd.DenoiserModel(lambda xt, t: x, p)
    _, terms = pd.likelihood.ddpm_vlb(p, model, x, generator=gen, return_terms=True)
    assert torch.all(terms.steps[:, 1:].abs() < 1e-12)
    # with large variance the KLs are positive: they measure the variance mismatch alone
    _, terms = pd.likelihood.ddpm_vlb(p, model, x, variance="large", generator=gen, return_terms=True)
    assert torch.all(terms.steps[:, 1:] > 0)


def _scaled_vp(n):
    """score_sde's VP (beta from 0.1 to 20) as a table of n steps: beta_k = beta(t_k)/n."""
    return pd.DiscreteVP(betas=np.linspace(0.1 / n, 20.0 / n, n))


def test_tends_to_the_exact_log_likelihood_of_a_mixture():
    """Near-discrete data (a mixture of tiny Gaussians at lattice points): the bound decreases with N towards
    -log2 P(bin) / D, with P computed from the mixture's CDFs (scipy)."""
    levels = 8
    c = -1 + 2 * np.arange(levels) / (levels - 1)
    means = np.array([[c[1], c[2]], [c[5], c[6]], [c[3], c[3]]])
    w = np.array([0.5, 0.3, 0.2])
    std = 1e-5
    mix = pd.oracles.GaussianMixture(torch.tensor(w), torch.tensor(means), std**2 * torch.eye(2, dtype=F64).expand(3, 2, 2))
    x0 = means[0]
    half = 1.0 / (levels - 1)
    mass = np.prod(norm.cdf((x0 + half - means) / std) - norm.cdf((x0 - half - means) / std), axis=1)
    exact = -np.log2(np.sum(w * mass)) / 2
    x = torch.tensor(x0).expand(400, 2).clone()
    means_se = []
    for n in (30, 100, 1000):
        p = _scaled_vp(n)
        bpd = pd.likelihood.ddpm_vlb(p, mix.model(p), x, levels=levels, generator=torch.Generator().manual_seed(n))
        means_se.append((float(bpd.mean()), float(bpd.std()) / math.sqrt(len(bpd))))
    (m30, _), (m100, se100), (m1000, se1000) = means_se
    assert m30 > m100 + 3 * se100 and m100 > m1000
    assert m1000 > exact - 3 * se1000                    # a bound
    assert m1000 - exact < 0.03 + 3 * se1000             # and a tight one at N = 1000


def test_validation():
    p = pd.DiscreteVP.linear(10, beta_end=0.2)
    model = pd.DenoiserModel(lambda xt, t: xt, p)
    x = torch.zeros(2, 3, dtype=F64) + 1 / 255
    with pytest.raises(ValueError, match="bin centres"):
        pd.likelihood.ddpm_vlb(p, model, torch.full((2, 3), 0.5, dtype=F64))
    with pytest.raises(ValueError, match="variance"):
        pd.likelihood.ddpm_vlb(p, model, x, variance="learned")
    vp = pd.VPSDE()
    with pytest.raises(ValueError, match="DiscreteVP"):
        pd.likelihood.ddpm_vlb(vp, pd.DenoiserModel(lambda xt, t: xt, vp), x)


def test_learned_variance_callable_and_short_form():
    """A callable log-variance returning improved-diffusion's fixed choices reproduces "small" and "large"."""
    betas = np.linspace(1e-3, 0.2, 30)
    p = pd.DiscreteVP(betas=betas)
    abar = np.cumprod(1 - betas)
    post = betas * (1 - np.append(1.0, abar[:-1])) / (1 - abar)
    small = np.log(np.append(post[1], post[1:]))
    large = np.log(np.append(post[1], betas[1:]))
    model = pd.DenoiserModel(lambda xt, t: 0.5 * xt, p)
    x = 2 * torch.randint(0, 256, (3, 4), generator=torch.Generator().manual_seed(0)).to(F64) / 255 - 1
    for name, table in (("small", small), ("large", large)):
        fixed = pd.likelihood.ddpm_vlb(p, model, x, variance=name, generator=torch.Generator().manual_seed(1))
        learned = pd.likelihood.ddpm_vlb(model, x, variance=lambda xk, k: torch.tensor(table[k]),
                                         generator=torch.Generator().manual_seed(1))
        assert torch.allclose(fixed, learned, rtol=1e-12)
