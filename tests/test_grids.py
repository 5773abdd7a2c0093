"""Grids: Karras, LogSNR and the score-optimal schedule (THEORY.md §6)."""


import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import probdiff as pd
from shared import mixture16
from probdiff.grids import Karras, LogSNR, ScoreOptimal, Uniform
from probdiff.solvers import Euler

PROCESSES = [pd.VPSDE(), pd.SubVPSDE(), pd.VESDE(), pd.CosineVP(), pd.LinearBlend(),
             pd.LinearSDE(lambda t: -0.5 * (0.1 + 19.9 * t), lambda t: torch.sqrt(0.1 + 19.9 * t), t_min=1e-3,
                          table_size=257)]


def _sigma_tilde(process, ts):
    return (process.sigma(ts) / process.alpha(ts)).numpy()


@pytest.mark.parametrize("process", PROCESSES, ids=lambda p: type(p).__name__)
@pytest.mark.parametrize("steps", [1, 2, 10, 37])
def test_grids_are_strictly_decreasing_with_exact_endpoints(process, steps):
    for grid in (Uniform(steps), Karras(steps), Karras(steps, rho=1.0), LogSNR(steps)):
        ts = grid.times(process)
        assert ts.dtype == torch.float64 and ts.shape == (steps + 1,)
        assert float(ts[0]) == process.t_max and float(ts[-1]) == process.t_min
        assert bool((ts[1:] < ts[:-1]).all())


@pytest.mark.parametrize("process", PROCESSES, ids=lambda p: type(p).__name__)
def test_karras_follows_edm_eq5_in_sigma_over_alpha(process):
    steps, rho = 12, 7.0
    ts = Karras(steps, rho).times(process)
    ends = torch.tensor([process.t_max, process.t_min], dtype=torch.float64)
    s_max, s_min = _sigma_tilde(process, ends)
    i = np.arange(steps + 1)
    expected = (s_max ** (1 / rho) + i / steps * (s_min ** (1 / rho) - s_max ** (1 / rho))) ** rho
    np.testing.assert_allclose(_sigma_tilde(process, ts), expected, rtol=1e-7)


@pytest.mark.parametrize("process", PROCESSES, ids=lambda p: type(p).__name__)
def test_log_snr_grid_is_uniform_in_log_snr(process):
    lam = process.log_snr(LogSNR(9).times(process)).numpy()
    np.testing.assert_allclose(np.diff(lam), np.full(9, (lam[-1] - lam[0]) / 9), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("process", [pd.VPSDE(), pd.VESDE(), pd.LinearBlend()], ids=lambda p: type(p).__name__)
@settings(max_examples=15)
@given(u=st.floats(0.0, 1.0))
def test_closed_form_log_snr_inverses_agree_with_bisection(process, u):
    t = torch.tensor([process.t_min + u * (process.t_max - process.t_min)], dtype=torch.float64)
    lam = process.log_snr(t)
    torch.testing.assert_close(process.time_of_log_snr(lam), t, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(pd.GaussianProcess.time_of_log_snr(process, lam), t, rtol=1e-9, atol=1e-12)  # bisection


def test_grid_arguments_are_validated():
    for bad in (0, -3, 2.5, True):
        with pytest.raises(ValueError, match="steps"):
            Karras(bad)
    for rho in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="rho"):
            Karras(5, rho=rho)
    with pytest.raises(ValueError, match="finite log-SNR"):
        Karras(5).times(pd.LinearBlend(t_max=1.0))
    with pytest.raises(ValueError, match="GaussianProcess"):
        LogSNR(5).times(object())
    with pytest.raises(ValueError, match="strictly decreasing"):
        ScoreOptimal(torch.tensor([1.0, 0.5, 0.5, 0.0]))
    with pytest.raises(ValueError, match="spans"):
        ScoreOptimal(torch.tensor([1.0, 0.5, 0.0])).times(pd.VPSDE())


# ---------------------------------------------------------------- score-optimal
def test_reparameterise_is_monotone_keeps_endpoints_and_floors_zero_costs():
    ts = torch.linspace(1.0, 0.0, 11, dtype=torch.float64)
    costs = torch.tensor([0.0, 0.0, 4.0, 1.0, 0.0, 9.0, 1.0, 0.0, 0.0, 1.0], dtype=torch.float64)
    new = ScoreOptimal.reparameterise(ts, costs)
    assert float(new[0]) == 1.0 and float(new[-1]) == 0.0 and bool((new[1:] < new[:-1]).all())
    # the speed sqrt(L) is 0,0,2,1,0,3,1,0,0,1 (floored at 1e-3 of its mean 0.8): total ~8, so the interval
    # of speed 3 ([0.5, 0.4]) receives 3/8 of the 10 new steps, the interval of speed 2 ([0.8, 0.7]) 2/8.
    inside = lambda a, b: int(((new < a) & (new > b)).sum())  # noqa: E731
    assert inside(0.5, 0.4) in (3, 4) and inside(0.8, 0.7) in (2, 3)
    assert bool((ScoreOptimal.reparameterise(ts, torch.zeros(10, dtype=torch.float64)) == ts).all())


def test_reparameterise_floor_gives_zero_cost_intervals_a_minimum_speed():
    # speeds sqrt(L) = [0, 1], mean 0.5, floor 0.5 -> [0.25, 1]; Lambda = [0, 0.25, 1.25] at t = [1, 0.5, 0];
    # five equal increments of 0.25 put one step on [1, 0.5] and four on [0.5, 0]
    new = ScoreOptimal.reparameterise(torch.tensor([1.0, 0.5, 0.0]), torch.tensor([0.0, 1.0]), steps=5, floor=0.5)
    torch.testing.assert_close(new, torch.tensor([1.0, 0.5, 0.375, 0.25, 0.125, 0.0], dtype=torch.float64))
    for floor in (0.0, 1.5):
        with pytest.raises(ValueError, match="floor"):
            ScoreOptimal.reparameterise(torch.tensor([1.0, 0.0]), torch.tensor([1.0]), floor=floor)


def test_reparameterise_fixed_point_where_cost_is_uniform():
    ts = torch.tensor([1.0, 0.9, 0.6, 0.55, 0.2, 0.0], dtype=torch.float64)
    torch.testing.assert_close(ScoreOptimal.reparameterise(ts, torch.full((5,), 0.3, dtype=torch.float64)), ts)


@pytest.mark.parametrize("refine", [1, 4])
def test_score_optimal_fixed_point_for_a_flat_cost(refine):
    # VE with all data at 0: s(x, t) = -x / sigma_t^2, and with x = sigma_t eps the cost is exactly
    # L(t, t') = |eps|^2 (q - 1/q)^2, q = sigma_t / sigma_t' = exp(log(smax/smin) (t - t')): equal on a uniform grid.
    process = pd.VESDE(sigma_min=0.05, sigma_max=20.0)
    model = pd.oracles.Empirical(torch.zeros(1, 3, dtype=torch.float64)).model(process)
    data = torch.zeros(64, 3, dtype=torch.float64)
    uniform = ScoreOptimal(Uniform(8).times(process))
    updated = uniform.update(process, model, data, gamma=1.0, refine=refine, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(updated.times(process), Uniform(8).times(process), rtol=1e-9, atol=1e-9)
    fitted = ScoreOptimal.fit(process, model, data, 8, refine=refine, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(fitted.times(process), Uniform(8).times(process), rtol=1e-7, atol=1e-7)


def test_update_blends_and_stays_monotone():
    process = pd.VPSDE()
    mix = pd.oracles.GaussianMixture.ring(dtype=torch.float64)
    model, data = mix.model(process), mix.sample(200, generator=torch.Generator().manual_seed(1))
    old = ScoreOptimal(Uniform(10).times(process))
    full = old.update(process, model, data, gamma=1.0, generator=torch.Generator().manual_seed(2))
    part = old.update(process, model, data, gamma=0.25, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(part.times(process), 0.25 * full.times(process) + 0.75 * old.times(process))
    for grid in (full, part):
        ts = grid.times(process)
        assert bool((ts[1:] < ts[:-1]).all()) and float(ts[0]) == 1.0 and float(ts[-1]) == process.t_min
    assert not torch.allclose(full.times(process), old.times(process))
    for gamma in (0.0, 1.5, True):
        with pytest.raises(ValueError, match="gamma"):
            old.update(process, model, data, gamma=gamma)


def test_score_optimal_beats_uniform_at_ten_steps_on_the_ring():
    """The 2-D ordering, in the process' (VP) frame: the fitted grid beats the uniform one for Euler."""
    process = pd.VPSDE()
    mix = pd.oracles.GaussianMixture.ring(dtype=torch.float64)
    model = mix.model(process)
    data = mix.sample(256, generator=torch.Generator().manual_seed(0))
    grid = ScoreOptimal.fit(process, model, data, 10, iterations=3, generator=torch.Generator().manual_seed(1),
                            scale_free=False)
    rev = pd.probability_flow(process, model)
    x0 = process.sample_prior(1000, (2,), generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    reference = pd.sample(rev, x_init=x0, solver=pd.solvers.TorchDiffEq(rtol=1e-8, atol=1e-8), grid=Uniform(1)).x

    def error(g):
        return float((pd.sample(rev, x_init=x0, solver=Euler(), grid=g).x - reference).pow(2).sum(1).mean().sqrt())

    def log_density_gap(g):
        return float(mix.log_prob(mix.sample(1000, generator=torch.Generator().manual_seed(3))).mean()
                     - mix.log_prob(pd.sample(rev, x_init=x0, solver=Euler(), grid=g).x).mean())

    assert error(grid) < 0.6 * error(Uniform(10))
    assert log_density_gap(grid) < log_density_gap(Uniform(10))


def test_score_optimal_in_the_scale_free_frame_on_the_16d_mixture():
    """The 16-D ordering (THEORY.md §6, "Which frame"): in the scale-free frame the fitted grid starts like
    Karras' (small steps at high noise) and gives Euler no more error than the best fixed grid (5 % slack for
    the 400 test trajectories); in the VP frame it front-loads the first step and is the worst grid."""
    process = pd.VPSDE(t_min=1e-3)
    mix = mixture16()
    model = mix.model(process)
    data = mix.sample(512, generator=torch.Generator().manual_seed(3))
    rev = pd.probability_flow(process, model)
    x0 = process.sample_prior(400, (16,), generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    reference = pd.sample(rev, x_init=x0, solver=pd.solvers.TorchDiffEq(rtol=1e-8, atol=1e-8), grid=LogSNR(8)).x

    def error(g):
        return float((pd.sample(rev, x_init=x0, solver=Euler(), grid=g).x - reference).pow(2).sum(1).mean().sqrt())

    fixed = {type(g).__name__: error(g) for g in (Uniform(10), LogSNR(10), Karras(10))}
    scale_free = ScoreOptimal.fit(process, model, data, 10, iterations=3, generator=torch.Generator().manual_seed(4))
    vp_frame = ScoreOptimal.fit(process, model, data, 10, iterations=3, generator=torch.Generator().manual_seed(4),
                                scale_free=False)
    assert float(scale_free.times(process)[1]) > 0.9 > float(vp_frame.times(process)[1])
    assert error(scale_free) < 1.05 * min(fixed.values()), fixed
    assert error(vp_frame) > 1.2 * max(fixed.values()), fixed
    with pytest.raises(ValueError, match="scale_free"):
        ScoreOptimal.local_costs(process, model, data, Uniform(2).times(process), scale_free="yes")


def test_reparameterise_with_an_exponent_equidistributes_the_density():
    # two intervals of length 1/2 with L = delta h^2, delta = 16 then 1; at q = 1/4 the density delta^q is
    # 2 then 1: Lambda = 1 on the first half and 0.5 on the second, so 3 steps put one time at Lambda = 0.5
    # (t = 0.75) and one at Lambda = 1 (t = 0.5)
    ts = torch.tensor([1.0, 0.5, 0.0], dtype=torch.float64)
    costs = torch.tensor([16.0 * 0.25, 1.0 * 0.25], dtype=torch.float64)
    new = ScoreOptimal.reparameterise(ts, costs, steps=3, exponent=0.25)
    torch.testing.assert_close(new, torch.tensor([1.0, 0.75, 0.5, 0.0], dtype=torch.float64))
    # in another coordinate u = 2t the densities per unit of u are 16/4 and 1/4: the same ratio 2 : 1
    torch.testing.assert_close(ScoreOptimal.reparameterise(ts, costs, steps=3, exponent=0.25, coordinate=2 * ts), new)
    # at q = 1/2 (the paper's constant speed) the coordinate does not matter: increments sqrt(L) = 2, 0.5, so
    # the interior times sit at Lambda = 2.5/3 and 5/3, both on the first interval (0.5 of t per 2 of Lambda)
    paper = ScoreOptimal.reparameterise(ts, costs, steps=3)
    expected = torch.tensor([1.0, 1.0 - 0.25 * 2.5 / 3, 1.0 - 0.25 * 5.0 / 3, 0.0], dtype=torch.float64)
    torch.testing.assert_close(paper, expected)
    u = torch.tensor([0.0, 5.0, 6.0], dtype=torch.float64)          # any increasing coordinate
    torch.testing.assert_close(ScoreOptimal.reparameterise(ts, costs, steps=3, coordinate=u), paper)


def test_reparameterise_exponent_and_coordinate_are_checked():
    ts, costs = torch.tensor([1.0, 0.5, 0.0]), torch.tensor([1.0, 1.0])
    for exponent in (0, 0.6, -1, True, "1/4"):
        with pytest.raises(ValueError, match="exponent"):
            ScoreOptimal.reparameterise(ts, costs, exponent=exponent)
    for coordinate in (torch.tensor([0.0, 1.0]), torch.tensor([0.0, 2.0, 1.0]), torch.tensor([0.0, 0.0, 1.0])):
        with pytest.raises(ValueError, match="coordinate"):
            ScoreOptimal.reparameterise(ts, costs, coordinate=coordinate)


def test_exponent_for_a_solver_of_order_p():
    assert ScoreOptimal.exponent_for(None) == 0.5
    assert ScoreOptimal.exponent_for(Euler()) == 1 / 4
    assert ScoreOptimal.exponent_for(pd.solvers.Heun()) == 1 / 6
    assert ScoreOptimal.exponent_for(pd.solvers.DPMSolver2M()) == 1 / 6
    assert ScoreOptimal.exponent_for(pd.solvers.UniPC()) == 1 / 8
    with pytest.raises(ValueError, match="solver"):
        ScoreOptimal.exponent_for("Euler")


def _ratios_at_ten_evaluations(process, mix, solvers, n=400):
    """Error of the solver-aware fitted grid over the best of Uniform, LogSNR and Karras, per solver."""
    model = mix.model(process)
    data = mix.sample(512, generator=torch.Generator().manual_seed(3))
    rev = pd.probability_flow(process, model)
    x0 = process.sample_prior(n, (mix.dim,), generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    reference = pd.sample(rev, x_init=x0, solver=pd.solvers.TorchDiffEq(rtol=1e-8, atol=1e-8), grid=LogSNR(8)).x
    ratios = {}
    for solver in solvers:
        steps = 10 // solver.order if isinstance(solver, pd.solvers.Heun) else 10

        def error(g):
            return float((pd.sample(rev, x_init=x0, solver=solver, grid=g).x - reference).pow(2).sum(1).mean().sqrt())

        best = min(error(g(steps)) for g in (Uniform, LogSNR, Karras))
        fitted = ScoreOptimal.fit(process, model, data, steps, iterations=3, solver=solver,
                                  generator=torch.Generator().manual_seed(4))
        ratios[type(solver).__name__] = error(fitted) / best
    return ratios


def test_solver_aware_score_optimal_orderings_at_ten_evaluations():
    """The 2-D and 16-D orderings of docs/schedules.rst at NFE 10 (VP SDE, t_min = 1e-3, exact oracles), with
    the step density for the solver's order: on the ring the fitted grid beats every fixed grid for Euler
    and Heun; on the 16-D mixture it beats the best fixed grid for Euler (within 2 %) and stays within 1.35x
    for Heun and 1.2x for DPMSolver2M (measured on these 400 test trajectories: ring 0.65 and 0.69; 16-D 0.96,
    1.20 and 1.08; benchmarks/score_optimal.py, 500 trajectories: 0.64, 0.69; 0.95, 1.26, 1.13)."""
    process = pd.VPSDE(t_min=1e-3)
    ring = _ratios_at_ten_evaluations(process, pd.oracles.GaussianMixture.ring(dtype=torch.float64),
                                      (Euler(), pd.solvers.Heun()))
    assert ring["Euler"] < 0.8 and ring["Heun"] < 0.85, ring
    mixture = _ratios_at_ten_evaluations(process, mixture16(), (Euler(), pd.solvers.Heun(), pd.solvers.DPMSolver2M()))
    assert mixture["Euler"] < 1.02 and mixture["Heun"] < 1.35 and mixture["DPMSolver2M"] < 1.2, mixture
