"""Checkpoints of a training run: atomic writes, checked reads, and the RNG states they carry.

A checkpoint is a dict saved with :func:`torch.save` under a ``format``/``version`` header; it is written
atomically (a temporary file in the same folder, then ``os.replace``), and a checkpoint that cannot be read,
is not a probdiff checkpoint, or lacks a part raises :class:`CheckpointError`. :func:`derive_seed` makes the
per-step seeds of a run; :func:`rng_state` and :func:`set_rng_state` carry the global torch, NumPy and
Python RNG states across a resume.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
import tempfile
from pathlib import Path

import numpy as np
import torch

__all__ = ["CheckpointError", "load_checkpoint", "save_atomic", "derive_seed", "rng_state", "set_rng_state",
           "FORMAT", "VERSION"]

FORMAT = "probdiff-checkpoint"
VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: missing, corrupt, or incompatible with the model."""


def derive_seed(*parts: int) -> int:
    """A 63-bit seed from integers (SHA-256, so nearby inputs give unrelated streams)."""
    digest = hashlib.sha256(b"probdiff" + b"".join(int(p).to_bytes(8, "little", signed=True) for p in parts))
    return int.from_bytes(digest.digest()[:8], "little") >> 1


def rng_state() -> dict:
    """The global torch (and CUDA), NumPy and Python RNG states, as tensors and plain values."""
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached": float(np_state[4])},
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore what :func:`rng_state` returned."""
    torch.set_rng_state(state["torch"])
    npst = state["numpy"]
    np.random.set_state(("MT19937", npst["keys"].numpy().astype(np.uint32), npst["pos"], npst["has_gauss"],
                         npst["cached"]))
    random.setstate(_tuples(state["python"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _tuples(obj):
    """Python's RNG state is nested tuples; a checkpoint round-trip may return lists."""
    return tuple(_tuples(v) for v in obj) if isinstance(obj, (list, tuple)) else obj


# ==================================================================== checkpoints
def load_checkpoint(path, *, map_location="cpu") -> dict:
    """Read a probdiff checkpoint; raise :class:`CheckpointError` if it is missing, corrupt or foreign."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises many types for truncated or foreign files
        raise CheckpointError(f"checkpoint {path} is corrupt or not a probdiff checkpoint "
                              f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"checkpoint {path} is not a probdiff checkpoint (no '{FORMAT}' header)")
    if ckpt.get("version") != VERSION:
        raise CheckpointError(f"checkpoint {path} has format version {ckpt.get('version')}, this probdiff "
                              f"reads version {VERSION}")
    missing = [k for k in ("step", "net", "ema", "optimizer", "rng", "trainer") if k not in ckpt]
    if missing:
        raise CheckpointError(f"checkpoint {path} is incomplete: missing {missing}")
    return ckpt


def save_atomic(obj, path: Path) -> None:
    """``torch.save(obj)`` to ``path`` atomically: readers see the old file or the new one, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(obj, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)  # atomic on POSIX and Windows: readers see the old or the new file, never half
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
