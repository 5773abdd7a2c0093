"""probdiff.integrations.flow_matching: the exact velocity of Gaussian data on the conditional-OT path (closed
form written here) gives the Gaussian's log-density; with the flow_matching package installed, its
ODESolver.compute_likelihood and probdiff agree on the same velocity network."""

from __future__ import annotations

import math

import pytest
import torch

import probdiff as pd
from probdiff.integrations import flow_matching as pfm

F64 = torch.float64
MU, S = 0.7, 0.4


def gaussian_velocity(x, t):
    """Exact u(x, t) for data N(MU, S^2 I) on X_t = t X_1 + (1 - t) X_0 (flow_matching's time): the
    marginal is N(t MU, v_t I), v_t = t^2 S^2 + (1 - t)^2, and u = MU + (t S^2 - (1 - t)) / v_t (x - t MU)."""
    t = torch.as_tensor(t, dtype=x.dtype).reshape(-1, *([1] * (x.dim() - 1)))
    v = t**2 * S**2 + (1 - t) ** 2
    return MU + (t * S**2 - (1 - t)) / v * (x - t * MU)


def test_exact_velocity_gives_the_data_log_density():
    process, model = pfm.wrap(gaussian_velocity, pd.LinearBlend(t_min=1e-7, t_max=1.0))
    assert isinstance(model, pd.VelocityModel)
    x = MU + S * torch.randn(5, 3, generator=torch.Generator().manual_seed(0), dtype=F64)
    got = pd.log_likelihood(model, x, rtol=1e-8, atol=1e-8)
    expected = (-0.5 * ((x - MU) / S) ** 2 - math.log(S) - 0.5 * math.log(2 * math.pi)).sum(1)
    assert torch.allclose(got, expected, atol=1e-4)
    # the denoiser is E[X_1 | X_t]: at s = 1/2 (t = 1/2) by Gaussian conditioning
    xt = torch.randn(4, 3, dtype=F64)
    v = 0.25 * S**2 + 0.25
    assert torch.allclose(model.denoise(xt, 0.5), MU + 0.5 * S**2 / v * (xt - 0.5 * MU), atol=1e-12)


def test_against_flow_matching_compute_likelihood():
    fm_solver = pytest.importorskip("flow_matching.solver")
    from flow_matching.utils import ModelWrapper

    class Net(ModelWrapper):
        def forward(self, x, t, **extras):
            return self.model(x, t)

    def mlp(x, t):                                    # an arbitrary smooth velocity field
        t = torch.as_tensor(t, dtype=x.dtype).reshape(-1, 1)
        return torch.tanh(x @ torch.tensor([[0.5, -0.3], [0.2, 0.8]], dtype=x.dtype)) * (1 + t) + 0.1 * t * x

    net = Net(mlp)
    x1 = torch.randn(4, 2, generator=torch.Generator().manual_seed(1), dtype=F64)
    log_p0 = lambda z: (-0.5 * z**2 - 0.5 * math.log(2 * math.pi)).sum(1)
    _, expected = fm_solver.ODESolver(net).compute_likelihood(
        x1, log_p0, step_size=None, method="dopri5", atol=1e-9, rtol=1e-9, exact_divergence=True,
        time_grid=torch.tensor([1.0, 0.0], dtype=F64))
    _, model = pfm.wrap(net, pd.LinearBlend(t_min=1e-9, t_max=1.0))
    got = pd.log_likelihood(model, x1, rtol=1e-9, atol=1e-9)
    assert torch.allclose(got, expected, atol=1e-5)


def test_wrap_rejects_non_gaussian_processes():
    with pytest.raises(ValueError, match="GaussianProcess"):
        pfm.wrap(gaussian_velocity, pd.UniformChain(3))


def test_the_table_of_paths_matches_flow_matching_schedulers():
    sched = pytest.importorskip("flow_matching.path.scheduler")
    t = torch.tensor([0.05, 0.3, 0.5, 0.9], dtype=F64)
    for path, process in [(sched.CondOTScheduler(), pd.LinearBlend()), (sched.CosineScheduler(), pd.CosineVP(offset=0.0)),
                          (sched.VPScheduler(0.1, 20.0), pd.VPSDE(0.1, 20.0))]:
        out = path(t)
        assert torch.allclose(out.alpha_t, process.alpha(1 - t), atol=1e-12)
        assert torch.allclose(out.sigma_t, process.sigma(1 - t), atol=1e-12)
