"""The project's own processes pass the whole battery of probdiff.testing.check_process.

A new built-in process joins ``probdiff.testing.BUILT_IN`` and gets every identity for free.
"""

import pyro.distributions as pyro_dist
import pytest
import torch
from hypothesis import HealthCheck, given, settings

import probdiff as pd
from probdiff.processes.gaussian import DECLARED, DERIVED
from probdiff import testing as pt
from probdiff.testing import strategies as pst


BY_ID = {fixture.id: fixture for fixture in pt.BUILT_IN}


def test_built_in_fixture_list_covers_every_built_in_process_once():
    ids = [fixture.id for fixture in pt.BUILT_IN]
    assert len(ids) == len(set(ids))
    built = {fixture.id: fixture.make() for fixture in pt.BUILT_IN}
    assert all(isinstance(process, pd.ForwardProcess) for process in built.values())
    assert {pd.VPSDE, pd.SubVPSDE, pd.VESDE, pd.CosineVP, pd.LinearBlend, pd.LinearSDE, pd.UniformChain,
            pd.AbsorbingChain, pd.Blackout, pd.MarkovChain} <= {type(process) for process in built.values()}
    # both LinearSDE shapes: variance preserving (alpha_T -> 0) and variance exploding (alpha = 1)
    vp, ve = built["LinearSDE-VP"], built["LinearSDE-VE"]
    assert float(vp.alpha(vp.t_max)) < 0.01 and float(ve.alpha(ve.t_max)) == 1.0
    assert BY_ID["VPSDE"].make() is not BY_ID["VPSDE"].make()  # a fresh instance per call


# identities that must run (not be "n/a") for every process of a family
GAUSSIAN_IDENTITIES = {pt.SHAPES, pt.BAD_INPUT, pt.CHAPMAN_KOLMOGOROV, pt.BAYES, pt.SCORE, pt.COEFFICIENTS,
                       pt.PRIOR, pt.CLOSED_FORMS, pt.SIMULATION, pt.REVERSE_MARGINALS}
CHAIN_IDENTITIES = {pt.SHAPES, pt.BAD_INPUT, pt.CHAPMAN_KOLMOGOROV, pt.BAYES, pt.GENERATOR, pt.PRIOR,
                    pt.CLOSED_FORMS, pt.SIMULATION, pt.REVERSE_MARGINALS}


def _expected_identities(process):
    return GAUSSIAN_IDENTITIES if isinstance(process, pd.GaussianProcess) else CHAIN_IDENTITIES


@pytest.mark.parametrize("fixture", pt.BUILT_IN, ids=lambda f: f.id)
def test_built_in_process_passes_check_process(fixture):
    process = fixture.make()
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
@pytest.mark.parametrize("fixture", pt.BUILT_IN, ids=lambda f: f.id)
def test_built_in_processes_pass_heavy_monte_carlo(fixture, seed):
    """Ten times the Monte-Carlo samples and four times the steps: tolerances shrink ~3x."""
    pt.check_process(fixture.make(), seed=seed, num_samples=20000, steps=400, mc_bias=0.01, batch=256)


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


# ==================================================================== closed forms against the generic path
def _scaled(cls, name, factor=1.01):
    """A subclass of ``cls`` whose ``name`` (a schedule method or a query) is off by ``factor``."""
    if name in ("marginal", "transition", "posterior", "prior"):
        def method(self, *args, **kwargs):
            d = getattr(super(sub, self), name)(*args, **kwargs)
            return self._normal(d.mean, factor * d.stddev, len(d.event_shape))
    else:
        def method(self, t):
            return factor * getattr(super(sub, self), name)(t)
    sub = type(f"Scaled_{name}", (cls,), {name: method})
    return sub


_UNDECLARED = sorted(set(DERIVED) - set(DECLARED))  # redeclaring alpha or sigma is a new schedule, not an error


@pytest.mark.parametrize("name", _UNDECLARED + ["marginal", "transition", "posterior", "prior"])
@pytest.mark.parametrize("cls", [pd.VPSDE, pd.LinearBlend], ids=lambda c: c.__name__)
def test_closed_forms_compares_every_derived_method_and_query_with_the_generic_path(cls, name):
    """No "is it overridden" test decides what is compared: a closed form off by 1 % is caught whether the
    class or its parent defines it, for every method of DERIVED that is not a declaration and every query."""
    with pytest.raises(pt.IdentityError, match=rf"{name}\b") as info:
        pt.assert_closed_forms(_scaled(cls, name)())
    assert info.value.identity is pt.CLOSED_FORMS
    # a correct process passes the same comparisons (generic paths compared with themselves pass trivially)
    assert "11 schedule methods" in pt.assert_closed_forms(cls())


def test_an_inherited_wrong_log_snr_inverse_is_caught():
    class WrongInverse(pd.VPSDE):
        def time_of_log_snr(self, log_snr):
            return super().time_of_log_snr(log_snr + 0.1)

    class Child(WrongInverse):  # inherits the wrong inverse: still compared
        pass

    for cls in (WrongInverse, Child):
        with pytest.raises(pt.IdentityError, match="time_of_log_snr"):
            pt.assert_closed_forms(cls())


@pytest.mark.parametrize("method", ["_matrix_of", "_log_matrix_of", "marginal", "transition", "posterior"])
def test_chain_closed_forms_compare_matrices_and_queries_with_the_generic_chain(method):
    class Wrong(pd.UniformChain):
        pass

    if method == "_matrix_of":
        Wrong._matrix_of = lambda self, db: pd.UniformChain._matrix_of(self, 1.1 * db)
    elif method == "_log_matrix_of":
        Wrong._log_matrix_of = lambda self, db: pd.UniformChain._log_matrix_of(self, 1.1 * db)
    else:
        def query(self, *args):
            args = list(args)
            args[-1] = torch.clamp(1.1 * torch.as_tensor(args[-1]), max=self.t_max)  # the wrong time
            return getattr(pd.UniformChain, method)(self, *args)
        setattr(Wrong, method, query)
    with pytest.raises(pt.IdentityError, match="closed forms = generic path"):
        pt.assert_closed_forms(Wrong(4))
    assert "transition matrices and 3 queries" in pt.assert_closed_forms(pd.MarkovChain(pd.UniformChain(4).generator))


# ==================================================================== issue 18: no false alarms from a collapsed grid
@pytest.mark.parametrize("sigma_min, sigma_max", [(1e-2, 100.0), (1e-3, 100.0), (1e-2, 95.0)])
def test_ve_sdes_with_large_sigma_max_pass_the_simulated_identities(sigma_min, sigma_max):
    """These failed when the simulation grid, half uniform in t and half uniform in log-SNR (the same grid
    for VE), merged into half its steps."""
    report = pt.check_process(pd.VESDE(sigma_min=sigma_min, sigma_max=sigma_max),
                              checks=[pt.REVERSE_MARGINALS, pt.SIMULATION], raise_on_failure=False)
    assert report.passed, "\n".join(r.message for r in report.failures)


@pytest.mark.parametrize("fixture", [f for f in pt.BUILT_IN if f.id in ("VESDE", "VPSDE", "LinearBlend")],
                         ids=lambda f: f.id)
def test_simulation_grid_keeps_every_step(fixture):
    from probdiff.testing._numerics import refine, simulation_grid

    process = fixture.make()
    ts = simulation_grid(process, process.t_min, process.t_max, 40)
    assert ts.numel() == 41 and bool((ts[1:] > ts[:-1]).all())
    assert float(ts[0]) == process.t_min and float(ts[-1]) == process.t_max
    fine = refine(ts)
    assert fine.numel() == 81 and torch.equal(fine[::2], ts)


def test_step_halving_estimate_matches_a_known_first_order_error():
    """Euler on dy = -y dt over [0, 1]: y_N = (1 - 1/N)^N; the estimate from N and N/2 bounds the true error."""
    import math

    from probdiff.testing._numerics import halving_error

    exact = math.exp(-1.0)
    fine, coarse = (1 - 1 / 64) ** 64, (1 - 1 / 32) ** 32
    estimate = float(halving_error(torch.tensor(fine), torch.tensor(coarse), 1.0))
    assert abs(fine - exact) <= estimate <= 3 * abs(fine - exact)


STRATEGIES = ["vp_sdes", "subvp_sdes", "ve_sdes", "cosine_vps", "linear_blends", "linear_sdes", "gaussian_processes",
              "uniform_chains", "absorbing_chains", "blackouts", "random_chains", "markov_chains", "processes"]


@pytest.mark.slow
@pytest.mark.parametrize("skip", [[pt.SIMULATION], []], ids=["documented-pattern", "every-identity"])
@pytest.mark.parametrize("name", STRATEGIES)
def test_no_false_alarms_over_200_draws_of_every_built_in_strategy(name, skip):
    """200 draws per strategy: a correct process never fails (issue 18). Both the pattern of
    docs/property_testing.rst (``check_process(process, skip=[SIMULATION])``) and every identity."""

    # linear_sdes solves its schedule numerically while drawing (seconds per draw on a loaded machine):
    # Hypothesis' too_slow health check would stop the run after a few draws, with no verdict on the library
    @settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
    @given(getattr(pst, name)())
    def run(process):
        report = pt.check_process(process, skip=skip, raise_on_failure=False)
        assert report.passed, f"{process!r}: " + "\n".join(r.message for r in report.failures)

    run()


def test_documented_pattern_on_the_linear_sde_draw_that_raised_a_false_alarm():
    """The ``linear_sdes`` draw on which the 200-draw run of the documented pattern failed: a VP-like schedule
    whose sigma_dot at t = 0.996 (3.13e-5, sigma ~ 1) the library gets right to 2.4e-6 relative (40-digit
    mpmath) while finite differences saw a derivative of order 1e-12/h: the solved table's pieces did not meet
    at its nodes (sigma jumped by about 5e-12 there). With the table re-summed by the queries' own
    quadrature the schedule is continuous and the check passes."""
    from probdiff.testing.strategies import _Product, _Smooth

    args = (0.2863633902868841, 21.875, 3.279916521867608, 6.0, 0.75, 1.0)
    process = pd.LinearSDE(_Smooth(0.5, *args, sign=-1.0), _Product(_Smooth(1.0, *args), 0.0, 1.0),
                           t_min=0.00016221912714877535, table_size=257)
    report = pt.check_process(process, skip=[pt.SIMULATION], raise_on_failure=False)
    assert report.passed, "\n".join(r.message for r in report.failures)


@settings(max_examples=4)
@given(pst.ve_sdes())
def test_documented_pattern_passes_on_ve_draws(process):
    """The pattern of docs/property_testing.rst over VE draws (7 of 20 failed before issue 18), bounded here."""
    pt.check_process(process, skip=[pt.SIMULATION])
