"""Networks: shapes, time conditioning, devices and dtypes, argument checks."""


import pytest
import torch

import probdiff as pd
from probdiff.nn import MLP, FourierLogSNR, FourierTime, UNet


@pytest.mark.parametrize("shape", [(1, 8, 8), (1, 28, 28), (3, 7, 5)])
def test_unet_returns_input_shape(shape):
    net = UNet(shape[0], base=8, mults=(1, 2, 2) if shape[1] > 8 else (1, 2))
    x = torch.randn(2, *shape)
    assert net(x, torch.rand(2)).shape == x.shape
    assert net(x, 0.5).shape == x.shape


@pytest.mark.parametrize("event", [(2,), (1, 8, 8), (4, 3)])
def test_mlp_returns_input_shape(event):
    net = MLP(event, hidden=16, depth=2)
    x = torch.randn(3, *event)
    assert net(x, torch.rand(3)).shape == x.shape


def test_mlp_out_shape_and_integer_input():
    net = MLP(4, hidden=8, depth=1, out_shape=(4, 5))
    out = net(torch.randint(0, 5, (3, 4)), torch.rand(3))
    assert out.shape == (3, 4, 5) and out.dtype == torch.float32


def test_output_follows_input_dtype_and_starts_at_zero():
    net = UNet(1, base=8).double()
    x = torch.randn(2, 1, 8, 8, dtype=torch.float64)
    out = net(x, torch.rand(2, dtype=torch.float64))
    assert out.dtype == torch.float64
    assert torch.count_nonzero(out) == 0  # zero-initialised output layer: untrained denoiser predicts 0


@pytest.mark.parametrize("make", [lambda: MLP((1, 8, 8), hidden=16, depth=1), lambda: UNet(1, base=8)])
def test_time_conditioning_and_gradients(make):
    torch.manual_seed(0)
    net = make()
    for p in net.parameters():  # leave the zero-initialised start so the output depends on its inputs
        torch.nn.init.normal_(p, std=0.1)
    x = torch.randn(2, 1, 8, 8)
    a, b = net(x, torch.full((2,), 0.1)), net(x, torch.full((2,), 0.9))
    assert not torch.allclose(a, b)
    a.square().sum().backward()
    assert all(p.grad is not None for p in net.parameters() if p.requires_grad)


def test_fourier_features_closed_form():
    emb = FourierTime(4, t_max=2.0, min_freq=1.0, max_freq=10.0)
    t = torch.tensor([0.3, 1.0])
    expected = torch.stack([torch.sin(t / 2), torch.sin(10 * t / 2), torch.cos(t / 2), torch.cos(10 * t / 2)], -1)
    torch.testing.assert_close(emb(t), expected)


def test_log_snr_embedding_sees_the_log_snr():
    process = pd.VPSDE()
    emb = FourierLogSNR(process, 8)
    t = torch.tensor([0.2, 0.7])
    lam = process.log_snr(t)
    torch.testing.assert_close(emb(t)[:, 0], torch.sin(lam * emb.freqs[0]))
    with pytest.raises(ValueError, match="GaussianProcess"):
        FourierLogSNR("vp")


def test_bad_arguments():
    with pytest.raises(ValueError, match="x must have shape"):
        UNet(1, base=8)(torch.randn(2, 3, 8, 8), 0.5)
    with pytest.raises(ValueError, match="x must have shape"):
        MLP(4, hidden=8)(torch.randn(2, 5), 0.5)
    with pytest.raises(ValueError, match="t must"):
        MLP(4, hidden=8)(torch.randn(2, 4), torch.rand(3))
    with pytest.raises(ValueError, match="hidden"):
        MLP(4, hidden=0)
    with pytest.raises(ValueError, match="dim"):
        FourierTime(3)
    with pytest.raises(ValueError, match="time"):
        MLP(4, time=torch.nn.Identity())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_runs_on_gpu():
    net = UNet(1, base=8).cuda()
    x = torch.randn(2, 1, 8, 8, device="cuda")
    assert net(x, torch.rand(2, device="cuda")).device.type == "cuda"
