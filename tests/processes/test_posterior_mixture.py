"""The structured reverse step of interpolating chains (probdiff.processes.posterior_mixture): O(1) log_prob and
the dense probabilities equal the generic chain's kernel (S <= 8, 1e-10); the two-level draw equals an
independent inverse CDF exactly; draws follow the law at a multi-block vocabulary (chi-square); the ancestral
kernel of an interpolating chain is the structured one."""

import numpy as np
import pytest
import scipy.stats
import torch

import probdiff as pd
from probdiff.processes.posterior_mixture import PosteriorMixture, sample_excluding
from probdiff.reverse.kernels import CategoricalKernel, MixtureKernel

pytestmark = pytest.mark.usefixtures("float64")

CHAINS = {
    "uniform": lambda: pd.UniformChain(5, rate=0.7, t_max=3.0),
    "absorbing": lambda: pd.AbsorbingChain(6, rate=1.3, t_max=3.0),
    "mixture": lambda: pd.UniformAbsorbingChain(8, uniform_rate=0.4, mask_rate=0.9, t_max=3.0),
}


@pytest.mark.parametrize("name", CHAINS)
def test_log_prob_and_probs_equal_the_generic_kernel(name):
    chain = CHAINS[name]()
    generic = pd.MarkovChain(chain.generator, t_max=chain.t_max)
    n = chain.num_states
    g = torch.Generator().manual_seed(0)
    x0 = torch.randint(0, n, (4, 3), generator=g)
    t = torch.tensor([1e-6, 0.3, 1.0, 3.0])
    s = t * torch.tensor([0.0, 0.5, 0.9, 0.2])
    xt = chain.sample_marginal(x0, t, generator=g)
    xt[0, 0] = n - 1
    probs = torch.softmax(torch.randn(4, 3, n, generator=g) * 2, -1)
    law = chain.reverse_kernel(probs, xt, s, t)
    assert isinstance(law, PosteriorMixture) and law.batch_shape == xt.shape
    want = generic.reverse_kernel_log_probs(probs, xt, s, t)
    np.testing.assert_allclose(law.probs.numpy(), torch.exp(want).numpy(), rtol=1e-10, atol=1e-12)
    for k in range(n):
        value = torch.full_like(xt, k)
        got, exp = law.log_prob(value), want[..., k]
        fin = torch.isfinite(exp)
        assert torch.equal(torch.isfinite(got), fin)
        np.testing.assert_allclose(got[fin].numpy(), exp[fin].numpy(), rtol=1e-10, atol=1e-10)
    assert law.log_prob(torch.full_like(xt, n)).isneginf().all()


def test_two_level_draw_equals_an_independent_inverse_cdf():
    g = torch.Generator().manual_seed(1)
    s = 10
    w = torch.rand(7, s, generator=g) * (torch.rand(7, s, generator=g) > 0.3)       # zeros included
    w[6] = 0.0
    w[6, 4] = 1.0                                       # only the excluded state has weight: returns x
    x = torch.tensor([0, 9, 8, 3, 4, 5, 4])             # 8 and 9 sit in the tail block for block=4
    for u in np.linspace(0.0, 0.999, 37):
        got = sample_excluding(w, x, torch.full((7,), float(u)), block=4)
        for i in range(7):
            wi = w[i].numpy().copy()
            wi[x[i]] = 0.0
            if wi.sum() == 0:
                assert got[i] == x[i]
                continue
            cdf = np.cumsum(wi)
            want = int(np.searchsorted(cdf, u * cdf[-1], side="right"))
            assert got[i].item() == want, (i, u, got[i].item(), want)


@pytest.mark.parametrize("name", CHAINS)
def test_draws_follow_the_law_across_blocks(name):
    # a vocabulary of several 256-state blocks plus a tail; the model's weight spread over a few states
    chain = {"uniform": pd.UniformChain(600), "absorbing": pd.AbsorbingChain(600),
             "mixture": pd.UniformAbsorbingChain(600, uniform_rate=0.3, mask_rate=0.7)}[name]
    m, n = 20_000, chain.num_states
    w = torch.zeros(n)
    w[[3, 255, 256, 300, 598]] = torch.tensor([0.1, 0.2, 0.3, 0.25, 0.15])
    g = torch.Generator().manual_seed(2)
    for state in (256, n - 1):
        xt = torch.full((m, 1), state)
        law = chain.reverse_kernel(w.expand(m, 1, n), xt, 0.3, 0.9)
        draws = law.draw(g)[:, 0].numpy()
        p = law.probs[0, 0].numpy()
        # group the states the uniform part spreads over into one cell
        cells = [3, 255, 256, 300, 598, n - 1]
        expected = [p[c] for c in cells] + [1 - sum(p[c] for c in cells)]
        counts = [int((draws == c).sum()) for c in cells] + [int(np.isin(draws, cells, invert=True).sum())]
        keep = np.array(expected) > 1e-12
        assert sum(c for c, k in zip(counts, keep) if not k) == 0
        if keep.sum() > 1:                     # an unmasked token under masking is a point mass: nothing more
            want = m * np.array(expected)[keep] / sum(np.array(expected)[keep])
            assert scipy.stats.chisquare(np.array(counts)[keep], want).pvalue > 1e-3, (state, counts, want)


def test_ancestral_kernel_of_an_interpolating_chain_is_structured():
    chain = pd.UniformAbsorbingChain(6, uniform_rate=0.5, mask_rate=0.5)
    generic = pd.MarkovChain(chain.generator, t_max=chain.t_max)
    g = torch.Generator().manual_seed(3)
    probs = torch.softmax(torch.randn(4, 3, 6, generator=g), -1)

    class Fixed(pd.CategoricalModel):
        def x0_probs(self, x, t):
            return probs

    x = torch.randint(0, 6, (4, 3), generator=g)
    t, s = torch.full((4,), 1.2), torch.full((4,), 0.7)
    kernel, denoised = pd.reverse(chain, Fixed(None, chain)).ancestral_kernel(x, t, s)
    other, denoised2 = pd.reverse(generic, Fixed(None, generic)).ancestral_kernel(x, t, s)
    assert isinstance(kernel, MixtureKernel) and isinstance(other, CategoricalKernel)
    np.testing.assert_allclose(kernel.probs.numpy(), other.probs.numpy(), rtol=1e-10, atol=1e-12)
    y = kernel.draw(g)
    np.testing.assert_allclose(kernel.log_prob(y).numpy(), other.log_prob(y).numpy(), rtol=1e-10)
    assert torch.equal(denoised, denoised2)


def test_dense_probabilities_carry_gradients_to_the_model_output():
    """Training a network on the chain's bound differentiates the dense reverse kernel through the model's
    output ``w`` (the coefficients depend on ``w`` too): the out-of-place path gives the fused path's values,
    and its gradient agrees with finite differences (``torch.autograd.gradcheck``, float64)."""
    chain = pd.UniformAbsorbingChain(6)
    torch.manual_seed(0)
    w = torch.softmax(torch.randn(2, 3, 6, dtype=torch.float64), -1)
    x = torch.randint(0, 6, (2, 3))
    t, s = torch.full((2,), 0.7, dtype=torch.float64), torch.full((2,), 0.4, dtype=torch.float64)
    fused = chain.reverse_kernel(w, x, s, t).dense(log=True)
    wg = w.clone().requires_grad_(True)
    torch.testing.assert_close(chain.reverse_kernel(wg, x, s, t).dense(log=True).detach(), fused,
                               rtol=1e-12, atol=1e-12)
    assert torch.autograd.gradcheck(lambda v: chain.reverse_kernel(v, x, s, t).dense(log=True), (wg,))
    assert torch.autograd.gradcheck(lambda v: chain.reverse_rates(v, x, t), (wg,))
