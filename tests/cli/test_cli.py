"""The `probdiff` command end to end on tiny settings, configs, and clear errors for bad input."""

import re
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from probdiff import cli

TINY = ["--hidden", "16", "--depth", "1", "--batch-size", "64", "--steps", "6", "--checkpoint-every", "3",
        "--warmup", "2", "--quiet"]


def run(capsys, *argv):
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, out, err


def valid_png(path):
    with Image.open(path) as im:
        im.verify()
    with Image.open(path) as im:
        return im.size


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    path = tmp_path_factory.mktemp("run") / "run.pt"
    assert cli.main(["train", "--checkpoint", str(path), *TINY]) == 0
    return path


def test_train_sample_likelihood_plot(trained, tmp_path, capsys):
    code, out, _ = run(capsys, "sample", "--checkpoint", str(trained), "--num", "9", "--steps", "4",
                       "--out", str(tmp_path / "s.png"), "--quiet")
    assert code == 0 and "9 samples" in out
    w, h = valid_png(tmp_path / "s.png")
    assert w == h > 8
    arrays = np.load(tmp_path / "s.npz")
    assert arrays["samples"].shape == (9, 1, 8, 8) and arrays["counts"].shape == (9, 1, 8, 8)
    assert arrays["counts"].min() >= 0 and arrays["counts"].max() <= 16 and int(arrays["levels"]) == 17

    code, out, _ = run(capsys, "likelihood", "--checkpoint", str(trained), "--limit", "3", "--rtol", "1e-3",
                       "--method", "exact", "elbo", "--elbo-samples", "2", "--quiet")
    assert code == 0
    exact = float(re.search(r"exact: ([0-9.]+) bits/dim ± 0\.0000 \(SE, trace\) ± [0-9.]+ \(95% CI", out).group(1))
    bound = float(re.search(r"elbo: ([0-9.]+) bits/dim ± n/a \(SE, trace\) ± [0-9.]+ \(95% CI", out).group(1))
    assert 0 < exact < 20 and 0 < bound < 20

    code, out, _ = run(capsys, "plot", "--checkpoint", str(trained), "--steps", "4", "--num", "3",
                       "--out-dir", str(tmp_path / "plots"), "--quiet")
    assert code == 0
    for name in ("schedule", "sampling_trajectory", "loss"):
        valid_png(tmp_path / "plots" / f"{name}.png")


def test_exact_likelihood_of_a_zero_network_matches_closed_form(tmp_path, capsys):
    # With lr ~ 0 the zero-initialised epsilon network stays at 0: the score is 0, the probability flow
    # is dx/dt = f(t) x, so x(t_max) = x alpha_T / alpha_0 and log p(x) = log N(x(t_max); 0, sigma_T^2 I)
    # + D log(alpha_T / alpha_0) exactly (VP closed forms from THEORY.md §1, computed here independently).
    import math

    from probdiff import data

    path = tmp_path / "zero.pt"
    assert cli.main(["train", "--checkpoint", str(path), *TINY[:-7], "--steps", "1", "--warmup", "1",
                     "--lr", "1e-12", "--t-min", "1e-4", "--model", "epsilon", "--quiet"]) == 0
    code, out, _ = run(capsys, "likelihood", "--checkpoint", str(path), "--limit", "4", "--rtol", "1e-6", "--quiet")
    assert code == 0
    got = float(re.search(r"exact: ([0-9.]+) bits/dim ±", out).group(1))
    counts = data.digits().split(0.2, seed=0).test.counts[:4]
    x = (-1 + 2 * (counts.double() + torch.rand(counts.shape, generator=torch.Generator().manual_seed(0),
                                                 dtype=torch.float32).double()) / 17).reshape(4, -1)
    log_alpha = lambda t: -0.25 * t**2 * (20.0 - 0.1) - 0.5 * t * 0.1
    ratio = math.exp(log_alpha(1.0) - log_alpha(1e-4))
    sigma2 = -math.expm1(2 * log_alpha(1.0))
    end = x * ratio
    log_p = (-0.5 * end**2 / sigma2 - 0.5 * math.log(2 * math.pi * sigma2)).sum(1) + 64 * math.log(ratio)
    expected = float((-log_p / (64 * math.log(2)) + math.log2(17) - 1).mean())
    assert got == pytest.approx(expected, abs=1e-3)  # float32 ODE and 4 printed decimals


def test_default_lattice_model_of_a_zero_network_matches_closed_form(tmp_path, capsys):
    # The default Gaussian model is the lattice head; with zero logits it is the exact denoiser of pixels
    # i.i.d. uniform on [-1, 1], so its flow carries exactly p_t(x) = prod_i [Phi((a - x_i)/s) -
    # Phi((-a - x_i)/s)] / (2a) (a = alpha_t, s = sigma_t) from t_min to t_max, and the exact likelihood is
    # that density at t_min (up to p_{t_max} vs N(0, I), about 1e-5 nats per dimension here). The
    # checkpoint records the resolved model and t_min (the noise floor).
    import math

    from scipy.stats import norm

    from probdiff import data

    path = tmp_path / "zero.pt"
    assert cli.main(["train", "--checkpoint", str(path), *TINY[:-7], "--steps", "1", "--warmup", "1",
                     "--lr", "1e-12", "--quiet"]) == 0
    config = torch.load(path, weights_only=True)["config"]
    assert config["model"] == "lattice"
    t_min = config["t_min"]
    log_alpha = -0.25 * t_min**2 * (20.0 - 0.1) - 0.5 * t_min * 0.1
    a, s = math.exp(log_alpha), math.sqrt(-math.expm1(2 * log_alpha))
    assert s / a == pytest.approx(cli.NOISE_FLOOR * 2 / 17, rel=1e-6)  # the floor, in bin widths
    code, out, _ = run(capsys, "likelihood", "--checkpoint", str(path), "--limit", "4", "--rtol", "1e-6", "--quiet")
    assert code == 0
    got = float(re.search(r"exact: ([0-9.]+) bits/dim ±", out).group(1))
    counts = data.digits().split(0.2, seed=0).test.counts[:4]
    x = (-1 + 2 * (counts.double() + torch.rand(counts.shape, generator=torch.Generator().manual_seed(0),
                                                 dtype=torch.float32).double()) / 17).reshape(4, -1).numpy()
    log_p = np.log((norm.cdf((a - x) / s) - norm.cdf((-a - x) / s)) / (2 * a)).sum(1)
    expected = float((-log_p / (64 * math.log(2)) + math.log2(17) - 1).mean())
    assert got == pytest.approx(expected, abs=2e-3)  # float32 ODE and 4 printed decimals


def test_the_same_seed_gives_the_same_run(tmp_path):
    # the network's initial weights come from --seed too (torch seeds its global generator at random)
    runs = []
    for name in ("a", "b"):
        torch.manual_seed(len(runs))  # a different global RNG state before each run
        assert cli.main(["train", "--checkpoint", str(tmp_path / f"{name}.pt"), *TINY]) == 0
        runs.append(torch.load(tmp_path / f"{name}.pt", weights_only=True))
    assert runs[0]["losses"].tolist() == runs[1]["losses"].tolist()
    assert all(torch.equal(v, runs[1]["ema"][k]) for k, v in runs[0]["ema"].items())


def test_lattice_needs_dequantised_data(tmp_path, capsys):
    code, _, err = run(capsys, "train", "--checkpoint", str(tmp_path / "b.pt"), *TINY, "--process", "blackout",
                       "--model", "lattice")
    assert code == 1 and "--model lattice needs a Gaussian process" in err


def test_resume_and_overwrite_guard(trained, tmp_path, capsys):
    path = tmp_path / "r.pt"
    path.write_bytes(trained.read_bytes())
    code, _, err = run(capsys, "train", "--checkpoint", str(path), *TINY)
    assert code == 1 and "--resume" in err
    code, out, _ = run(capsys, "train", "--checkpoint", str(path), *TINY[:-5], "--steps", "9", "--quiet",
                       "--resume", "--checkpoint-every", "3", "--warmup", "2")
    assert code == 0 and "resumed from" in out and "trained 9/9" in out
    assert torch.load(path, weights_only=True)["step"] == 9
    code, _, err = run(capsys, "train", "--checkpoint", str(path), *TINY, "--resume", "--process", "subvp")
    assert code == 1 and "other settings" in err and "subvp" in err


def test_config_file(tmp_path, capsys):
    cfg = tmp_path / "run.toml"
    ckpt = tmp_path / "c.pt"
    cfg.write_text(f'steps = 2\n[train]\nhidden = 8\ndepth = 1\nbatch-size = 32\ncheckpoint = "{ckpt}"\n'
                   'process = "subvp"\nweighting = "natural"\nquiet = true\n')
    code, out, _ = run(capsys, "train", "--config", str(cfg), "--hidden", "12")
    assert code == 0
    config = torch.load(ckpt, weights_only=True)["config"]
    assert config["hidden"] == 12 and config["process"] == "subvp" and config["weighting"] == "natural"
    cfg.write_text("[sample]\ncheckpoint = '%s'\nnum = 4\nsteps = 2\nquiet = true\nout = '%s'\n"
                   % (ckpt, tmp_path / "cfg.png"))
    code, _, _ = run(capsys, "sample", "--config", str(cfg))
    assert code == 0 and valid_png(tmp_path / "cfg.png")


BAD = [
    (["train", "--process", "nope"], 2, "invalid choice"),
    (["train", "--steps", "0"], 2, "--steps must be a positive integer"),
    (["train", "--process", "blackout", "--t-min", "0.1", "--steps", "1"], 1, "--t-min does not apply"),
    (["train", "--t-min", "2", "--steps", "1"], 1, "t_min must be < t_max"),
    (["train", "--data", "missing.npz"], 1, "missing.npz: no such file"),
    (["train", "--model", "categorical", "--steps", "1"], 1, "process must be a MarkovChain"),
    (["train", "--weighting", "blackout-original", "--steps", "1"], 1, "--weighting 'blackout-original'"),
    (["train", "--batch-size", "5000", "--steps", "1"], 1, "batch_size=5000 is larger"),
    (["train", "--net", "unet", "--mults", "1,x", "--steps", "1"], 1, "invalid literal"),
    (["train", "--config", "nope.toml"], 2, "nope.toml: no such file"),
    (["sample", "--checkpoint", "nope.pt"], 1, "nope.pt does not exist"),
    (["sample", "--checkpoint", "x.pt", "--num", "0"], 2, "--num must be a positive integer"),
    (["sample", "--checkpoint", "x.pt", "--solver", "magic"], 2, "invalid choice"),
    (["likelihood", "--checkpoint", "nope.pt"], 1, "nope.pt does not exist"),
    (["likelihood", "--checkpoint", "x.pt", "--method", "guess"], 2, "invalid choice"),
    (["plot", "--checkpoint", "nope.pt"], 1, "nope.pt does not exist"),
    (["quickstart", "--steps", "-3"], 2, "--steps must be a positive integer"),
    (["unknown"], 2, "invalid choice"),
]


@pytest.mark.parametrize("argv,code,message", BAD, ids=[" ".join(b[0][:3]) for b in BAD])
def test_bad_input_is_a_clear_error(tmp_path, monkeypatch, capsys, argv, code, message):
    monkeypatch.chdir(tmp_path)
    got, out, err = run(capsys, *argv)
    assert got == code and message in err, err


def test_corrupt_checkpoint_and_bad_config(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bad.pt").write_bytes(b"\x00garbage")
    for command in ("sample", "likelihood", "plot"):
        code, _, err = run(capsys, command, "--checkpoint", "bad.pt")
        assert code == 1 and "bad.pt is corrupt" in err
    code, _, err = run(capsys, "train", "--checkpoint", "bad.pt", "--resume", *TINY[:-1])
    assert code == 1 and "bad.pt is corrupt" in err
    (tmp_path / "a.toml").write_text("steps = [1, 2\n")
    code, _, err = run(capsys, "train", "--config", "a.toml")
    assert code == 2 and "not valid TOML" in err
    (tmp_path / "b.toml").write_text("[train]\nstepz = 3\n")
    code, _, err = run(capsys, "train", "--config", "b.toml")
    assert code == 2 and "unknown option 'stepz'" in err
    (tmp_path / "c.toml").write_text("[train]\nprocess = 'nope'\n")
    code, _, err = run(capsys, "train", "--config", "c.toml")
    assert code == 2 and "process must be one of" in err


def test_help_and_console_entry_point(capsys):
    code, out, _ = run(capsys, "--help")
    assert code == 0 and "probdiff quickstart" in out and "train" in out
    for command in ("train", "sample", "likelihood", "plot", "quickstart"):
        code, out, _ = run(capsys, command, "--help")
        assert code == 0 and "--config" in out
    # a real process: the error reaches stderr with exit status 1 and no traceback
    done = subprocess.run([sys.executable, "-m", "probdiff.cli", "sample", "--checkpoint", "/nonexistent/x.pt"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 1 and "does not exist" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.slow
def test_torchrun_train_and_sharded_likelihood(tmp_path, capsys):
    """`torchrun -m probdiff.cli` trains with two gloo processes; the sharded likelihood equals one process'."""
    import os

    ckpt = tmp_path / "dist.pt"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m",
                "probdiff.cli"]
    done = subprocess.run([*torchrun, "train", "--checkpoint", str(ckpt), *TINY], env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert "2 process(es)" in done.stdout and torch.load(ckpt, weights_only=True)["step"] == 6
    done = subprocess.run([*torchrun, "likelihood", "--checkpoint", str(ckpt), "--limit", "5", "--rtol", "1e-4",
                           "--quiet"], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    sharded = float(re.search(r"exact: ([0-9.]+) bits/dim ±", done.stdout).group(1))
    code, out, _ = run(capsys, "likelihood", "--checkpoint", str(ckpt), "--limit", "5", "--rtol", "1e-4", "--quiet")
    assert code == 0 and float(re.search(r"exact: ([0-9.]+) bits/dim ±", out).group(1)) == pytest.approx(sharded, abs=2e-4)


def test_quickstart_smoke(tmp_path, capsys):
    code, out, _ = run(capsys, "quickstart", "--steps", "2", "--limit", "2", "--out-dir", str(tmp_path), "--quiet")
    assert code == 0
    assert re.search(r"held-out [0-9.]+ bits/dim ± 0\.0000 \(SE, trace\) ± [0-9.]+ \(95% CI, data; n = 2\) "
                     r"\(exact, dequantised", out), out
    assert valid_png(tmp_path / "samples.png") and (tmp_path / "digits.pt").exists()


@pytest.mark.parametrize("process", ["blackout", "uniform"])
def test_discrete_processes_end_to_end(process, tmp_path, capsys):
    ckpt = tmp_path / f"{process}.pt"
    assert cli.main(["train", "--process", process, "--checkpoint", str(ckpt), *TINY[:-5], "--steps", "2",
                     "--quiet"]) == 0
    code, _, _ = run(capsys, "sample", "--checkpoint", str(ckpt), "--num", "4", "--steps", "3", "--quiet",
                     "--out", str(tmp_path / "s.png"))
    assert code == 0 and valid_png(tmp_path / "s.png")
    counts = np.load(tmp_path / "s.npz")["counts"]
    assert counts.min() >= 0 and counts.max() <= 16
    code, out, _ = run(capsys, "likelihood", "--checkpoint", str(ckpt), "--method", "elbo", "--limit", "2",
                       "--elbo-samples", "1", "--elbo-steps", "10", "--quiet")
    assert code == 0 and float(re.search(r"elbo: ([0-9.]+) bits/dim ±", out).group(1)) > 0  # lossless: no negative bits
    code, _, err = run(capsys, "likelihood", "--checkpoint", str(ckpt), "--method", "exact", "--limit", "2")
    assert code == 1 and "use --method elbo" in err


def test_the_cli_uses_no_private_attributes_of_other_objects():
    """The parser reads argparse's public Action objects only (no ``parser._actions`` and the like)."""
    import ast
    from pathlib import Path

    found = []
    for path in sorted((Path(cli.__file__).parent).glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__")
                    and not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"))):
                found.append(f"{path.name}:{node.lineno}: .{node.attr}")
    assert not found, found


def test_a_missing_cli_extra_is_a_one_line_error(tmp_path):
    script = ("import sys; sys.modules['sklearn'] = None; from probdiff.cli import main; "
              f"sys.exit(main(['train', '--checkpoint', {str(tmp_path / 'x.pt')!r}, '--steps', '1']))")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "sklearn is missing; the command line needs the cli extra" in done.stderr, done.stderr
