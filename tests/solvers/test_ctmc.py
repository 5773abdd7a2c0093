"""Sampling Markov chains through ``pd.sample``: the exact ancestral step reproduces the data law of the
Empirical oracle (chi-square), tau-leaping and the binomial bridge, reproducibility, solver checks."""

import numpy as np
import pytest
import scipy.stats
import torch

import probdiff as pd
from probdiff.oracles import Empirical

CHAINS = {
    "uniform": lambda: pd.UniformChain(5, t_max=8.0),
    "absorbing": lambda: pd.AbsorbingChain(6, t_max=12.0),
    "blackout": lambda: pd.Blackout(max_count=4, t_max=10.0),
    "generic": lambda: pd.MarkovChain(torch.tensor([[-1.0, 0.6, 0.4, 0.0, 0.0], [0.3, -0.8, 0.2, 0.3, 0.0],
                                                    [0.1, 0.1, -0.5, 0.2, 0.1], [0.0, 0.5, 0.5, -1.5, 0.5],
                                                    [0.2, 0.2, 0.2, 0.2, -0.8]]), t_max=25.0),
}

# one dimension, unequal frequencies: states 0, 1, 3, 4 with counts 1, 3, 2, 2
DATA_1D = torch.tensor([[0], [1], [1], [1], [3], [3], [4], [4]])


def chi_square_pvalue(samples: torch.Tensor, data: torch.Tensor, num_states: int) -> float:
    observed = torch.bincount(samples.reshape(-1), minlength=num_states).double()
    expected = torch.bincount(data.reshape(-1), minlength=num_states).double() / len(data) * len(samples)
    assert observed[expected == 0].sum() == 0, "samples off the data support"
    keep = expected > 0
    return scipy.stats.chisquare(observed[keep].numpy(), expected[keep].numpy()).pvalue


@pytest.mark.parametrize("name", list(CHAINS))
def test_ancestral_with_oracle_reproduces_data_in_one_dimension_on_a_coarse_grid(name):
    # In one dimension the mixture-of-posteriors step is the exact time reversal for any step size.
    chain = CHAINS[name]()
    rev = pd.reverse(chain, Empirical(DATA_1D).model(chain))
    g = torch.Generator().manual_seed(0)
    sol = pd.sample(rev, (4000, 1), solver=pd.solvers.Ancestral(), grid=pd.grids.Uniform(4), generator=g)
    assert sol.x.dtype == torch.long
    assert chi_square_pvalue(sol.x, DATA_1D, chain.num_states) > 1e-3


def test_ancestral_in_two_dimensions_converges_as_the_grid_refines():
    # Per-dimension steps are exact only as the step shrinks (Campbell et al. 2022, §4).
    chain = pd.UniformChain(3, t_max=8.0)
    data = torch.tensor([[0, 1], [2, 2], [1, 0]])
    rev = pd.reverse(chain, Empirical(data).model(chain))
    off = []
    for steps in (4, 64):
        x = pd.sample(rev, (3000, 2), solver=pd.solvers.Ancestral(), grid=pd.grids.LogitObservation(steps),
                      generator=torch.Generator().manual_seed(1)).x
        on = (x[:, None, :] == data[None]).all(-1).any(-1)
        off.append(1 - on.double().mean().item())
    assert off[1] < 0.5 * off[0] and off[1] < 0.06


def test_tau_leaping_generic_chain_in_one_dimension():
    chain = CHAINS["generic"]()
    rev = pd.reverse(chain, Empirical(DATA_1D).model(chain))
    x = pd.sample(rev, (4000, 1), solver=pd.solvers.TauLeaping(), grid=pd.grids.LogitObservation(150),
                  generator=torch.Generator().manual_seed(2)).x
    freq = torch.bincount(x.reshape(-1), minlength=5).double() / len(x)
    want = torch.bincount(DATA_1D.reshape(-1), minlength=5).double() / len(DATA_1D)
    assert 0.5 * (freq - want).abs().sum() < 0.05


def test_binomial_bridge_is_exact_for_one_data_point():
    # With one data point the oracle's mean births equal the missing count: the bridge is q(n_s|n_t,n_0).
    b = pd.Blackout(max_count=16, t_max=10.0)
    data = torch.tensor([[16, 0, 7, 1]])
    rev = pd.reverse(b, Empirical(data).model(b))
    sol = pd.sample(rev, (500, 4), solver=pd.solvers.BinomialBridge(), grid=pd.grids.LogitObservation(20),
                    generator=torch.Generator().manual_seed(3), trajectory=True)
    assert (sol.x == data).all()
    assert sol.denoised.shape == (20, 500, 4) and torch.allclose(sol.denoised[-1], data.to(sol.denoised.dtype).expand(500, 4))
    assert sol.xs.shape == (21, 500, 4) and (torch.diff(sol.xs, dim=0) >= 0).all()      # births only


def test_blackout_tau_leaping_with_oracle_matches_data_law():
    # (The binomial bridge rounds a non-integer mean: biased by design, so it is tested with one point.)
    b = pd.Blackout(max_count=4, t_max=10.0)
    rev = pd.reverse(b, Empirical(DATA_1D).model(b))
    want = torch.bincount(DATA_1D.reshape(-1), minlength=5).double() / len(DATA_1D)
    x = pd.sample(rev, (4000, 1), solver=pd.solvers.TauLeaping(), grid=pd.grids.LogitObservation(200),
                  generator=torch.Generator().manual_seed(4)).x
    freq = torch.bincount(x.reshape(-1), minlength=5).double() / len(x)
    assert 0.5 * (freq - want).abs().sum() < 0.05, (freq, want)


def test_same_generator_same_samples_and_models_drive_samplers():
    b = pd.Blackout(max_count=16, t_max=10.0)
    model = pd.BlackoutModel(lambda x, t: torch.zeros(x.shape, dtype=t.dtype) + 1.0, b)
    rev = pd.reverse(b, model)
    def run():
        return pd.sample(rev, (8, 3), solver=pd.solvers.BinomialBridge(), grid=pd.grids.LogitObservation(30),
                         generator=torch.Generator().manual_seed(5)).x
    assert torch.equal(run(), run())
    chain = pd.UniformChain(4)
    cat = pd.CategoricalModel(lambda x, t: torch.zeros(*x.shape, 4, dtype=t.dtype), chain)
    sol = pd.sample(pd.reverse(chain, cat), (6, 2, 2), solver=pd.solvers.Ancestral(), grid=pd.grids.Uniform(5),
                    generator=torch.Generator().manual_seed(6))
    assert sol.x.shape == (6, 2, 2) and sol.nfe == 5 and ((sol.x >= 0) & (sol.x < 4)).all()


def test_solver_checks():
    chain = pd.UniformChain(4)
    cat = pd.CategoricalModel(lambda x, t: torch.zeros(*x.shape, 4, dtype=t.dtype), chain)
    rev = pd.reverse(chain, cat)
    with pytest.raises(ValueError, match="Blackout"):
        pd.sample(rev, (2, 2), solver=pd.solvers.BinomialBridge(), grid=pd.grids.Uniform(3))
    with pytest.raises(ValueError, match="eta must be 1"):
        pd.sample(rev, (2, 2), solver=pd.solvers.Ancestral(eta=0.0), grid=pd.grids.Uniform(3))
    b = pd.Blackout(max_count=4)
    mean_model = pd.BlackoutModel(lambda x, t: torch.zeros(x.shape, dtype=t.dtype), b)
    with pytest.raises(ValueError, match="x0_probs"):
        pd.sample(pd.reverse(b, mean_model), (2, 2), solver=pd.solvers.Ancestral(), grid=pd.grids.Uniform(3))
    with pytest.raises(ValueError, match="the network returned shape"):
        bad = pd.CategoricalModel(lambda x, t: torch.zeros(*x.shape, 3), chain)
        bad.x0_probs(torch.zeros(2, 2, dtype=torch.long), 0.5)
    with pytest.raises(ValueError, match="MarkovChain"):
        pd.CategoricalModel(lambda x, t: x, pd.VPSDE())


DATA_3 = torch.tensor([[8, 0], [3, 5], [1, 1]])          # three points of a 2-pixel image, counts 0..8


def bridge_samples(rounding, steps, n=6000, seed=12):
    b = pd.Blackout(max_count=8, t_max=10.0)
    rev = pd.reverse(b, Empirical(DATA_3).model(b))
    solver = pd.solvers.BinomialBridge() if rounding is None else pd.solvers.BinomialBridge(rounding)
    x = pd.sample(rev, (n, 2), solver=solver, grid=pd.grids.LogitObservation(steps),
                  generator=torch.Generator().manual_seed(seed)).x
    hits = (x[:, None, :] == DATA_3[None]).all(-1)                 # (n, 3)
    return hits.sum(0).double(), n - int(hits.any(-1).sum())


def test_binomial_bridge_with_stochastic_rounding_converges_to_the_data_law():
    """Exact model, fine grid: the three points are equally likely (chi-square, 6000 draws), nothing else drawn."""
    counts, off = bridge_samples(None, 400)
    assert off <= 0.005 * 6000, off
    p = scipy.stats.chisquare(counts.numpy(), np.full(3, float(counts.sum()) / 3)).pvalue
    assert p > 1e-3, counts


@pytest.mark.slow
def test_nearest_rounding_is_inconsistent():
    """The paper's rounding keeps its bias as the grid refines: the chi-square test fails at 400 steps."""
    assert isinstance(pd.solvers.BinomialBridge().rounding, pd.solvers.StochasticRounding)
    counts, _ = bridge_samples(pd.solvers.NearestRounding(), 400)
    p = scipy.stats.chisquare(counts.numpy(), np.full(3, float(counts.sum()) / 3)).pvalue
    assert p < 1e-6, counts
    with pytest.raises(ValueError, match="Rounding"):
        pd.solvers.BinomialBridge("nearest")


def test_subs_model_and_masked_ancestral_skip_the_network_when_nothing_changes():
    """SUBS: zero mask probability, carry-over; MaskedAncestral reuses p(x0|x_t) on unchanged steps and samples
    the same law as Ancestral (chi-square over the first token, a context-free model with known marginal)."""
    s = 5
    chain = pd.AbsorbingChain(s, schedule=pd.processes.schedules.Linear())
    pi = torch.tensor([0.1, 0.2, 0.3, 0.4, 0.0])
    calls = []

    def net(x, t):
        calls.append(x.shape[0])
        return torch.log(pi + 0.5).expand(*x.shape, s).clone()          # the mask logit is finite: SUBS drops it

    model = pd.SUBSModel(net, chain, time_conditioned=False)
    x = torch.tensor([[4, 1, 4]])
    probs = model.x0_probs(x, 0.5)
    assert torch.equal(probs[0, 1], torch.nn.functional.one_hot(torch.tensor(1), s).to(probs.dtype))
    want = (pi + 0.5)[:4] / (pi + 0.5)[:4].sum()
    assert probs[0, 0, s - 1] == 0 and torch.allclose(probs[0, 0, :4], want.to(probs.dtype))
    n, steps = 4000, 64
    rev = pd.reverse(model)
    calls.clear()
    sol = pd.sample(rev, (n, 2), solver=pd.solvers.MaskedAncestral(), grid=pd.grids.ScheduleUniform(steps),
                    generator=torch.Generator().manual_seed(2))
    assert sol.nfe == len(calls) <= steps and sum(calls) < 0.5 * n * steps   # most sample evaluations saved
    assert (sol.x != s - 1).all()                                       # everything unmasked at t_min
    few = pd.sample(rev, (2, 2), solver=pd.solvers.MaskedAncestral(), grid=pd.grids.ScheduleUniform(steps),
                    generator=torch.Generator().manual_seed(3))
    assert few.nfe <= 5                                                 # 4 tokens: at most 4 changes + the first
    counts = torch.bincount(sol.x[:, 0], minlength=4).double()
    assert scipy.stats.chisquare(counts.numpy(), (n * want.double()).numpy()).pvalue > 1e-3
    with pytest.raises(ValueError, match="SUBSModel"):
        pd.sample(pd.reverse(pd.SUBSModel(net, chain)), (2, 2), solver=pd.solvers.MaskedAncestral(),
                  grid=pd.grids.Uniform(3))
