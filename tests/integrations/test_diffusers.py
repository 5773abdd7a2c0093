"""probdiff.integrations.diffusers against diffusers itself: a small random UNet2DModel built from a config,
DDPMScheduler.add_noise, DDIMScheduler's loop and get_velocity, save_pretrained round trips (no download)."""

from __future__ import annotations

import json

import pytest
import torch

import probdiff as pd

diffusers = pytest.importorskip("diffusers")
from probdiff.integrations import diffusers as pdd  # noqa: E402

F64 = torch.float64


def _unet(seed=0, channels=3):
    torch.manual_seed(seed)
    return diffusers.UNet2DModel(
        sample_size=8, in_channels=channels, out_channels=channels, layers_per_block=1, block_out_channels=(8, 16),
        down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
        norm_num_groups=4).eval()


@pytest.fixture(scope="module")
def unet():
    return _unet()


@pytest.mark.parametrize("schedule", ["linear", "squaredcos_cap_v2", "scaled_linear"])
def test_marginals_equal_add_noise_at_every_step(schedule):
    scheduler = diffusers.DDPMScheduler(num_train_timesteps=1000, beta_schedule=schedule)
    process, _ = pdd.wrap(lambda x, t: None, scheduler)
    gen = torch.Generator().manual_seed(0)
    x0 = torch.rand(1000, 3, 2, 2, generator=gen, dtype=F64) * 2 - 1
    eps = torch.randn(1000, 3, 2, 2, generator=gen, dtype=F64)
    k = torch.arange(1000)
    expected = scheduler.add_noise(x0, eps, k)
    q = process.marginal(x0, process.time_of_step(k))
    assert torch.allclose(q.mean + q.stddev * eps, expected, rtol=0, atol=1e-6)


def test_epsilon_at_a_training_step_is_the_network_output(unet):
    process, model = pdd.wrap(unet, diffusers.DDPMScheduler(num_train_timesteps=1000))
    assert isinstance(process, pd.DiscreteVP) and isinstance(model, pd.EpsilonModel)
    x = torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    k = torch.tensor([0, 17, 500, 999])
    with torch.no_grad():
        expected = unet(x, k).sample
        got = model.epsilon(x, process.time_of_step(k).float())
        # between steps the network sees the fractional timestep
        half = model.epsilon(x, process.time_of_step(k[:3] + 0.5).float()[[0, 1, 2, 2]])
        expected_half = unet(x, torch.tensor([0.5, 17.5, 500.5, 500.5])).sample
    assert torch.allclose(got, expected, atol=1e-6)
    assert torch.allclose(half, expected_half, atol=1e-6)


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
def test_ddim_loop_is_reproduced(unet, prediction_type):
    """probdiff's deterministic ancestral step (eta = 0) on the scheduler's timesteps is DDIM's loop ("trailing"
    spacing: the timesteps start at the last training step, where probdiff's grids start)."""
    config = dict(num_train_timesteps=1000, prediction_type=prediction_type, clip_sample=False)
    ddim = diffusers.DDIMScheduler(set_alpha_to_one=True, timestep_spacing="trailing", **config)
    ddim.set_timesteps(10)
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    expected = [x]
    with torch.no_grad():
        for k in ddim.timesteps:
            out = unet(expected[-1], k).sample
            expected.append(ddim.step(out, k, expected[-1], eta=0.0).prev_sample)
    # t_min so small that sigma(t_min) ~ 3e-7: the last step lands on the data, as set_alpha_to_one does
    process, model = pdd.wrap(unet, diffusers.DDPMScheduler(**config), t_min=1e-12)
    grid = pd.grids.Explicit(process.native_grid(ddim.timesteps))
    with torch.no_grad():
        sol = pd.sample(pd.probability_flow(model), x_init=x, solver=pd.solvers.Ancestral(eta=0.0), grid=grid,
                        trajectory=True)
    assert sol.xs.shape[0] == len(expected) == 11
    for i, (got, want) in enumerate(zip(sol.xs, expected)):
        assert torch.allclose(got, want, atol=1e-5, rtol=1e-5), f"step {i}: {float((got - want).abs().max())}"


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
def test_prediction_types_round_trip(prediction_type):
    """A network that returns diffusers' own target (eps, get_velocity, x0) for known (x0, eps) gives back
    x0 and eps through the wrapped model."""
    scheduler = diffusers.DDPMScheduler(num_train_timesteps=1000, prediction_type=prediction_type)
    gen = torch.Generator().manual_seed(3)
    x0 = torch.rand(5, 3, 4, 4, generator=gen, dtype=F64) * 2 - 1
    eps = torch.randn(5, 3, 4, 4, generator=gen, dtype=F64)
    k = torch.tensor([0, 10, 300, 700, 999])
    xt = scheduler.add_noise(x0, eps, k)
    target = {"epsilon": eps, "sample": x0, "v_prediction": scheduler.get_velocity(x0, eps, k)}[prediction_type]

    class Net:
        def __call__(self, x, step):
            assert torch.allclose(step, k.to(step.dtype), atol=1e-9)
            return diffusers.models.unets.unet_2d.UNet2DOutput(sample=target)

    process, model = pdd.wrap(Net(), scheduler)
    t = process.time_of_step(k)
    assert torch.allclose(model.denoise(xt, t), x0, atol=1e-9)
    assert torch.allclose(model.epsilon(xt, t), eps, atol=1e-9)


class MixtureEpsilon(torch.nn.Module):
    """A Gaussian mixture's exact epsilon, in diffusers' interface: ``forward(x, timestep).sample``. The
    noise level at a (fractional) timestep is the scheduler's table continued as the process is."""

    def __init__(self, mixture, process):
        super().__init__()
        self.model = mixture.model(process)
        self.process = process

    def forward(self, x, timestep):
        t = self.process.time_of_step(timestep).to(x.dtype).expand(x.shape[0])
        return diffusers.models.unets.unet_2d.UNet2DOutput(sample=self.model.epsilon(x, t))


def _mixture():
    return pd.oracles.GaussianMixture(torch.tensor([0.3, 0.7], dtype=F64),
                                      torch.tensor([[-0.5, 0.2], [0.4, -0.3]], dtype=F64),
                                      torch.stack([0.05 * torch.eye(2, dtype=F64), 0.02 * torch.eye(2, dtype=F64)]))


def test_mixture_oracle_through_wrap_has_the_closed_form_likelihood():
    scheduler = diffusers.DDPMScheduler(num_train_timesteps=1000)
    table = pd.DiscreteVP(scheduler.alphas_cumprod)
    mixture = _mixture()
    process, model = pdd.wrap(MixtureEpsilon(mixture, table), scheduler)
    x = mixture.sample(6, generator=torch.Generator().manual_seed(4)).to(F64)
    # rtol 1e-8: the table's schedule has kinks at its steps, across which an embedded pair's error estimate
    # is unreliable; with per-sample steps (the default) rtol 1e-7 left 2.4e-4 nats, one batch step 3.8e-5
    _, stats = pd.log_likelihood(model, x, rtol=1e-8, atol=1e-8, return_stats=True)
    # the flow's change in log-density plus the exact log p_{t_max} at its endpoint (not the N(0, sigma^2) prior)
    got = stats.delta_log_prob + mixture.marginal_log_prob(process, stats.endpoint, process.t_max)
    expected = mixture.marginal_log_prob(process, x, process.t_min)
    assert torch.allclose(got, expected, atol=1e-4)


def test_vlb_through_wrap_is_the_oracle_vlb():
    scheduler = diffusers.DDPMScheduler(num_train_timesteps=100, beta_end=0.2)
    mixture = _mixture()
    process, model = pdd.wrap(MixtureEpsilon(mixture, pd.DiscreteVP(scheduler.alphas_cumprod)), scheduler)
    x = torch.tensor([[-0.5, 0.2], [0.4, -0.3]], dtype=F64).round(decimals=2)
    x = torch.round((x + 1) * 127.5) / 127.5 - 1
    direct = pd.likelihood.ddpm_vlb(process, mixture.model(process), x, generator=torch.Generator().manual_seed(5))
    wrapped = pd.likelihood.ddpm_vlb(process, model, x, generator=torch.Generator().manual_seed(5))
    assert torch.allclose(direct, wrapped, rtol=1e-10)


def test_load_round_trip(tmp_path, unet):
    scheduler = diffusers.DDPMScheduler(num_train_timesteps=1000, prediction_type="v_prediction")
    diffusers.DDPMPipeline(unet=unet, scheduler=scheduler).save_pretrained(tmp_path / "pipe")
    process, model = pdd.load(tmp_path / "pipe")
    ref_process, ref_model = pdd.wrap(unet, scheduler)
    assert torch.equal(process.alphas_cumprod, ref_process.alphas_cumprod)
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(6))
    t = torch.tensor([0.3, 0.8])
    with torch.no_grad():
        assert torch.allclose(model.denoise(x, t), ref_model.denoise(x, t), atol=1e-6)


def test_load_errors(tmp_path):
    with pytest.raises(ValueError, match="no such directory"):
        pdd.load(tmp_path / "missing")
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(ValueError, match="not a directory"):
        pdd.load(tmp_path / "file.txt")
    with pytest.raises(ValueError, match="missing unet/config.json, scheduler/scheduler_config.json"):
        pdd.load(tmp_path)
    (tmp_path / "unet").mkdir()
    (tmp_path / "scheduler").mkdir()
    (tmp_path / "unet" / "config.json").write_text(json.dumps({"_class_name": "UNet2DConditionModel"}))
    (tmp_path / "scheduler" / "scheduler_config.json").write_text(json.dumps({"_class_name": "DDPMScheduler"}))
    with pytest.raises(ValueError, match="only UNet2DModel"):
        pdd.load(tmp_path)


def test_wrap_errors(unet):
    with pytest.raises(ValueError, match="DDPM-family"):
        pdd.wrap(unet, object())
    with pytest.raises(ValueError, match="zero terminal SNR"):
        pdd.wrap(unet, diffusers.DDPMScheduler(rescale_betas_zero_snr=True))
