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


def _errors_at_ten_evaluations(process, mix, solvers, n=400):
    """RMS endpoint errors at 10 model evaluations per solver: the fixed grids (Uniform, LogSNR, Karras), the
    score-optimal grid with the solver's order (``order``) and the local-error grid fitted on 128 pilot
    states that are not the scored ones (``local``)."""
    model = mix.model(process)
    data = mix.sample(512, generator=torch.Generator().manual_seed(3))
    rev = pd.probability_flow(process, model)
    x0 = process.sample_prior(n, (mix.dim,), generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    pilot = process.sample_prior(128, (mix.dim,), generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    exact = pd.solvers.TorchDiffEq(rtol=1e-8, atol=1e-8)
    reference = pd.sample(rev, x_init=x0, solver=exact, grid=LogSNR(8)).x
    pilot_reference = pd.sample(rev, x_init=pilot, solver=exact, grid=LogSNR(8)).x
    out = {}
    for solver in solvers:
        steps = 10 // solver.order if isinstance(solver, pd.solvers.Heun) else 10

        def error(g):
            return float((pd.sample(rev, x_init=x0, solver=solver, grid=g).x - reference).pow(2).sum(1).mean().sqrt())

        out[type(solver).__name__] = {
            "fixed": min(error(g(steps)) for g in (Uniform, LogSNR, Karras)),
            "order": error(ScoreOptimal.fit(process, model, data, steps, iterations=3, solver=solver,
                                            generator=torch.Generator().manual_seed(4))),
            "local": error(LocalErrorOptimal.fit(rev, solver, steps, pilot, reference=pilot_reference))}
    return out


def test_fitted_grid_orderings_at_ten_evaluations():
    """The 2-D and 16-D orderings of docs/schedules.rst at NFE 10 (VP SDE, t_min = 1e-3, exact oracles), each
    against the best fixed grid measured here: the score-optimal grid with the solver's order beats every
    fixed grid for Euler and Heun on the ring and for Euler on the 16-D mixture; the local-error grid beats
    every fixed grid for Euler on both and for Heun on the 16-D mixture, is within 1.1x of the best fixed
    grid for DPMSolver2M there, and beats the score-only grid for both second-order solvers there."""
    process = pd.VPSDE(t_min=1e-3)
    ring = _errors_at_ten_evaluations(process, pd.oracles.GaussianMixture.ring(dtype=torch.float64),
                                      (Euler(), pd.solvers.Heun()))
    assert ring["Euler"]["order"] < ring["Euler"]["fixed"] and ring["Heun"]["order"] < ring["Heun"]["fixed"], ring
    assert ring["Euler"]["local"] < ring["Euler"]["fixed"], ring
    mixture = _errors_at_ten_evaluations(process, mixture16(), (Euler(), pd.solvers.Heun(), pd.solvers.DPMSolver2M()))
    assert mixture["Euler"]["order"] < mixture["Euler"]["fixed"], mixture
    assert mixture["Euler"]["local"] < mixture["Euler"]["fixed"] and mixture["Heun"]["local"] < mixture["Heun"]["fixed"]
    assert mixture["DPMSolver2M"]["local"] <= 1.1 * mixture["DPMSolver2M"]["fixed"], mixture
    assert all(mixture[k]["local"] < mixture[k]["order"] for k in ("Heun", "DPMSolver2M")), mixture


@pytest.mark.slow
def test_local_error_grid_meets_the_goal_on_the_16d_mixture():
    """The goal of docs/schedules.rst on the 16-D mixture at NFE 10: the local-error grid within 1.1x of the
    best fixed grid for every deterministic solver, and better than all of them for Euler."""
    solvers = (Euler(), pd.solvers.Heun(), pd.solvers.DPMSolver2M(), pd.solvers.UniPC(), pd.solvers.Ancestral(eta=0.0))
    mixture = _errors_at_ten_evaluations(pd.VPSDE(t_min=1e-3), mixture16(), solvers)
    assert mixture["Euler"]["local"] < mixture["Euler"]["fixed"], mixture
    assert all(e["local"] <= 1.1 * e["fixed"] for e in mixture.values()), mixture


# ==================================================================== LocalErrorOptimal
from probdiff.grids import LocalErrorOptimal  # noqa: E402


def test_equidistribute_places_equal_shares_of_the_error():
    # D = 8 and 1 on two unit steps of log-SNR, order 2: shares D^(1/3) = 2 and 1, total 3; two new steps put
    # the interior point at Lambda = 1.5, three quarters into the first step
    lam = torch.tensor([0.0, 1.0, 2.0], dtype=torch.float64)
    new = LocalErrorOptimal.equidistribute(lam, torch.tensor([8.0, 1.0]), 2)
    torch.testing.assert_close(new, torch.tensor([0.0, 0.75, 2.0], dtype=torch.float64))
    # equal contributions: a fixed point, whatever the order
    lam = torch.tensor([-5.0, -1.0, 0.5, 3.0, 9.0], dtype=torch.float64)
    for order in (1, 2, 3):
        torch.testing.assert_close(LocalErrorOptimal.equidistribute(lam, torch.full((4,), 0.3), order), lam)
    # all zero: unchanged (no information); the floor keeps the map strictly monotone
    torch.testing.assert_close(LocalErrorOptimal.equidistribute(lam, torch.zeros(4), 1), lam)
    new = LocalErrorOptimal.equidistribute(lam, torch.tensor([0.0, 0.0, 1.0, 0.0]), 1, floor=0.1)
    assert bool((new.diff() > 0).all())


def test_equidistribute_and_fit_check_their_arguments():
    lam = torch.tensor([0.0, 1.0, 2.0], dtype=torch.float64)
    for d in (torch.tensor([1.0]), torch.tensor([1.0, -1.0]), torch.tensor([1.0, float("nan")])):
        with pytest.raises(ValueError, match="contributions"):
            LocalErrorOptimal.equidistribute(lam, d, 1)
    with pytest.raises(ValueError, match="floor"):
        LocalErrorOptimal.equidistribute(lam, torch.ones(2), 1, floor=0.0)
    with pytest.raises(ValueError, match="order"):
        LocalErrorOptimal.equidistribute(lam, torch.ones(2), 0)
    process = pd.VPSDE(t_min=1e-3)
    flow = pd.probability_flow(process, pd.oracles.GaussianMixture.ring(dtype=torch.float64).model(process))
    x = process.sample_prior(8, (2,), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    with pytest.raises(ValueError, match="solver"):
        LocalErrorOptimal.fit(flow, "Euler", 4, x)
    for gamma in (0, 1.5, True):
        with pytest.raises(ValueError, match="gamma"):
            LocalErrorOptimal.fit(flow, Euler(), 4, x, gamma=gamma)
    with pytest.raises(ValueError, match="iterations"):
        LocalErrorOptimal.fit(flow, Euler(), 4, x, iterations=0)
    with pytest.raises(ValueError, match="floor"):
        LocalErrorOptimal.fit(flow, Euler(), 4, x, floor=2.0)
    with pytest.raises(ValueError, match="x_init"):
        LocalErrorOptimal.fit(flow, Euler(), 4, x[:1])
    with pytest.raises(ValueError, match="deterministic"):
        LocalErrorOptimal.fit(flow, pd.solvers.Ancestral(eta=1.0), 4, x)
    with pytest.raises(ValueError, match="probability flow"):
        LocalErrorOptimal.fit(pd.reverse(flow.process, flow.model, noise=1.0), Euler(), 4, x)
    blend = pd.LinearBlend(t_max=1.0)              # alpha = 0 at t_max: no finite log-SNR to halve steps in
    blend_flow = pd.probability_flow(blend, pd.oracles.GaussianMixture.ring(dtype=torch.float64).model(blend))
    with pytest.raises(ValueError, match="LocalErrorOptimal needs a finite log-SNR"):
        LocalErrorOptimal.fit(blend_flow, Euler(), 4, x)
    one = LocalErrorOptimal.fit(flow, Euler(), 1, x)                   # one step: nothing to move
    assert len(one.history) == 1 and torch.equal(one.times(process), LogSNR(1).times(process))


def test_local_error_fit_keeps_the_best_iterate_and_counts_its_work():
    process = pd.VPSDE(t_min=1e-3)
    mix = pd.oracles.GaussianMixture.ring(dtype=torch.float64)
    flow = pd.probability_flow(process, mix.model(process))
    x = process.sample_prior(64, (2,), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    grid = LocalErrorOptimal.fit(flow, Euler(), 6, x, iterations=3)
    assert len(grid.history) == 4
    torch.testing.assert_close(grid.history[0][0], LogSNR(6).times(process))        # the start
    errors = [h[2] for h in grid.history]
    assert grid.chosen == int(np.argmin(errors))
    torch.testing.assert_close(grid.times(process), grid.history[grid.chosen][0])
    reference = pd.sample(flow, x_init=x, solver=pd.solvers.TorchDiffEq(rtol=1e-8, atol=1e-8), grid=LogSNR(8)).x
    for ts, d, e in grid.history:          # each recorded error is the iterate's pilot error, by sample
        assert d.shape == (6,) and bool((d >= 0).all())
        x_end = pd.sample(flow, x_init=x, solver=Euler(), grid=pd.grids.Explicit(ts)).x
        assert abs(float((x_end - reference).pow(2).sum(1).mean().sqrt()) - e) < 1e-6 * e
    # the contributions: step halving of each step, every run counted (7 runs of 6-7 steps per iterate)
    d, end, nfe = LocalErrorOptimal.contributions(flow, Euler(), grid.history[0][0], x)
    ts = grid.history[0][0]
    lam = process.log_snr(ts)
    mid = process.time_of_log_snr(0.5 * (lam[2] + lam[3]).reshape(1))
    halved = pd.sample(flow, x_init=x, solver=Euler(), grid=pd.grids.Explicit(torch.cat([ts[:3], mid, ts[3:]]))).x
    assert abs(float((end - halved).pow(2).sum(1).mean().sqrt()) - float(d[2])) < 1e-12 + 1e-9 * float(d[2])
    assert nfe == 6 + 6 * 7
    fresh = LocalErrorOptimal.fit(flow, Euler(), 6, x, iterations=3)
    assert torch.equal(fresh.times(process), grid.times(process))                   # reproducible bit for bit
