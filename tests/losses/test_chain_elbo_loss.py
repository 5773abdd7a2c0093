"""ChainELBOLoss: its mean is minus the continuous-time ELBO (closed forms: a context-free SUBS model, the exact
oracle), the batch-stratified times lower the spread of the batch mean, reproducibility, empty batch, bad input."""

import math

import pytest
import torch

import probdiff as pd
from probdiff.losses import ChainELBOLoss
from probdiff.oracles import Empirical
from probdiff.processes import schedules

pytestmark = pytest.mark.usefixtures("float64")


def context_free_subs(chain, pi):
    """Masked tokens drawn from a fixed ``pi`` (SUBS, Sahoo et al. 2024 §3.2.3, transcribed)."""
    s = chain.num_states

    def net(x, t):
        logits = torch.log(pi).expand(*x.shape, s).clone()
        keep = torch.log(torch.nn.functional.one_hot(x.long(), s).double())
        return torch.where((x == s - 1)[..., None], logits, keep)

    return pd.CategoricalModel(net, chain)


@pytest.mark.parametrize("stratified", [True, False])
def test_mean_is_minus_the_log_likelihood_of_a_context_free_masked_model(stratified):
    # THEORY.md §10: with alpha_1 = 0 the bound of a context-free SUBS model is sum_i log pi(x0_i), exactly
    chain = pd.AbsorbingChain(5, schedule=schedules.Cosine())
    pi = torch.tensor([0.1, 0.2, 0.3, 0.4, 0.0])
    x0 = torch.tensor([[0, 1, 2, 3, 3, 2]]).repeat(2000, 1)
    loss = ChainELBOLoss(chain, stratified=stratified)(context_free_subs(chain, pi), x0,
                                                        generator=torch.Generator().manual_seed(0))
    want = -torch.log(pi[x0[0]]).sum().item()
    se = loss.std().item() / math.sqrt(len(loss))      # the i.i.d. standard error (conservative when stratified)
    assert loss.shape == (2000,)
    assert abs(loss.mean().item() - want) < 4 * se, (loss.mean().item(), want, se)


def test_mean_with_the_exact_oracle_is_log_n_plus_the_prior_gap():
    chain = pd.UniformChain(3, t_max=6.0)
    data = torch.tensor([[0, 1, 2], [2, 2, 0], [1, 0, 0]])
    exact = Empirical(data).model(chain)
    loss = ChainELBOLoss(chain)(exact, data.repeat(300, 1), generator=torch.Generator().manual_seed(1))
    want = math.log(3) + chain.prior_kl(data).mean().item()
    se = loss.std().item() / math.sqrt(len(loss))
    assert abs(loss.mean().item() - want) < 4 * se + 1e-9, (loss.mean().item(), want, se)


def test_stratified_times_lower_the_spread_of_the_batch_mean():
    # the exact oracle of 8 sequences of 12 tokens: the masked cross-entropy depends on how many tokens are masked,
    # so the time matters (for a context-free model it would not: uniform-in-alpha times already remove it)
    chain = pd.AbsorbingChain(5, schedule=schedules.Linear())
    data = torch.randint(0, 4, (8, 12), generator=torch.Generator().manual_seed(0))
    model = Empirical(data).model(chain)
    spread = {}
    for stratified in (True, False):
        g = torch.Generator().manual_seed(2)
        means = torch.stack([ChainELBOLoss(chain, stratified=stratified)(model, data.repeat(4, 1), generator=g).mean()
                             for _ in range(200)])
        spread[stratified] = means.std().item()
    # measured ratio about 0.73; the standard error of each spread from 200 batches is about 5%
    assert spread[True] < 0.9 * spread[False], spread


def test_reproducible_empty_batch_and_bad_input():
    chain = pd.AbsorbingChain(4, schedule=schedules.Linear())
    model = context_free_subs(chain, torch.tensor([0.2, 0.3, 0.5, 0.0]))
    x0 = torch.tensor([[0, 1, 2], [2, 2, 0]])
    loss = ChainELBOLoss(chain)
    a = loss(model, x0, generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(a, loss(model, x0, generator=torch.Generator().manual_seed(5)), rtol=0, atol=0)
    assert loss(model, x0[:0]).shape == (0,)
    with pytest.raises(ValueError, match="process must be a MarkovChain"):
        ChainELBOLoss(pd.VPSDE())
    with pytest.raises(TypeError, match="stratified"):
        ChainELBOLoss(chain, stratified="yes")
    with pytest.raises(ValueError):
        loss(context_free_subs(pd.AbsorbingChain(4, schedule=schedules.Cosine()),
                               torch.tensor([0.2, 0.3, 0.5, 0.0])), x0)
    with pytest.raises(ValueError, match="x0"):
        loss(model, torch.tensor([[0, 5, 1]]))
    assert "stratified=True" in repr(loss)
