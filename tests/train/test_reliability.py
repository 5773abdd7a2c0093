"""Issue 13: reproducible training, checkpoints that cannot lie (checksum, finiteness, identity, lock, temp
files, umask), resume from any checkpoint continues bit-identically."""

import os
import random
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

import probdiff as pd
from probdiff.losses import DenoisingScoreMatching
from probdiff.nn import MLP
from probdiff.train import EMA, AdamW, CheckpointError, Run, Trainer, WarmupCosine, load_checkpoint
from probdiff.train.checkpoint import CheckpointLock, content_digest, save_checkpoint

MIX = dict(weights=torch.tensor([0.5, 0.5]), means=torch.tensor([[1.0, 1.0], [-1.0, -1.0]]),
           covs=0.05 * torch.eye(2).expand(2, 2, 2).clone())


class NoisyLoss(DenoisingScoreMatching):
    """The loss plus a term drawn from the *global* NumPy, Python and torch generators (user code that does
    not take the trainer's generator) and dropout: all must be reproducible from the run's seed."""

    def __call__(self, model, x0, generator=None):
        extra = float(np.random.rand()) + random.random() + float(torch.rand(()))
        return super().__call__(model, x0, generator=generator) * (1 + 1e-3 * extra)


class DropMLP(torch.nn.Module):
    def __init__(self, hidden):
        super().__init__()
        self.mlp, self.drop = MLP(2, hidden=hidden, depth=2), torch.nn.Dropout(0.2)

    def forward(self, x, t):
        return self.drop(self.mlp(x, t))


def make(checkpoint=None, *, steps=12, seed=0, lr=3e-3, process=None, hidden=16, every=3):
    torch.manual_seed(0)
    process = process or pd.VPSDE(t_min=1e-3)
    data = pd.oracles.GaussianMixture(**MIX).sample(256, generator=torch.Generator().manual_seed(0)).float()
    model = pd.EpsilonModel(DropMLP(hidden), process)
    return Trainer(model, NoisyLoss(process), data, steps=steps, batch_size=32, optimizer=AdamW(lr=lr),
                   scheduler=WarmupCosine(warmup=3), ema=EMA(0.9),
                   run=Run(seed=seed, checkpoint=checkpoint, checkpoint_every=every, device="cpu"))


def state(trainer):
    return trainer.losses, {k: v.clone() for k, v in trainer.net.state_dict().items()}, trainer.ema


def same_state(a, b):
    assert a[0] == b[0]
    assert all(torch.equal(a[1][k], b[1][k]) for k in a[1])
    assert all(torch.equal(a[2][k], b[2][k]) for k in a[2])


def test_same_seed_same_run_in_one_process_with_user_global_rng():
    runs = []
    for junk in range(2):  # different global RNG states before each run
        np.random.seed(junk), random.seed(junk), torch.manual_seed(junk)
        trainer = make()
        torch.manual_seed(100 + junk)
        trainer.fit()
        runs.append(state(trainer))
    same_state(runs[0], runs[1])
    other = make(seed=1)
    other.fit()
    assert other.losses != runs[0][0]


@pytest.mark.parametrize("at", [3, 6, 9])
def test_resume_from_any_checkpoint_is_bit_identical(tmp_path, at):
    full = make()
    full.fit()
    part = make(tmp_path / "ck.pt")
    part.fit(until=at)
    torch.manual_seed(123), np.random.seed(5)  # whatever happened between the two processes' lives
    resumed = make(tmp_path / "ck.pt").resume()
    assert resumed.step == at
    resumed.fit()
    same_state(state(full), state(resumed))


SCRIPT = textwrap.dedent("""
    import sys, torch
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    from probdiff.cli import main
    sys.exit(main(["train", "--checkpoint", sys.argv[1], "--hidden", "16", "--depth", "1", "--batch-size", "32",
                   "--steps", "5", "--dropout", "0.1", "--quiet", "--warmup", "2"]))
""")


def test_same_seed_same_checkpoint_across_processes(tmp_path):
    """Two `probdiff train` processes (different hash seeds, one thread, deterministic algorithms) write
    checkpoints with the same content digest: losses, weights, EMA, optimiser and RNG states."""
    digests = []
    for i in range(2):
        path = tmp_path / f"r{i}.pt"
        env = {**os.environ, "PYTHONHASHSEED": str(i + 1)}
        done = subprocess.run([sys.executable, "-c", SCRIPT, str(path)], env=env, capture_output=True, text=True,
                              timeout=300)
        assert done.returncode == 0, done.stderr
        digests.append(torch.load(path, weights_only=True)["sha256"])
    assert digests[0] == digests[1]


def test_checksum_detects_flipped_bytes(tmp_path):
    path = tmp_path / "ck.pt"
    make(path).fit(until=3)
    raw = bytearray(path.read_bytes())
    # flip 64 bytes in the middle of the largest tensor's storage: torch still reads the file
    ckpt = torch.load(path, weights_only=True)
    w = ckpt["net"]["mlp.out.weight"].numpy().tobytes()
    at = bytes(raw).find(w[:64])
    assert at > 0
    raw[at:at + 64] = bytes(b ^ 0xFF for b in raw[at:at + 64])
    path.write_bytes(bytes(raw))
    torch.load(path, weights_only=True)  # loads ...
    with pytest.raises(CheckpointError, match="sha256"):  # ... but cannot lie
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match="sha256"):
        make(path).resume()


def test_non_finite_weights_are_refused(tmp_path):
    path = tmp_path / "ck.pt"
    trainer = make(path)
    trainer.fit(until=3)
    ckpt = torch.load(path, weights_only=True)
    ckpt.pop("sha256")
    ckpt["ema"]["mlp.out.weight"][0, 0] = float("nan")
    save_checkpoint_unchecked(ckpt, path)
    with pytest.raises(CheckpointError, match="non-finite.*ema/mlp.out.weight"):
        load_checkpoint(path)
    with torch.no_grad():
        trainer.net.mlp.out.weight[0, 0] = float("inf")
    with pytest.raises(CheckpointError, match="non-finite.*net/mlp.out.weight"):
        trainer.save()


def save_checkpoint_unchecked(ckpt, path):
    """A well-sealed checkpoint with whatever content (as a buggy or foreign writer would produce)."""
    ckpt = dict(ckpt)
    ckpt["sha256"] = content_digest(ckpt)
    torch.save(ckpt, path)


def test_identity_is_compared(tmp_path):
    path = tmp_path / "ck.pt"
    make(path).fit(until=3)
    with pytest.raises(CheckpointError, match=r"process: checkpoint 'VPSDE.*expected 'VESDE"):
        make(path, process=pd.VESDE()).resume()
    ident = load_checkpoint(path)["identity"]
    assert ident["process"].startswith("VPSDE(") and ident["model"] == "EpsilonModel"
    assert ident["net"] == "DropMLP" and ident["event_shape"] == [2]
    with pytest.raises(CheckpointError, match="event_shape"):
        load_checkpoint(path, expect={**ident, "event_shape": [3]})


def test_changed_settings_are_refused_unless_allowed(tmp_path):
    path = tmp_path / "ck.pt"
    make(path).fit(until=3)
    with pytest.raises(CheckpointError, match="other settings.*optimizer"):
        make(path, lr=1e-2).resume()
    assert make(path, lr=1e-2).resume(allow_change={"optimizer"}).step == 3
    with pytest.raises(ValueError, match="allow_change names unknown"):
        make(path).resume(allow_change={"lr"})


def test_lock_refuses_a_second_writer_naming_its_pid(tmp_path):
    path = tmp_path / "ck.pt"
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        from probdiff.train.checkpoint import CheckpointLock
        with CheckpointLock({str(path)!r}):
            print("held", flush=True)
            time.sleep(60)
    """)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(CheckpointError, match=f"another process \\(pid {holder.pid}"):
            make(path).fit()
        assert not path.exists()
    finally:
        holder.kill()
        holder.wait()
    make(path).fit(until=3)  # the lock of a dead process is free
    assert load_checkpoint(path)["step"] == 3


def test_stale_temp_files_of_dead_writers_are_removed(tmp_path):
    path = tmp_path / "ck.pt"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    stale = [tmp_path / f".ck.pt.{dead}.abc.tmp", tmp_path / ".ck.pt.oldstyle.tmp"]
    for f in stale:
        f.write_bytes(b"half a checkpoint")
    alive = tmp_path / f".ck.pt.{os.getppid()}.xyz.tmp"  # a live process' file is not ours to delete
    alive.write_bytes(b"")
    other = tmp_path / ".other.pt.123.tmp"
    other.write_bytes(b"")
    make(path).fit(until=3)
    assert not any(f.exists() for f in stale) and alive.exists() and other.exists()


def test_files_follow_the_umask(tmp_path):
    old = os.umask(0o027)
    try:
        path = tmp_path / "ck.pt"
        save_checkpoint(make().state_dict(), path)
        assert path.stat().st_mode & 0o777 == 0o640
        os.umask(0o002)
        save_checkpoint(make().state_dict(), path)
        assert path.stat().st_mode & 0o777 == 0o664
    finally:
        os.umask(old)


def test_lock_is_reentrant_and_released(tmp_path):
    path = tmp_path / "x.pt"
    with CheckpointLock(path):
        with CheckpointLock(path):
            pass
        assert (tmp_path / ".x.pt.lock").exists()
    assert not (tmp_path / ".x.pt.lock").exists()
