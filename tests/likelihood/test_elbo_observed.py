"""Conditional chain ELBOs: ``pd.elbo(chain, model, x, observed=mask)`` bounds log p(x_U | x_O).

Expected values: the exact model of the data points that agree with x on O (the empirical oracle of that subset:
its posterior weights share the O factors, so they cancel) has the true reverse rates of the conditional process,
so its bound tends to log(1 / #subset) up to the prior KL over U; masking's closed form against the generic chain;
the chain rule for a context-free model.
"""

import math

import numpy as np
import pytest
import torch

import probdiff as pd
from probdiff.likelihood import chain_elbo_integrand, prior_kl
from probdiff.losses import ChainELBOLoss
from probdiff.oracles import Empirical
from probdiff.processes import schedules
from probdiff.testing import BUILT_IN

CHAIN_FIXTURES = [f for f in BUILT_IN if f.id in ("UniformChain", "AbsorbingChain", "MarkovChain-time-dependent")]
DATA = torch.tensor([[0, 1, 2], [0, 2, 0], [1, 0, 0], [2, 2, 1], [0, 2, 2]])
OBSERVED = torch.tensor([True, False, False])          # the first coordinate is given


def data_for(chain):
    n = chain.num_states - 1 if isinstance(chain, pd.AbsorbingChain) else chain.num_states
    assert n >= 3
    return DATA


@pytest.mark.parametrize("fixture", CHAIN_FIXTURES, ids=lambda f: f.id)
def test_conditional_bound_of_the_exact_conditional_model_tends_to_log_one_over_the_subset(fixture):
    chain = fixture.make()
    data = data_for(chain)
    x = data[:1]                                                # [0, 1, 2]: three points share x_O = 0
    subset = data[data[:, 0] == x[0, 0]]
    exact = Empirical(subset).model(chain)
    draws = pd.elbo(chain, exact, x.repeat(600, 1), num_samples=4, observed=OBSERVED,
                    generator=torch.Generator().manual_seed(0))
    mean, se = draws.mean().item(), draws.std().item() / math.sqrt(len(draws))
    gap = prior_kl(chain, x, observed=OBSERVED).item()
    assert abs(mean - (math.log(1 / len(subset)) - gap)) < 4 * se + 1e-9, (mean, se, gap)


def test_masking_full_data_model_is_already_the_exact_conditional_one():
    """Under masking a clean token is reachable only from itself, so the full data's exact model weighs the
    points that disagree on O by 0: its conditional bound is log(1/#subset) too, on a grid and in continuous time.
    (alpha_{t_max} > 0 here: where alpha_t = 0 a clean token has probability 0 under every x_0, and this model,
    which weighs x_O by the forward marginal, is undefined; the grid starts at t_max.)"""
    chain = pd.AbsorbingChain(4, t_max=8.0)
    exact = Empirical(DATA).model(chain)
    g = torch.Generator().manual_seed(1)
    # continuous time, two free dimensions; a 3-step grid with one free dimension (exact on any grid there)
    for grid, x, observed, n in ((None, DATA[:1], OBSERVED, 3),
                                 (pd.grids.Uniform(3), DATA[1:2], torch.tensor([True, True, False]), 2)):
        gap = prior_kl(chain, x, observed=observed).item()
        draws = pd.elbo(chain, exact, x.repeat(3000, 1), grid=grid, observed=observed, generator=g)
        mean, se = draws.mean().item(), draws.std().item() / math.sqrt(len(draws))
        assert abs(mean - (math.log(1 / n) - gap)) < 4 * se + 1e-9, (grid, mean, se)


@pytest.mark.parametrize("make", [lambda: pd.UniformChain(4, t_max=9.0), lambda: pd.AbsorbingChain(5, t_max=12.0)])
def test_one_free_dimension_is_exact_on_any_grid(make):
    """With all but one dimension observed the conditional process is one-dimensional, where the exact model's
    discrete-time bound is log p(x_U | x_O) up to the prior mismatch on every grid."""
    chain = make()
    observed = torch.tensor([True, True, False])
    x = DATA[1:2]                                               # [0, 2, 0]: (0, 2, .) is shared with [0, 2, 2]
    subset = DATA[(DATA[:, :2] == x[0, :2]).all(1)]
    exact = Empirical(subset).model(chain)
    gap = prior_kl(chain, x, observed=observed).item()
    for steps in (1, 4):
        e = pd.elbo(chain, exact, x.repeat(400, 1), grid=pd.grids.Uniform(steps), observed=observed,
                    generator=torch.Generator().manual_seed(steps))
        mean, se = e.mean().item(), e.std().item() / math.sqrt(len(e))
        assert abs(mean - (math.log(1 / 2) - gap)) < 4 * se + 1e-9, (steps, mean, se)


def test_chain_rule_for_a_context_free_model():
    """A model that ignores context: log p(x) = log p(x_O) + log p(x_U | x_O), each bound being the sum of
    log pi over its own tokens (alpha_1 = 0), so the two conditional bounds add up to the joint one's value."""
    s = 5
    chain = pd.AbsorbingChain(s, schedule=schedules.Cosine())
    pi = torch.tensor([0.1, 0.2, 0.3, 0.4, 0.0])

    def net(x, t):
        logits = torch.log(pi).expand(*x.shape, s).clone()
        return torch.where((x.long() == s - 1)[..., None], logits, torch.log(
            torch.nn.functional.one_hot(x.long(), s).double()))

    model = pd.CategoricalModel(net, chain)
    x0 = torch.tensor([[0, 1, 2, 3, 3, 2]]).repeat(400, 1)
    prefix = torch.arange(6) < 2
    g = torch.Generator().manual_seed(2)
    for observed, want in ((prefix, torch.log(pi[x0[0, 2:]]).sum()), (~prefix, torch.log(pi[x0[0, :2]]).sum())):
        draws = pd.elbo(chain, model, x0, num_samples=2, observed=observed, generator=g)
        se = draws.std().item() / math.sqrt(len(draws))
        assert abs(draws.mean().item() - want.item()) < 4 * se + 1e-9, (draws.mean(), want, se)


@pytest.mark.parametrize("subs", [True, False], ids=["SUBS", "plain-categorical"])
def test_masked_closed_form_with_observed_equals_the_generic_chain(float64, subs):
    s = 7
    chain = pd.AbsorbingChain(s, schedule=schedules.Cosine())
    generic = chain_elbo_integrand.dispatch(pd.MarkovChain)
    g = torch.Generator().manual_seed(5)
    x0 = torch.randint(0, s - 1 if subs else s, (6, 9), generator=g)
    t = torch.tensor([0.02, 0.2, 0.4, 0.6, 0.8, 0.97])
    observed = torch.rand(6, 9, generator=g) < 0.4
    xt = torch.where(observed, x0, chain.sample_marginal(x0, t, generator=g))
    weights = torch.randn(s, s, generator=g)

    def net(x, t):
        return weights[x.long()] * (1 + t[:, None, None]) + x.sum(1, keepdim=True)[..., None] / 10

    model = pd.SUBSModel(net, chain) if subs else pd.CategoricalModel(net, chain)
    rev = pd.reverse(chain, model)
    got, want = chain_elbo_integrand(chain, rev, x0, xt, t, observed), generic(chain, rev, x0, xt, t, observed)
    np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-10, atol=1e-12)
    # an observed token's terms are dropped: without the mask the generic sum is larger for a plain model
    # (its rates out of a clean token are positive) and equal under SUBS (no rates out of an unmasked token)
    full = generic(chain, rev, x0, xt, t)
    assert bool((full >= want - 1e-12).all())
    assert subs == bool(torch.allclose(full, want, rtol=1e-12, atol=1e-12))


@pytest.mark.parametrize("fixture", CHAIN_FIXTURES, ids=lambda f: f.id)
def test_nothing_observed_is_the_unconditional_bound_and_everything_observed_is_zero(fixture):
    chain = fixture.make()
    x = data_for(chain)
    model = Empirical(x).model(chain)
    for grid in (None, pd.grids.Uniform(3)):
        plain = pd.elbo(chain, model, x, grid=grid, num_samples=3, generator=torch.Generator().manual_seed(4))
        none = pd.elbo(chain, model, x, grid=grid, num_samples=3, observed=torch.zeros(3, dtype=torch.bool),
                       generator=torch.Generator().manual_seed(4))
        np.testing.assert_allclose(none.numpy(), plain.numpy(), rtol=1e-12, atol=1e-12)
        every = pd.elbo(chain, model, x, grid=grid, observed=torch.ones_like(x, dtype=torch.bool))
        assert bool((every == 0).all())


def test_the_model_sees_the_observed_values_and_the_loss_is_the_negative_bound():
    chain = pd.AbsorbingChain(4, schedule=schedules.Linear())
    seen = []

    def net(x, t):
        seen.append(x.clone())
        return torch.zeros(*x.shape, 4, dtype=torch.float64)

    model = pd.SUBSModel(net, chain)
    x0 = torch.tensor([[0, 1, 2, 0], [2, 2, 1, 0]])
    observed = torch.tensor([[True, True, False, False], [False, True, True, True]])
    loss = ChainELBOLoss(chain)(model, x0, observed=observed, generator=torch.Generator().manual_seed(0))
    assert bool((seen[-1][observed] == x0[observed]).all())
    many, held = x0.repeat(20, 1), observed.repeat(20, 1)
    for grid in (None, pd.grids.Uniform(2)):
        pd.elbo(chain, model, many, grid=grid, observed=held, generator=torch.Generator().manual_seed(2))
        assert bool((seen[-1][held] == many[held]).all()) and bool((seen[-1] == 3).any())
    # a uniform model over 3 tokens: the masked integrand is c * log 3 per free masked token; the loss is an
    # unbiased estimate of #free * log 3
    assert loss.shape == (2,) and bool((loss >= 0).all())
    many = ChainELBOLoss(chain)(model, x0.repeat(2000, 1), observed=observed.repeat(2000, 1),
                                generator=torch.Generator().manual_seed(1)).reshape(2000, 2)
    se = many.std(0) / math.sqrt(2000)
    want = torch.tensor([2.0, 1.0]) * math.log(3)
    assert bool(((many.mean(0) - want).abs() < 4 * se).all()), (many.mean(0), want, se)


def test_bad_observed_is_refused_and_an_empty_batch_is_valid():
    chain = pd.AbsorbingChain(4, schedule=schedules.Linear())
    model = Empirical(DATA).model(chain)
    x = DATA[:2]
    for bad, words in ((torch.zeros(3), "boolean"), (torch.zeros(2, 2, dtype=torch.bool), "shape"),
                       ([True, False, True], "boolean")):
        with pytest.raises(ValueError, match=f"observed must be.*{words}"):
            pd.elbo(chain, model, x, observed=bad)
        with pytest.raises(ValueError, match="observed must be"):
            ChainELBOLoss(chain)(model, x, observed=bad)
    empty = pd.elbo(chain, model, DATA[:0], observed=OBSERVED)
    assert empty.shape == (0,)
    assert ChainELBOLoss(chain)(model, DATA[:0], observed=OBSERVED).shape == (0,)


def test_chains_and_integrands_written_before_the_mask_keep_working():
    """A chain overriding prior_kl(x0) and an integrand registered with five arguments, as written before
    ``observed`` existed: the unconditional bound and loss still call them as they were."""

    class OldChain(pd.UniformChain):
        def prior_kl(self, x0):
            return super().prior_kl(x0)

    calls = []

    @chain_elbo_integrand.register(OldChain)
    def _old(process, rev, x0, xt, t):
        calls.append(1)
        return chain_elbo_integrand.dispatch(pd.MarkovChain)(process, rev, x0, xt, t)

    chain = OldChain(4)
    model = Empirical(DATA).model(chain)
    assert pd.elbo(chain, model, DATA).shape == (5,)
    assert pd.elbo(chain, model, DATA, grid=pd.grids.Uniform(2)).shape == (5,)

    class OldBlackout(pd.Blackout):
        def prior_kl(self, x0):
            return super().prior_kl(x0)

    counts = OldBlackout(max_count=3, t_max=10.0)
    assert pd.elbo(counts, Empirical(DATA).model(counts), DATA).shape == (5,)
    assert ChainELBOLoss(chain)(model, DATA).shape == (5,)
    assert len(calls) == 2


def test_blackout_takes_observed_on_a_grid_and_refuses_it_in_continuous_time():
    from probdiff.likelihood.chain import chain_elbo

    chain = pd.Blackout(max_count=3, t_max=10.0)
    data = torch.tensor([[0, 1, 2], [0, 1, 3], [1, 3, 0]])
    x, observed = data[:1], torch.tensor([True, True, False])
    subset = data[(data[:, :2] == x[0, :2]).all(1)]            # two points share x_O: log p(x_U | x_O) = log 1/2
    exact = Empirical(subset).model(chain)
    grid = pd.grids.Uniform(4)
    e = pd.elbo(chain, exact, x.repeat(300, 1), grid=grid, observed=observed,
                generator=torch.Generator().manual_seed(0))
    direct = chain_elbo(chain, exact, x.repeat(300, 1), grid=grid, observed=observed,
                        generator=torch.Generator().manual_seed(0))
    assert torch.equal(e, direct)                                 # Blackout's bound hands the mask to the chain's
    gap = prior_kl(chain, x, observed=observed).item()
    se = e.std().item() / math.sqrt(len(e))
    assert abs(e.mean().item() - (math.log(1 / 2) - gap)) < 4 * se + 1e-6, (e.mean(), se, gap)
    with pytest.raises(ValueError, match="observed must be None for Blackout's continuous-time bound"):
        pd.elbo(chain, exact, x, observed=observed)
