"""The project's own processes pass the whole battery of probdiff.testing.check_process.

A new built-in process joins ``BUILT_IN`` and gets every identity for free.
"""

import math

import pyro.distributions as pyro_dist
import pytest
import torch
from hypothesis import given, settings

import probdiff as pd
from probdiff import testing as pt
from probdiff.testing import strategies as pst


def _vp_linear_sde():
    return pd.LinearSDE(lambda t: -0.5 * (0.1 + 19.9 * t), lambda t: torch.sqrt(0.1 + 19.9 * t), table_size=257)


def _ve_linear_sde():
    rate = math.log(5000.0)
    return pd.LinearSDE(lambda t: torch.zeros_like(t), lambda t: 0.01 * torch.exp(rate * t) * math.sqrt(2 * rate),
                        t_min=0.0, sigma_init=0.01, table_size=257)


GAUSSIAN = {
    "VPSDE": pd.VPSDE,
    "SubVPSDE": pd.SubVPSDE,
    "VESDE": pd.VESDE,
    "CosineVP": pd.CosineVP,
    "LinearBlend": pd.LinearBlend,
    "LinearSDE-VP": _vp_linear_sde,
    "LinearSDE-VE": _ve_linear_sde,
}
CHAINS = {
    "UniformChain": lambda: pd.UniformChain(4),
    "AbsorbingChain": lambda: pd.AbsorbingChain(4),
    "Blackout": lambda: pd.Blackout(max_count=6),
    "MarkovChain-time-dependent": lambda: pd.MarkovChain(
        torch.tensor([[-1.0, 0.7, 0.3], [0.2, -0.5, 0.3], [1.0, 1.0, -2.0]], dtype=torch.float64),
        beta=lambda t: 0.5 + t, integrated_beta=lambda t: 0.5 * t + 0.5 * t**2, t_max=5.0),
}
BUILT_IN = {**GAUSSIAN, **CHAINS}

# identities that must run (not be "n/a") for every process of a family
GAUSSIAN_IDENTITIES = {pt.SHAPES, pt.BAD_INPUT, pt.CHAPMAN_KOLMOGOROV, pt.BAYES, pt.SCORE, pt.COEFFICIENTS,
                       pt.PRIOR, pt.CLOSED_FORMS, pt.SIMULATION, pt.REVERSE_MARGINALS}
CHAIN_IDENTITIES = {pt.SHAPES, pt.BAD_INPUT, pt.CHAPMAN_KOLMOGOROV, pt.BAYES, pt.GENERATOR, pt.PRIOR,
                    pt.CLOSED_FORMS, pt.SIMULATION, pt.REVERSE_MARGINALS}


def _expected_identities(process):
    return GAUSSIAN_IDENTITIES if isinstance(process, pd.GaussianProcess) else CHAIN_IDENTITIES


@pytest.mark.parametrize("name", sorted(BUILT_IN))
def test_built_in_process_passes_check_process(name):
    process = BUILT_IN[name]()
    report = pt.check_process(process)
    assert report.passed, str(report)
    ran = {r.identity for r in report.results if r.passed}
    assert _expected_identities(process) <= ran, str(report)


@settings(max_examples=6)
@given(pst.gaussian_processes())
def test_random_gaussian_processes_pass_deterministic_identities(process):
    pt.check_process(process, skip=[pt.SIMULATION, pt.REVERSE_MARGINALS], batch=32)


@settings(max_examples=6)
@given(pst.markov_chains())
def test_random_markov_chains_pass_every_identity(process):
    pt.check_process(process, batch=32, num_samples=1000)


@pytest.mark.slow
@settings(max_examples=20)
@given(pst.processes())
def test_random_processes_pass_every_identity(process):
    pt.check_process(process)


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("name", sorted(BUILT_IN))
def test_built_in_processes_pass_heavy_monte_carlo(name, seed):
    """Ten times the Monte-Carlo samples and four times the steps: tolerances shrink ~3x."""
    pt.check_process(BUILT_IN[name](), seed=seed, num_samples=20000, steps=400, mc_bias=0.01, batch=256)


def test_float32_inputs_pass_with_dtype_tolerances():
    pt.check_process(pd.VPSDE(), dtype=torch.float32, skip=[pt.SIMULATION, pt.REVERSE_MARGINALS])


def test_report_lists_every_identity_and_options_select_checks():
    report = pt.check_process(pd.VESDE(), checks=[pt.BAYES, pt.PRIOR])
    assert [r.identity for r in report.results] == [pt.BAYES, pt.PRIOR]
    assert "Bayes identity" in str(report)
    report = pt.check_process(pd.VESDE(), skip=[pt.SIMULATION, pt.REVERSE_MARGINALS])
    assert pt.SIMULATION not in {r.identity for r in report.results}
    with pytest.raises(ValueError, match="unknown check options"):
        pt.check_process(pd.VESDE(), tolerance=1.0)
    with pytest.raises(ValueError, match="checks must be Identity"):
        pt.check_process(pd.VESDE(), checks=["bayes"])
    with pytest.raises(ValueError, match="process must be a ForwardProcess"):
        pt.check_process(object())


def test_explicit_inputs_of_an_assert_function():
    p = pd.VPSDE()
    x0 = torch.linspace(-1, 1, 6, dtype=torch.float64).reshape(3, 2)
    pt.assert_bayes(p, x0, torch.tensor([1e-5, 0.3, 0.5], dtype=torch.float64), 1.0)
    pt.assert_score(p, x0, t=0.7)
    with pytest.raises(ValueError, match="s must be < t"):
        pt.assert_bayes(p, x0, 0.5, torch.tensor([0.6, 0.5, 0.7], dtype=torch.float64))


def test_same_seed_same_verdict_and_inputs():
    p = pd.CosineVP()
    a = pt.draw_inputs(p, pt.CheckConfig(seed=4))
    b = pt.draw_inputs(p, pt.CheckConfig(seed=4))
    assert torch.equal(a.x0, b.x0) and torch.equal(a.s, b.s) and torch.equal(a.t, b.t)


class _DirectOU(pd.ForwardProcess):
    """An Ornstein-Uhlenbeck process declared directly on ForwardProcess (not a GaussianProcess):
    a user's new family, which gets the generic checks."""

    def __init__(self):
        super().__init__(1e-2, 6.0)

    def _normal(self, loc, var, x):
        return pyro_dist.Normal(loc, var.sqrt().reshape(-1, *([1] * (x.dim() - 1))).expand_as(loc)).to_event(x.dim() - 1)

    def marginal(self, x0, t):
        self.check_data("x0", x0)
        t = self.check_time(t, x0)
        a = torch.exp(-t).reshape(-1, *([1] * (x0.dim() - 1)))
        return self._normal(a * x0, -torch.expm1(-2 * t), x0)

    def transition(self, xs, s, t):
        self.check_data("xs", xs)
        s, t = self.check_times(s, t, xs)
        a = torch.exp(-(t - s)).reshape(-1, *([1] * (xs.dim() - 1)))
        return self._normal(a * xs, -torch.expm1(-2 * (t - s)), xs)

    def posterior(self, x0, xt, s, t):
        self.check_data("x0", x0)
        self.check_data("xt", xt, like=x0)
        s, t = self.check_times(s, t, x0)
        shape = (-1, *([1] * (x0.dim() - 1)))
        vs, vts = -torch.expm1(-2 * s), -torch.expm1(-2 * (t - s))
        a_s, a_ts = torch.exp(-s), torch.exp(-(t - s))
        var = 1 / (1 / vs + a_ts**2 / vts)
        loc = var.reshape(shape) * (a_s.reshape(shape) * x0 / vs.reshape(shape)
                                    + a_ts.reshape(shape) * xt / vts.reshape(shape))
        return self._normal(loc, var, x0)

    def prior(self, event_shape, *, device=None, dtype=None):
        loc = torch.zeros(event_shape, device=device, dtype=dtype or torch.get_default_dtype())
        return pyro_dist.Normal(loc, torch.ones_like(loc)).to_event(len(event_shape))


def test_a_new_family_gets_the_generic_checks_and_can_register_its_own():
    report = pt.check_process(_DirectOU())
    ran = {r.identity for r in report.results if r.passed}
    assert ran == {pt.SHAPES, pt.BAD_INPUT, pt.CHAPMAN_KOLMOGOROV, pt.BAYES, pt.PRIOR}, str(report)
    assert "Monte Carlo" in next(r.message for r in report.results if r.identity is pt.CHAPMAN_KOLMOGOROV)
    with pytest.raises(ValueError, match="no 'score target' check is registered for _DirectOU"):
        pt.assert_score(_DirectOU())

    calls = []

    @pt.SIMULATION.register(_DirectOU)
    def _simulate(process, inputs, config):
        calls.append(inputs.x0.shape)
        return "registered by the test"

    report = pt.check_process(_DirectOU(), checks=[pt.SIMULATION])
    assert report.passed and calls and report.results[0].message == "registered by the test"


def test_generic_monte_carlo_chapman_kolmogorov_catches_a_transition_ignoring_s():
    class Broken(_DirectOU):
        def transition(self, xs, s, t):
            return super().transition(xs, torch.full_like(torch.as_tensor(s, dtype=xs.dtype), self.t_min), t)

    with pytest.raises(AssertionError, match="Chapman-Kolmogorov"):
        pt.assert_chapman_kolmogorov(Broken())
    with pytest.raises(AssertionError, match="bad input rejected"):  # s is never looked at, not even validated
        pt.check_process(Broken())
