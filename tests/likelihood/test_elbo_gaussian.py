"""Gaussian ELBOs against the mixture oracle, Gibbs' inequality, grid refinement, decoders (THEORY.md §4)."""

import math

import pytest
import torch
from scipy import stats

import probdiff as pd
from probdiff.likelihood import DiscretizedGaussian, GaussianDecoder, Quantization
from probdiff import LogSNRTime as UniformLogSNR, PhysicalTime as UniformTime
from probdiff.likelihood import DiscretizedNormal
from probdiff.oracles import GaussianMixture

from shared import PROCESSES, data, mixture


def _per_point(values, reps, n):
    """Mean and standard error per data point from ``reps`` independent copies of ``n`` points."""
    v = values.reshape(reps, n)
    return v.mean(0), v.std(0) / math.sqrt(reps)


# ---------------------------------------------------------------- McAllester: oracle bound = log p
@pytest.mark.parametrize("name", sorted(PROCESSES))
def test_oracle_continuous_elbo_is_log_likelihood(name):
    """With the exact denoiser the continuous bound equals log p_0(x) up to the prior and decoder gaps,
    both far below the Monte-Carlo error here (alpha_{t_max}^2 and sigma_{t_min}^2 / alpha_{t_min}^2)."""
    process, mix = PROCESSES[name](), mixture(2)
    x = data(mix, 4)
    reps = 400
    values = pd.elbo(process, mix.model(process), x.repeat(reps, 1), num_samples=4,
                     generator=torch.Generator().manual_seed(0))
    mean, se = _per_point(values, reps, 4)
    z = (mean - mix.log_prob(x)) / se
    assert z.abs().max() < 3.5, z


def test_oracle_continuous_elbo_16d():
    process, mix = pd.VPSDE(), mixture(16, seed=2)
    x = data(mix, 2)
    reps = 300
    values = pd.elbo(process, mix.model(process), x.repeat(reps, 1), num_samples=8,
                     generator=torch.Generator().manual_seed(1))
    mean, se = _per_point(values, reps, 2)
    assert ((mean - mix.log_prob(x)).abs() < 3.5 * se).all()


@pytest.mark.parametrize("sampler", [UniformLogSNR(), UniformTime()])
def test_time_samplers_agree(sampler):
    """Both importance samplers of t are unbiased for the same integral."""
    process, mix = pd.VESDE(), mixture(2, seed=3)
    x = data(mix, 2)
    reps = 400
    values = pd.elbo(process, mix.model(process), x.repeat(reps, 1), num_samples=4, sampler=sampler,
                     generator=torch.Generator().manual_seed(2))
    mean, se = _per_point(values, reps, 2)
    assert ((mean - mix.log_prob(x)).abs() < 3.5 * se).all()


def test_elbo_is_differentiable():
    process = pd.VPSDE()
    net = torch.nn.Linear(2, 2).double()
    model = pd.EpsilonModel(lambda x, t: net(x), process)
    x = torch.randn(8, 2, dtype=torch.float64)
    loss = -pd.elbo(process, model, x, num_samples=2).mean()
    loss.backward()
    assert net.weight.grad is not None and torch.isfinite(net.weight.grad).all()


# ---------------------------------------------------------------- Gibbs' inequality for wrong models
def test_wrong_models_stay_below_and_margin_grows():
    """E_p[elbo_q] <= E_p[log q] = E_p[log p] - KL(p||q): the data-averaged bound of a model whose means
    are shifted by delta is below the true average log-density, by a margin growing with delta."""
    process, mix = pd.VPSDE(), mixture(2, seed=5)
    x = data(mix, 400, seed=6)
    log_p = mix.log_prob(x)
    gaps = []   # per point elbo - log p, same noise for every model (common random numbers)
    for delta in (0.0, 0.5, 1.0):
        wrong = GaussianMixture(mix.weights, mix.means + delta, mix.covs)
        values = pd.elbo(process, wrong.model(process), x, num_samples=16, generator=torch.Generator().manual_seed(7))
        gaps.append(values - log_p)
    mean_se = lambda v: (float(v.mean()), float(v.std() / math.sqrt(v.shape[0])))  # noqa: E731
    m0, s0 = mean_se(gaps[0])
    m1, s1 = mean_se(gaps[1])
    m21, s21 = mean_se(gaps[2] - gaps[1])
    assert abs(m0) < 3.5 * s0          # delta = 0 is the oracle itself
    assert m1 < -3 * s1                # strictly below the truth
    assert m21 < -3 * s21              # and further below for the larger perturbation


# ---------------------------------------------------------------- discrete time
def test_one_step_bound_closed_form():
    """Grid of one step: -KL_prior - E ½(e^{λ_min} - e^{λ_max})|x0 - D(x_T, T)|^2 + decoder, computed by hand
    with the same noise draws."""
    process, mix = pd.VESDE(), mixture(2, seed=8)
    model = mix.model(process)
    x = data(mix, 5)
    value = pd.elbo(process, model, x, grid=pd.grids.Uniform(1), generator=torch.Generator().manual_seed(3))
    eps = torch.randn(x.shape, generator=torch.Generator().manual_seed(3), dtype=x.dtype)
    t_max, t_min = (torch.tensor(t, dtype=torch.float64) for t in (process.t_max, process.t_min))
    s_max, s_min = float(process.sigma(t_max)), float(process.sigma(t_min))
    xt = x + s_max * eps                               # VE: alpha = 1
    sq = (x - model.denoise(xt, process.t_max)).pow(2).sum(1)
    kl_step = 0.5 * (s_min**-2 - s_max**-2) * sq
    kl_prior = x.pow(2).sum(1) / (2 * s_max**2)        # N(x, s^2) vs N(0, s^2)
    decoder = -0.5 * 2 * (math.log(2 * math.pi * s_min**2) + 1)
    assert torch.allclose(value, decoder - kl_prior - kl_step, rtol=1e-10)


@pytest.mark.parametrize("name", ["vp", "ve"])
def test_discrete_gap_shrinks_as_grid_refines(name):
    process, mix = PROCESSES[name](), mixture(2, seed=9)
    x = data(mix, 3)
    truth = mix.log_prob(x).mean()
    gaps, errs = [], []
    for steps in (4, 16, 64, 256):
        values = pd.elbo(process, mix.model(process), x.repeat(20, 1), grid=pd.grids.Uniform(steps),
                         num_samples=4, generator=torch.Generator().manual_seed(steps))
        gaps.append(float(truth - values.mean()))
        errs.append(float(values.std() / math.sqrt(values.shape[0])))
    for i in range(3):
        assert gaps[i + 1] < gaps[i] - 3 * math.hypot(errs[i], errs[i + 1]), (gaps, errs)
    assert gaps[-1] > -3 * errs[-1]  # still a lower bound


# ---------------------------------------------------------------- decoders
def test_discretized_normal_is_normalised_and_matches_scipy():
    q = Quantization(8, (-1.0, 1.0))
    levels = torch.arange(8)
    centres = q.centers(levels, dtype=torch.float64)
    loc, scale = torch.tensor(0.3, dtype=torch.float64), torch.tensor(0.4, dtype=torch.float64)
    d = DiscretizedNormal(loc.expand(8), scale.expand(8), q)
    logp = d.log_prob(centres)
    assert torch.allclose(logp.exp().sum(), torch.tensor(1.0, dtype=torch.float64), atol=1e-12)
    edges = [-math.inf] + [-1.0 + 0.25 * k for k in range(1, 8)] + [math.inf]
    expected = [math.log(stats.norm.cdf(edges[k + 1], 0.3, 0.4) - stats.norm.cdf(edges[k], 0.3, 0.4)) for k in range(8)]
    assert torch.allclose(logp, torch.tensor(expected, dtype=torch.float64), rtol=1e-9)
    # far tails stay finite and accurate (log-space evaluation)
    far = DiscretizedNormal(torch.tensor([40.0], dtype=torch.float64), torch.tensor([0.01], dtype=torch.float64), q)
    lp = far.log_prob(centres[:1])
    assert torch.isfinite(lp).all()
    assert torch.allclose(lp, torch.tensor([stats.norm.logcdf(-0.75, 40.0, 0.01)], dtype=torch.float64), rtol=1e-9)


def test_gaussian_decoder_closed_form_matches_monte_carlo():
    from probdiff.likelihood import Decoder
    process = pd.VESDE(sigma_min=0.05)
    x = torch.randn(4, 3, dtype=torch.float64)
    closed = GaussianDecoder().expected_log_prob(process, x)
    mc = Decoder.expected_log_prob(GaussianDecoder(), process, x, num_samples=4000,
                                   generator=torch.Generator().manual_seed(0))
    assert torch.allclose(closed, mc, atol=0.1)
    assert torch.allclose(closed, torch.full_like(closed, -1.5 * math.log(2 * math.pi * math.e * 0.05**2)))


def test_discretized_elbo_of_empirical_data_is_log_one_over_n():
    """K-level data that are N distinct lattice points, with their exact (empirical) denoiser: the reverse
    chain is exact and the decoder puts mass ~1 on the right bin (sigma/alpha at t_min << bin width), so the
    lossless bound is log P(x) = log(1/N) up to the tiny prior gap (THEORY.md §4, McAllester)."""
    q = Quantization(64, (-4.0, 4.0))
    g = torch.Generator().manual_seed(11)
    levels = torch.stack([torch.randperm(64, generator=g)[:6] for _ in range(2)], 1)   # 6 distinct points in 2-D
    x = q.centers(levels, dtype=torch.float64)
    process = pd.VPSDE(beta_max=40.0)
    model = pd.oracles.Empirical(x).model(process)
    values = pd.elbo(process, model, x.repeat(100, 1), decoder=DiscretizedGaussian(q), num_samples=2,
                     generator=torch.Generator().manual_seed(4))
    mean, se = _per_point(values, 100, 6)   # single draws may exceed 0; the expectation may not
    assert ((mean - math.log(1 / 6)).abs() < 3.5 * se + 1e-3).all(), (mean, se)
    # the same data scored with the continuous decoder is no log-probability (far above 0)
    assert pd.elbo(process, model, x, num_samples=64, generator=torch.Generator().manual_seed(5)).mean() > 0


def test_bad_arguments():
    process, mix = pd.VPSDE(), mixture(2)
    model, x = mix.model(process), data(mix, 2)
    with pytest.raises(ValueError, match="num_samples"):
        pd.elbo(process, model, x, num_samples=0)
    with pytest.raises(ValueError, match="decoder"):
        pd.elbo(process, model, x, decoder="gaussian")
    with pytest.raises(ValueError, match="sampler"):
        pd.elbo(process, model, x, sampler="logsnr")
    with pytest.raises(ValueError, match="grid"):
        pd.elbo(process, model, x, grid=10)
    with pytest.raises(ValueError, match="bin centres"):
        pd.elbo(process, model, x, decoder=DiscretizedGaussian(Quantization(4, (-1, 1))))
    with pytest.raises(ValueError, match="model"):
        pd.elbo(process, object(), x)
