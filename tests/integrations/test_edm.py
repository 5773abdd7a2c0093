"""probdiff.integrations.edm: EDM's Algorithm 1 transcribed here from Karras et al. 2022 (deterministic Heun on
the sigmas of their Eq. (5)), k-diffusion's VP-epsilon wrapper transcribed with numpy, and the change of
variables between the VP and EDM views of one network."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import probdiff as pd
from probdiff.integrations import edm

F64 = torch.float64


def toy_denoiser(x, sigma):
    """A smooth denoiser D(x; sigma) of a Gaussian N(0.3, 0.5^2): exact posterior mean."""
    s2 = sigma.reshape(-1, *([1] * (x.dim() - 1))) ** 2
    return 0.3 + 0.25 / (0.25 + s2) * (x - 0.3)


def edm_algorithm_1(denoiser, x0, n, sigma_min, sigma_max, rho=7.0):
    """Karras et al. 2022, Algorithm 1 with s(t) = 1, sigma(t) = t, and t_i of Eq. (5); returns x_0..x_N."""
    i = np.arange(n)
    t = (sigma_max ** (1 / rho) + i / (n - 1) * (sigma_min ** (1 / rho) - sigma_max ** (1 / rho))) ** rho
    t = np.append(t, 0.0)
    xs = [x0]
    x = x0
    for k in range(n):
        tk = torch.full((x.shape[0],), t[k], dtype=x.dtype)
        d = (x - denoiser(x, tk)) / t[k]
        x_next = x + (t[k + 1] - t[k]) * d
        if t[k + 1] != 0:
            tn = torch.full((x.shape[0],), t[k + 1], dtype=x.dtype)
            d2 = (x_next - denoiser(x_next, tn)) / t[k + 1]
            x_next = x + (t[k + 1] - t[k]) * (0.5 * d + 0.5 * d2)
        x = x_next
        xs.append(x)
    return t, xs


@pytest.mark.parametrize("n", [5, 18])
def test_heun_reproduces_algorithm_1_step_for_step(n):
    process, model = edm.wrap(toy_denoiser, 0.002, 80.0)
    x_init = 80.0 * torch.randn(3, 2, 4, generator=torch.Generator().manual_seed(0), dtype=F64)
    t, expected = edm_algorithm_1(toy_denoiser, x_init, n, 0.002, 80.0)
    sol = pd.sample(pd.probability_flow(model), x_init=x_init, solver=pd.solvers.Heun(), grid=pd.grids.Karras(n - 1),
                    trajectory=True)
    assert np.allclose(sol.ts.numpy(), t[:-1], rtol=1e-12)
    for i in range(n):
        assert torch.allclose(sol.xs[i], expected[i], rtol=1e-6, atol=1e-6), i
    final = model.denoise(sol.x, process.t_min)               # Algorithm 1's last (Euler) step to sigma = 0
    assert torch.allclose(final, expected[n], rtol=1e-6, atol=1e-6)
    assert sol.nfe == 2 * (n - 1)


def test_wrap_passes_net_kwargs():
    seen = {}

    def net(x, sigma, class_labels=None):
        seen["labels"] = class_labels
        return x

    _, model = edm.wrap(net, class_labels=torch.tensor([1, 2]))
    model.denoise(torch.zeros(2, 3), torch.tensor([1.0, 2.0]))
    assert torch.equal(seen["labels"], torch.tensor([1, 2]))


def _abar(n=100):
    return np.cumprod(1 - np.linspace(1e-4, 0.2, n))


def eps_net(x, k):
    """A smooth epsilon-network of (x, timestep)."""
    return torch.tanh(x) * (1.0 + 0.01 * k.reshape(-1, *([1] * (x.dim() - 1))))


def test_vp_epsilon_denoiser_is_k_diffusion_transcription():
    abar = _abar()
    log_sigmas = 0.5 * np.log((1 - abar) / abar)
    process, model = edm.wrap_vp_epsilon(eps_net, torch.tensor(abar))
    assert process.t_min == pytest.approx(np.exp(log_sigmas[0])) and process.t_max == pytest.approx(np.exp(log_sigmas[-1]))
    sigma = np.exp(np.array([log_sigmas[0], -2.0, -0.3, 0.77, log_sigmas[40], log_sigmas[-1]]))
    x = torch.randn(6, 2, 3, generator=torch.Generator().manual_seed(1), dtype=F64)
    # k-diffusion: t = interpolation of the index in log sigma; D = x + c_out eps(c_in x, t)
    t = np.interp(np.log(sigma), log_sigmas, np.arange(len(abar)))
    c_in = 1 / np.sqrt(sigma**2 + 1)
    expected = x - torch.tensor(sigma)[:, None, None] * eps_net(x * torch.tensor(c_in)[:, None, None], torch.tensor(t))
    assert torch.allclose(model.denoise(x, torch.tensor(sigma)), expected, atol=1e-12)


def test_vp_epsilon_in_edm_variables_is_the_vp_model():
    """At the training steps: D_EDM(x_VP / sqrt(abar_k); sigma_k) = D_VP(x_VP, t_k) for the same network."""
    abar = torch.tensor(_abar())
    _, edm_model = edm.wrap_vp_epsilon(eps_net, abar)
    vp = pd.DiscreteVP(abar)
    vp_model = pd.EpsilonModel(lambda x, t: eps_net(x, vp.step_of_time(t)), vp)
    k = torch.tensor([0, 5, 50, 99])
    x = torch.randn(4, 3, generator=torch.Generator().manual_seed(2), dtype=F64)
    sigma = torch.sqrt((1 - abar[k]) / abar[k])
    got = edm_model.denoise(x / torch.sqrt(abar[k])[:, None], sigma)
    assert torch.allclose(got, vp_model.denoise(x, vp.time_of_step(k)), atol=1e-10)


def test_quantize_rounds_the_timestep():
    den = edm.VPEpsilonDenoiser(eps_net, torch.tensor(_abar()), quantize=True)
    sigma = torch.sqrt(torch.tensor(1 - _abar()) / torch.tensor(_abar()))[[3, 4]]
    mid = torch.sqrt(sigma[0] * sigma[1]).reshape(1) * 1.001
    assert float(den.timestep(mid)) == 4.0
    with pytest.raises(ValueError, match="decreasing"):
        edm.VPEpsilonDenoiser(eps_net, torch.tensor([0.5, 0.7]))
