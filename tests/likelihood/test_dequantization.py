"""Dequantisation bounds on a small discrete oracle (issue 15, item 5).

The oracle: a 2-D Gaussian mixture with diagonal covariances, whose bin masses P(n) are products of normal
CDF differences (scipy). Every bound must stay below log P(n) and the importance-weighted one must tighten
with K; Monte-Carlo checks use fixed seeds and tolerances in standard errors.
"""

import math

import numpy as np
import pytest
import torch
from scipy import stats

import probdiff as pd
from probdiff.likelihood import TruncatedNormalDequantizer, UniformDequantizer, dequantized_log_prob

W = np.array([0.4, 0.6])
MU = np.array([[-0.6, 0.3], [0.5, -0.2]])
SD = np.array([[0.5, 0.7], [0.6, 0.4]])
Q = pd.Quantization(6, (-1.5, 1.5))


def log_density(x):
    xs = x.numpy()[:, None, :]
    comp = stats.norm.logpdf(xs, MU[None], SD[None]).sum(-1) + np.log(W)[None]
    return torch.from_numpy(np.logaddexp.reduce(comp, axis=1))


def log_mass(n):
    lo = Q.lo + Q.width * n.numpy()[:, None, :]
    cdf = stats.norm.cdf(lo + Q.width, MU[None], SD[None]) - stats.norm.cdf(lo, MU[None], SD[None])
    return torch.from_numpy(np.log((W[None] * cdf.prod(-1)).sum(1)))


N = torch.tensor([[1, 3], [2, 2], [4, 1], [0, 5]])


def _bound(deq, k, reps=4000, seed=0):
    n = N.repeat(reps, 1)
    out = dequantized_log_prob(log_density, n, Q, dequantizer=deq, num_samples=k,
                               generator=torch.Generator().manual_seed(seed)).reshape(reps, N.shape[0])
    return out.mean(0), out.std(0) / math.sqrt(reps)


@pytest.mark.parametrize("deq", [UniformDequantizer(), TruncatedNormalDequantizer(0.3)])
def test_bounds_below_log_mass_and_tighten_with_k(deq):
    truth = log_mass(N)
    previous = None
    for k in (1, 4, 32):
        mean, se = _bound(deq, k)
        assert (mean <= truth + 3 * se).all()
        if previous is not None:
            assert (mean > previous).all()
        previous = mean
    assert ((truth - previous) < 0.02).all()               # K = 32 is nearly tight on this smooth density


def test_uniform_k1_is_the_usual_bits_per_dim():
    n = N.repeat(500, 1)
    g = torch.Generator().manual_seed(3)
    bound = dequantized_log_prob(log_density, n, Q, generator=g)
    x = Q.dequantize(n, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    usual = pd.bits_per_dim(log_density(x), (2,), levels=6, data_range=(-1.5, 1.5))
    assert torch.allclose(pd.bits_per_dim(bound, (2,)), usual)


def test_truncated_normal_entropy_and_the_forgotten_term():
    deq = TruncatedNormalDequantizer(0.3)
    ref = stats.truncnorm(-0.5 / 0.3, 0.5 / 0.3, scale=0.3).entropy()
    assert deq.entropy(2) == pytest.approx(2 * ref, rel=1e-10)
    u, log_q = deq.sample((20000, 2), generator=torch.Generator().manual_seed(4))
    assert ((u >= 0) & (u < 1)).all()
    assert float(-log_q.mean()) == pytest.approx(deq.entropy(2), abs=4 * float(log_q.std()) / math.sqrt(20000))
    # K = 1 is E_q[log p(x)] + D log w + H(q_u): the entropy term is in the bound (without it the number
    # is no bound: here it would sit 0.14 nats above the bound for every bin)
    n = N.repeat(4000, 1)
    bound = dequantized_log_prob(log_density, n, Q, dequantizer=deq, generator=torch.Generator().manual_seed(5))
    u, _ = deq.sample(n.shape, generator=torch.Generator().manual_seed(5))
    plain = log_density(Q.lo + Q.width * (n.double() + u)) + 2 * math.log(Q.width)
    se = float((bound - plain).std()) / math.sqrt(4000)
    assert float((bound - plain).mean()) == pytest.approx(deq.entropy(2), abs=4 * se)


def test_bad_arguments():
    with pytest.raises(ValueError, match="quantization"):
        dequantized_log_prob(log_density, N, (6, (-1.5, 1.5)))
    with pytest.raises(ValueError, match="num_samples"):
        dequantized_log_prob(log_density, N, Q, num_samples=0)
    with pytest.raises(ValueError, match="n must"):
        dequantized_log_prob(log_density, N + 10, Q)
    with pytest.raises(ValueError, match="scale"):
        TruncatedNormalDequantizer(0.0)


def test_bound_with_standard_error_k1_and_exact():
    """K = 1: the bound's SE is the density's own; exact densities give SE 0 and the same bound as
    dequantized_log_prob (same draws)."""
    from probdiff.likelihood import dequantized_bound

    n = torch.tensor([[1, 2], [3, 3], [0, 5]])
    se_in = torch.tensor([0.1, 0.2, 0.3], dtype=torch.float64)
    bound, se = dequantized_bound(lambda x: (log_density(x), se_in), n, Q, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(se, se_in)
    exact, zero = dequantized_bound(lambda x: (log_density(x), None), n, Q, num_samples=3,
                                    generator=torch.Generator().manual_seed(1))
    plain = dequantized_log_prob(log_density, n, Q, num_samples=3, generator=torch.Generator().manual_seed(1))
    assert torch.equal(exact, plain) and torch.equal(zero, torch.zeros(3, dtype=torch.float64))


def test_bound_standard_error_matches_the_spread_of_noisy_estimates():
    """The delta-method SE of the log-mean-exp over K draws against the spread of the bound when the K
    log-densities carry independent N(0, se_k^2) noise (4000 repeats; within 10%)."""
    from probdiff.likelihood import dequantized_bound

    k, n = 6, torch.tensor([[2, 3]])
    se_k = torch.linspace(0.02, 0.08, k, dtype=torch.float64)
    seen = {}

    def recorded(x):
        seen["log_p"] = log_density(x)
        return seen["log_p"], se_k

    _, se = dequantized_bound(recorded, n, Q, num_samples=k, generator=torch.Generator().manual_seed(2))
    a = seen["log_p"] + 2 * math.log(Q.width)               # uniform dequantiser: log q_u = 0
    noise = torch.randn(4000, k, generator=torch.Generator().manual_seed(3), dtype=torch.float64) * se_k
    spread = (torch.logsumexp(a + noise, 1) - math.log(k)).std()
    assert abs(float(se) / float(spread) - 1) < 0.1
