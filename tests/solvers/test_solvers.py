"""Solvers: convergence order against the closed-form probability-flow solution, adapter equivalences,
the ancestral step against the process' posterior, argument checks and determinism.

Closed form used throughout: for data N(mu, c^2 I) under any Gaussian process the marginal is
N(alpha_t mu, (alpha_t^2 c^2 + sigma_t^2) I) and the probability-flow ODE transports quantiles, so
x_t = alpha_t mu + sqrt(alpha_t^2 c^2 + sigma_t^2) z with z constant along the path. (Check: D = mu +
alpha c^2 z / s_t, eps = sigma z / s_t, and alpha' D + sigma' eps = alpha' mu + s_t' z = dx_t/dt.)
"""


import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import probdiff as pd
from probdiff.grids import LogSNR, Uniform
from probdiff.reverse import ReverseProcess
from probdiff.solvers import (
    Ancestral,
    Deblend,
    DPMSolver2M,
    Euler,
    EulerMaruyama,
    Heun,
    TorchDiffEq,
    TorchSDE,
    UniPC,
)


MU = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
C = 0.5


def _gaussian():
    return pd.oracles.GaussianMixture(torch.ones(1, dtype=torch.float64), MU[None],
                                      (C**2 * torch.eye(3, dtype=torch.float64))[None])


def _exact(process, t, z):
    t = torch.as_tensor(t, dtype=torch.float64)
    a, s = process.alpha(t), process.sigma(t)
    return a * MU + torch.sqrt(a**2 * C**2 + s**2) * z


class _Velocity(pd.VelocityModel):
    """A velocity-parameterised network built from the oracle (as an IADB network would be)."""

    def __init__(self, oracle, process):
        super().__init__(lambda x, t: oracle.velocity(x, t), process)


def _pf_error(process, solver, grid, model=None):
    z = torch.randn(64, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    model = model or _gaussian().model(process)
    sol = pd.sample(pd.probability_flow(process, model), x_init=_exact(process, process.t_max, z), solver=solver,
                    grid=grid)
    return (sol.x - _exact(process, process.t_min, z)).pow(2).mean().sqrt().item()


def _slope(steps, errors):
    x = torch.log(torch.tensor(steps, dtype=torch.float64))
    y = torch.log(torch.tensor(errors, dtype=torch.float64))
    x, y = x - x.mean(), y - y.mean()
    return -float((x * y).sum() / (x * x).sum())


ORDER_CASES = [
    (Euler(), pd.CosineVP, Uniform),
    (Heun(), pd.CosineVP, Uniform),
    (DPMSolver2M(), pd.VESDE, LogSNR),
    (UniPC(), pd.VESDE, LogSNR),
    (Ancestral(eta=0.0), pd.CosineVP, Uniform),
    (TorchDiffEq("midpoint"), pd.CosineVP, Uniform),
    (TorchDiffEq("rk4"), pd.CosineVP, Uniform),
    (Deblend(), pd.LinearBlend, Uniform),
]


@pytest.mark.parametrize("solver,process_cls,grid_cls", ORDER_CASES,
                         ids=lambda v: repr(v) if isinstance(v, pd.solvers.Solver) else None)
def test_convergence_order_matches_stated_order(solver, process_cls, grid_cls):
    process = process_cls()
    model = _Velocity(_gaussian().model(process), process) if isinstance(solver, Deblend) else None
    steps = [16, 32, 64]
    errors = [_pf_error(process, solver, grid_cls(n), model) for n in steps]
    assert errors[-1] < errors[0]
    assert abs(_slope(steps, errors) - solver.order) < 0.3, (errors, solver.order)


def test_stated_orders():
    assert (Euler.order, Heun.order, DPMSolver2M.order, UniPC.order, Deblend.order, EulerMaruyama.order,
            Ancestral.order) == (1, 2, 2, 3, 1, 1, 1)
    assert TorchDiffEq().order == 5 and TorchDiffEq("rk4").order == 4 and TorchSDE().order == 1


def test_dopri5_meets_its_tolerance_adaptively():
    process = pd.VPSDE()
    loose = _pf_error(process, TorchDiffEq(rtol=1e-4, atol=1e-4), Uniform(1))
    tight = _pf_error(process, TorchDiffEq(rtol=1e-8, atol=1e-8), Uniform(1))
    assert tight < 1e-6 and tight < loose < 1e-2


# ---------------------------------------------------------------- equivalences
def _reverse(process, noise):
    return pd.reverse(process, _gaussian().model(process), noise)


@pytest.mark.parametrize("process", [pd.VPSDE(), pd.VESDE(), pd.LinearBlend(), pd.SubVPSDE()], ids=repr)
@given(noise=st.sampled_from([0.0, 0.5, 1.0, 2.0]), t=st.floats(0.05, 0.95))
def test_drift_and_denoised_equals_reverse_drift(process, noise, t):
    x = torch.randn(5, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 2
    rev = _reverse(process, noise)
    t = process.t_min + t * (process.t_max - process.t_min)
    drift, denoised = rev.drift_and_denoised(x, t)
    tb = torch.full((5,), t, dtype=torch.float64)
    f, g = process.drift_coef(tb)[:, None], process.diffusion(tb)[:, None]
    score_form = f * x - 0.5 * (1.0 + noise**2) * g**2 * rev.model.score(x, tb)     # THEORY.md §3
    torch.testing.assert_close(drift, score_form, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(rev.drift(x, t), drift, rtol=0, atol=0)
    torch.testing.assert_close(denoised, rev.model.denoise(x, t))


def test_euler_maruyama_at_noise_zero_is_euler_and_deblend_is_euler_on_blend():
    x0 = torch.randn(8, 3, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    for process in (pd.VPSDE(), pd.LinearBlend()):
        rev = _reverse(process, 0.0)
        a = pd.sample(rev, x_init=x0, solver=Euler(), grid=Uniform(7)).x
        b = pd.sample(rev, x_init=x0, solver=EulerMaruyama(), grid=Uniform(7)).x
        c = pd.sample(rev, x_init=x0, solver=TorchDiffEq("euler"), grid=Uniform(7)).x
        torch.testing.assert_close(a, b)
        torch.testing.assert_close(a, c)
    blend = pd.LinearBlend()
    rev = pd.probability_flow(blend, _Velocity(_gaussian().model(blend), blend))
    torch.testing.assert_close(pd.sample(rev, x_init=x0, solver=Deblend(), grid=Uniform(7)).x,
                               pd.sample(rev, x_init=x0, solver=Euler(), grid=Uniform(7)).x)


@pytest.mark.parametrize("noise", [0.5, 1.0])
def test_torchsde_euler_reproduces_euler_maruyama_draw_for_draw(noise):
    # Same generator state => same Brownian increments: checks the time negation, flattening and sign of dW.
    rev = _reverse(pd.VPSDE(), noise)
    kw = dict(grid=LogSNR(12), trajectory=True)
    a = pd.sample(rev, (6, 3), solver=TorchSDE("euler"), generator=torch.Generator().manual_seed(3), **kw)
    b = pd.sample(rev, (6, 3), solver=EulerMaruyama(), generator=torch.Generator().manual_seed(3), **kw)
    torch.testing.assert_close(a.xs, b.xs)
    torch.testing.assert_close(a.denoised, b.denoised)
    assert a.nfe == b.nfe == 12


def test_torchsde_flattens_events_and_runs_higher_order_methods():
    process = pd.VESDE()
    data = torch.randn(4, 2, 3, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    rev = pd.reverse(process, pd.oracles.Empirical(data).model(process), 1.0)
    for method in ("euler", "heun", "srk"):
        sol = pd.sample(rev, (5, 2, 3), solver=TorchSDE(method), grid=LogSNR(6), dtype=torch.float64,
                        generator=torch.Generator().manual_seed(5))
        assert sol.x.shape == (5, 2, 3) and bool(torch.isfinite(sol.x).all())


# ---------------------------------------------------------------- ancestral
@pytest.mark.parametrize("process", [pd.VPSDE(), pd.VESDE(), pd.CosineVP()], ids=repr)
def test_ancestral_eta_one_draws_the_forward_posterior(process):
    model = _gaussian().model(process)
    rev = pd.reverse(process, model, 1.0)
    x = torch.randn(7, 3, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    t, s = torch.tensor(0.6, dtype=torch.float64), torch.tensor(0.35, dtype=torch.float64)
    g = torch.Generator().manual_seed(7)
    z = torch.randn(x.shape, generator=torch.Generator().set_state(g.get_state()), dtype=x.dtype)
    step = Ancestral().step(rev, x, t, s, None, g)
    post = process.posterior(model.denoise(x, t), x, s, t)
    torch.testing.assert_close(step.x, post.mean + post.stddev * z, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(step.denoised, model.denoise(x, t))
    assert step.nfe == 1


def test_ancestral_eta_zero_is_ddim_and_eta_none_follows_noise():
    process = pd.VPSDE()
    model = _gaussian().model(process)
    x = torch.randn(7, 3, generator=torch.Generator().manual_seed(8), dtype=torch.float64)
    t, s = torch.tensor(0.6, dtype=torch.float64), torch.tensor(0.35, dtype=torch.float64)
    ddim = Ancestral(eta=0.0).step(pd.reverse(process, model, 1.0), x, t, s, None, None).x
    # DDIM (Song et al. 2021, Eq. 12): x_s = alpha_s D + sigma_s eps_hat
    a_t, s_t, a_s, s_s = (float(f(v)) for f, v in
                          ((process.alpha, t), (process.sigma, t), (process.alpha, s), (process.sigma, s)))
    d = model.denoise(x, t)
    torch.testing.assert_close(ddim, a_s * d + s_s * (x - a_t * d) / s_t)
    follow = Ancestral(eta=None).step(pd.reverse(process, model, 0.0), x, t, s, None, None).x
    torch.testing.assert_close(follow, ddim)


# ---------------------------------------------------------------- checks and determinism
class _OtherReverse(ReverseProcess):
    pass


def test_solvers_reject_wrong_process_or_noise():
    process = pd.VPSDE()
    model = _gaussian().model(process)
    for solver in (Euler(), Heun(), DPMSolver2M(), UniPC(), TorchDiffEq()):
        with pytest.raises(ValueError, match="noise"):
            pd.sample(pd.reverse(process, model, 1.0), (2, 3), solver=solver, grid=Uniform(2))
    with pytest.raises(ValueError, match="LinearBlend"):
        pd.sample(pd.probability_flow(process, model), (2, 3), solver=Deblend(), grid=Uniform(2))
    for solver in (Euler(), EulerMaruyama(), TorchSDE(), DPMSolver2M()):
        with pytest.raises(ValueError, match="GaussianProcess"):
            solver.check(_OtherReverse(process, model, 1.0))
    with pytest.raises(ValueError, match="method"):
        TorchDiffEq("adams")
    with pytest.raises(ValueError, match="rtol"):
        TorchDiffEq(rtol=0.0)
    with pytest.raises(ValueError, match="method"):
        TorchSDE("leapfrog")
    with pytest.raises(ValueError, match="eta"):
        Ancestral(eta=-1.0)


@pytest.mark.parametrize("solver", [EulerMaruyama(), Ancestral(), TorchSDE()], ids=repr)
def test_stochastic_solvers_are_deterministic_given_the_generator(solver):
    rev = _reverse(pd.VPSDE(), 1.0)
    draw = [pd.sample(rev, (4, 3), solver=solver, grid=Uniform(5), dtype=torch.float64,
                      generator=torch.Generator().manual_seed(seed)).x for seed in (9, 9, 10)]
    torch.testing.assert_close(draw[0], draw[1], rtol=0, atol=0)
    assert not torch.allclose(draw[0], draw[2])


class _Counting(pd.GaussianModel):
    def __init__(self, inner):
        super().__init__(None, inner.process)
        self.inner, self.calls = inner, 0

    def denoise(self, x, t):
        self.calls += 1
        return self.inner.denoise(x, t)


@pytest.mark.parametrize("solver", [Euler(), Heun(), DPMSolver2M(), UniPC(), TorchDiffEq(), TorchDiffEq("rk4"),
                                    Ancestral(eta=0.0)], ids=repr)
def test_nfe_counts_model_evaluations(solver):
    process = pd.CosineVP()
    model = _Counting(_gaussian().model(process))
    sol = pd.sample(pd.probability_flow(process, model), (3, 3), solver=solver, grid=LogSNR(5), dtype=torch.float64,
                    generator=torch.Generator().manual_seed(11), trajectory=True)
    assert sol.nfe == model.calls > 0
    assert sol.denoised.shape == (5, 3, 3)
    if not isinstance(solver, TorchDiffEq):
        assert sol.nfe == 5 * {Heun: 2}.get(type(solver), 1)
