"""Stochastic sampling of deterministic (velocity / denoiser) models: the reverse family at any noise level
contains Flow-GRPO's SDE for the linear blend; the coefficient-preserving step (CPS) is the ancestral step
with a fixed fresh-noise fraction. Expected values come from the papers' formulas, written out here, and
from the mixture's exact moments."""

import math

import pytest
import torch

import probdiff as pd

MIXTURE_1D = pd.oracles.GaussianMixture(torch.tensor([0.3, 0.7]), torch.tensor([[-1.5], [1.0]]),
                                        torch.tensor([[[0.2]], [[0.5]]]))
MEAN = 0.3 * -1.5 + 0.7 * 1.0
VAR = 0.3 * (0.2 + 1.5**2) + 0.7 * (0.5 + 1.0**2) - MEAN**2


def _velocity_model(process):
    """A 'trained' velocity network: the oracle's velocity behind pd.VelocityModel (a deterministic model)."""
    oracle = MIXTURE_1D.model(process)
    return pd.VelocityModel(lambda x, t: oracle.velocity(x, t), process)


@pytest.mark.parametrize("a", [0.3, 0.7, 1.2])
def test_flow_grpo_sde_is_the_blend_reverse_family_at_noise_a_over_sqrt2(a):
    # Liu et al., "Flow-GRPO" (2025), §4 (ODE-to-SDE): x_{t+dt} = x + [v + s_t^2/(2t) (x + (1-t) v)] dt
    # + s_t sqrt(-dt) z with s_t = a sqrt(t/(1-t)) and dt < 0.
    process = pd.LinearBlend()
    model = _velocity_model(process)
    rev = pd.reverse(model, a / math.sqrt(2))
    x, t, s = torch.tensor([[0.4], [-2.0], [1.3]]), torch.tensor(0.7), torch.tensor(0.65)
    kernel = pd.solvers.EulerMaruyama().kernel(rev, x, t, s)
    v = model.velocity(x, t)
    sd = a * math.sqrt(0.7 / 0.3)
    mean = x + (v + sd**2 / (2 * 0.7) * (x + 0.3 * v)) * (s - t)
    torch.testing.assert_close(kernel.mean, mean, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(kernel.stddev, torch.full_like(x, sd * math.sqrt(0.05)), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("eta", [0.3, 0.8])
def test_coefficient_preserving_step_is_the_papers_update(eta):
    # Wang & Yu (2025), the CPS update: x_{t-dt} = (1 - s) x0_hat + s cos(eta pi/2) x1_hat + s sin(eta pi/2) z,
    # x1_hat = (x - (1 - t) x0_hat) / t, for the blend x_t = (1 - t) x0 + t x1.
    process = pd.LinearBlend()
    model = _velocity_model(process)
    rev = pd.reverse(model, 0.0)
    x, t, s = torch.tensor([[0.4], [-2.0]]), torch.tensor(0.7), torch.tensor(0.5)
    kernel = pd.solvers.CoefficientPreserving(eta).kernel(rev, x, t, s)
    x0 = model.denoise(x, t)
    x1 = (x - 0.3 * x0) / 0.7
    torch.testing.assert_close(kernel.mean, 0.5 * x0 + 0.5 * math.cos(eta * math.pi / 2) * x1, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(kernel.stddev, torch.full_like(x, 0.5 * math.sin(eta * math.pi / 2)), rtol=1e-5,
                               atol=1e-6)
    with pytest.raises(ValueError):
        pd.solvers.CoefficientPreserving(1.5)


@pytest.mark.parametrize("solver,noise", [(pd.solvers.EulerMaruyama(), 0.5), (pd.solvers.EulerMaruyama(), 1.0),
                                          (pd.solvers.Ancestral(None), 0.7),
                                          (pd.solvers.CoefficientPreserving(0.5), 0.0)],
                         ids=["EM-0.5", "EM-1", "ancestral-0.7", "CPS-0.5"])
def test_a_velocity_model_sampled_at_any_noise_level_reproduces_the_data_moments(solver, noise):
    process = pd.LinearBlend()
    rev = pd.reverse(_velocity_model(process), noise)
    n = 4000
    # A log-SNR grid: on a uniform grid Euler-Maruyama's first steps near the blend's t_max = 0.999, where
    # g^2 = 2t/(1-t) is about 2000, inflate the variance (measured 2.17 instead of 1.72 at noise 0.5).
    sol = pd.sample(rev, (n, 1), solver=solver, grid=pd.grids.LogSNR(100),
                    generator=torch.Generator().manual_seed(0), log_prob=True)
    x = sol.x.flatten().double()
    assert torch.isfinite(sol.log_prob).all()
    # 5 standard errors plus a 0.03 allowance for the 100-step discretisation
    assert abs(float(x.mean()) - MEAN) < 5 * math.sqrt(VAR / n) + 0.03
    assert abs(float(x.var()) - VAR) < 5 * VAR * math.sqrt(2 / n) + 0.05
