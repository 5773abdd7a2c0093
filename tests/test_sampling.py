"""Sampling the reverse family (THEORY.md §3) with exact Gaussian-mixture oracles: every noise level must
reproduce the data law at t_min and the forward marginals p_t on the way.

Tolerances. Mean log-density: the per-sample log-density under the ring has standard deviation ~1.0 nat,
so with n = 2000 samples on each side the difference of two means has sd ~0.03; the remaining budget
covers the discretisation bias of Euler–Maruyama on 250 log-SNR steps (measured ~0.05 nat at noise 2).
Mode occupancy: sd of a mode's frequency is sqrt(w (1 - w) / n) ~0.007; tolerance 0.035 is 5 sd.
"""

import pytest
import torch

import probdiff as pd
from shared import mixture16
from probdiff.grids import LogSNR, Uniform
from probdiff.solvers import Ancestral, EulerMaruyama, Heun


def _ring():
    return pd.oracles.GaussianMixture.ring(8, radius=3.0, variance=0.1, dtype=torch.float64)


def _occupancy(mix, x):
    """Fraction of samples whose most likely component (under the data law) is k."""
    comps = torch.distributions.MultivariateNormal(mix.means, mix.covs)
    logp = comps.log_prob(x[:, None, :]) + mix.weights.log()
    return torch.bincount(logp.argmax(1), minlength=mix.num_components).to(x.dtype) / x.shape[0]


def _check_family(mix, noise, *, n, steps, lp_tol, occ_tol=0.035):
    process = pd.VPSDE()
    rev = pd.reverse(process, mix.model(process), noise)
    solver, steps = (Heun(), 40) if noise == 0 else (EulerMaruyama(), steps)
    sol = pd.sample(rev, (n, mix.dim), solver=solver, grid=LogSNR(steps), dtype=torch.float64,
                    generator=torch.Generator().manual_seed(2), trajectory=True)
    truth = mix.sample(n, generator=torch.Generator().manual_seed(1))
    # the data law at t_min
    assert abs(float(mix.log_prob(sol.x).mean() - mix.log_prob(truth).mean())) < lp_tol
    assert float((_occupancy(mix, sol.x) - mix.weights).abs().max()) < occ_tol
    # an intermediate marginal p_t, against forward samples alpha_t x0 + sigma_t eps at the same t
    for i in (steps // 4, steps // 2):
        t = sol.ts[i]
        forward = process.alpha(t) * truth + process.sigma(t) * torch.randn(
            truth.shape, generator=torch.Generator().manual_seed(3 + i), dtype=truth.dtype)
        gap = mix.marginal_log_prob(process, sol.xs[i], t).mean() - mix.marginal_log_prob(process, forward, t).mean()
        assert abs(float(gap)) < lp_tol, (i, float(t), float(gap))


@pytest.mark.parametrize("noise", [0.0, 0.5, 1.0, 2.0])
def test_reverse_family_reproduces_the_ring_mixture(noise):
    _check_family(_ring(), noise, n=2000, steps=250, lp_tol=0.15)


@pytest.mark.slow
@pytest.mark.parametrize("noise", [0.0, 0.5, 1.0, 2.0])
def test_reverse_family_reproduces_a_16d_mixture(noise):
    # sd of the per-sample log-density ~3 nats: sd of a difference of means ~0.1 at n = 2000
    _check_family(mixture16(), noise, n=2000, steps=1000, lp_tol=0.35)


def test_ancestral_sampling_reproduces_the_ring_mixture():
    mix = _ring()
    process = pd.CosineVP()
    sol = pd.sample(pd.reverse(process, mix.model(process), 1.0), (2000, 2), solver=Ancestral(), grid=LogSNR(100),
                    dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    truth = mix.sample(2000, generator=torch.Generator().manual_seed(5))
    assert abs(float(mix.log_prob(sol.x).mean() - mix.log_prob(truth).mean())) < 0.12
    assert float((_occupancy(mix, sol.x) - mix.weights).abs().max()) < 0.035


def test_solution_carries_both_trajectories():
    mix = _ring()
    process = pd.VESDE()
    sol = pd.sample(pd.probability_flow(process, mix.model(process)), (5, 2), solver=Heun(), grid=Uniform(6),
                    generator=torch.Generator().manual_seed(6), trajectory=True)
    assert sol.ts.shape == (7,) and float(sol.ts[0]) == process.t_max and float(sol.ts[-1]) == process.t_min
    assert sol.xs.shape == (7, 5, 2) and sol.denoised.shape == (6, 5, 2)
    torch.testing.assert_close(sol.xs[-1], sol.x)
    torch.testing.assert_close(sol.denoised[0], mix.model(process).denoise(sol.xs[0], process.t_max))
    assert sol.nfe == 12
    assert pd.sample(pd.probability_flow(process, mix.model(process)), (5, 2), solver=Heun(),
                     grid=Uniform(6)).xs is None
