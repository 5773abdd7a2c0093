"""`probdiff sample|likelihood --diffusers DIR` on a tiny random UNet2DModel saved with save_pretrained."""

import re

import numpy as np
import pytest
import torch

import probdiff as pd
from probdiff import cli
from probdiff.cli.app import dispatch

diffusers = pytest.importorskip("diffusers")


def run(capsys, *argv):
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, out, err


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    root = tmp_path_factory.mktemp("pretrained")
    torch.manual_seed(0)
    unet = diffusers.UNet2DModel(sample_size=8, in_channels=3, out_channels=3, layers_per_block=1,
                                 block_out_channels=(8, 16), down_block_types=("DownBlock2D", "DownBlock2D"),
                                 up_block_types=("UpBlock2D", "UpBlock2D"), norm_num_groups=4)
    scheduler = diffusers.DDPMScheduler(num_train_timesteps=20, beta_end=0.3)
    diffusers.DDPMPipeline(unet=unet, scheduler=scheduler).save_pretrained(root / "pipe")
    data = np.random.default_rng(0).integers(0, 256, size=(3, 3, 8, 8), dtype=np.uint8)
    np.savez(root / "images.npz", images=data)
    return root


def test_likelihood_with_diffusers(saved, capsys):
    summary = dispatch(["likelihood", "--diffusers", str(saved / "pipe"), "--data", str(saved / "images.npz"),
                        "--method", "vlb", "exact", "--rtol", "1e-3", "--batch-size", "2", "--quiet"])
    assert re.search(r"vlb: [0-9.]+ bits/dim ± n/a \(SE, trace\) ± [0-9.]+ \(95% CI, data; n = 3\)", summary)
    assert re.search(r"exact: [0-9.]+ bits/dim ± [0-9.]+ \(SE, trace\) ± [0-9.]+ \(95% CI, data; n = 3\)", summary)
    assert summary.summaries["exact"].se_trace > 0              # two Hutchinson probes per image
    for name in ("vlb", "exact"):
        assert summary.values[name].shape == (3,) and bool(torch.isfinite(summary.values[name]).all())
    # the vlb is ddpm_vlb of the loaded model (its own terms, up to the noise draws): same scale
    from probdiff.integrations.diffusers import load

    process, model = load(saved / "pipe")
    x = 2 * torch.as_tensor(np.load(saved / "images.npz")["images"]).float() / 255 - 1
    direct = pd.likelihood.ddpm_vlb(model, x, generator=torch.Generator().manual_seed(0))
    assert abs(float(direct.mean()) - float(summary.values["vlb"].mean())) < 0.1 * float(direct.mean())


def test_sample_with_diffusers(saved, tmp_path, capsys):
    code, out, _ = run(capsys, "sample", "--diffusers", str(saved / "pipe"), "--num", "4", "--steps", "3",
                       "--out", str(tmp_path / "s.png"), "--quiet")
    assert code == 0 and "4 samples" in out
    arrays = np.load(tmp_path / "s.npz")
    assert arrays["counts"].shape == (4, 3, 8, 8) and arrays["counts"].max() <= 255
    assert (tmp_path / "s.png").is_file()


@pytest.mark.parametrize("argv, code, message", [
    (["likelihood"], 2, "exactly one of --checkpoint FILE and --diffusers DIR"),
    (["likelihood", "--checkpoint", "a.pt", "--diffusers", "d"], 2, "exactly one of"),
    (["likelihood", "--checkpoint", "a.pt", "--method", "vlb"], 2, "--method vlb needs --diffusers"),
    (["likelihood", "--diffusers", "d", "--method", "elbo"], 2, "--method elbo needs --checkpoint"),
    (["sample"], 2, "exactly one of"),
    (["sample", "--diffusers", "no/such/dir"], 1, "no such directory"),
])
def test_usage_errors(argv, code, message, capsys):
    got, out, err = run(capsys, *argv)
    assert got == code and message in err


def test_likelihood_needs_data(saved, capsys):
    code, _, err = run(capsys, "likelihood", "--diffusers", str(saved / "pipe"), "--quiet")
    assert code == 1 and "--diffusers needs --data" in err
