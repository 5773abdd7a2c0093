"""The Gaussian-frame Adams solver of the probability-flow ODE (issue 15, item 3): likelihood/frame_adams.py.

Expected values come from the Gaussian-mixture oracle's closed-form marginal log-densities, from the
closed-form solution of a Gaussian's flow, and from counting the right-hand side's calls.
"""

import pytest
import torch

import probdiff as pd
from probdiff.likelihood.adaptive import StepUnderflow
from probdiff.oracles import GaussianMixture
from shared import PROCESSES, data, mixture


def _ode_error(mix, process, x, solver):
    """Per-sample error of the ODE alone, nats/dim: the prior term replaced by the exact log p_{t_max}."""
    lp, st = pd.log_likelihood(process, mix.model(process), x, solver=solver, return_stats=True)
    truth = mix.marginal_log_prob(process, x, process.t_min)
    got = st.delta_log_prob + mix.marginal_log_prob(process, st.endpoint, process.t_max)
    assert torch.allclose(lp, st.delta_log_prob + st.prior_log_prob)
    return (got - truth).abs() / x.shape[1], st


@pytest.mark.parametrize("name", sorted(PROCESSES))
def test_converges_to_the_closed_form(name):
    """On the 2-D mixture: within 1e-4 nats/dim at the default tolerance (the DOPRI default's error there is
    ~2e-5), and 100x closer at 100x tighter tolerances (a fifth-order corrector: 175-330x measured)."""
    process, mix = PROCESSES[name](), mixture(2)
    x = data(mix, 6)
    loose, st = _ode_error(mix, process, x, pd.GaussianFrameAdams())
    tight, _ = _ode_error(mix, process, x, pd.GaussianFrameAdams(rtol=2e-6, atol=2e-6))
    assert float(loose.mean()) < 1e-4
    assert float(tight.mean()) < float(loose.mean()) / 100
    assert st.nfe_per_sample.dtype == torch.int64 and bool((st.nfe_per_sample > 10).all())


def test_a_gaussian_of_the_frames_variance_is_exact():
    """Data N(m, c I) with c = data_variance and m = 0: the frame's state and log-density integrand are
    constant, so any tolerance gives the closed form to rounding, in few steps."""
    dim, c = 3, 1.0
    mix = GaussianMixture(torch.ones(1, dtype=torch.float64), torch.zeros(1, dim, dtype=torch.float64),
                          c * torch.eye(dim, dtype=torch.float64)[None])
    for process in (pd.VPSDE(), pd.VESDE(), pd.LinearBlend()):
        x = data(mix, 5)
        err, st = _ode_error(mix, process, x, pd.GaussianFrameAdams(rtol=1e-2, atol=1e-2, data_variance=c))
        assert float(err.max()) < 1e-9
        assert float(st.nfe_per_sample.double().mean()) < 20


def test_counts_every_evaluation_and_rows_are_independent():
    """nfe per row = the rows it was evaluated on (rejected steps included); a row's answer and count are
    those of solving it alone."""
    rates = torch.tensor([-3.0, 0.0, 0.5, 2.0], dtype=torch.float64)
    calls = torch.zeros(4, dtype=torch.int64)

    def rhs(rows_rates, counter):
        def f(t, x, rows):
            counter[rows] += 1
            return rows_rates[rows, None] * torch.cos(3 * t)[:, None] * x, x[:, :1]
        return f

    solver, process = pd.GaussianFrameAdams(rtol=1e-6, atol=1e-6), pd.VPSDE()
    x0 = torch.ones(4, 2, dtype=torch.float64)
    delta0 = torch.zeros(4, 1, dtype=torch.float64)
    x1, d1, nfe = solver.integrate(process, rhs(rates, calls), x0, delta0, 1e-3, 1.0)
    assert torch.equal(nfe, calls)
    # dx/dt = rate cos(3t) x: x(1) = exp(rate (sin 3 - sin 3e-3)/3); d delta/dt = x
    exact = torch.exp(rates * (torch.sin(torch.tensor(3.0)) - torch.sin(torch.tensor(3e-3))).double() / 3)
    assert torch.allclose(x1[:, 0], exact, rtol=1e-5)
    for i in range(4):
        alone = torch.zeros(1, dtype=torch.int64)
        y, d, n = solver.integrate(process, rhs(rates[i:i + 1], alone), x0[i:i + 1], delta0[i:i + 1], 1e-3, 1.0)
        assert torch.allclose(y[0], x1[i], rtol=1e-12, atol=0) and torch.allclose(d[0], d1[i], rtol=1e-12, atol=0)
        assert int(n[0]) == int(nfe[i])


def test_hutchinson_budget_and_empty_batch():
    process, mix = pd.VPSDE(), mixture(2)
    model, x = mix.model(process), data(mix, 4)
    _, st = pd.log_likelihood(process, model, x, trace=pd.Hutchinson(3), solver=pd.GaussianFrameAdams(),
                              generator=torch.Generator().manual_seed(0), return_stats=True)
    assert st.estimates.shape == (3, 4) and bool(torch.isfinite(st.se).all())
    lp, st = pd.log_likelihood(process, model, x, solver=pd.GaussianFrameAdams(), max_nfe=12, return_stats=True)
    assert not st.completed and bool(torch.isnan(lp).all())
    empty = pd.log_likelihood(process, model, x[:0], solver=pd.GaussianFrameAdams())
    assert empty.shape == (0,)


def test_bad_input():
    process, mix = pd.VPSDE(), mixture(2)
    model, x = mix.model(process), data(mix, 2)
    with pytest.raises(ValueError, match="rtol"):
        pd.GaussianFrameAdams(rtol=0.0)
    with pytest.raises(ValueError, match="log_det_extra"):
        pd.GaussianFrameAdams(log_det_extra=-1)
    with pytest.raises(ValueError, match="shrink < 1 < grow"):
        pd.GaussianFrameAdams(grow=0.5)
    with pytest.raises(ValueError, match="solver must be"):
        pd.log_likelihood(process, model, x, solver="adams")
    with pytest.raises(ValueError, match="leave time, rtol"):
        pd.log_likelihood(process, model, x, solver=pd.GaussianFrameAdams(), rtol=1e-3)
    blend = pd.LinearBlend(t_min=0.0)
    with pytest.raises(ValueError, match="sigma > 0"):
        pd.log_likelihood(blend, mix.model(blend), x, solver=pd.GaussianFrameAdams())
    with pytest.raises(StepUnderflow):
        pd.GaussianFrameAdams(max_steps=3).integrate(process, lambda t, z, rows: (z, z[:, :1]), x,
                                                     torch.zeros(2, 1, dtype=x.dtype), 1e-3, 1.0)


def test_a_tabulated_schedule():
    """DiscreteVP's kinks in t are kinks of lambda(t) only: the frame and rho depend on lambda, so the ODE the
    solver sees stays smooth (measured against the closed form on these 6 images: 2.5e-5 nats/dim at 38
    evaluations per image; the default solver: 2.5e-5 at 78)."""
    betas = torch.linspace(0.1 / 1000, 20.0 / 1000, 1000, dtype=torch.float64)
    process, mix = pd.DiscreteVP(betas=betas), mixture(2)
    err, st = _ode_error(mix, process, data(mix, 6), pd.GaussianFrameAdams())
    assert float(err.mean()) < 1e-4 and float(st.nfe_per_sample.double().mean()) < 60
