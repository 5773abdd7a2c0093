"""The strategies and helpers of probdiff.testing produce what they promise."""

import math

import pytest
import scipy.linalg
import scipy.special
import torch
from hypothesis import find, given, settings
from hypothesis import strategies as st

import probdiff as pd
from probdiff import testing as pt
from probdiff.testing import strategies as pst
from probdiff.testing._numerics import derivative, simulation_grid


def test_profile_is_deterministic_without_deadline():
    assert pt.PROFILE_SETTINGS["derandomize"] is True and pt.PROFILE_SETTINGS["deadline"] is None
    name = pt.register_profile("probdiff-test-copy", load=False, max_examples=3)
    profile = settings.get_profile(name)
    assert profile.derandomize and profile.deadline is None and profile.max_examples == 3
    assert settings.default.derandomize  # tests/conftest.py loaded the profile


@settings(max_examples=25)
@given(pst.gaussian_processes())
def test_gaussian_processes_have_a_converged_prior(process):
    # prior N(0, sigma_T^2) vs q(x_T | x_0) = N(alpha_T x_0, sigma_T^2): KL = alpha_T^2 x_0^2 / (2 sigma_T^2)
    # <= exp(lambda_T) / 2 for |x_0| <= 1, the documented bound of 0.01 nats per element
    lam = process.log_snr(torch.tensor(process.t_max, dtype=torch.float64))
    assert math.exp(float(lam)) / 2 <= 0.01


@settings(max_examples=3)  # each LinearSDE solves its schedule with torchdiffeq (~1-3 s on a loaded CI core)
@given(pst.linear_sdes())
def test_linear_sdes_have_positive_diffusion_and_decreasing_log_snr(process):
    t = torch.linspace(process.t_min, process.t_max, 50, dtype=torch.float64)
    assert bool((process.diffusion(t[1:]) > 0).all())
    assert bool((process.log_snr(t[1:]) < process.log_snr(t[:-1])).all())


@settings(max_examples=40)
@given(pst.processes(), st.data())
def test_times_and_pairs_lie_in_the_domain(process, data):
    t = data.draw(pst.times(process))
    assert process.t_min <= t <= process.t_max
    s, t = data.draw(pst.time_pairs(process, min_gap=1e-6))
    assert process.t_min <= s < t <= process.t_max
    assert t - s >= 1e-6 * (process.t_max - process.t_min) * (1 - 1e-6)


def test_times_reach_both_ends_and_their_neighbourhoods():
    p = pd.VPSDE()
    assert find(pst.times(p), lambda t: t == p.t_min) == p.t_min
    assert find(pst.times(p), lambda t: t == p.t_max) == p.t_max
    near_top = find(pst.times(p), lambda t: 0 < p.t_max - t < 1e-6)
    near_bottom = find(pst.times(p), lambda t: 0 < t - p.t_min < 1e-6)
    assert near_top < p.t_max and near_bottom > p.t_min
    close = find(pst.time_pairs(p), lambda st_: st_[1] - st_[0] < 1e-5)
    assert close[0] < close[1]
    assert find(pst.time_pairs(p), lambda st_: st_ == (p.t_min, p.t_max)) == (p.t_min, p.t_max)


@given(pst.data_shapes(max_batch=5, max_event_dims=2, max_side=3))
def test_data_shapes(shape):
    assert 2 <= len(shape) <= 3 and 1 <= shape[0] <= 5 and all(1 <= n <= 3 for n in shape[1:])


@given(pst.data_shapes(), st.data())
def test_tensors_and_process_data(shape, data):
    x = data.draw(pst.tensors(shape, low=-2.0, high=3.0))
    assert x.shape == shape and x.dtype == torch.float64 and bool((x >= -2).all() & (x <= 3).all())
    chain = pd.UniformChain(5)
    states = data.draw(pst.process_data(chain, shape))
    assert states.shape == shape and states.dtype == torch.long and int(states.min()) >= 0 and int(states.max()) < 5
    y = data.draw(pst.process_data(pd.VESDE(), shape))
    assert bool((y.abs() <= 1).all())


@settings(max_examples=25)
@given(st.integers(1, 4).flatmap(lambda d: st.tuples(st.just(d), pst.gaussian_mixtures(d, max_condition=20.0))))
def test_gaussian_mixtures_are_well_conditioned(args):
    d, mix = args
    assert mix.dim == d
    assert abs(float(mix.weights.sum()) - 1) < 1e-12 and float(mix.weights.min()) > 0.05 / (0.05 + 3.0)
    eig = torch.linalg.eigvalsh(mix.covs)
    assert float(eig.min()) >= 0.05 * (1 - 1e-9) and float(eig.max()) <= 1.0 + 1e-9
    assert float((eig.max(-1).values / eig.min(-1).values).max()) <= 20.0 * (1 + 1e-9)
    assert bool((mix.means.abs() <= 1).all())


@given(pst.empirical_datasets((3,), max_points=7))
def test_empirical_datasets(emp):
    assert 1 <= len(emp) <= 7 and emp.event_shape == (3,) and bool((emp.data.abs() <= 1).all())


def _expm_rows(chain):
    """P(t_min, t_max) = expm((B(t_max) - B(t_min)) R) by scipy."""
    b = float(chain.integrated_beta(torch.tensor(chain.t_max, dtype=torch.float64))
              - chain.integrated_beta(torch.tensor(chain.t_min, dtype=torch.float64)))
    return scipy.linalg.expm(b * chain.generator.numpy())


@settings(max_examples=25)
@given(pst.markov_chains(max_states=5))
def test_markov_chains_are_valid_and_forget_their_start(chain):
    R = chain.generator
    off = R - torch.diag(torch.diagonal(R))
    assert bool((off >= 0).all()) and float(R.sum(1).abs().max()) < 1e-9
    assert 2 <= chain.num_states <= 5
    # every row of P(t_min, t_max) is close to the prior: KL <= 0.01 nats, by scipy
    P = _expm_rows(chain)
    prior = chain.prior_probs(dtype=torch.float64).numpy()
    kl = scipy.special.rel_entr(P, prior[None, :]).sum(1)
    assert float(kl.max()) <= 0.01


def test_draw_inputs_cover_the_domain():
    p = pd.LinearBlend()
    s, t = pt.draw_time_pairs(p, 64, torch.Generator().manual_seed(0))
    assert bool((s < t).all()) and float(s.min()) == p.t_min and float(t.max()) == p.t_max
    assert float((t - s).min()) < 1e-5
    times = pt.draw_times(p, 32, torch.Generator().manual_seed(0))
    assert p.t_min in times.tolist() and p.t_max in times.tolist()
    assert bool((times >= p.t_min).all() & (times <= p.t_max).all())


@pytest.mark.parametrize("fn, dfn, t, lo, hi", [
    (torch.sin, torch.cos, 0.3, 0.0, 1.0),
    (torch.log, lambda t: 1 / t, 1e-5, 1e-5, 1.0),                       # one-sided, next to a singularity
    (lambda t: torch.log1p(-t), lambda t: -1 / (1 - t), 0.999, 1e-3, 0.999),
    (lambda t: torch.exp(17 * t), lambda t: 17 * torch.exp(17 * t), 0.5, 0.0, 1.0),
])
def test_ridders_derivative_matches_closed_forms(fn, dfn, t, lo, hi):
    t = torch.tensor([t], dtype=torch.float64)
    value, err = derivative(fn, t, lo, hi)
    exact = dfn(t)
    assert float((value - exact).abs()) <= 1e-7 * float(exact.abs())
    assert float(err) <= 1e-6 * float(exact.abs())


def test_simulation_grid_is_increasing_with_endpoints_and_requested_times():
    p = pd.VPSDE()
    ts = simulation_grid(p, p.t_min, p.t_max, 40, include=[0.5])
    assert float(ts[0]) == p.t_min and float(ts[-1]) == p.t_max and 0.5 in ts.tolist()
    assert bool((ts[1:] > ts[:-1]).all())
    # log-SNR steps are bounded: no step changes lambda by more than twice the uniform share
    lam = p.log_snr(ts)
    assert float((lam[:-1] - lam[1:]).max()) <= 2 * float(lam[0] - lam[-1]) / 20
