"""Bits per dimension and uniform dequantisation: constants by hand, code lengths of known laws."""

import math

import pytest
import torch
from hypothesis import given, strategies as st

import probdiff as pd
from probdiff.likelihood import Quantization


@pytest.mark.parametrize("levels, data_range, offset", [
    (256, (-1.0, 1.0), 7.0),        # 8-bit images on [-1, 1]: log2 256 - log2 2
    (256, (0.0, 1.0), 8.0),         # on [0, 1]
    (256, (0.0, 256.0), 0.0),       # raw levels with unit bins
    (32, (-2.0, 2.0), 3.0),         # 5 - 2
])
def test_density_constant_by_hand(levels, data_range, offset):
    d = 3 * 32 * 32
    log_prob = torch.tensor([-1.5 * d * math.log(2.0), 0.0])   # 1.5 bits/dim of density, and zero
    bpd = pd.bits_per_dim(log_prob, (3, 32, 32), levels, data_range)
    assert torch.allclose(bpd, torch.tensor([1.5 + offset, offset]), atol=1e-12)


def test_uniform_law_costs_log2_levels():
    """The uniform law over K levels needs log2 K bits per dimension, whichever data range is declared:
    its dequantised density is (hi - lo)^{-D} on [lo, hi]^D."""
    for levels, (lo, hi) in [(256, (-1.0, 1.0)), (16, (3.0, 7.5)), (2, (0.0, 1.0))]:
        d = 5
        log_density = torch.tensor(-d * math.log(hi - lo), dtype=torch.float64)
        bpd = float(pd.bits_per_dim(log_density, (d,), levels, (lo, hi)))
        assert math.isclose(bpd, math.log2(levels), abs_tol=1e-12)
        log_mass = torch.tensor(-d * math.log(levels), dtype=torch.float64)
        assert math.isclose(float(pd.bits_per_dim(log_mass, (d,))), math.log2(levels), abs_tol=1e-12)


def test_dequantized_gaussian_upper_bounds_the_exact_code_length():
    """Jensen: -E_u log p(x) + const >= -log P(n) for the exact bin masses of a 1-D Gaussian."""
    from scipy import stats

    levels, lo, hi = 16, -2.0, 2.0
    width = (hi - lo) / levels
    n = torch.arange(levels).repeat(4000)
    x = pd.dequantize(n, levels, (lo, hi), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    log_density = torch.as_tensor(stats.norm.logpdf(x.numpy(), 0.0, 0.7))
    bound = pd.bits_per_dim(log_density.reshape(4000, levels).mean(0), (1,), levels, (lo, hi))
    edges = [lo + width * k for k in range(levels + 1)]
    exact = torch.tensor([-math.log2(stats.norm.cdf(edges[k + 1], 0, 0.7) - stats.norm.cdf(edges[k], 0, 0.7))
                          for k in range(levels)])
    assert (bound >= exact - 1e-3).all()
    assert (bound - exact).max() < 0.1       # bins are small: the bound is tight


@given(st.integers(2, 300), st.floats(-5, 5), st.floats(0.1, 10), st.integers(0, 2**31 - 1))
def test_dequantize_stays_in_its_bin(levels, lo, span, seed):
    hi = lo + span
    g = torch.Generator().manual_seed(seed)
    n = torch.randint(0, levels, (64,), generator=g)
    x = pd.dequantize(n, levels, (lo, hi), generator=g, dtype=torch.float64)
    q = Quantization(levels, (lo, hi))
    assert ((x >= lo) & (x < hi + 1e-12)).all()
    assert torch.equal(((x - lo) / q.width).floor().clamp(0, levels - 1).long(), n)
    assert torch.equal(q.index(q.centers(n, dtype=torch.float64)), n)


def test_dequantize_noise_is_uniform():
    n = torch.zeros(20000, dtype=torch.long)
    x = pd.dequantize(n, 4, (0.0, 4.0), generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    assert abs(float(x.mean()) - 0.5) < 4 * math.sqrt(1 / 12 / 20000)
    assert abs(float(x.var()) - 1 / 12) < 0.005


@pytest.mark.parametrize("call, match", [
    (lambda: pd.bits_per_dim(torch.tensor([-1.0]), (2,), 256, None), "both levels and data_range"),
    (lambda: pd.bits_per_dim(torch.tensor([-1.0]), (2,), None, (0, 1)), "both levels and data_range"),
    (lambda: pd.bits_per_dim(torch.tensor([3.0]), (2,)), "log-probability"),
    (lambda: pd.bits_per_dim(torch.tensor([float("nan")]), (2,), 256, (0, 1)), "log_prob"),
    (lambda: pd.bits_per_dim(torch.tensor([-1.0]), (), 256, (0, 1)), "event_shape"),
    (lambda: pd.bits_per_dim(torch.tensor([-1.0]), (2, 0), 256, (0, 1)), "event_shape"),
    (lambda: pd.bits_per_dim(torch.tensor([-1.0]), (2,), 1, (0, 1)), "levels"),
    (lambda: pd.bits_per_dim(torch.tensor([-1.0]), (2,), 2.5, (0, 1)), "levels"),
    (lambda: pd.bits_per_dim(torch.tensor([-1.0]), (2,), 256, (1, 0)), "data_range"),
    (lambda: pd.bits_per_dim(torch.tensor([-1.0]), (2,), 256, (0, float("inf"))), "data_range"),
    (lambda: pd.dequantize(torch.tensor([0, 4]), 4, (0, 1)), "levels in"),
    (lambda: pd.dequantize(torch.tensor([-1]), 4, (0, 1)), "levels in"),
    (lambda: pd.dequantize(torch.tensor([0.5]), 4, (0, 1)), "integer"),
    (lambda: Quantization(4, (0, 1)).index(torch.tensor([0.3])), "bin centres"),
])
def test_bad_input(call, match):
    with pytest.raises(ValueError, match=match):
        call()
