"""The three defects that came from the old structure (issue 12), each pinned by a test.

1. A model built for one process is refused by every entry point that is given another process.
2. A subclass never inherits a closed form derived for its parent's schedule.
3. One reverse drift: every sampler step and the likelihood use ``GaussianReverse.drift_and_denoised``.
"""

import math

import pytest
import torch

import probdiff as pd
from probdiff.losses import DenoisingScoreMatching
from probdiff.oracles import GaussianMixture
from probdiff.reverse import GaussianReverse

F64 = torch.float64


def _mixture():
    return GaussianMixture(torch.tensor([0.3, 0.7], dtype=F64), torch.tensor([[-1.0, 0.5], [1.0, -0.5]], dtype=F64),
                           0.2 * torch.eye(2, dtype=F64).expand(2, 2, 2))


# ==================================================================== 1. the model carries its process
def test_a_model_of_another_process_is_refused_naming_both():
    m = _mixture().model(pd.VPSDE())
    x = _mixture().sample(4, generator=torch.Generator().manual_seed(0))
    ve = pd.VESDE()
    calls = {
        "reverse": lambda: pd.reverse(ve, m),
        "probability_flow": lambda: pd.probability_flow(ve, m),
        "log_likelihood": lambda: pd.log_likelihood(ve, m, x),
        "elbo": lambda: pd.elbo(ve, m, x),
        "ScoreOptimal.fit": lambda: pd.grids.ScoreOptimal.fit(ve, m, x, 4),
        "DenoisingScoreMatching": lambda: DenoisingScoreMatching(ve)(m, x),
    }
    for name, call in calls.items():
        with pytest.raises(ValueError, match=r"VESDE.*is not the model's process VPSDE") as info:
            call()
        assert "another process" in str(info.value), name
    # a process of the same class and parameters but another object is another process too
    with pytest.raises(ValueError, match="is not the model's process"):
        pd.reverse(pd.VPSDE(), m)


def test_short_forms_equal_the_long_forms():
    vp = pd.VPSDE()
    m = _mixture().model(vp)
    x = _mixture().sample(3, generator=torch.Generator().manual_seed(1))
    assert pd.reverse(m, noise=0.5).noise == 0.5 and pd.reverse(m, 0.5).process is vp
    assert pd.probability_flow(m).noise == 0.0
    torch.testing.assert_close(pd.log_likelihood(m, x, rtol=1e-4, atol=1e-4),
                               pd.log_likelihood(vp, m, x, rtol=1e-4, atol=1e-4), rtol=0, atol=0)
    g = lambda: torch.Generator().manual_seed(2)  # noqa: E731
    torch.testing.assert_close(pd.elbo(m, x, generator=g()), pd.elbo(vp, m, x, generator=g()), rtol=0, atol=0)
    with pytest.raises(ValueError, match="needs|model must be"):
        pd.reverse(vp)


# ==================================================================== 2. closed forms bound to their schedule
class _VPQuartic(pd.VPSDE):
    """sigma^2 = 1 - alpha^4 (not VPSDE's 1 - alpha^2)."""

    def log_sigma(self, t):
        return 0.5 * torch.log(-torch.expm1(4.0 * self.log_alpha(t)))


class _VEQuadratic(pd.VESDE):
    """log sigma = log sigma_min + c t^2 (VESDE's is linear in t)."""

    c = 3.0

    def log_sigma(self, t):
        return math.log(self.sigma_min) + self.c * torch.as_tensor(t) ** 2


def test_vp_subclass_with_another_sigma_gets_its_own_inverse_and_diffusion():
    q = _VPQuartic()
    t = torch.tensor([0.01, 0.2, 0.5, 0.9], dtype=F64)
    # the log-SNR inverse was VPSDE's closed form before: 0.0156 for t = 0.01
    torch.testing.assert_close(q.time_of_log_snr(q.log_snr(t)), t, rtol=1e-9, atol=1e-12)
    # g^2 = -sigma^2 lambda' = beta (1 + alpha^4) for sigma^2 = 1 - alpha^4 (VPSDE's would be beta)
    beta, alpha = q.beta(t), q.alpha(t)
    torch.testing.assert_close(q.diffusion(t) ** 2, beta * (1 + alpha**4), rtol=1e-7, atol=0)
    torch.testing.assert_close(q.d_log_snr(t), -beta * (1 + alpha**4) / q.sigma(t) ** 2, rtol=1e-7, atol=0)
    torch.testing.assert_close(q.drift_coef(t), -0.5 * beta, rtol=0, atol=0)       # alpha's closed form is kept
    lam = q.log_snr(pd.grids.LogSNR(6).times(q))
    torch.testing.assert_close(lam[1:] - lam[:-1], torch.full((6,), float(lam[-1] - lam[0]) / 6, dtype=F64),
                               rtol=1e-7, atol=1e-9)


def test_ve_subclass_with_quadratic_log_sigma():
    q = _VEQuadratic()
    t = torch.tensor([0.05, 0.3, 0.7, 1.0], dtype=F64)
    sigma = q.sigma_min * torch.exp(q.c * t**2)
    torch.testing.assert_close(q.diffusion(t) ** 2, 4 * q.c * t * sigma**2, rtol=1e-7, atol=0)   # -sigma^2 lambda'
    lam = -2 * torch.log(sigma)
    torch.testing.assert_close(q.time_of_log_snr(lam), torch.sqrt((-0.5 * lam - math.log(q.sigma_min)) / q.c),
                               rtol=1e-9, atol=1e-12)


_BUILT_IN = [pd.VPSDE, pd.SubVPSDE, pd.VESDE, pd.CosineVP, pd.LinearBlend,
             lambda: pd.LinearSDE(lambda t: -0.5 * (0.1 + 19.9 * t), lambda t: torch.sqrt(0.1 + 19.9 * t))]


@pytest.mark.parametrize("make", _BUILT_IN, ids=["VPSDE", "SubVPSDE", "VESDE", "CosineVP", "LinearBlend", "LinearSDE"])
def test_every_built_in_subclass_that_rescales_sigma_gets_the_generic_derived_quantities(make):
    parent = make()
    cls = type(parent)

    class Scaled(cls):
        def log_sigma(self, t):
            return cls.log_sigma(self, t) + 0.1 * torch.as_tensor(t) ** 2

        def sigma(self, t):
            return torch.exp(self.log_sigma(t))

    q = Scaled.__new__(Scaled)
    q.__dict__.update(parent.__dict__)
    t = torch.linspace(parent.t_min + 0.05, min(parent.t_max, 0.95) - 0.05, 7, dtype=F64)

    def jvp(fn):
        return torch.func.jvp(fn, (t.clone(),), (torch.ones_like(t),))[1]

    d_lam = jvp(lambda u: 2.0 * (q.log_alpha(u) - q.log_sigma(u)))    # independent derivative of its own log-SNR
    torch.testing.assert_close(q.d_log_snr(t), d_lam, rtol=1e-7, atol=1e-10)
    torch.testing.assert_close(q.diffusion(t), q.sigma(t) * torch.sqrt(-d_lam), rtol=1e-7, atol=1e-10)
    torch.testing.assert_close(q.sigma_dot(t), jvp(q.sigma), rtol=1e-6, atol=1e-10)
    torch.testing.assert_close(q.time_of_log_snr(q.log_snr(t)), t, rtol=1e-8, atol=1e-10)
    torch.testing.assert_close(q.drift_coef(t), parent.drift_coef(t), rtol=0, atol=0)


# ==================================================================== 3. one reverse drift
@pytest.mark.parametrize("make", _BUILT_IN, ids=["VPSDE", "SubVPSDE", "VESDE", "CosineVP", "LinearBlend", "LinearSDE"])
def test_an_euler_step_is_exactly_x_plus_step_times_drift(make):
    p = make()
    m = _mixture().model(p)
    x = torch.randn(6, 2, generator=torch.Generator().manual_seed(3), dtype=F64)
    t, s = torch.tensor(0.6, dtype=F64), torch.tensor(0.45, dtype=F64)
    for noise, solver in ((0.0, pd.solvers.Euler()), (0.0, pd.solvers.EulerMaruyama()), (0.0, pd.solvers.Heun())):
        rev = pd.reverse(m, noise)
        step = solver.step(rev, x, t, s, None, None)
        if isinstance(solver, pd.solvers.Heun):
            x_euler = x + (s - t) * rev.drift(x, t)
            expected = x + 0.5 * (s - t) * (rev.drift(x, t) + rev.drift(x_euler, s))
        else:
            expected = x + (s - t) * rev.drift(x, t)
        torch.testing.assert_close(step.x, expected, rtol=0, atol=0)


def test_the_likelihood_integrates_the_same_drift(monkeypatch):
    vp = pd.VPSDE()
    m = _mixture().model(vp)
    calls = []
    original = GaussianReverse.drift_and_denoised

    def recording(self, x, t):
        calls.append(1)
        return original(self, x, t)

    monkeypatch.setattr(GaussianReverse, "drift_and_denoised", recording)
    pd.log_likelihood(m, _mixture().sample(2, generator=torch.Generator().manual_seed(4)), rtol=1e-3, atol=1e-3)
    assert len(calls) > 0
