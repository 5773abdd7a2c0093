"""Gaussian forward processes against closed forms, scipy, and the identities of THEORY.md §1.

Expected values are computed here independently of probdiff: the schedule table of THEORY.md §1 in
50-digit mpmath, ``scipy.integrate.quad`` for a LinearSDE, Gaussian algebra for Chapman–Kolmogorov and
Bayes, and a torchsde Monte-Carlo simulation for the SDE.
"""

from __future__ import annotations

import math

import mpmath as mp
import numpy as np
import pytest
import torch
import torchsde
from hypothesis import assume, given
from hypothesis import strategies as st
from scipy.integrate import quad

import probdiff as pd
from probdiff.processes.gaussian import GaussianProcess, time_derivative as _time_derivative

mp.mp.dps = 50
F64 = torch.float64


# ==================================================================== independent closed forms
def _vp_alpha(t, b0, b1):
    return mp.exp(-t**2 * (b1 - b0) / 4 - t * b0 / 2)


def _vp_beta(t, b0, b1):
    return b0 + t * (b1 - b0)


def schedule_vp(t, b0=0.1, b1=20.0):
    """THEORY.md §1 table, VP row: (alpha, sigma, f, g)."""
    a = _vp_alpha(t, b0, b1)
    return a, mp.sqrt(1 - a**2), -_vp_beta(t, b0, b1) / 2, mp.sqrt(_vp_beta(t, b0, b1))


def schedule_subvp(t, b0=0.1, b1=20.0):
    a = _vp_alpha(t, b0, b1)
    beta = _vp_beta(t, b0, b1)
    return a, 1 - a**2, -beta / 2, mp.sqrt(beta * (1 - a**4))


def schedule_ve(t, smin=0.01, smax=50.0):
    s = smin * (mp.mpf(smax) / smin) ** t
    return mp.mpf(1), s, mp.mpf(0), s * mp.sqrt(2 * mp.log(mp.mpf(smax) / smin))


def schedule_cosine(t, c=0.008):
    angle = mp.pi / 2 * (t + c) / (1 + c)
    a = mp.cos(angle) / mp.cos(mp.pi / 2 * c / (1 + c))
    f = mp.diff(lambda u: mp.log(mp.cos(mp.pi / 2 * (u + c) / (1 + c))), t)  # d/dt log alpha, numerically
    sigma2 = 1 - a**2
    g2 = mp.diff(lambda u: 1 - (mp.cos(mp.pi / 2 * (u + c) / (1 + c)) / mp.cos(mp.pi / 2 * c / (1 + c))) ** 2, t) \
        - 2 * f * sigma2                                                      # g^2 = d sigma^2/dt - 2 f sigma^2
    return a, mp.sqrt(sigma2), f, mp.sqrt(g2)


def schedule_blend(t):
    return 1 - t, t, -1 / (1 - t), mp.sqrt(2 * t / (1 - t))


BUILTINS = {
    "VPSDE": (lambda: pd.VPSDE(), schedule_vp),
    "SubVPSDE": (lambda: pd.SubVPSDE(), schedule_subvp),
    "VESDE": (lambda: pd.VESDE(), schedule_ve),
    "CosineVP": (lambda: pd.CosineVP(), schedule_cosine),
    "LinearBlend": (lambda: pd.LinearBlend(), schedule_blend),
}


def _grid(process, n=9):
    """Times across the domain, both ends included, plus points very close to the ends."""
    lo, hi = process.t_min, process.t_max
    inner = np.linspace(lo, hi, n)
    return sorted(set(inner.tolist() + [lo + 1e-7, hi - 1e-7]))


def _mp_to_tensor(values):
    return torch.tensor([float(v) for v in values], dtype=F64)


@pytest.mark.parametrize("name", BUILTINS)
def test_schedule_matches_closed_form(name):
    make, reference = BUILTINS[name]
    p = make()
    times = _grid(p)
    ref = [reference(mp.mpf(t)) for t in times]
    t = torch.tensor(times, dtype=F64)
    alpha, sigma, f, g = (_mp_to_tensor([r[i] for r in ref]) for i in range(4))
    log_snr = _mp_to_tensor([mp.log(r[0] ** 2 / r[1] ** 2) for r in ref])
    torch.testing.assert_close(p.alpha(t), alpha, rtol=1e-10, atol=0)
    torch.testing.assert_close(p.sigma(t), sigma, rtol=1e-9, atol=0)
    torch.testing.assert_close(p.log_snr(t), log_snr, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(p.drift_coef(t), f, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(p.diffusion(t), g, rtol=1e-8, atol=0)


@pytest.mark.parametrize("name", BUILTINS)
def test_registered_derivatives_equal_autograd(name):
    """Closed-form f, g, lambda', alpha', sigma' agree with forward-mode autograd of the declared schedule."""
    p = BUILTINS[name][0]()
    t = torch.tensor(_grid(p, 21), dtype=F64)
    d_log_snr = _time_derivative(p.log_snr, t)
    torch.testing.assert_close(p.drift_coef(t), GaussianProcess.drift_coef(p, t), rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(p.d_log_snr(t), d_log_snr, rtol=1e-8, atol=1e-10)
    torch.testing.assert_close(p.diffusion(t), p.sigma(t) * torch.sqrt(-d_log_snr), rtol=1e-8, atol=1e-12)
    torch.testing.assert_close(p.alpha_dot(t), _time_derivative(p.alpha, t), rtol=1e-8, atol=1e-12)
    torch.testing.assert_close(p.sigma_dot(t), _time_derivative(p.sigma, t), rtol=1e-8, atol=1e-12)
    # g^2 = d sigma^2/dt - 2 f sigma^2  (THEORY.md §1), by autograd of sigma^2
    g2 = _time_derivative(lambda u: p.sigma(u) ** 2, t) - 2 * p.drift_coef(t) * p.sigma(t) ** 2
    torch.testing.assert_close(p.diffusion(t) ** 2, g2, rtol=1e-7, atol=1e-12)


def test_generic_path_serves_a_process_declared_only_by_alpha_sigma():
    """A user subclass declaring alpha, sigma alone gets f, g by autograd equal to the closed forms."""

    class Blend(pd.GaussianProcess):
        def __init__(self):
            super().__init__(1e-3, 0.999)

        def alpha(self, t):
            return 1.0 - t

        def sigma(self, t):
            return t * 1.0

    p = Blend()
    times = _grid(p)
    t = torch.tensor(times, dtype=F64)
    ref = [schedule_blend(mp.mpf(x)) for x in times]
    torch.testing.assert_close(p.drift_coef(t), _mp_to_tensor([r[2] for r in ref]), rtol=1e-10, atol=0)
    torch.testing.assert_close(p.diffusion(t), _mp_to_tensor([r[3] for r in ref]), rtol=1e-10, atol=0)


# ==================================================================== LinearSDE
def _linear_sde_of(p):
    sigma_init = p.sigma_min if isinstance(p, pd.VESDE) else 0.0
    return pd.LinearSDE(p.drift_coef, p.diffusion, t_min=p.t_min, t_max=p.t_max, sigma_init=sigma_init)


@pytest.mark.parametrize("name", BUILTINS)
def test_linear_sde_round_trip(name):
    """(alpha, sigma) -> (f, g) -> LinearSDE -> (alpha, sigma) within 1e-5 (relative: log-space, absolute)."""
    p = BUILTINS[name][0]()
    q = _linear_sde_of(p)
    t = torch.cat([torch.linspace(p.t_min, p.t_max, 513, dtype=F64),
                   torch.tensor([p.t_min * 1.5 + 1e-6, p.t_min + 1e-4, p.t_max - 1e-4], dtype=F64)])
    torch.testing.assert_close(q.log_alpha(t), p.log_alpha(t), rtol=0, atol=1e-5)
    torch.testing.assert_close(q.log_sigma(t), p.log_sigma(t), rtol=0, atol=1e-5)
    torch.testing.assert_close(q.log_snr(t), p.log_snr(t), rtol=0, atol=2e-5)


def test_linear_sde_with_vp_coefficients_is_vpsde():
    vp = pd.VPSDE()
    q = pd.LinearSDE(lambda t: -0.5 * (0.1 + t * 19.9), lambda t: torch.sqrt(0.1 + t * 19.9))
    t = torch.cat([torch.linspace(vp.t_min, 1.0, 1001, dtype=F64), torch.tensor([2e-5, 1e-4, 3e-4], dtype=F64)])
    torch.testing.assert_close(q.alpha(t), vp.alpha(t), rtol=1e-6, atol=0)
    torch.testing.assert_close(q.sigma(t), vp.sigma(t), rtol=1e-6, atol=0)


def test_linear_sde_on_one_time_expanded_over_a_batch_equals_the_elementwise_query():
    """A scalar time expanded over a batch (what check_time passes on) is evaluated once; values, derivatives
    in t and the gradient into the scalar equal those of the same times given element by element."""
    q = pd.LinearSDE(lambda t: -0.5 * (0.1 + t * 19.9 + torch.sin(3 * t) ** 2),
                     lambda t: torch.sqrt(0.1 + t * 19.9 + torch.sin(3 * t) ** 2), t_min=1e-4)
    for value in (1e-4, 0.0371, 0.5, 1.0):
        scalar = torch.tensor(value, dtype=F64, requires_grad=True)
        expanded = scalar.expand(7)
        assert expanded.stride() == (0,)
        elementwise = torch.full((7,), value, dtype=F64, requires_grad=True)
        for name in ("log_alpha", "log_sigma", "log_snr", "alpha", "sigma", "alpha_dot", "sigma_dot"):
            a, b = getattr(q, name)(expanded), getattr(q, name)(elementwise)
            torch.testing.assert_close(a, b, rtol=1e-14, atol=0, msg=name)
            a.add_(0.0)                                             # a writable tensor of its own
        sizes = []
        q._f = lambda t, f=q._f: sizes.append(t.numel()) or f(t)    # record what the quadrature asks for
        q.log_alpha(expanded)
        q._f = q._f.__defaults__[0]
        assert max(sizes) == 8, sizes                              # one 8-node quadrature, not 7 of them
        (g_scalar,) = torch.autograd.grad(q.log_sigma(expanded).sum(), scalar)
        (g_elements,) = torch.autograd.grad(q.log_sigma(elementwise).sum(), elementwise)
        torch.testing.assert_close(g_scalar, g_elements.sum(), rtol=1e-10, atol=1e-12)   # rounding of a sum of O(10) terms


def test_linear_sde_with_ve_coefficients_is_vesde():
    ve = pd.VESDE(sigma_min=0.02, sigma_max=80.0)
    k = math.log(80.0 / 0.02)
    q = pd.LinearSDE(lambda t: torch.zeros_like(t), lambda t: 0.02 * torch.exp(k * t) * math.sqrt(2 * k),
                     t_min=0.0, sigma_init=0.02)
    t = torch.linspace(0.0, 1.0, 1001, dtype=F64)
    torch.testing.assert_close(q.alpha(t), ve.alpha(t), rtol=1e-6, atol=0)
    torch.testing.assert_close(q.sigma(t), ve.sigma(t), rtol=1e-6, atol=0)


def test_linear_sde_against_quadrature():
    """f(t) = -t + sin(3t)/2, g(t) = 1 + t^2: alpha = exp(int f), sigma^2 = alpha^2 int g^2/alpha^2 (scipy quad)."""
    f = lambda t: -t + 0.5 * torch.sin(3 * t)  # noqa: E731
    g = lambda t: 1 + t**2  # noqa: E731
    q = pd.LinearSDE(f, g, t_min=1e-4, t_max=2.0, sigma_init=0.3)
    int_f = lambda u: -u**2 / 2 + (1 - math.cos(3 * u)) / 6  # noqa: E731
    for t in [1e-4, 0.01, 0.37, 1.0, 1.63, 2.0]:
        log_alpha = int_f(t)
        r = 0.09 + quad(lambda u: (1 + u**2) ** 2 * math.exp(-2 * int_f(u)), 0, t, epsabs=0, epsrel=1e-13)[0]
        tt = torch.tensor([t], dtype=F64)
        assert q.log_alpha(tt).item() == pytest.approx(log_alpha, rel=1e-8, abs=1e-10)
        assert q.sigma(tt).item() == pytest.approx(math.exp(log_alpha) * math.sqrt(r), rel=1e-7)
        assert q.drift_coef(tt).item() == pytest.approx(-t + 0.5 * math.sin(3 * t), rel=1e-12)
        assert q.diffusion(tt).item() == pytest.approx(1 + t**2, rel=1e-12)


def test_linear_sde_schedule_is_continuous_at_its_table_nodes():
    """The solved table's pieces meet: at each node the value from the left (previous node plus the whole
    cell's quadrature) equals the node's value to rounding. The ODE solver's node values left jumps of about
    1e-12 relative there, which finite differences read as a derivative of order 1e-12/h."""
    f = lambda t: -0.5 * (0.1 + t * 19.9 + torch.sin(5 * t) ** 2)  # noqa: E731
    g = lambda t: torch.sqrt(0.1 + t * 19.9 + torch.sin(5 * t) ** 2)  # noqa: E731
    q = pd.LinearSDE(f, g, t_min=1e-4, table_size=257)
    nodes = torch.linspace(0.0, 1.0, 257, dtype=F64)[1:-1]
    left = nodes - 1e-13                                   # in the cell before the node, 1e-13 from its end
    for name in ("log_alpha", "sigma"):
        value, limit = getattr(q, name)(nodes), getattr(q, name)(left)
        slope = (getattr(q, name)(nodes + 1e-6) - getattr(q, name)(nodes - 1e-6)) / 2e-6
        jump = (value - limit - 1e-13 * slope).abs()     # what is left after the function's own change
        assert float(jump.max()) < 2e-14, (name, float(jump.max()))


def test_linear_sde_small_times_relative_accuracy():
    """sigma -> 0 at t -> 0: the solved schedule stays relatively accurate (a g with g(0) = 0, like sub-VP)."""
    q = pd.LinearSDE(lambda t: torch.zeros_like(t), lambda t: t, t_min=1e-6)  # sigma^2 = t^3 / 3
    t = torch.tensor([1e-6, 3e-6, 1e-5, 1e-4, 3e-4, 1e-3, 0.5], dtype=F64)
    torch.testing.assert_close(q.sigma(t), torch.sqrt(t**3 / 3), rtol=1e-6, atol=0)


# ==================================================================== hypothesis: identities
_SHARED_LINEAR_SDE = {}


def _shared_linear_sde():
    """One LinearSDE (solved once per session): f = -(1 + t), g = sqrt(2 + t)."""
    if "p" not in _SHARED_LINEAR_SDE:
        _SHARED_LINEAR_SDE["p"] = pd.LinearSDE(lambda t: -(1 + t), lambda t: torch.sqrt(2 + t), t_min=1e-4)
    return _SHARED_LINEAR_SDE["p"]


@st.composite
def gaussian_processes(draw):
    """Built-in processes with random valid parameters (and one solved LinearSDE)."""
    kind = draw(st.integers(0, 5))
    if kind in (0, 1):
        b0 = draw(st.floats(0.01, 2.0))
        b1 = b0 + draw(st.floats(0.0, 30.0))
        cls = pd.VPSDE if kind == 0 else pd.SubVPSDE
        return cls(b0, b1, t_min=draw(st.sampled_from([1e-5, 1e-3])))
    if kind == 2:
        smin = draw(st.floats(1e-3, 1.0))
        return pd.VESDE(smin, smin * draw(st.floats(1.5, 1e4)))
    if kind == 3:
        return pd.CosineVP(draw(st.floats(0.0, 0.05)))
    if kind == 4:
        return pd.LinearBlend(t_min=draw(st.sampled_from([1e-3, 1e-2])), t_max=draw(st.sampled_from([0.99, 0.999])))
    return _shared_linear_sde()


_UNIT = st.one_of(st.sampled_from([0.0, 1e-9, 1e-6, 1e-3, 0.5, 1 - 1e-3, 1 - 1e-6, 1.0]), st.floats(0.0, 1.0))


@st.composite
def times_pair(draw, process):
    lo, hi = process.t_min, process.t_max
    u, v = sorted([draw(_UNIT), draw(_UNIT)])
    s, t = lo + u * (hi - lo), lo + v * (hi - lo)
    assume(s < t)
    return s, t


@st.composite
def data_shapes(draw):
    batch = draw(st.integers(1, 4))
    event = draw(st.lists(st.integers(1, 3), min_size=1, max_size=3))
    return (batch, *event)


@st.composite
def cases(draw):
    p = draw(gaussian_processes())
    s, t = draw(times_pair(p))
    shape = draw(data_shapes())
    seed = draw(st.integers(0, 2**31 - 1))
    return p, s, t, shape, seed


@given(cases())
def test_chapman_kolmogorov_moments(case):
    """marginal(s) followed by transition(s -> t) has the mean and variance of marginal(t)."""
    p, s, t, shape, seed = case
    gen = torch.Generator().manual_seed(seed)
    x0 = torch.randn(shape, generator=gen, dtype=F64)
    ms = p.marginal(x0, s)
    xs = ms.sample()
    step = p.transition(xs, s, t)
    # transition is linear-Gaussian in xs: mean = a xs, variance v independent of xs
    a = p.transition(torch.ones(shape, dtype=F64), s, t).mean
    assert torch.allclose(p.transition(torch.zeros(shape, dtype=F64), s, t).mean, torch.zeros(shape, dtype=F64))
    torch.testing.assert_close(step.mean, a * xs, rtol=1e-12, atol=1e-300)
    v = step.variance
    mt = p.marginal(x0, t)
    torch.testing.assert_close(a * ms.mean, mt.mean, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(a**2 * ms.variance + v, mt.variance, rtol=1e-9, atol=1e-300)


@given(cases())
def test_bayes_identity_pointwise(case):
    """log q(x_s|x_t,x_0) + log q(x_t|x_0) = log q(x_t|x_s) + log q(x_s|x_0) at (x_0, x_s, x_t) from the chain."""
    p, s, t, shape, seed = case
    gen = torch.Generator().manual_seed(seed)
    x0 = torch.randn(shape, generator=gen, dtype=F64)
    ms, mt = p.marginal(x0, s), p.marginal(x0, t)
    xs = ms.mean + ms.stddev * torch.randn(shape, generator=gen, dtype=F64)
    step = p.transition(xs, s, t)
    xt = step.mean + step.stddev * torch.randn(shape, generator=gen, dtype=F64)
    terms = [p.posterior(x0, xt, s, t).log_prob(xs), mt.log_prob(xt), step.log_prob(xt), ms.log_prob(xs)]
    lhs, rhs = terms[0] + terms[1], terms[2] + terms[3]
    scale = sum(term.abs() for term in terms) + 1.0
    assert bool(((lhs - rhs).abs() <= 1e-9 * scale).all()), (lhs, rhs)


@given(cases())
def test_posterior_moments_by_gaussian_conditioning(case):
    """q(x_s|x_t,x_0) has the moments of N(alpha_s x0, sigma_s^2) conditioned on x_t = a x_s + sqrt(v) z."""
    p, s, t, shape, seed = case
    gen = torch.Generator().manual_seed(seed)
    x0, xt = torch.randn(shape, generator=gen, dtype=F64), torch.randn(shape, generator=gen, dtype=F64)
    ms = p.marginal(x0, s)
    m, var_s = ms.mean, ms.variance
    step = p.transition(torch.ones(shape, dtype=F64), s, t)
    a, v = step.mean, step.variance
    gain = var_s * a / (a**2 * var_s + v)                                      # Kalman gain
    post = p.posterior(x0, xt, s, t)
    torch.testing.assert_close(post.mean, m + gain * (xt - a * m), rtol=1e-8, atol=1e-10)
    torch.testing.assert_close(post.variance, var_s * v / (a**2 * var_s + v), rtol=1e-8, atol=1e-300)


@given(cases())
def test_shape_law(case):
    p, s, t, shape, seed = case
    x = torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=F64)
    batch, event = shape[:1], shape[1:]
    for d in (p.marginal(x, t), p.transition(x, s, t), p.posterior(x, x, s, t)):
        assert d.batch_shape == batch and d.event_shape == event
        assert d.sample().shape == shape and d.log_prob(x).shape == batch
    # t given per sample, shape (batch,)
    d = p.marginal(x, torch.full(batch, t, dtype=F64))
    assert d.batch_shape == batch and d.event_shape == event
    prior = p.prior(event, dtype=F64)
    assert prior.batch_shape == () and prior.event_shape == event
    assert prior.sample((5,)).shape == (5, *event)
    assert p.sample_prior(3, event, dtype=F64).shape == (3, *event)


@given(cases())
def test_score_target_is_autograd_of_marginal_log_prob(case):
    p, s, t, shape, seed = case
    gen = torch.Generator().manual_seed(seed)
    x0 = torch.randn(shape, generator=gen, dtype=F64)
    xt = p.marginal(x0, t).mean + torch.randn(shape, generator=gen, dtype=F64)
    xt.requires_grad_(True)
    (grad,) = torch.autograd.grad(p.marginal(x0, t).log_prob(xt).sum(), xt)
    tt = torch.full(shape[:1], t, dtype=F64)
    alpha = p.alpha(tt).reshape(-1, *[1] * (len(shape) - 1))
    sigma = p.sigma(tt).reshape(-1, *[1] * (len(shape) - 1))
    torch.testing.assert_close(grad, -(xt.detach() - alpha * x0) / sigma**2, rtol=1e-9, atol=1e-9)


def test_prior_is_marginal_at_t_max_from_zero_data():
    for make, _ in BUILTINS.values():
        p = make()
        x = torch.randn(4, 3, dtype=F64)
        prior = p.prior((3,), dtype=F64)
        torch.testing.assert_close(prior.log_prob(x), p.marginal(torch.zeros(4, 3, dtype=F64), p.t_max).log_prob(x))


# ==================================================================== torchsde simulation
class _IncrementBrownian(torchsde.BaseBrownian):
    """Fresh N(0, (tb - ta) I) increments, seeded: exact for Euler–Maruyama, which queries consecutive,
    non-overlapping intervals once each. (torchsde's default BrownianInterval spends ~90% of the time
    of this test building its Brownian-bridge tree, which fixed-step Euler never needs.)"""

    def __init__(self, shape, dtype, seed):
        self._shape, self._dtype = torch.Size(shape), dtype
        self._gen = torch.Generator().manual_seed(seed)

    def __call__(self, ta, tb=None, return_U=False, return_A=False):
        z = torch.randn(self._shape, generator=self._gen, dtype=self._dtype)
        return z * math.sqrt(float(tb - ta))

    def __repr__(self):
        return f"_IncrementBrownian(shape={tuple(self._shape)})"

    dtype = property(lambda self: self._dtype)
    device = property(lambda self: torch.device("cpu"))
    shape = property(lambda self: self._shape)
    levy_area_approximation = property(lambda self: "none")


def _simulate_and_compare(p, times, paths=2000, dim=16, dt=1e-3, seed=0):
    """Euler–Maruyama paths of process.sde() from x_{t_min} ~ marginal(x0, t_min) for a fixed x0 (``dim``
    coordinates; sigma_{t_min} matters for VE, sigma_0 = sigma_min); check the marginal mean
    per coordinate and the variance pooled over coordinates (isotropic, independent coordinates).

    Tolerance: 5 Monte-Carlo standard errors (mean: sigma/sqrt(paths); pooled variance:
    sigma^2 sqrt(2/(paths dim))) plus a 1.5% allowance for the O(dt |f|) bias of Euler–Maruyama
    (|f| <= 10 on the simulated range, dt = 1e-3). The default run detects a 10% error in g^2, the
    slow one (4x the paths) a 5% error.
    """
    x0_row = torch.linspace(-2.0, 2.0, dim, dtype=F64)
    start = p.marginal(x0_row[None], p.t_min)
    y0 = start.mean + start.stddev * torch.randn(paths, dim, generator=torch.Generator().manual_seed(seed + 1),
                                                 dtype=F64)
    ts = torch.tensor([p.t_min, *times], dtype=F64)
    with torch.no_grad():
        ys = torchsde.sdeint(p.sde(), y0, ts, method="euler", dt=dt, bm=_IncrementBrownian(y0.shape, F64, seed))
    for k, t in enumerate(times, start=1):
        ref = p.marginal(x0_row[None], t)
        mean, var = ref.mean[0], ref.variance[0, 0]
        se_mean = var.sqrt() / math.sqrt(paths)
        se_var = var * math.sqrt(2 / (paths * dim))
        emp_mean, emp_var = ys[k].mean(0), ys[k].var(0).mean()
        assert bool(((emp_mean - mean).abs() <= 5 * se_mean + 0.015 * mean.abs()).all()), (t, emp_mean, mean)
        assert abs(emp_var - var) <= 5 * se_var + 0.015 * var, (t, emp_var, var)


def test_sde_simulation_matches_marginal_fast():
    _simulate_and_compare(pd.VPSDE(), [0.1, 0.4, 1.0])
    _simulate_and_compare(pd.LinearBlend(), [0.2, 0.6, 0.9])


@pytest.mark.slow
@pytest.mark.parametrize("name", BUILTINS)
def test_sde_simulation_matches_marginal_all(name):
    p = BUILTINS[name][0]()
    _simulate_and_compare(p, [0.1, 0.5, 0.9], paths=8000)


# ==================================================================== finite everywhere on the domain
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", [*BUILTINS, "LinearSDE"])
def test_finite_at_the_ends(name, dtype):
    p = _shared_linear_sde() if name == "LinearSDE" else BUILTINS[name][0]()
    t = torch.tensor([p.t_min, p.t_max], dtype=dtype)
    for fn in (p.alpha, p.sigma, p.log_snr, p.drift_coef, p.diffusion, p.d_log_snr, p.alpha_dot, p.sigma_dot):
        out = fn(t)
        assert out.dtype == dtype and bool(torch.isfinite(out).all()), (fn.__name__, out)
    x0 = torch.randn(2, 3, dtype=dtype)
    for tt in (p.t_min, p.t_max):
        d = p.marginal(x0, tt)
        lp = d.log_prob(d.sample())
        assert lp.dtype == dtype and bool(torch.isfinite(lp).all())
    lp = p.transition(x0, p.t_min, p.t_max).log_prob(x0)
    assert bool(torch.isfinite(lp).all())
    post = p.posterior(x0, x0, p.t_min, p.t_max)
    assert bool(torch.isfinite(post.mean).all()) and bool(torch.isfinite(post.log_prob(x0)).all())


def test_linear_blend_up_to_t_one():
    """t_max = 1 (alpha_1 = 0, lambda_1 = -inf): x_1 carries no information about x_s, so
    q(x_s | x_1, x_0) = q(x_s | x_0) = N((1-s) x_0, s^2), and q(x_1 | x_s) = N(0, I)."""
    p = pd.LinearBlend(t_max=1.0)
    gen = torch.Generator().manual_seed(0)
    x0, x1, xs = (torch.randn(3, 4, generator=gen, dtype=F64) for _ in range(3))
    for s in (p.t_min, 0.5, 0.9):
        post = p.posterior(x0, x1, s, 1.0)
        torch.testing.assert_close(post.mean, (1 - s) * x0)
        torch.testing.assert_close(post.stddev, torch.full_like(x0, s))
    step = p.transition(xs, 0.3, 1.0)
    torch.testing.assert_close(step.mean, torch.zeros_like(xs))
    torch.testing.assert_close(step.stddev, torch.ones_like(xs))
    torch.testing.assert_close(p.prior((4,), dtype=F64).log_prob(x1), p.marginal(x0, 1.0).log_prob(x1))


@pytest.mark.parametrize("name", BUILTINS)
def test_float32_schedule_is_accurate(name):
    """float32 queries agree with the float64 closed forms to float32 precision (no cancellation)."""
    make, reference = BUILTINS[name]
    p = make()
    times = _grid(p)
    t32 = torch.tensor(times, dtype=torch.float32)
    exact_t = t32.double().tolist()                  # evaluate the reference at the float32-rounded times
    ref = [reference(mp.mpf(t)) for t in exact_t]
    for i, fn in enumerate((p.alpha, p.sigma, p.drift_coef, p.diffusion)):
        torch.testing.assert_close(fn(t32).double(), _mp_to_tensor([r[i] for r in ref]), rtol=2e-5, atol=1e-30)
    log_snr = _mp_to_tensor([mp.log(r[0] ** 2 / r[1] ** 2) for r in ref])
    torch.testing.assert_close(p.log_snr(t32).double(), log_snr, rtol=2e-5, atol=2e-5)
