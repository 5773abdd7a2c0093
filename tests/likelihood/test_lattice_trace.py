"""The lattice head's exact divergence in closed form (issue 15, item 7): probdiff/nn/lattice.py, registered
with probdiff/likelihood/structured_trace.py.

Reference: ``ExactTrace(replicate=True)``, which differentiates the whole denoiser (network and head) by
reverse mode on the batch replicated once per coordinate — an independent computation of the same trace."""

import pytest
import torch

import probdiff as pd
from probdiff.likelihood import Quantization
from probdiff.likelihood.structured_trace import denoiser_divergence, last_linear, network_divergence
from probdiff.nn import MLP, FourierLogSNR, LatticeDenoiser


class _Logits(torch.nn.Module):
    """A logits network that does not end in a registered linear layer (the generic route)."""

    def __init__(self, mlp):
        super().__init__()
        self.mlp = mlp

    def forward(self, x, t):
        return torch.tanh(self.mlp(x, t))


def _model(process, event=(1, 3, 3), levels=9, wrap=False, seed=0, dtype=torch.float64):
    torch.manual_seed(seed)
    q = Quantization(levels, (-1.0, 1.0))
    net = MLP(event, out_shape=(*event, levels), hidden=32, depth=2, time=FourierLogSNR(process))
    for p in net.out.parameters():       # the MLP starts with zero logits: give the head a network part
        torch.nn.init.normal_(p, std=0.5)
    logits = _Logits(net) if wrap else net
    head = LatticeDenoiser(logits, process, q).to(dtype).eval()
    return pd.DenoiserModel(head, process)


def _reference(model, x, t):
    flow = pd.probability_flow(model.process, model)
    fn = lambda z: flow.drift_and_denoised(z, t.repeat(z.shape[0] // x.shape[0]))  # noqa: E731
    return pd.ExactTrace(replicate=True).estimates(fn, x, None)


@pytest.mark.parametrize("wrap", [False, True])
@pytest.mark.parametrize("t_value", [1e-3, 0.1, 0.5, 0.95])
def test_divergence_equals_the_replicated_exact_trace(wrap, t_value):
    """D and div D to 1e-9 relative in float64 at every noise level, through the contracted last layer
    (MLP) and through the generic route; the drift's divergence then follows as a d + b div D."""
    process = pd.VPSDE(t_min=1e-3)
    model = _model(process, wrap=wrap)
    assert (last_linear(model.net.logits) is None) == wrap
    x = torch.rand(5, 1, 3, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1)) * 2.4 - 1.2
    t = torch.full((5,), t_value, dtype=torch.float64)
    denoised, div = denoiser_divergence(model, x, t)
    torch.testing.assert_close(denoised, model.denoise(x, t), rtol=1e-12, atol=1e-12)
    _, want = _reference(model, x, t)
    torch.testing.assert_close(div, want[0], rtol=1e-9, atol=1e-9)
    assert float(div.abs().min()) > 1e-3     # not a vacuous comparison of zeros


def test_float32_network_within_a_millionth():
    """The quickstart's networks are float32: the closed-form route agrees to 1e-6 relative there too (relative
    to the batch's largest divergence: a divergence that sums to nearly zero carries float32 rounding of its
    terms)."""
    process = pd.VPSDE(t_min=1e-3)
    model = _model(process, dtype=torch.float32)
    x = torch.rand(4, 1, 3, 3, generator=torch.Generator().manual_seed(2)) * 2 - 1
    for t_value in (1e-3, 0.3, 0.9):
        t = torch.full((4,), t_value)
        _, div = denoiser_divergence(model, x, t)
        _, want = _reference(model, x, t)
        assert float((div - want[0]).abs().max() / want[0].abs().max()) < 1e-6


def test_log_likelihood_uses_it_and_agrees_with_the_replicated_route():
    """log_likelihood's default (closed-form head) and ExactTrace(replicate=True) give the same log p to
    1e-8 relative (float64, same solver), and a model without a registered route still works (it returns
    None and the generic trace runs)."""
    process = pd.VPSDE(t_min=1e-3)
    model = _model(process)
    x = torch.rand(3, 1, 3, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(3)) * 2 - 1
    fast = pd.log_likelihood(model, x, rtol=1e-4, atol=1e-4)
    slow = pd.log_likelihood(model, x, rtol=1e-4, atol=1e-4, trace=pd.ExactTrace(replicate=True))
    torch.testing.assert_close(fast, slow, rtol=1e-8, atol=0.0)
    assert network_divergence(torch.nn.Identity(), x, None) is None
    assert denoiser_divergence(pd.EpsilonModel(lambda z, t: z, process), x, None) is None


def test_replicate_must_be_a_bool():
    with pytest.raises(ValueError, match="replicate"):
        pd.ExactTrace(replicate=1)
