"""Issue 13 on the command line: one-line failures (exit 2 usage / 1 otherwise, --debug traceback), the
traceback inputs of the issue, strict TOML, checkpoints that cannot lie, resume with changed options."""

import subprocess
import sys

import numpy as np
import pytest
import torch

from probdiff import cli
from probdiff.train.checkpoint import content_digest

TINY = ["--hidden", "16", "--depth", "1", "--batch-size", "64", "--steps", "4", "--checkpoint-every", "2",
        "--warmup", "2", "--quiet"]


def run(capsys, *argv):
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    if code:
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("probdiff: error: "), err
    return code, out, err


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    path = tmp_path_factory.mktemp("run") / "run.pt"
    assert cli.main(["train", "--checkpoint", str(path), *TINY]) == 0
    return path


def copy(trained, tmp_path, name="c.pt"):
    path = tmp_path / name
    path.write_bytes(trained.read_bytes())
    return path


def reseal(path, change):
    ckpt = torch.load(path, weights_only=True)
    ckpt.pop("sha256")
    change(ckpt)
    ckpt["sha256"] = content_digest(ckpt)
    torch.save(ckpt, path)


TRACEBACK_INPUTS = [  # the inputs that ended in a traceback, and what each must say now
    (["train", "--device", "nope"], 1, "--device 'nope' is not a torch device"),
    (["train", "--seed", str(2**70)], 2, "--seed must be an integer in [0, 2**63 - 1]"),
    (["train", "--split-seed", str(2**70)], 2, "--split-seed must be an integer in [0, 2**63 - 1]"),
    (["train", "--hidden", "1000000000", "--steps", "1"], 1, "hidden=1000000000"),
    (["sample", "--checkpoint", "{ckpt}", "--num", "10000000000"], 1, "--num 10000000000 samples"),
    (["train", "--data", "inf.npy", "--steps", "1"], 1, "inf.npy: expected a .npy/.npz array of integer levels"),
    (["train", "--data", "big.npy", "--steps", "1"], 1, "needs about"),
    (["train", "--dropout", "1.5"], 2, "--dropout must be a number in [0, 1)"),
    (["train", "--ema", "nan"], 2, "--ema must be a number in [0, 1)"),
    (["train", "--test-fraction", "-1"], 2, "--test-fraction must be a number in [0, 1)"),
    (["train", "--warmup", "-1"], 2, "--warmup must be an integer >= 0"),
    (["sample", "--checkpoint", "{ckpt}", "--noise", "inf"], 2, "--noise must be a number in [0, inf)"),
    (["train", "--resume", "--overwrite"], 2, "--resume and --overwrite conflict"),
    (["train", "--allow-change", "lr"], 2, "--allow-change only applies with --resume"),
    (["train", "--allow-change", "process", "--resume"], 2, "--allow-change takes a comma-separated list"),
    (["train", "--process"], 2, "expected one argument"),
]


@pytest.mark.parametrize("argv,code,message", TRACEBACK_INPUTS, ids=[" ".join(a[0][:3]) for a in TRACEBACK_INPUTS])
def test_traceback_inputs_are_one_line_errors(trained, tmp_path, monkeypatch, capsys, argv, code, message):
    monkeypatch.chdir(tmp_path)
    np.save(tmp_path / "inf.npy", np.full((20, 1, 4, 4), np.inf))
    np.save(tmp_path / "big.npy", np.array([[0, 2**40]] * 20).reshape(20, 1, 2))
    argv = [a.replace("{ckpt}", str(trained)) for a in argv]
    if argv[0] == "train":
        argv += ["--checkpoint", str(tmp_path / "x.pt"), "--quiet"]
    got, _, err = run(capsys, *argv)
    assert got == code and message in err, err


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
def test_cuda_without_cuda(tmp_path, capsys):
    code, _, err = run(capsys, "train", "--device", "cuda", "--checkpoint", str(tmp_path / "x.pt"), *TINY)
    assert code == 1 and "CUDA is not available" in err


def test_debug_shows_the_traceback(tmp_path):
    done = subprocess.run([sys.executable, "-m", "probdiff.cli", "sample", "--checkpoint", str(tmp_path / "x.pt"),
                           "--debug"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 1 and "Traceback" in done.stderr and "CheckpointError" in done.stderr


def test_flipped_bytes_are_refused_by_every_command(trained, tmp_path, capsys):
    path = copy(trained, tmp_path)
    raw = bytearray(path.read_bytes())
    w = torch.load(path, weights_only=True)["ema"]
    big = max(w.values(), key=lambda v: v.numel()).numpy().tobytes()
    at = bytes(raw).find(big[:64])
    raw[at:at + 64] = bytes(b ^ 0x5A for b in raw[at:at + 64])
    path.write_bytes(bytes(raw))
    for argv in (["sample", "--num", "4", "--steps", "2", "--out", str(tmp_path / "s.png")],
                 ["likelihood", "--limit", "2", "--method", "elbo", "--elbo-samples", "1"],
                 ["plot", "--out-dir", str(tmp_path / "p")], ["train", *TINY, "--resume"]):
        code, _, err = run(capsys, argv[0], "--checkpoint", str(path), "--quiet", *argv[1:])
        assert code == 1 and "does not match its sha256 checksum" in err, (argv, err)
    assert not (tmp_path / "s.png").exists()


def test_nan_weights_are_refused(trained, tmp_path, capsys):
    path = copy(trained, tmp_path)
    reseal(path, lambda c: c["ema"]["out.weight"].fill_(float("nan")) if "out.weight" in c["ema"]
           else next(iter(c["ema"].values())).fill_(float("nan")))
    code, _, err = run(capsys, "sample", "--checkpoint", str(path), "--num", "4", "--out", str(tmp_path / "s.png"))
    assert code == 1 and "non-finite" in err and not (tmp_path / "s.png").exists()


def test_config_naming_another_process_is_refused(trained, tmp_path, capsys):
    path = copy(trained, tmp_path)
    reseal(path, lambda c: c["config"].update(process="ve"))  # VE config, VP weights
    for command in ("sample", "likelihood"):
        code, _, err = run(capsys, command, "--checkpoint", str(path), "--quiet")
        assert code == 1 and "trained for something else" in err and "VPSDE" in err and "VESDE" in err
    reseal(path, lambda c: c["config"].update(process="nope"))
    code, _, err = run(capsys, "sample", "--checkpoint", str(path))
    assert code == 1 and "nope" in err


def test_resume_with_changed_options_needs_allow_change(trained, tmp_path, capsys):
    path = copy(trained, tmp_path)
    base = ["train", "--checkpoint", str(path), *TINY[:-5], "--steps", "6", "--warmup", "2", "--quiet", "--resume"]
    before = path.read_bytes()
    code, _, err = run(capsys, *base, "--lr", "0.01")
    assert code == 1 and "--lr" in err and "--allow-change lr" in err
    assert path.read_bytes() == before  # nothing overwritten
    code, out, _ = run(capsys, *base, "--lr", "0.01", "--ema", "0.9", "--allow-change", "lr,ema")
    assert code == 0 and "trained 6/6" in out


def test_two_writers_on_one_checkpoint(tmp_path, capsys):
    from probdiff.train.checkpoint import CheckpointLock

    path = tmp_path / "c.pt"
    holder = subprocess.Popen([sys.executable, "-c",
                               "import sys, time\nfrom probdiff.train.checkpoint import CheckpointLock\n"
                               f"with CheckpointLock({str(path)!r}):\n    print('held', flush=True)\n"
                               "    time.sleep(60)\n"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        code, _, err = run(capsys, "train", "--checkpoint", str(path), *TINY)
        assert code == 1 and f"pid {holder.pid}" in err
    finally:
        holder.kill()
        holder.wait()
    assert CheckpointLock  # imported for the message's class


CONFIGS = [
    ("overwrite = 'no'\n", "overwrite is a flag and takes true or false"),
    ("quiet = 1\n", "quiet is a flag and takes true or false"),
    ("steps = [1, 2]\n", "steps takes one value, not a list"),
    ("steps = true\n", "steps takes one value"),
    ("lr = -1.0\n", "--lr must be a positive number"),
    ("seed = 1180591620717411303424\n", "--seed must be an integer in [0, 2**63 - 1]"),
    ("seed = -1\n", "--seed must be an integer in [0, 2**63 - 1]"),
    ("dropout = 2.0\n", "--dropout must be a number in [0, 1)"),
    ("[nonsense]\nsteps = 1\n", "unknown table [nonsense]"),
    ("[train]\nsteps = { a = 1 }\n", "steps takes one value"),
]


@pytest.mark.parametrize("text,message", CONFIGS, ids=[c[0].strip() for c in CONFIGS])
def test_strict_config(tmp_path, capsys, text, message):
    cfg = tmp_path / "c.toml"
    cfg.write_text(text)
    (tmp_path / "keep.pt").write_bytes(b"the user's file")
    code, _, err = run(capsys, "train", "--config", str(cfg), "--checkpoint", str(tmp_path / "keep.pt"), *TINY)
    assert code == 2 and message in err, err  # a bad config value is a usage error, as on the command line
    assert (tmp_path / "keep.pt").read_bytes() == b"the user's file"


def test_config_conflicting_flags(tmp_path, capsys):
    cfg = tmp_path / "c.toml"
    cfg.write_text("[train]\nresume = true\noverwrite = true\n")
    code, _, err = run(capsys, "train", "--config", str(cfg), "--checkpoint", str(tmp_path / "x.pt"))
    assert code == 2 and "conflict" in err
