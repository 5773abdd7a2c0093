"""Geometry of sampling (THEORY.md §7): chord deviation, denoising trajectories, the mean-shift view."""

import pytest
import torch

import probdiff as pd
from probdiff import geometry
from probdiff.grids import Karras, Uniform
from probdiff.solvers import DPMSolver2M, EulerMaruyama, Heun


def test_deviation_of_known_points():
    # chord from (0,0) to (4,0); points at heights 0, 1, -2, 0 -> distances 0, 1, 2, 0
    xs = torch.tensor([[0.0, 0.0], [1.0, 1.0], [7.0, -2.0], [4.0, 0.0]])[:, None, :]
    torch.testing.assert_close(geometry.trajectory_deviation(xs), torch.tensor([[0.0], [1.0], [2.0], [0.0]]))
    # a straight trajectory in 5-D with event shape (1, 5): zero deviation everywhere
    a, b = torch.randn(3, 1, 5), torch.randn(3, 1, 5)
    line = torch.stack([a + u * (b - a) for u in torch.linspace(0, 1, 6)])
    assert float(geometry.trajectory_deviation(line).max()) < 1e-5
    # coinciding endpoints: distance to the start
    loop = torch.tensor([[0.0, 0.0], [3.0, 4.0], [0.0, 0.0]])[:, None, :]
    torch.testing.assert_close(geometry.trajectory_deviation(loop)[:, 0], torch.tensor([0.0, 5.0, 0.0]))
    with pytest.raises(ValueError, match="xs"):
        geometry.trajectory_deviation(torch.zeros(3, 2))


def _training_set():
    g = torch.Generator().manual_seed(0)
    return 3.0 * torch.randn(12, 8, generator=g, dtype=torch.float64)


def test_probability_flow_with_the_empirical_oracle_memorises_and_is_quasi_linear():
    data = _training_set()
    process = pd.VESDE(sigma_min=0.002, sigma_max=40.0)
    rev = pd.probability_flow(process, pd.oracles.Empirical(data).model(process))
    sol = pd.sample(rev, (64, 8), solver=Heun(), grid=Karras(40), dtype=torch.float64,
                    generator=torch.Generator().manual_seed(1), trajectory=True)
    dist = torch.cdist(sol.x, data)
    nearest, which = dist.min(1)
    spacing = torch.cdist(data, data).add(torch.eye(len(data), dtype=data.dtype) * 1e9).min().item()
    # p_{t_min} is the training set blurred by sigma_min: every sample sits within a few sigma_min sqrt(d)
    # of a training point, and the points are ~spacing = 5.7 apart
    assert float(nearest.max()) < 4 * process.sigma_min * 8**0.5 < 1e-2 * spacing
    # Chen et al.: the sampling trajectory is nearly straight: its largest deviation is a small fraction of
    # the chord (mean ~5% here, in 8-D), far below that of the stochastic sampler from the same start
    def relative_deviation(xs):
        return geometry.trajectory_deviation(xs).max(0).values / (xs[-1] - xs[0]).norm(dim=-1)

    ode = relative_deviation(sol.xs)
    sde = pd.sample(pd.reverse(process, rev.model, 1.0), x_init=sol.xs[0], solver=EulerMaruyama(), grid=Karras(40),
                    generator=torch.Generator().manual_seed(1), trajectory=True)
    assert float(ode.mean()) < 0.1 and float(ode.max()) < 0.2
    assert float(ode.mean()) < 0.25 * float(relative_deviation(sde.xs).mean())
    # and the denoising trajectory ends exactly on that training point (the softmax weights are one-hot)
    den = geometry.denoising_trajectory(sol)
    assert den.shape == (40, 64, 8)
    torch.testing.assert_close(den[-1], data[which], rtol=0, atol=1e-9)


def test_ve_euler_step_is_a_mean_shift_convex_combination():
    data = _training_set()
    for process in (pd.VPSDE(), pd.VESDE(), pd.LinearBlend()):
        model = pd.oracles.Empirical(data).model(process)
        x = 2.0 * torch.randn(5, 8, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
        t, s = 0.7, 0.4
        y, sig = geometry.to_ve(process, x[None], torch.tensor([t], dtype=torch.float64))
        _, sig_s = geometry.to_ve(process, x[None], torch.tensor([s], dtype=torch.float64))
        r = float(sig_s / sig)
        # independent mean shift: softmax of -|y - y_i|^2 / (2 sigma~^2) over the training points
        w = torch.softmax(-torch.cdist(y[0], data) ** 2 / (2 * float(sig) ** 2), dim=1)
        shifted = w @ data
        torch.testing.assert_close(geometry.mean_shift(data, y[0], sig), shifted)
        expected = float(process.alpha(torch.tensor(s, dtype=torch.float64))) * (r * y[0] + (1 - r) * shifted)
        torch.testing.assert_close(geometry.ve_euler_step(process, model, x, t, s), expected)
        assert 0 < r < 1


def test_ddim_step_is_the_ve_euler_step():
    # DDIM (Ancestral with eta = 0) takes exactly the VE-form Euler step
    data = _training_set()
    process = pd.CosineVP()
    model = pd.oracles.Empirical(data).model(process)
    x = torch.randn(5, 8, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    t, s = torch.tensor(0.8, dtype=torch.float64), torch.tensor(0.3, dtype=torch.float64)
    ddim = pd.solvers.Ancestral(eta=0.0).step(pd.probability_flow(process, model), x, t, s, None, None).x
    torch.testing.assert_close(ddim, geometry.ve_euler_step(process, model, x, t, s))


def test_denoising_trajectory_needs_a_recorded_trajectory():
    data = _training_set()
    process = pd.VPSDE()
    rev = pd.reverse(process, pd.oracles.Empirical(data).model(process), 1.0)
    sol = pd.sample(rev, (3, 8), solver=EulerMaruyama(), grid=Uniform(4), generator=torch.Generator().manual_seed(4))
    with pytest.raises(ValueError, match="trajectory=True"):
        geometry.denoising_trajectory(sol)
    sol = pd.sample(pd.probability_flow(process, rev.model), (3, 8), solver=DPMSolver2M(), grid=Uniform(4),
                    generator=torch.Generator().manual_seed(4), trajectory=True)
    assert geometry.denoising_trajectory(sol).shape == (4, 3, 8)
