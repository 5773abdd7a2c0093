"""The dense chain queries (``reverse_rates``, ``reverse_kernel_log_probs``) written into a preallocated ``out``:
the same values as a fresh result for every built-in chain, every entry written, and bad buffers refused."""

import pytest
import torch

import probdiff as pd
from probdiff.testing import BUILT_IN

CHAINS = [f for f in BUILT_IN if isinstance(f.make(), pd.MarkovChain)]
MIXTURE = pytest.param(lambda: pd.UniformAbsorbingChain(6, uniform_rate=0.2, mask_rate=0.8), id="mixture")


def makers():
    return [pytest.param(f.make, id=f.id) for f in CHAINS] + [MIXTURE]


def inputs(chain, batch=3, length=5, dtype=torch.float32):
    g = torch.Generator().manual_seed(0)
    s = chain.num_states
    x = torch.randint(0, s - 1 if isinstance(chain, pd.AbsorbingChain) else s, (batch, length), generator=g)
    if isinstance(chain, pd.Blackout):                          # x_0 >= x_t: put mass on counts at or above x_t
        probs = torch.softmax(torch.randn(batch, length, s, generator=g, dtype=dtype), -1)
        probs = torch.where(torch.arange(s) >= x[..., None], probs, torch.zeros_like(probs))
        probs = probs / probs.sum(-1, keepdim=True)
    else:
        probs = torch.softmax(torch.randn(batch, length, s, generator=g, dtype=dtype), -1)
    t = torch.full((batch,), 0.6 * chain.t_max, dtype=torch.float64)
    return x, probs, 0.5 * t, t


@pytest.mark.parametrize("make", makers())
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_out_holds_the_same_values_as_a_fresh_result(make, dtype):
    chain = make()
    x, probs, s, t = inputs(chain, dtype=dtype)
    for fresh, into in ((lambda: chain.reverse_rates(probs, x, t), lambda b: chain.reverse_rates(probs, x, t, out=b)),
                        (lambda: chain.reverse_kernel_log_probs(probs, x, s, t),
                         lambda b: chain.reverse_kernel_log_probs(probs, x, s, t, out=b))):
        want = fresh()
        buf = torch.full_like(probs, float("nan"))              # every entry must be written
        got = into(buf)
        assert got is buf
        assert torch.equal(torch.nan_to_num(got, nan=123.0), torch.nan_to_num(want, nan=123.0))
        assert bool(torch.isnan(got).eq(torch.isnan(want)).all())
        again = into(buf)                                       # reused: no trace of the previous result
        assert torch.equal(torch.nan_to_num(again, nan=123.0), torch.nan_to_num(want, nan=123.0))


@pytest.mark.parametrize("make", makers())
def test_bad_buffers_are_refused(make):
    chain = make()
    x, probs, s, t = inputs(chain)
    bad = {"shape": torch.empty(3, 5, chain.num_states + 1), "dtype": torch.empty_like(probs, dtype=torch.float64),
           "contiguous": torch.empty(chain.num_states, 5, 3).permute(2, 1, 0), "share memory": probs,
           "tensor": [0.0]}
    for words, out in bad.items():
        for query in (lambda: chain.reverse_rates(probs, x, t, out=out),
                      lambda: chain.reverse_kernel_log_probs(probs, x, s, t, out=out)):
            with pytest.raises(ValueError, match=f"out must .*{words}|out must not {words}"):
                query()
    grad = probs.clone().requires_grad_(True)
    with pytest.raises(ValueError, match="out must be None where a gradient is needed"):
        chain.reverse_rates(grad, x, t, out=torch.empty_like(probs))
    with pytest.raises(ValueError, match="out must be None where a gradient is needed"):
        chain.reverse_kernel_log_probs(grad, x, s, t, out=torch.empty_like(probs))


@pytest.mark.parametrize("make", makers())
def test_an_empty_batch_fills_an_empty_buffer(make):
    chain = make()
    x, probs, s, t = inputs(chain)
    empty = torch.empty(0, 5, chain.num_states)
    assert chain.reverse_rates(probs[:0], x[:0], t[:0], out=empty) is empty
    assert chain.reverse_kernel_log_probs(probs[:0], x[:0], s[:0], t[:0], out=empty) is empty
