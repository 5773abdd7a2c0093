"""MultistepOptimal: times and ExponentialMultistep coefficients fitted together on pilot noise.

Checked on the 8-mode ring with its exact oracle: the fit lowers the error on noise it never saw below
DPM-Solver++(2M) on every fixed grid; the held-out check keeps the start when the fit does not generalise;
the differentiable time parameterisation has the derivative of finite differences; arguments are checked.
"""

import pytest
import torch

import probdiff as pd
from probdiff.grids import Karras, LogSNR, MultistepOptimal, Uniform
from probdiff.solvers import ExponentialMultistep, TorchDiffEq
from probdiff.tuning_multistep import _times_of, _weights_of


def _setup():
    process = pd.VPSDE(t_min=1e-3)
    flow = pd.probability_flow(process, pd.oracles.GaussianMixture.ring(dtype=torch.float64).model(process))
    return process, flow


def _noise(process, n, seed):
    return process.sample_prior(n, (2,), generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _endpoint(flow, x):
    return pd.sample(flow, x_init=x, solver=TorchDiffEq(rtol=1e-7, atol=1e-7), grid=LogSNR(8)).x


def _rms(a, b):
    return float((a - b).pow(2).sum(1).mean().sqrt())


def test_fit_beats_dpm_solver_2m_on_every_fixed_grid_on_unseen_noise():
    process, flow = _setup()
    pilot, fresh = _noise(process, 200, 7), _noise(process, 200, 1)
    fitted = MultistepOptimal.fit(flow, 4, pilot, reference=_endpoint(flow, pilot), max_iter=15)
    assert fitted.steps == 4 and fitted.solver.steps == 4
    ts = fitted.times(process)
    assert float(ts[0]) == process.t_max and float(ts[-1]) == process.t_min and bool((ts[1:] < ts[:-1]).all())
    assert fitted.errors["fitted"][1] < fitted.errors["start"][1]          # held out by the fit
    exact = _endpoint(flow, fresh)
    ours = _rms(pd.sample(flow, x_init=fresh, solver=fitted.solver, grid=fitted).x, exact)
    for grid in (Uniform(4), LogSNR(4), Karras(4)):
        solver = ExponentialMultistep.dpm_solver_2m(process, grid.times(process), history=2)
        theirs = _rms(pd.sample(flow, x_init=fresh, solver=solver, grid=grid).x, exact)
        assert ours < 0.5 * theirs, (grid, ours, theirs)
    assert fitted.nfe > 0


def test_start_is_kept_when_the_fit_does_not_generalise():
    """Held-out references equal to the start's own output: the start has zero held-out error, no fit can
    beat it, and the start (DPM-Solver++(2M) on LogSNR) comes back."""
    process, flow = _setup()
    pilot = _noise(process, 200, 7)[:100]
    start = ExponentialMultistep.dpm_solver_2m(process, LogSNR(3).times(process), history=2)
    reference = _endpoint(flow, pilot)
    reference[75:] = pd.sample(flow, x_init=pilot[75:], solver=start, grid=LogSNR(3)).x
    fitted = MultistepOptimal.fit(flow, 3, pilot, init=LogSNR(3), reference=reference, max_iter=10)
    assert fitted.errors["start"][1] == 0.0
    torch.testing.assert_close(fitted.times(process), LogSNR(3).times(process), rtol=0, atol=0)
    torch.testing.assert_close(fitted.solver.coefficients, start.coefficients, rtol=0, atol=0)


def test_one_step_returns_the_start():
    process, flow = _setup()
    pilot = _noise(process, 40, 7)
    fitted = MultistepOptimal.fit(flow, 1, pilot, reference=_endpoint(flow, pilot), max_iter=5)
    assert fitted.errors["fitted"] == fitted.errors["start"]
    assert fitted.times(process).tolist() == [process.t_max, process.t_min]


@pytest.mark.parametrize("process", [pd.VPSDE(t_min=1e-3), pd.CosineVP(), pd.VESDE()], ids=repr)
def test_time_parameterisation_round_trips_and_has_the_finite_difference_derivative(process):
    times = Karras(5).times(process)
    w = _weights_of(process, times)
    torch.testing.assert_close(_times_of(process, w), times, rtol=1e-9, atol=1e-12)
    w = w.clone().requires_grad_(True)
    weights = torch.linspace(1.0, 2.0, 6, dtype=torch.float64)
    (grad,) = torch.autograd.grad((weights * _times_of(process, w)).sum(), w)
    eps = 1e-6
    for k in range(w.shape[0]):
        e = torch.zeros_like(w)
        e[k] = eps
        fd = ((weights * _times_of(process, w.detach() + e)).sum()
              - (weights * _times_of(process, w.detach() - e)).sum()) / (2 * eps)
        assert abs(float(grad[k]) - float(fd)) <= 1e-6 * max(1.0, abs(float(fd))), (k, grad, fd)


def test_bad_arguments_are_refused():
    process, flow = _setup()
    pilot = _noise(process, 20, 7)
    with pytest.raises(ValueError, match="probability flow"):
        MultistepOptimal.fit(pd.reverse(process, flow.model, 1.0), 3, pilot)
    with pytest.raises(ValueError, match="history"):
        MultistepOptimal.fit(flow, 3, pilot, history=0)
    with pytest.raises(ValueError, match="x_init"):
        MultistepOptimal.fit(flow, 3, pilot[:1])
    with pytest.raises(ValueError, match="validation"):
        MultistepOptimal.fit(flow, 3, pilot, validation=1.0)
    with pytest.raises(ValueError, match="init must be a Grid with steps=3"):
        MultistepOptimal.fit(flow, 3, pilot, init=Uniform(4))
    with pytest.raises(ValueError, match="solver must be an ExponentialMultistep with 3 steps"):
        MultistepOptimal(Uniform(3).times(process), solver=ExponentialMultistep(torch.zeros(4, 1)))
