"""DiscreteVP (beta tables) and EDM against the tables and closed forms written here (THEORY.md §1, §9).

Expected values: the DDPM linear and improved-DDPM cosine tables recomputed with numpy from their papers'
formulas, the log-SNR of the table, score_sde's continuous VP, and the property checks of pd.testing.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import probdiff as pd

F64 = torch.float64


def _ddpm_linear(n, b0=1e-4, b1=0.02):
    betas = np.linspace(b0, b1, n)
    return np.cumprod(1.0 - betas)


def _cosine(n, s=0.008, max_beta=0.999):
    f = lambda u: math.cos((u + s) / (1 + s) * math.pi / 2) ** 2
    betas = np.array([min(1 - f((i + 1) / n) / f(i / n), max_beta) for i in range(n)])
    return np.cumprod(1.0 - betas)


@pytest.mark.parametrize("make, table", [
    (lambda: pd.DiscreteVP.linear(1000), _ddpm_linear(1000)),
    (lambda: pd.DiscreteVP.cosine(500), _cosine(500)),
    (lambda: pd.DiscreteVP(torch.tensor(_ddpm_linear(200))), _ddpm_linear(200)),
    (lambda: pd.DiscreteVP(betas=np.linspace(1e-4, 0.02, 200)), _ddpm_linear(200)),
])
def test_exact_at_the_training_steps(make, table):
    p = make()
    k = torch.arange(len(table))
    t = p.time_of_step(k)
    assert torch.allclose(t, (k.to(F64) + 1.0) / len(table), rtol=0, atol=1e-15)
    assert torch.allclose(p.step_of_time(t), k.to(F64), atol=1e-9)
    np.testing.assert_allclose(p.alpha(t).numpy() ** 2, table, rtol=1e-12)
    np.testing.assert_allclose(p.sigma(t).numpy() ** 2, 1.0 - table, rtol=1e-9)
    np.testing.assert_allclose(p.alphas_cumprod.numpy(), table, rtol=1e-12)


def test_between_steps_log_snr_is_monotone_and_bracketed():
    p = pd.DiscreteVP.cosine(50)
    t = torch.linspace(p.time_of_step(0), 1.0, 5001, dtype=F64)
    lam = p.log_snr(t)
    assert bool((lam[1:] < lam[:-1]).all())
    table = torch.tensor(np.log(_cosine(50)) - np.log1p(-_cosine(50)))
    k = torch.clamp(torch.floor(p.step_of_time(t)), 0, 48).long()
    assert bool((lam <= table[k] + 1e-12).all() and (lam >= table[k + 1] - 1e-12).all())


def test_below_the_first_step_sigma_squared_is_linear_and_alpha_one_at_zero():
    p = pd.DiscreteVP.linear(1000)
    t = torch.tensor([1e-7, 1e-5, 5e-4, 1e-3], dtype=F64)
    np.testing.assert_allclose(p.sigma(t).numpy() ** 2, t.numpy() * 1000 * 1e-4, rtol=1e-9)


def test_close_to_score_sde_continuous_vp():
    """score_sde's VP (beta 0.1 to 20) is the limit of the table beta_k = beta(t_k)/N."""
    n = 1000
    p = pd.DiscreteVP(betas=np.linspace(0.1 / n, 20.0 / n, n))
    vp = pd.VPSDE()
    t = torch.linspace(0.01, 1.0, 50, dtype=F64)
    assert torch.allclose(p.alpha(t), vp.alpha(t), atol=2e-3)


def test_step_of_time_snaps_float32_times_to_training_steps():
    p = pd.DiscreteVP.linear(1000)
    k = torch.arange(1000)
    assert torch.equal(p.step_of_time(p.time_of_step(k).float()), k.float())
    assert float(p.step_of_time(torch.tensor(0.2505))) == pytest.approx(249.5, abs=1e-4)


def test_native_grid():
    p = pd.DiscreteVP.linear(10, beta_end=0.2)
    g = p.native_grid()
    assert g.shape == (11,) and float(g[0]) == 1.0 and float(g[-1]) == p.t_min
    assert torch.allclose(g[:-1], torch.arange(10, 0, -1, dtype=F64) / 10)
    g = p.native_grid([0, 5, 9])
    assert torch.allclose(g, torch.tensor([1.0, 0.6, 0.1, p.t_min], dtype=F64))
    assert pd.grids.Explicit(p.native_grid()).times(p).shape == (11,)
    with pytest.raises(ValueError, match="steps"):
        p.native_grid([10])
    with pytest.raises(ValueError, match="last training step"):
        p.native_grid([8, 4, 0])


@pytest.mark.parametrize("process", [pd.DiscreteVP.linear(1000), pd.DiscreteVP.cosine(100), pd.EDM()],
                         ids=["linear", "cosine", "edm"])
def test_property_checks(process):
    pd.testing.check_process(process, skip=[pd.testing.REVERSE_MARGINALS])


def test_time_of_log_snr_inverts():
    p = pd.DiscreteVP.cosine(100)
    t = torch.tensor([p.t_min, 1e-3, 0.005, 0.0123, 0.5, 0.77, 1.0], dtype=F64)
    assert torch.allclose(p.time_of_log_snr(p.log_snr(t)), t, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("bad, match", [
    (dict(alphas_cumprod=[0.5]), "at least 2"),
    (dict(alphas_cumprod=[0.5, 0.7]), "decreasing"),
    (dict(alphas_cumprod=[1.0, 0.5]), "inside"),
    (dict(betas=[0.1, 1.2]), "inside"),
    (dict(), "exactly one"),
    (dict(alphas_cumprod=[0.9, 0.5], t_min=0.6), "t_min"),
])
def test_bad_tables(bad, match):
    with pytest.raises(ValueError, match=match):
        pd.DiscreteVP(**bad)


def test_edm_schedule():
    p = pd.EDM(0.002, 80.0)
    t = torch.tensor([0.002, 0.1, 3.0, 80.0], dtype=F64)
    assert (p.t_min, p.t_max) == (0.002, 80.0)
    assert torch.equal(p.alpha(t), torch.ones_like(t)) and torch.equal(p.sigma(t), t)
    assert torch.allclose(p.diffusion(t) ** 2, 2 * t)
    assert torch.allclose(p.log_snr(t), -2 * torch.log(t))
    with pytest.raises(ValueError, match="sigma_max"):
        pd.EDM(1.0, 0.5)
