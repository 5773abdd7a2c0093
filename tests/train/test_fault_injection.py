"""Issue 13: `probdiff train` killed (SIGKILL) again and again while it writes checkpoints. After every kill
the checkpoint is loadable (or absent before the first write), the next start removes the temporary files
of the killed writer, and the run finished by resuming is bit-identical to an uninterrupted one.

Slow (one process start per kill). ``KILLS`` sets the number of kills; the counts are printed
(``pytest -s``)."""

import os
import random
import signal
import subprocess
import sys
import time

import pytest
import torch

from probdiff.train import load_checkpoint

KILLS = int(os.environ.get("PROBDIFF_FAULT_KILLS", "20"))
ARGS = ["--hidden", "64", "--depth", "2", "--batch-size", "64", "--steps", "60", "--checkpoint-every", "1",
        "--warmup", "5", "--quiet", "--threads", "1"]


def train(path, *extra):
    return [sys.executable, "-m", "probdiff.cli", "train", "--checkpoint", str(path), *ARGS, *extra]


def temp_files(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


@pytest.mark.slow
def test_kill_during_checkpoint_writes(tmp_path):
    reference = tmp_path / "ref" / "c.pt"
    reference.parent.mkdir()
    subprocess.run(train(reference), check=True, timeout=600, capture_output=True)
    path = tmp_path / "run" / "c.pt"
    path.parent.mkdir()
    rng = random.Random(13)
    counts = {"kills": 0, "kills leaving a temp file": 0, "loadable after kill": 0, "absent after kill": 0,
              "temp files removed at next start": 0}
    while counts["kills"] < KILLS:
        resume = ["--resume"] if path.exists() else []
        proc = subprocess.Popen(train(path, *resume), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        # wait until the process has written at least one new checkpoint, then kill it at a random moment
        before = path.stat().st_mtime_ns if path.exists() else 0
        deadline = time.time() + 300
        while time.time() < deadline and proc.poll() is None:
            if path.exists() and path.stat().st_mtime_ns != before:
                break
            time.sleep(0.01)
        time.sleep(rng.uniform(0.0, 0.3))
        if proc.poll() is not None:  # finished before the kill: start again from scratch for more kills
            assert proc.returncode == 0, proc.stderr.read().decode()
            path.unlink()
            continue
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        counts["kills"] += 1
        left = temp_files(path.parent)
        counts["kills leaving a temp file"] += bool(left)
        if path.exists():
            load_checkpoint(path)  # never half a checkpoint: raises if corrupt
            counts["loadable after kill"] += 1
        else:
            counts["absent after kill"] += 1
        if left:  # the next start removes them once it holds the lock, before writing anything
            resume = ["--resume"] if path.exists() else []
            probe = subprocess.Popen(train(path, *resume), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            deadline = time.time() + 300
            while time.time() < deadline and set(left) & set(temp_files(path.parent)):
                time.sleep(0.01)
            os.kill(probe.pid, signal.SIGKILL)
            probe.wait()
            assert not set(left) & set(temp_files(path.parent)), "a dead writer's temp file survived a start"
            counts["temp files removed at next start"] += 1
    done = subprocess.run(train(path, *(["--resume"] if path.exists() else [])), timeout=600, capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stderr
    final, ref = torch.load(path, weights_only=True), torch.load(reference, weights_only=True)
    assert final["step"] == ref["step"] == 60
    assert final["losses"].tolist() == ref["losses"].tolist()
    assert final["sha256"] == ref["sha256"]  # weights, EMA, optimiser and RNG states: bit-identical
    assert not temp_files(path.parent)
    print("\nfault injection:", counts)
