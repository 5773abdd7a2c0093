"""ExponentialMultistep: the published DPM-Solver++(2M) update, the order of exponential Adams on the
closed-form Gaussian flow, exactness for a constant denoiser whatever the coefficients, argument checks.

Closed form: data N(mu, c^2 I) under any Gaussian process gives the probability-flow solution
x_t = alpha_t mu + sqrt(alpha_t^2 c^2 + sigma_t^2) z (tests/solvers/test_solvers.py).
"""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import probdiff as pd
from probdiff.grids import Explicit, LogSNR, Uniform
from probdiff.solvers import DPMSolver2M, ExponentialMultistep

from test_solvers import _exact, _gaussian, _pf_error, _slope


def _dpm_solver_2m_transcribed(process, model, x, ts):
    """Lu et al. 2022, Algorithm 2 (DPM-Solver++(2M)), written from the paper: lambda = log(alpha/sigma),
    h_i = lambda_i - lambda_{i-1}; i = 1: x_1 = (sigma_1/sigma_0) x_0 - alpha_1 (e^{-h_1} - 1) D_0; then with
    r_i = h_{i-1}/h_i, D = (1 + 1/(2 r_i)) D_{i-1} - 1/(2 r_i) D_{i-2} and the same update."""
    lam = [float(0.5 * process.log_snr(t)) for t in ts]
    sig = [float(process.sigma(t)) for t in ts]
    alp = [float(process.alpha(t)) for t in ts]
    previous = None
    for i in range(1, len(ts)):
        d = model.denoise(x, ts[i - 1].expand(x.shape[0]))
        h = lam[i] - lam[i - 1]
        if previous is None:
            d_hat = d
        else:
            r = (lam[i - 1] - lam[i - 2]) / h
            d_hat = (1 + 1 / (2 * r)) * d - 1 / (2 * r) * previous
        x = sig[i] / sig[i - 1] * x - alp[i] * (torch.exp(torch.tensor(-h, dtype=torch.float64)) - 1) * d_hat
        previous = d
    return x


@pytest.mark.parametrize("process_cls", [pd.VPSDE, pd.VESDE, pd.CosineVP])
def test_dpm_solver_2m_coefficients_reproduce_the_published_update(process_cls):
    process = process_cls()
    model = _gaussian().model(process)
    flow = pd.probability_flow(process, model)
    x0 = torch.randn(16, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * float(process.sigma(process.t_max))
    ts = LogSNR(7).times(process)
    expected = _dpm_solver_2m_transcribed(process, model, x0, ts)
    got = pd.sample(flow, x_init=x0, solver=ExponentialMultistep.dpm_solver_2m(process, ts), grid=LogSNR(7)).x
    library = pd.sample(flow, x_init=x0, solver=DPMSolver2M(), grid=LogSNR(7)).x
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(got, library, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("order", [1, 2, 3])
def test_exponential_adams_converges_at_its_order(order):
    process = pd.VESDE()
    steps = [16, 32, 64]
    errors = [_pf_error(process, ExponentialMultistep.adams(process, LogSNR(n).times(process), order), LogSNR(n))
              for n in steps]
    assert errors[-1] < errors[0]
    # third order: the smooth Gaussian denoiser gives a slope of 3-4 at these step counts
    assert order - 0.3 < _slope(steps, errors) < order + 1.2, errors


def test_stated_orders_of_the_constructors():
    process, ts = pd.VESDE(), LogSNR(8).times(pd.VESDE())
    assert ExponentialMultistep.dpm_solver_2m(process, ts).order == 2
    assert [ExponentialMultistep.adams(process, ts, k).order for k in (1, 2, 3)] == [1, 2, 3]
    assert ExponentialMultistep(torch.zeros(8, 2)).order == 1


def test_adams_order_two_tends_to_dpm_solver_2m_for_short_steps():
    """Exponential AB2 weights (M_1/M_0)/(r h) -> 1/(2r) as h -> 0 (M_1/M_0 = h/2 - h^2/12 + ...)."""
    process = pd.VESDE()
    ts = LogSNR(2000).times(process)
    adams = ExponentialMultistep.adams(process, ts, 2).coefficients[1:, 0]
    dpm = ExponentialMultistep.dpm_solver_2m(process, ts).coefficients[1:, 0]
    torch.testing.assert_close(adams, dpm, rtol=2e-3, atol=0)


@settings(max_examples=10)
@given(st.integers(0, 2**31 - 1), st.integers(1, 3))
def test_any_coefficients_are_exact_for_a_constant_denoiser(seed, history):
    """The coefficients multiply differences of the model's outputs (the weights of D_i, D_{i-1}, ... sum to
    one), and the linear part is integrated in closed form: data at one point mu (D = mu everywhere) is
    integrated exactly, x_t = alpha_t mu + sigma_t z, whatever the coefficients."""
    process = pd.VPSDE()
    mu = torch.tensor([0.3, -1.2], dtype=torch.float64)
    model = pd.DenoiserModel(lambda x, t: mu.expand_as(x), process)
    g = torch.Generator().manual_seed(seed)
    c = 3 * torch.randn(6, history, generator=g, dtype=torch.float64)
    z = torch.randn(5, 2, generator=g, dtype=torch.float64)
    start = process.alpha(process.t_max) * mu + process.sigma(process.t_max) * z
    out = pd.sample(pd.probability_flow(process, model), x_init=start, solver=ExponentialMultistep(c),
                    grid=Uniform(6)).x
    expected = process.alpha(process.t_min) * mu + process.sigma(process.t_min) * z
    # rounding of log-SNR differences near t_max (alpha ~ 7e-3) leaves ~1e-8
    torch.testing.assert_close(out, expected, rtol=1e-7, atol=1e-7)


def test_zero_coefficients_are_ddim():
    process = pd.CosineVP()
    flow = pd.probability_flow(process, _gaussian().model(process))
    z = torch.randn(8, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    x = _exact(process, process.t_max, z)
    ours = pd.sample(flow, x_init=x, solver=ExponentialMultistep(torch.zeros(9, 2)), grid=Uniform(9)).x
    ddim = pd.sample(flow, x_init=x, solver=pd.solvers.Ancestral(eta=0.0), grid=Uniform(9)).x
    torch.testing.assert_close(ours, ddim, rtol=1e-10, atol=1e-10)


def test_bad_arguments_are_refused():
    process = pd.VPSDE()
    flow = pd.probability_flow(process, _gaussian().model(process))
    with pytest.raises(ValueError, match="coefficients must have shape"):
        ExponentialMultistep(torch.zeros(4))
    with pytest.raises(ValueError, match="coefficients"):
        ExponentialMultistep(torch.tensor([[float("nan")]]))
    with pytest.raises(ValueError, match="order"):
        ExponentialMultistep(torch.zeros(3, 1), order=0)
    with pytest.raises(ValueError, match="order must be an integer"):
        ExponentialMultistep.adams(process, Uniform(4).times(process), 5)
    with pytest.raises(ValueError, match="grid of 5"):
        pd.sample(flow, x_init=torch.zeros(2, 3, dtype=torch.float64), solver=ExponentialMultistep(torch.zeros(4, 1)),
                  grid=Uniform(5))
    with pytest.raises(ValueError, match="noise must be 0"):
        pd.sample(pd.reverse(process, _gaussian().model(process), 1.0), x_init=torch.zeros(2, 3),
                  solver=ExponentialMultistep(torch.zeros(4, 1)), grid=Explicit(Uniform(4).times(process)))


def test_one_evaluation_per_step_and_empty_batch():
    process = pd.VESDE()
    flow = pd.probability_flow(process, _gaussian().model(process))
    solver = ExponentialMultistep.adams(process, LogSNR(6).times(process), 3)
    sol = pd.sample(flow, x_init=torch.zeros(0, 3, dtype=torch.float64), solver=solver, grid=LogSNR(6))
    assert sol.x.shape == (0, 3) and sol.nfe == 6
