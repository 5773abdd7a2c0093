"""Per-sample steps for the probability-flow ODE (issue 15, item 3): probdiff/likelihood/adaptive.py."""

import math

import pytest
import torch

import probdiff as pd
from probdiff.likelihood import LogSNRTime
from probdiff.likelihood.adaptive import DOPRI5, StepUnderflow, solve_per_sample
from shared import PROCESSES, data, mixture


def _exponential(rates):
    """dy/du = rate_i * y per row, each row with its own rate: y(1) = exp(rate_i)."""
    def rhs(u, y, rows):
        return rates[rows, None] * y
    return rhs


def test_dopri5_pair_orders():
    """The tableau's conditions: consistency (sum b = 1, rows of a sum to c), order 5 of b (sum b c^4 = 1/5),
    and an error estimate b - b_hat of weights summing to zero."""
    assert sum(DOPRI5.b) == pytest.approx(1.0, abs=1e-15)
    assert sum(DOPRI5.b_err) == pytest.approx(0.0, abs=1e-15)
    for c, row in zip(DOPRI5.c, DOPRI5.a):
        assert sum(row) == pytest.approx(c, abs=1e-14)
    for k in range(5):
        assert sum(b * c ** k for b, c in zip(DOPRI5.b, DOPRI5.c)) == pytest.approx(1 / (k + 1), abs=1e-14)


def test_each_row_is_solved_as_if_alone():
    """Rows with very different rates: each meets the tolerance against exp(rate), and its answer and its
    number of evaluations are exactly those of solving that row by itself (no row pays for another's steps)."""
    rates = torch.tensor([-8.0, -1.0, 0.0, 0.5, 3.0], dtype=torch.float64)
    y0 = torch.ones(5, 2, dtype=torch.float64)
    y, nfe = solve_per_sample(_exponential(rates), y0, 0.0, 1.0, rtol=1e-8, atol=1e-8)
    assert torch.allclose(y[:, 0], rates.exp(), rtol=1e-6)
    for i in range(5):
        alone, n = solve_per_sample(_exponential(rates[i:i + 1]), y0[i:i + 1], 0.0, 1.0, rtol=1e-8, atol=1e-8)
        assert torch.equal(alone[0], y[i]) and int(n[0]) == int(nfe[i])
    assert nfe[2] < nfe[4]                 # the constant row stops early; the fast-growing one takes more steps


def test_backward_span_and_empty_batch():
    rates = torch.tensor([1.0], dtype=torch.float64)
    y, _ = solve_per_sample(_exponential(rates), torch.ones(1, 1, dtype=torch.float64), 1.0, 0.0, rtol=1e-9,
                            atol=1e-9)
    assert float(y) == pytest.approx(math.exp(-1.0), rel=1e-7)
    y, nfe = solve_per_sample(_exponential(rates), torch.ones(0, 1, dtype=torch.float64), 0.0, 1.0, rtol=1e-6,
                              atol=1e-6)
    assert y.shape == (0, 1) and nfe.shape == (0,)


def test_step_underflow_is_reported():
    """A field that blows up in finite time (y' = y^2, y(0) = 1: y = 1/(1 - u)) cannot be integrated to 2."""
    with pytest.raises(StepUnderflow):
        solve_per_sample(lambda u, y, rows: y * y, torch.ones(1, 1, dtype=torch.float64), 0.0, 2.0, rtol=1e-6,
                         atol=1e-6)


@pytest.mark.parametrize("name", ["vp", "ve"])
def test_batch_answer_equals_single_image_answer(name):
    """log_likelihood on a batch gives each image the answer of solving it alone, to 1e-10 relative
    (only the summation order of the batched model evaluation differs)."""
    process, mix = PROCESSES[name](), mixture(2)
    model, x = mix.model(process), data(mix, 3)
    lp, stats = pd.log_likelihood(process, model, x, return_stats=True)
    for i in range(3):
        alone, st = pd.log_likelihood(process, model, x[i:i + 1], return_stats=True)
        assert float(alone) == pytest.approx(float(lp[i]), rel=1e-10)
        assert int(st.nfe_per_sample[0]) == int(stats.nfe_per_sample[i])


@pytest.mark.parametrize("dim", [2, pytest.param(16, marks=pytest.mark.slow)])
@pytest.mark.parametrize("name", sorted(PROCESSES))
def test_answer_does_not_depend_on_the_integrator(name, dim):
    """Per-sample steps and log-SNR time at rtol = atol = 1e-6, and torchdiffeq's one step per batch at 1e-7
    (at 1e-6 its error on the blend is 3.4e-5 nats/dim, where per-sample steps give 6e-7), all give the
    oracle's log p_{t_min} within 1e-5 nats/dim (prior term replaced by the oracle's log p_{t_max} at the
    endpoint, as in test_exact)."""
    process, mix = PROCESSES[name](), mixture(dim)
    model, x = mix.model(process), data(mix, 3)
    truth = mix.marginal_log_prob(process, x, process.t_min)
    for tol, kwargs in ((1e-6, {}), (1e-7, {"per_sample": False}), (1e-6, {"time": LogSNRTime()})):
        _, st = pd.log_likelihood(process, model, x, rtol=tol, atol=tol, return_stats=True, **kwargs)
        got = st.delta_log_prob + mix.marginal_log_prob(process, st.endpoint, process.t_max)
        assert (got - truth).abs().max() / dim < 1e-5, kwargs


def test_per_sample_steps_cost_fewer_evaluations_per_image():
    """At the same tolerance, the mean evaluations per image with per-sample steps are below the batch solve's
    (which every image pays), and the error stays within the tolerance's reach of the oracle."""
    process, mix = pd.VPSDE(), mixture(2)
    model, x = mix.model(process), data(mix, 32)
    truth = mix.marginal_log_prob(process, x, process.t_min)
    _, own = pd.log_likelihood(process, model, x, return_stats=True)
    _, batch = pd.log_likelihood(process, model, x, return_stats=True, per_sample=False)
    assert float(own.nfe_per_sample.double().mean()) < 0.8 * batch.nfe
    assert torch.equal(batch.nfe_per_sample, torch.full((32,), batch.nfe))
    err = (own.delta_log_prob + mix.marginal_log_prob(process, own.endpoint, process.t_max) - truth).abs() / 2
    assert float(err.mean()) < 1e-4


def test_a_field_that_is_not_finite_is_reported():
    with pytest.raises(StepUnderflow):
        solve_per_sample(lambda u, y, rows: y / 0.0 * 0.0, torch.ones(2, 1, dtype=torch.float64), 0.0, 1.0,
                         rtol=1e-6, atol=1e-6)


def test_per_sample_must_be_a_bool():
    process, mix = pd.VPSDE(), mixture(2)
    with pytest.raises(ValueError, match="per_sample"):
        pd.log_likelihood(process, mix.model(process), data(mix, 2), per_sample="yes")
