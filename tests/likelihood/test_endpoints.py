"""Exact endpoints: the linear blend on [0, 1] gives log p_0 itself (issue 15, item 4).

Expected values: the mixture's closed-form log-density (``GaussianMixture.log_prob``), and the limit of the
probability flow at sigma = 0, (alpha'/alpha) x, worked out by hand.
"""

import pytest
import torch

import probdiff as pd
from shared import data, mixture


@pytest.mark.parametrize("dim", [2, 16])
def test_blend_on_unit_interval_gives_log_p0(dim):
    process, mix = pd.LinearBlend(t_min=0.0, t_max=1.0), mixture(dim)
    x = data(mix, 8)
    log_p, stats = pd.log_likelihood(process, mix.model(process), x, rtol=1e-7, atol=1e-7, return_stats=True)
    assert (log_p - mix.log_prob(x)).abs().max() / dim < 1e-4
    assert torch.isfinite(stats.endpoint).all() and (stats.se == 0).all()


def test_blend_flow_finite_at_both_ends():
    process, mix = pd.LinearBlend(t_min=0.0, t_max=1.0), mixture(2)
    model, x = mix.model(process), data(mix, 5)
    flow = pd.probability_flow(process, model)
    assert torch.allclose(flow.drift(x, 0.0), -x)                       # (alpha'/alpha) x with alpha = 1 - t
    drift_1 = flow.drift(x, 1.0)                                        # x - E[x_0]: alpha = 0, sigma = 1
    mean = (mix.weights[:, None] * mix.means).sum(0)
    assert torch.allclose(drift_1, x - mean)
    for solver in (pd.solvers.Euler(), pd.solvers.Heun()):
        sol = pd.sample(flow, (6, 2), solver=solver, grid=pd.grids.Uniform(8),
                        generator=torch.Generator().manual_seed(0))
        assert torch.isfinite(sol.x).all()
