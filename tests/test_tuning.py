"""EndpointOptimal and Explicit grids.

The fitted grid is judged against the closed-form probability-flow solution for Gaussian data (see
tests/test_solvers.py): for data N(mu, c^2 I) the flow transports quantiles, x_t = alpha_t mu +
sqrt(alpha_t^2 c^2 + sigma_t^2) z with z fixed along the path — so its error is measured on initial noise the
fit never saw, against a reference that does not come from any probdiff solver.
"""

import math

import pytest
import torch

import probdiff as pd
from probdiff.grids import EndpointOptimal, Explicit, Karras, LogSNR, Uniform
from probdiff.solvers import Ancestral, Euler, UniPC

MU = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
C = 0.3


def _setup():
    process = pd.VPSDE(t_min=1e-3)
    oracle = pd.oracles.GaussianMixture(torch.ones(1, dtype=torch.float64), MU[None],
                                        (C**2 * torch.eye(3, dtype=torch.float64))[None])
    return process, pd.probability_flow(process, oracle.model(process))


def _exact(process, t, z):
    t = torch.as_tensor(t, dtype=torch.float64)
    a, s = process.alpha(t), process.sigma(t)
    return a * MU + torch.sqrt(a**2 * C**2 + s**2) * z


def _error(reverse, solver, grid, z):
    process = reverse.process
    x = pd.sample(reverse, x_init=_exact(process, process.t_max, z), solver=solver, grid=grid).x
    return float((x - _exact(process, process.t_min, z)).pow(2).sum(1).mean().sqrt())


def _z(n, seed):
    return torch.randn(n, 3, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.mark.parametrize("solver", [Euler(), UniPC()], ids=["Euler", "UniPC"])
def test_fitted_grid_beats_every_fixed_grid_on_unseen_noise(solver):
    process, reverse = _setup()
    z = _z(256, 0)
    grid = EndpointOptimal.fit(reverse, solver, 4, _exact(process, process.t_max, z),
                               reference=_exact(process, process.t_min, z), max_evals=300)
    fresh = _z(512, 1)
    fixed = min(_error(reverse, solver, g, fresh) for g in (Uniform(4), LogSNR(4), Karras(4)))
    assert _error(reverse, solver, grid, fresh) < 0.7 * fixed


def test_fitted_grid_is_a_grid_and_reports_its_errors():
    process, reverse = _setup()
    z = _z(200, 2)
    grid = EndpointOptimal.fit(reverse, Euler(), 5, _exact(process, process.t_max, z),
                               reference=_exact(process, process.t_min, z), max_evals=200)
    ts = grid.times(process)
    assert ts.shape == (6,) and grid.steps == 5
    assert float(ts[0]) == process.t_max and float(ts[-1]) == process.t_min
    assert bool((ts[1:] < ts[:-1]).all())
    # the reported errors are the RMS endpoint errors on the two parts (150 fit, 50 held out)
    for key, g in (("fitted", grid), ("start", grid.start)):
        fit_err, val_err = grid.errors[key]
        assert fit_err == pytest.approx(_error(reverse, Euler(), g, z[:150]), rel=1e-9)
        assert val_err == pytest.approx(_error(reverse, Euler(), g, z[150:]), rel=1e-9)
    assert grid.errors["fitted"][1] < grid.errors["start"][1]
    assert grid.nfe > 5 * 50              # the search ran the solver many times


def test_default_reference_is_the_converged_flow():
    process, reverse = _setup()
    z = _z(64, 6)
    grid = EndpointOptimal.fit(reverse, Euler(), 3, _exact(process, process.t_max, z), init=Uniform(3),
                               validation=0.0, max_evals=1)
    assert grid.errors["start"][0] == pytest.approx(_error(reverse, Euler(), Uniform(3), z), abs=1e-6)
    assert math.isnan(grid.errors["start"][1])


def test_a_fit_that_generalises_worse_returns_the_starting_grid(monkeypatch):
    import scipy.optimize

    class _Bad:        # an optimiser result that puts almost all the log-SNR change in the first step
        x = [8.0, 0.0, 0.0]
        fun = 0.0

    monkeypatch.setattr(scipy.optimize, "minimize", lambda *args, **kwargs: _Bad())
    process, reverse = _setup()
    z = _z(64, 3)
    grid = EndpointOptimal.fit(reverse, Euler(), 4, _exact(process, process.t_max, z), init=LogSNR(4))
    assert torch.equal(grid.times(process), LogSNR(4).times(process))
    assert grid.errors["fitted"] == grid.errors["start"]


def test_one_step_has_nothing_to_fit():
    process, reverse = _setup()
    grid = EndpointOptimal.fit(reverse, Euler(), 1, _exact(process, process.t_max, _z(8, 4)))
    assert grid.times(process).tolist() == [process.t_max, process.t_min]


def test_bad_arguments_are_named():
    process, reverse = _setup()
    x = _exact(process, process.t_max, _z(16, 5))
    noisy = pd.reverse(process, reverse.model, 1.0)
    cases = [
        (dict(reverse=noisy), "reverse"),
        (dict(solver="euler"), "solver"),
        (dict(steps=0), "steps"),
        (dict(x_init=x[:1]), "x_init"),
        (dict(x_init=x.masked_fill(x > 1, math.nan)), "x_init"),
        (dict(validation=1.0), "validation"),
        (dict(max_evals=0), "max_evals"),
        (dict(init=Uniform(3)), "init"),
        (dict(reference=x[:4]), "reference"),
        (dict(solver=Ancestral(eta=1.0)), "random"),
    ]
    for change, word in cases:
        kwargs = dict(reverse=reverse, solver=Euler(), steps=4, x_init=x, max_evals=2)
        kwargs.update(change)
        with pytest.raises(ValueError, match=word):
            EndpointOptimal.fit(kwargs.pop("reverse"), kwargs.pop("solver"), kwargs.pop("steps"),
                                kwargs.pop("x_init"), **kwargs)


def test_explicit_grid_checks_its_times_and_the_process_range():
    process = pd.VPSDE(t_min=1e-3)
    assert Explicit([1.0, 0.3, 1e-3]).times(process).tolist() == [1.0, 0.3, 1e-3]
    for bad in ([1.0, 0.5, 0.5, 1e-3], [1.0], [[1.0, 1e-3]], [1.0, math.nan, 1e-3], [1e-3, 1.0]):
        with pytest.raises(ValueError, match="times"):
            Explicit(bad)
    with pytest.raises(ValueError, match=r"t_min, t_max"):
        Explicit([1.0, 0.5, 1e-2]).times(process)
