"""Exact endpoints: the linear blend on [0, 1] works everywhere, and its likelihood is log p_0 itself (issue 15,
item 4).

Expected values: the mixture's closed-form log-density (``GaussianMixture.log_prob``); the limits of the drift
at t = 0 and t = 1 and of the first reverse-SDE step out of t = 1 worked out by hand (alpha = 1 - t,
sigma = t, E[x_0] the mixture's mean); a tight-tolerance torchdiffeq solve of the same flow as the reference of
the multistep solvers.
"""

import math

import pytest
import torch

import probdiff as pd
from probdiff.likelihood import DiscretizedGaussian, decoder_bound
from probdiff.testing import REVERSE_MARGINALS, SIMULATION
from shared import data, mixture

UNIT = dict(t_min=0.0, t_max=1.0)


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _mean(mix):
    return (mix.weights[:, None] * mix.means).sum(0)


@pytest.mark.parametrize("dim", [2, 16])
def test_blend_on_unit_interval_gives_log_p0(dim):
    process, mix = pd.LinearBlend(**UNIT), mixture(dim)
    x = data(mix, 8)
    log_p, stats = pd.log_likelihood(process, mix.model(process), x, rtol=1e-7, atol=1e-7, return_stats=True)
    assert (log_p - mix.log_prob(x)).abs().max() / dim < 1e-4
    assert torch.isfinite(stats.endpoint).all() and (stats.se == 0).all()
    assert stats.is_log_p0 and stats.density_time == 0.0


@pytest.mark.parametrize("noise", [0.0, 0.5, 1.0])
def test_drift_limits_at_both_ends(noise):
    process, mix = pd.LinearBlend(**UNIT), mixture(2)
    model, x = mix.model(process), data(mix, 5)
    rev = pd.reverse(process, model, noise)
    # t = 0: g = 0 and x = x_0, so every member of the family has the flow's drift (alpha'/alpha) x = -x
    assert torch.allclose(rev.drift(x, 0.0), -x)
    if noise == 0.0:
        assert torch.allclose(rev.drift(x, 1.0), x - _mean(mix))       # alpha = 0, sigma = 1: x - E[x_0]
        assert rev.diffusion(torch.tensor(1.0)).item() == 0.0           # 0 * g(1), not 0 * inf = NaN
    else:                                                               # f x - (1 + eta^2)/2 g^2 s: infinite
        with pytest.raises(ValueError, match="infinite at t = 1"):
            rev.drift(x, 1.0)


def test_velocity_model_drift_is_its_own_velocity_at_both_ends():
    """A VelocityModel determines eps at sigma = 0 and D at alpha = 0 (the 2x2 system has determinant 1 on the
    blend), so the flow's drift is the network's output at t = 0 and t = 1, whatever the network."""
    process = pd.LinearBlend(**UNIT)
    model = pd.VelocityModel(lambda x, t: 0.3 * x + 1.0 + t[:, None], process)
    x = torch.randn(4, 2, generator=_gen(), dtype=torch.float64)
    flow = pd.probability_flow(process, model)
    for t in (0.0, 1.0):
        assert torch.allclose(flow.drift(x, t), 0.3 * x + 1.0 + t)
    assert torch.allclose(model.denoise(x, torch.ones(4, dtype=torch.float64)), 0.7 * x - 2.0)   # D = x - t v


@pytest.mark.parametrize("kind", [pd.EpsilonModel, pd.ScoreModel])
def test_noise_and_score_models_refuse_alpha_zero(kind):
    """At alpha = 0 x_t = eps: an epsilon or score prediction carries no information about x_0 (no NaN)."""
    process = pd.LinearBlend(**UNIT)
    model = kind(lambda x, t: torch.zeros_like(x), process)
    x = torch.randn(3, 2, generator=_gen(), dtype=torch.float64)
    with pytest.raises(ValueError, match="alpha_t = 0"):
        pd.probability_flow(process, model).drift(x, 1.0)
    assert torch.isfinite(pd.probability_flow(process, model).drift(x, 0.5)).all()


SOLVERS = [(pd.solvers.Euler(), 0.0), (pd.solvers.Heun(), 0.0), (pd.solvers.DPMSolver2M(), 0.0),
           (pd.solvers.UniPC(), 0.0), (pd.solvers.Deblend(), 0.0), (pd.solvers.TorchDiffEq(), 0.0),
           (pd.solvers.Ancestral(eta=0.0), 1.0), (pd.solvers.Ancestral(), 1.0), (pd.solvers.EulerMaruyama(), 1.0),
           (pd.solvers.EulerMaruyama(), 0.5), (pd.solvers.TorchSDE(), 1.0), (pd.solvers.TorchSDE("srk"), 1.0),
           (pd.solvers.CoefficientPreserving(), 1.0)]


@pytest.mark.parametrize("solver,noise", SOLVERS, ids=lambda v: repr(v))
def test_every_sampler_runs_on_the_unit_interval(solver, noise):
    process, mix = pd.LinearBlend(**UNIT), mixture(2)
    rev = pd.reverse(process, mix.model(process), noise)
    sol = pd.sample(rev, (64, 2), solver=solver, grid=pd.grids.Uniform(16), generator=_gen(), trajectory=True)
    assert torch.isfinite(sol.x).all() and torch.isfinite(sol.xs).all()
    # a sample of the mixture: its mean within 5 standard errors of the data mean (plus the grid's bias)
    se = sol.x.std(0) / math.sqrt(sol.x.shape[0])
    assert ((sol.x.double().mean(0) - _mean(mix)).abs() <= 5 * se + 0.3).all()


def _exponential_multistep(rule, *args):
    """ExponentialMultistep built for each grid of the convergence test (its coefficients belong to a grid)."""
    def build(process, grid):
        return rule(process, grid.times(process), *args)
    build.__name__ = f"ExponentialMultistep.{rule.__name__}{args}"
    return build


@pytest.mark.parametrize("solver", [pd.solvers.DPMSolver2M(), pd.solvers.UniPC(), pd.solvers.UniPC(False),
                                    _exponential_multistep(pd.solvers.ExponentialMultistep.dpm_solver_2m),
                                    _exponential_multistep(pd.solvers.ExponentialMultistep.adams, 3)],
                         ids=lambda v: v.__name__ if callable(v) and not isinstance(v, pd.solvers.Solver) else repr(v))
def test_multistep_solvers_converge_to_the_flow(solver):
    """Through both singular ends (ell = -inf at t = 1, +inf at t = 0) the multistep solvers converge to the
    flow's solution (torchdiffeq at rtol 1e-9 from the same start)."""
    process, mix = pd.LinearBlend(**UNIT), mixture(2)
    flow = pd.probability_flow(process, mix.model(process))
    x1 = torch.randn(16, 2, generator=_gen(3), dtype=torch.float64)
    ref = pd.sample(flow, x_init=x1, solver=pd.solvers.TorchDiffEq(rtol=1e-9, atol=1e-9),
                    grid=pd.grids.Uniform(1)).x
    build = solver if not isinstance(solver, pd.solvers.Solver) else (lambda process, grid: solver)
    err = [(pd.sample(flow, x_init=x1, solver=build(process, pd.grids.Uniform(n)), grid=pd.grids.Uniform(n)).x
            - ref).abs().max().item() for n in (16, 64)]
    assert all(math.isfinite(e) for e in err)
    assert err[1] < err[0] and err[1] < 0.05


@pytest.mark.parametrize("noise", [0.5, 1.0])
def test_first_sde_step_out_of_t1_is_exact(noise):
    """At alpha = 0 x_1 carries no information: with the denoiser frozen the reverse SDE from t = 1 to s is
    N(alpha_s E[x_0], sigma_s^2 I) for every eta > 0 (the OU process in log-SNR has run for infinite time)."""
    process, mix = pd.LinearBlend(**UNIT), mixture(2)
    rev = pd.reverse(process, mix.model(process), noise)
    x = torch.randn(3, 2, generator=_gen(), dtype=torch.float64)
    t, s = torch.tensor(1.0, dtype=torch.float64), torch.tensor(0.3, dtype=torch.float64)
    kernel = pd.solvers.EulerMaruyama().kernel(rev, x, t, s)
    assert torch.allclose(kernel.mean, (1 - 0.3) * _mean(mix).expand(3, 2))
    assert torch.allclose(kernel.variance, torch.full((3, 2), 0.3**2, dtype=torch.float64))
    assert torch.isfinite(pd.path_log_prob(rev, pd.solvers.EulerMaruyama(), torch.stack([x, 0.5 * x, 0.2 * x]),
                                           torch.tensor([1.0, 0.5, 0.2], dtype=torch.float64))).all()


def test_frozen_denoiser_kernel_is_ddpm_at_eta_1():
    """Away from the singular end the frozen-denoiser step at eta = 1 is DDPM's posterior step."""
    process, mix = pd.LinearBlend(), mixture(2)
    rev = pd.reverse(process, mix.model(process), 1.0)
    x = torch.randn(4, 2, generator=_gen(), dtype=torch.float64)
    t, s = torch.tensor(0.7, dtype=torch.float64), torch.tensor(0.4, dtype=torch.float64)
    frozen, _ = rev.frozen_denoiser_kernel(x, t, s)
    ddpm, _ = rev.ancestral_kernel(x, t, s, 1.0)
    assert torch.allclose(frozen.mean, ddpm.mean) and torch.allclose(frozen.variance, ddpm.variance)


@pytest.mark.parametrize("dim", [2, 16])
def test_continuous_elbo_on_unit_interval(dim):
    """Finite; with the exact denoiser equal to log p_0 (McAllester); for an imperfect model below its own exact
    log-likelihood. Tolerances: 4 Monte-Carlo standard errors over repeats."""
    process, mix = pd.LinearBlend(**UNIT), mixture(dim)
    x = data(mix, 4)
    g = _gen()
    reps = torch.stack([pd.elbo(process, mix.model(process), x, num_samples=16, generator=g) for _ in range(6)])
    assert torch.isfinite(reps).all()
    se = reps.std(0) / math.sqrt(reps.shape[0])
    assert ((reps.mean(0) - mix.log_prob(x)).abs() <= 4 * se + 1e-3).all()
    wrong = mixture(dim, seed=5).model(process)                         # another mixture's exact model
    bound = torch.stack([pd.elbo(process, wrong, x, num_samples=16, generator=g) for _ in range(6)])
    exact = pd.log_likelihood(process, wrong, x, rtol=1e-7, atol=1e-7)
    assert torch.isfinite(bound).all()
    assert (bound.mean(0) <= exact + 4 * bound.std(0) / math.sqrt(bound.shape[0])).all()


def test_elbo_refuses_what_degenerates_at_a_noiseless_data_end():
    process, mix = pd.LinearBlend(**UNIT), mixture(2)
    x = data(mix, 3)
    with pytest.raises(ValueError, match="grid=None"):
        pd.elbo(process, mix.model(process), x, grid=pd.grids.Uniform(10))
    lattice = pd.Quantization(256, (-8.0, 8.0))
    centres = lattice.centers(((x + 8.0) / lattice.width).floor().clamp(0, 255), dtype=x.dtype)
    with pytest.raises(ValueError, match="GaussianDecoder"):
        pd.elbo(process, mix.model(process), centres, decoder=DiscretizedGaussian(lattice))


def test_point_mass_at_a_noiseless_time():
    process = pd.LinearBlend(**UNIT)
    x0 = torch.randn(3, 2, generator=_gen(), dtype=torch.float64)
    q = process.marginal(x0, 0.0)
    assert torch.equal(q.sample(), x0)
    assert torch.equal(q.log_prob(x0), torch.zeros(3, dtype=torch.float64))
    assert (q.log_prob(x0 + 1e-3) == -math.inf).all()
    post = process.posterior(x0, process.marginal(x0, 0.5).sample(), 0.0, 0.5)   # q(x_0 | x_t, x_0) = delta
    assert torch.equal(post.mean, x0) and (post.variance == 0).all()


@pytest.mark.parametrize("process", [pd.LinearBlend(**UNIT), pd.LinearBlend(t_min=0.0)], ids=repr)
def test_check_process_passes_with_exact_endpoints(process):
    pd.testing.check_process(process, skip=[SIMULATION, REVERSE_MARGINALS])


@pytest.mark.slow
@pytest.mark.parametrize("process", [pd.LinearBlend(t_max=1.0), pd.LinearBlend(**UNIT)], ids=repr)
def test_check_process_passes_with_exact_endpoints_all_identities(process):
    pd.testing.check_process(process)


def test_the_result_says_which_density_and_a_decoder_completes_it():
    """log_likelihood is log p_{t_min}; ``stats`` says which, and ``decoder_bound`` turns a t_min > 0 answer into
    a bound on log p_0 (exact oracle: the flow's p_{t_min} is the data's, and the bound sits below log p_0)."""
    mix = mixture(2)
    x = data(mix, 6)
    blurred = pd.LinearBlend(t_min=0.02, t_max=1.0)
    model = mix.model(blurred)
    log_p, stats = pd.log_likelihood(blurred, model, x, rtol=1e-7, atol=1e-7, return_stats=True)
    assert not stats.is_log_p0 and stats.density_time == 0.02
    g = _gen()
    reps = torch.stack([decoder_bound(blurred, model, x, num_samples=8, generator=g, rtol=1e-5, atol=1e-5)
                        for _ in range(3)])
    gap = mix.log_prob(x) - reps.mean(0)
    se = reps.std(0) / math.sqrt(reps.shape[0])
    assert gap.mean() >= -3 * se.pow(2).mean().sqrt() / math.sqrt(x.shape[0])      # below log p_0 on average
    assert (log_p - mix.log_prob(x)).abs().max() > 0.03                            # p_{t_min} is not p_0 ...
    assert (gap.abs() < 0.05).all()                                                # ... the completed bound is
    exact = pd.LinearBlend(**UNIT)
    assert torch.equal(decoder_bound(exact, mix.model(exact), x, rtol=1e-7, atol=1e-7),
                       pd.log_likelihood(exact, mix.model(exact), x, rtol=1e-7, atol=1e-7))
    vp = pd.VPSDE()
    assert not pd.log_likelihood(vp, mix.model(vp), x[:1], return_stats=True)[1].is_log_p0
