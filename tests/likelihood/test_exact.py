"""Exact log-likelihood by the probability-flow ODE against the Gaussian-mixture oracle (THEORY.md §4)."""

import math

import pytest
import torch
from hypothesis import given, strategies as st

import probdiff as pd
from probdiff.likelihood import LogSNRTime, PhysicalTime, ProbeKind
from probdiff.likelihood import probe_forms
from shared import PROCESSES, data, mixture

# ---------------------------------------------------------------- exact trace against the oracle
@pytest.mark.parametrize("dim", [2, 16])
@pytest.mark.parametrize("name", sorted(PROCESSES))
def test_exact_trace_matches_oracle(name, dim):
    """log p_{t_min}(x) within 1e-3 nats/dim. The ODE ends at the prior, not at the true p_{t_max}; the
    oracle's exact log p_{t_max} at the ODE's endpoint replaces the prior term (issue 4)."""
    process, mix = PROCESSES[name](), mixture(dim)
    x = data(mix, 12)
    log_p, stats = pd.log_likelihood(process, mix.model(process), x, return_stats=True)
    truth = mix.marginal_log_prob(process, x, process.t_min)
    corrected = stats.delta_log_prob + mix.marginal_log_prob(process, stats.endpoint, process.t_max)
    assert (corrected - truth).abs().max() / dim < 1e-3
    # the returned value is the model's density with the prior as reference
    prior = process.prior((dim,)).log_prob(stats.endpoint)
    assert torch.allclose(log_p, stats.delta_log_prob + prior)
    assert stats.nfe > 0


def test_prior_matching_process_needs_no_correction():
    """VP with beta_max = 40: alpha_{t_max} ~ 4e-5, so prior and p_{t_max} agree and log p is direct."""
    process, mix = pd.VPSDE(beta_max=40.0), mixture(2)
    x = data(mix, 12)
    log_p = pd.log_likelihood(process, mix.model(process), x)
    truth = mix.marginal_log_prob(process, x, process.t_min)
    assert (log_p - truth).abs().max() / 2 < 1e-3


def test_time_variable_changes_cost_not_answer():
    process, mix = pd.VPSDE(), mixture(2, seed=3)
    x = data(mix, 8)
    a = pd.log_likelihood(process, mix.model(process), x, time=PhysicalTime())
    b = pd.log_likelihood(process, mix.model(process), x, time=LogSNRTime())
    assert (a - b).abs().max() / 2 < 1e-3


@pytest.mark.parametrize("param", [pd.DenoiserModel, pd.EpsilonModel, pd.ScoreModel, pd.VelocityModel])
def test_every_parameterisation_under_no_grad(param):
    """A network in any parameterisation (here: the oracle's own output in that parameterisation) gives
    the oracle's likelihood, also when the caller disabled gradients."""
    process, mix = pd.SubVPSDE(), mixture(2, seed=4)
    oracle = mix.model(process)
    native = {pd.DenoiserModel: oracle.denoise, pd.EpsilonModel: oracle.epsilon,
              pd.ScoreModel: oracle.score, pd.VelocityModel: oracle.velocity}[param]
    model = param(lambda x, t: native(x, t), process)
    x = data(mix, 6)
    with torch.no_grad():
        log_p, stats = pd.log_likelihood(process, model, x, return_stats=True)
    truth = mix.marginal_log_prob(process, x, process.t_min)
    corrected = stats.delta_log_prob + mix.marginal_log_prob(process, stats.endpoint, process.t_max)
    assert not log_p.requires_grad
    assert (corrected - truth).abs().max() / 2 < 1e-3


def test_float32():
    process, mix = pd.VESDE(), mixture(2, seed=5)
    x = data(mix, 8)
    lp64 = pd.log_likelihood(process, mix.model(process), x)
    mix32 = mix.to(torch.float32)
    lp32 = pd.log_likelihood(process, mix32.model(process), x.float())
    assert lp32.dtype == torch.float32
    assert (lp32.double() - lp64).abs().max() / 2 < 1e-2


def test_nfe_counts_model_evaluations():
    process, mix = pd.VPSDE(), mixture(2, seed=6)
    oracle, calls = mix.model(process), []
    model = pd.ScoreModel(lambda x, t: (calls.append(1), oracle.score(x, t))[1], process)
    _, stats = pd.log_likelihood(process, model, data(mix, 4), return_stats=True)
    assert stats.nfe == len(calls)  # one batched model call per right-hand side (all basis vectors at once)


# ---------------------------------------------------------------- divergence estimators
def _small_net(dim, seed=0):
    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Linear(dim, 16), torch.nn.Tanh(), torch.nn.Linear(16, dim)).double()
    return lambda x: net(x.reshape(x.shape[0], -1)).reshape(x.shape)


@pytest.mark.parametrize("chunk", [1, 3, None])
def test_exact_trace_equals_jacobian_trace(chunk):
    """Against torch.autograd.functional.jacobian, per sample, with event shape (2, 3)."""
    fn = _small_net(6)
    x = torch.randn(5, 2, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    field, div = pd.ExactTrace(chunk_size=chunk)(fn, x, None)
    expected = torch.stack([torch.autograd.functional.jacobian(lambda v: fn(v[None])[0], xi).reshape(6, 6).trace()
                            for xi in x])
    assert torch.allclose(div, expected, atol=1e-12)
    assert torch.allclose(field, fn(x))


@pytest.mark.parametrize("kind", list(ProbeKind))
def test_hutchinson_divergence_unbiased(kind):
    fn = _small_net(6, seed=1)
    x = torch.randn(3, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    _, exact = pd.ExactTrace()(fn, x, None)
    probes = kind.draw((4000, *x.shape), like=x, generator=torch.Generator().manual_seed(2))
    _, forms = probe_forms(fn, x, probes)
    se = forms.std(0) / math.sqrt(forms.shape[0])
    assert ((forms.mean(0) - exact).abs() < 3 * se).all()


def test_hutchinson_averages_its_probes():
    """Hutchinson(P) is the mean of P single-probe estimates: its error shrinks like 1/sqrt(P)."""
    fn = _small_net(6, seed=3)
    x = torch.randn(4, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    _, exact = pd.ExactTrace()(fn, x, None)
    trace = pd.Hutchinson(num_probes=5000, kind=ProbeKind.GAUSSIAN)
    probes = trace.prepare(x, torch.Generator().manual_seed(4))
    _, est = trace(fn, x, probes)
    _, forms = probe_forms(fn, x, probes)
    assert torch.allclose(est, forms.mean(0))
    assert ((est - exact).abs() < 3 * forms.std(0) / math.sqrt(5000)).all()


@pytest.mark.parametrize("kind", ["rademacher", "gaussian"])
def test_hutchinson_log_likelihood_unbiased(kind):
    """Each copy of a point gets its own fixed probe; the mean over copies is within 3 SE of the exact value."""
    process, mix = pd.VESDE(), mixture(2, seed=7)
    x = data(mix, 1).repeat(200, 1)
    exact = pd.log_likelihood(process, mix.model(process), x[:1])
    est = pd.log_likelihood(process, mix.model(process), x, trace=pd.Hutchinson(kind=kind),
                            generator=torch.Generator().manual_seed(8))
    se = est.std() / math.sqrt(est.shape[0])
    assert se > 0
    assert (est.mean() - exact[0]).abs() < 3 * se


def test_hutchinson_probes_reproducible_and_averaged():
    process, mix = pd.VESDE(), mixture(2, seed=7)
    x = data(mix, 3)
    run = lambda p: pd.log_likelihood(process, mix.model(process), x, trace=pd.Hutchinson(num_probes=p),
                                      generator=torch.Generator().manual_seed(0))
    assert torch.equal(run(2), run(2))
    assert not torch.equal(run(1), run(2))


# ---------------------------------------------------------------- time variable
@given(st.floats(min_value=-9.0, max_value=13.0))
def test_log_snr_time_inverts(lam):
    process = pd.VPSDE()
    tv = LogSNRTime()
    lo, hi = tv.bounds(process)
    u = torch.tensor(-lam, dtype=torch.float64).clamp(lo, hi)
    t = tv.time(process, u)
    assert torch.allclose(-process.log_snr(t), u, atol=1e-8)
    # dt/du against a central finite difference of the inverse
    h = 1e-5
    fd = (tv.time(process, u + h) - tv.time(process, u - h)) / (2 * h)
    if lo + h < float(u) < hi - h:
        assert torch.allclose(tv.dt_du(process, t), fd, rtol=1e-4)


# ---------------------------------------------------------------- bad input
@pytest.mark.parametrize("kwargs, match", [
    ({"trace": "exact"}, "trace"),
    ({"time": "logsnr"}, "time"),
    ({"method": "rk99"}, "method"),
    ({"rtol": 0.0}, "rtol"),
    ({"atol": -1.0}, "atol"),
])
def test_bad_arguments(kwargs, match):
    process, mix = pd.VPSDE(), mixture(2)
    with pytest.raises(ValueError, match=match):
        pd.log_likelihood(process, mix.model(process), data(mix, 2), **kwargs)


def test_bad_data_and_objects():
    process, mix = pd.VPSDE(), mixture(2)
    model = mix.model(process)
    with pytest.raises(ValueError, match="x"):
        pd.log_likelihood(process, model, torch.tensor([1.0, 2.0], dtype=torch.float64))
    with pytest.raises(ValueError, match="x"):
        pd.log_likelihood(process, model, torch.tensor([[float("nan"), 0.0]], dtype=torch.float64))
    with pytest.raises(ValueError, match="process"):
        pd.log_likelihood(object(), model, data(mix, 2))
    with pytest.raises(ValueError, match="kind"):
        pd.Hutchinson(kind="sobol")
    with pytest.raises(ValueError, match="num_probes"):
        pd.Hutchinson(num_probes=0)
    with pytest.raises(ValueError, match="chunk_size"):
        pd.ExactTrace(chunk_size=0)
    with pytest.raises(ValueError, match="log-SNR"):
        LogSNRTime().bounds(pd.LinearBlend(t_max=1.0))
