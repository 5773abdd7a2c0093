"""Bad input raises ValueError naming the argument; validation can be switched off; registries dispatch
to the most specific class."""

from __future__ import annotations

import math

import pytest
import torch

import probdiff as pd
from probdiff.oracles import Empirical, GaussianMixture

F64 = torch.float64

PROCESSES = {
    "VPSDE": lambda **kw: pd.VPSDE(**kw),
    "SubVPSDE": lambda **kw: pd.SubVPSDE(**kw),
    "VESDE": lambda **kw: pd.VESDE(**kw),
    "CosineVP": lambda **kw: pd.CosineVP(**kw),
    "LinearBlend": lambda **kw: pd.LinearBlend(**kw),
}


# ==================================================================== process queries
@pytest.mark.parametrize("name", PROCESSES)
def test_time_outside_domain(name):
    p = PROCESSES[name]()
    x = torch.randn(3, 2)
    below, above = p.t_min - 0.01, p.t_max + 0.01
    for bad in (below, above, torch.tensor([0.5, above, 0.5])):
        with pytest.raises(ValueError, match=r"t must lie in \[t_min, t_max\]"):
            p.marginal(x, bad)
    with pytest.raises(ValueError, match=r"^s must lie"):
        p.transition(x, below, 0.5)
    with pytest.raises(ValueError, match=r"^t must lie"):
        p.transition(x, 0.5, above)
    with pytest.raises(ValueError, match=r"^t must lie"):
        p.posterior(x, x, 0.5, above)
    # the ends themselves are accepted, in float32 too (rounding of the dtype is tolerated)
    p.marginal(x, torch.tensor([p.t_min, p.t_max], dtype=torch.float32).repeat(2)[:3])


@pytest.mark.parametrize("name", PROCESSES)
def test_non_finite_inputs(name):
    p = PROCESSES[name]()
    x = torch.randn(2, 3)
    for bad in (float("nan"), float("inf")):
        with pytest.raises(ValueError, match="^t must be finite"):
            p.marginal(x, bad)
        x_bad = x.clone()
        x_bad[1, 2] = bad
        with pytest.raises(ValueError, match="^x0 must be finite"):
            p.marginal(x_bad, 0.5)
        with pytest.raises(ValueError, match="^xs must be finite"):
            p.transition(x_bad, 0.3, 0.5)
        with pytest.raises(ValueError, match="^xt must be finite"):
            p.posterior(x, x_bad, 0.3, 0.5)


@pytest.mark.parametrize("name", PROCESSES)
def test_mismatched_shapes(name):
    p = PROCESSES[name]()
    x = torch.randn(3, 2)
    with pytest.raises(ValueError, match=r"^t must be a scalar or have shape \(batch,\) = \(3,\)"):
        p.marginal(x, torch.full((2,), 0.5))
    with pytest.raises(ValueError, match="^t must be a scalar or have shape"):
        p.marginal(x, torch.full((3, 1), 0.5))
    with pytest.raises(ValueError, match="^s must be a scalar or have shape"):
        p.transition(x, torch.full((4,), 0.3), 0.5)
    with pytest.raises(ValueError, match=r"^xt must have the same shape as x0"):
        p.posterior(x, torch.randn(3, 3), 0.3, 0.5)
    with pytest.raises(ValueError, match=r"^x0 must have shape \(batch, \*event\)"):
        p.marginal(torch.randn(3), 0.5)
    with pytest.raises(ValueError, match="^x0 must be a torch.Tensor"):
        p.marginal([[1.0, 2.0]], 0.5)


@pytest.mark.parametrize("name", PROCESSES)
def test_s_not_before_t(name):
    p = PROCESSES[name]()
    x = torch.randn(2, 2)
    for s, t in ((0.5, 0.5), (0.6, 0.4)):
        with pytest.raises(ValueError, match="^s must be < t"):
            p.transition(x, s, t)
        with pytest.raises(ValueError, match="^s must be < t"):
            p.posterior(x, x, s, t)
    with pytest.raises(ValueError, match="^s must be < t"):
        p.transition(x, torch.tensor([0.2, 0.5]), torch.tensor([0.3, 0.5]))


# ==================================================================== constructors
@pytest.mark.parametrize("cls", [pd.VPSDE, pd.SubVPSDE])
def test_beta_schedules_reject_bad_scales(cls):
    for kwargs, arg in (({"beta_min": 0.0}, "beta_min"), ({"beta_min": -1.0}, "beta_min"),
                        ({"beta_max": 0.0}, "beta_max"), ({"beta_min": 5.0, "beta_max": 1.0}, "beta_max"),
                        ({"beta_min": math.nan}, "beta_min"), ({"t_min": 0.0}, "t_min"),
                        ({"t_min": 0.5, "t_max": 0.5}, "t_min"), ({"t_min": 0.6, "t_max": 0.5}, "t_min"),
                        ({"t_max": math.inf}, "t_max")):
        with pytest.raises(ValueError, match=f"^{arg} must"):
            cls(**kwargs)


def test_other_constructors_reject_bad_arguments():
    cases = [
        (lambda: pd.VESDE(sigma_min=0.0), "sigma_min"),
        (lambda: pd.VESDE(sigma_min=-0.1), "sigma_min"),
        (lambda: pd.VESDE(sigma_max=-1.0), "sigma_max"),
        (lambda: pd.VESDE(sigma_min=1.0, sigma_max=1.0), "sigma_max"),
        (lambda: pd.VESDE(sigma_min=2.0, sigma_max=1.0), "sigma_max"),
        (lambda: pd.VESDE(t_min=1.0, t_max=1.0), "t_min"),
        (lambda: pd.CosineVP(offset=-0.1), "offset"),
        (lambda: pd.CosineVP(t_max=1.0), "t_max"),
        (lambda: pd.CosineVP(t_min=0.0), "t_min"),
        (lambda: pd.LinearBlend(t_max=1.5), "t_max"),
        (lambda: pd.LinearBlend(t_min=-0.1), "t_min"),
        (lambda: pd.LinearBlend(t_min=0.5, t_max=0.2), "t_min"),
        (lambda: pd.LinearSDE(3.0, torch.ones_like), "f and g"),
        (lambda: pd.LinearSDE(torch.zeros_like, torch.ones_like, sigma_init=-1.0), "sigma_init"),
        (lambda: pd.LinearSDE(torch.zeros_like, torch.ones_like, t_min=-0.1), "t_min"),
        (lambda: pd.LinearSDE(torch.zeros_like, torch.ones_like, t_min=0.0), "t_min"),
        (lambda: pd.LinearSDE(torch.zeros_like, torch.ones_like, table_size=2), "table_size"),
    ]
    for make, arg in cases:
        with pytest.raises(ValueError, match=f"^{arg} must"):
            make()


def test_linear_sde_rejects_bad_coefficients():
    """Reported when the schedule is solved, at construction: g = 0 (sigma stays 0, no density); f NaN past
    t = 0.5."""
    with pytest.raises(ValueError, match="^g must be positive"):
        pd.LinearSDE(lambda t: -t, torch.zeros_like, t_max=1.0, table_size=65)
    with pytest.raises(ValueError, match=r"^f\(t\) must be finite"):
        pd.LinearSDE(lambda t: torch.where(t < 0.5, -t, torch.nan), torch.ones_like, table_size=65)


@pytest.mark.slow
def test_linear_sde_rejects_non_integrable_drift():
    """f = t/(t - 1/2) is not integrable across 1/2: the solver's failure surfaces as a ValueError."""
    with pytest.raises(ValueError, match="^f and g must be integrable"):
        pd.LinearSDE(lambda t: t / (t - 0.5), torch.ones_like, table_size=65)


def test_sample_prior_rejects_bad_count():
    p = pd.VPSDE()
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="^num_samples must be a positive integer"):
            p.sample_prior(bad, (2,))


# ==================================================================== validation switch
def test_validate_args_false_disables_checks():
    p = pd.VPSDE(validate_args=False)
    assert not p.validate_args
    x = torch.randn(2, 3)
    d = p.marginal(x, 1.5)                     # outside [t_min, t_max]: no error
    assert d.batch_shape == (2,)
    p.transition(x, 0.6, 0.4)                  # s > t: no error
    x_nan = x.clone()
    x_nan[0, 0] = math.nan
    p.marginal(x_nan, 0.5)                     # NaN data: no error
    assert not d.base_dist._validate_args      # nor in the returned distribution
    assert pd.VPSDE().validate_args


def test_set_default_validate_args():
    assert pd.VPSDE().validate_args
    try:
        pd.ForwardProcess.set_default_validate_args(False)
        p = pd.VESDE()
        assert not p.validate_args
        p.marginal(torch.randn(2, 2), 3.0)     # would raise with validation on
        assert pd.VESDE(validate_args=True).validate_args
    finally:
        pd.ForwardProcess.set_default_validate_args(True)
    with pytest.raises(ValueError, match="t must lie"):
        pd.VESDE().marginal(torch.randn(2, 2), 3.0)
    with pytest.raises(ValueError, match="^value must be True or False"):
        pd.ForwardProcess.set_default_validate_args(1)


# ==================================================================== oracles
def _mixture_args(k=2, d=2):
    return torch.full((k,), 1.0 / k, dtype=F64), torch.randn(k, d, dtype=F64), torch.eye(d, dtype=F64).repeat(k, 1, 1)


def test_gaussian_mixture_rejects_bad_parameters():
    w, mu, cov = _mixture_args()
    not_pd = cov.clone()
    not_pd[0] = torch.tensor([[1.0, 2.0], [2.0, 1.0]], dtype=F64)
    not_sym = cov.clone()
    not_sym[1, 0, 1] = 0.5
    nan_means = mu.clone()
    nan_means[0, 0] = math.nan
    cases = [
        ((torch.tensor([0.5, 0.6], dtype=F64), mu, cov), "weights"),
        ((torch.tensor([1.5, -0.5], dtype=F64), mu, cov), "weights"),
        ((w[None], mu, cov), "weights"),
        ((w, mu[0], cov), "means"),
        ((w, torch.randn(3, 2, dtype=F64), cov), "means"),
        ((w, mu, cov[:, :1]), "covs"),
        ((w, mu, cov[0]), "covs"),
        ((w, mu, not_pd), "covs"),
        ((w, mu, not_sym), "covs"),
        ((w, nan_means, cov), "means"),
        ((w, mu, -cov), "covs"),
    ]
    for args, arg in cases:
        with pytest.raises(ValueError, match=f"^{arg} must"):
            GaussianMixture(*args)


def test_gaussian_mixture_rejects_bad_queries():
    gmm = GaussianMixture(*_mixture_args())
    p = pd.VPSDE()
    with pytest.raises(ValueError, match=r"^x must have shape \(batch, 2\)"):
        gmm.log_prob(torch.randn(3, 3, dtype=F64))
    with pytest.raises(ValueError, match=r"^x must have shape"):
        gmm.marginal_log_prob(p, torch.randn(3, dtype=F64), 0.5)
    with pytest.raises(ValueError, match="^x must be finite"):
        gmm.log_prob(torch.tensor([[math.nan, 0.0]], dtype=F64))
    with pytest.raises(ValueError, match="^process must be a GaussianProcess"):
        gmm.marginal_log_prob(object(), torch.randn(3, 2, dtype=F64), 0.5)
    with pytest.raises(ValueError, match="^t must lie"):
        gmm.model(p).score(torch.randn(3, 2, dtype=F64), 2.0)
    with pytest.raises(ValueError, match="^n must be a positive integer"):
        gmm.sample(0)


def test_empirical_rejects_bad_input():
    with pytest.raises(ValueError, match="^data must be a tensor"):
        Empirical(torch.randn(5))
    with pytest.raises(ValueError, match="^data must be a tensor"):
        Empirical(torch.randn(0, 3))
    with pytest.raises(ValueError, match="^data must be finite"):
        Empirical(torch.tensor([[math.inf, 0.0]]))
    with pytest.raises(ValueError, match="^chunk_size must be a positive integer"):
        Empirical(torch.randn(4, 2), chunk_size=0)
    emp = Empirical(torch.randn(4, 2, 3))
    p = pd.VPSDE()
    with pytest.raises(ValueError, match=r"^x must have shape \(batch, 2, 3\)"):
        emp.marginal_log_prob(p, torch.randn(5, 6), 0.5)
    with pytest.raises(ValueError, match=r"^x must have shape"):
        emp.model(p).denoise(torch.randn(5, 3, 2), 0.5)
    x_nan = torch.randn(2, 2, 3)
    x_nan[1, 0, 0] = math.nan
    with pytest.raises(ValueError, match="^x must be finite"):
        emp.marginal_log_prob(p, x_nan, 0.5)
    with pytest.raises(ValueError, match="^t must lie"):
        emp.model(p).denoise(torch.randn(2, 2, 3), -1.0)
    with pytest.raises(ValueError, match="^process_type must be a ForwardProcess subclass"):
        Empirical.register(int)


# ==================================================================== registries
def test_empirical_register_picks_most_specific_process_class():
    class MyVP(pd.VPSDE):
        pass

    data = torch.randn(5, 2, dtype=F64)
    emp = Empirical(data)
    generic = type(emp.model(pd.VPSDE()))

    calls = []

    @Empirical.register(MyVP)
    def build(empirical, process):
        calls.append((empirical, process))
        return "special"

    p = MyVP()
    assert emp.model(p) == "special" and calls == [(emp, p)]
    assert type(emp.model(pd.VPSDE())) is generic     # the parent class still gets the generic builder
    assert type(emp.model(pd.LinearBlend())) is generic


def test_empirical_model_for_unregistered_family():
    class Other(pd.ForwardProcess):
        def marginal(self, x0, t): ...

        def transition(self, xs, s, t): ...

        def posterior(self, x0, xt, s, t): ...

        def prior(self, event_shape, *, device=None, dtype=None): ...

    with pytest.raises(ValueError, match="no exact model of empirical data is registered for Other"):
        Empirical(torch.randn(3, 2)).model(Other(0.0, 1.0))
