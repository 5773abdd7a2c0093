"""Checkpoints of a training run: sealed atomic writes, verified reads, an advisory lock, and RNG states.

A checkpoint is a dict saved with :func:`torch.save` under a ``format``/``version`` header and sealed by
:func:`content_digest` (SHA-256 over every tensor's bytes, dtype and shape and every plain value, keys in
order), stored as ``sha256``. :func:`save_checkpoint` refuses non-finite weights, EMA or optimiser state and
writes atomically (a temporary file ``.NAME.PID.*.tmp`` in the same folder, then ``os.replace``) with the
permissions of the umask. :func:`load_checkpoint` recomputes the digest, checks the same finiteness and, when
given ``expect``, compares the checkpoint's :func:`identity` with it; a failure raises
:class:`CheckpointError` naming the file and, for a mismatch, both sides. :class:`CheckpointLock` is the
advisory lock that a writer holds on the path (a second writer is refused, naming the holder's pid); it
removes the temporary files that a dead writer left behind. :func:`derive_seed` makes the per-step seeds of
a run; :func:`rng_state` and :func:`set_rng_state` carry the global torch, NumPy and Python RNG states.
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

__all__ = ["CheckpointError", "load_checkpoint", "save_checkpoint", "save_atomic", "content_digest", "identity",
           "compare_identity", "check_finite_state", "stale_temp_files", "CheckpointLock", "derive_seed",
           "rng_state", "set_rng_state", "FORMAT", "VERSION"]

FORMAT = "probdiff-checkpoint"
#: 2: sealed by ``sha256`` (:func:`content_digest`) and carrying an ``identity``; version 1 had neither.
VERSION = 2

#: The parts of a checkpoint whose floating-point tensors must be finite.
FINITE_PARTS = ("net", "ema", "optimizer")


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: missing, corrupt, non-finite, locked or not the one expected."""


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


# ==================================================================== content: digest, finiteness, identity
def content_digest(obj) -> str:
    """SHA-256 (hex) of a checkpoint's content: tensors by dtype, shape and bytes; dicts by sorted keys.

    The digest does not depend on how :func:`torch.save` lays the file out, only on what it holds, so it is
    the same for the same state on every machine with the same byte order.
    """
    h = hashlib.sha256()

    def walk(v):
        if isinstance(v, torch.Tensor):
            t = v.detach().cpu().contiguous()
            h.update(f"T{t.dtype}{tuple(t.shape)}:".encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
        elif isinstance(v, dict):
            h.update(f"D{len(v)}:".encode())
            for k in sorted(v, key=repr):
                h.update(repr(k).encode() + b"=")
                walk(v[k])
        elif isinstance(v, (list, tuple)):
            h.update(f"L{len(v)}:".encode())
            for item in v:
                walk(item)
        else:
            h.update(f"V{type(v).__name__}{v!r};".encode())

    walk(obj)
    return h.hexdigest()


def _non_finite(obj, where: str = "") -> str | None:
    """The first path inside ``obj`` to a floating tensor (or float) with NaN or infinity, else None."""
    if isinstance(obj, torch.Tensor):
        bad = obj.is_floating_point() and obj.numel() and not bool(torch.isfinite(obj).all())
        return where if bad else None
    if isinstance(obj, float):
        return where if not np.isfinite(obj) else None
    items = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, (list, tuple)) else ()
    for k, v in items:
        found = _non_finite(v, f"{where}/{k}")
        if found is not None:
            return found
    return None


def check_finite_state(state: dict, what: str) -> None:
    """Raise :class:`CheckpointError` if a weight, EMA or optimiser tensor of ``state`` is not finite."""
    for part in FINITE_PARTS:
        found = _non_finite(state.get(part, {}), part)
        if found is not None:
            raise CheckpointError(f"{what} holds non-finite values (NaN or inf) at {found}; a diverged run "
                                  "cannot be checkpointed or used")


def identity(model, event_shape, levels: int | None = None) -> dict:
    """What a checkpoint was trained for: process (with its parameters), model class, network class,
    parameterisation, data event shape and levels. Two checkpoints are interchangeable only if equal."""
    return {"process": repr(model.process), "model": type(model).__name__, "net": type(model.net).__name__,
            "event_shape": [int(n) for n in event_shape], "levels": None if levels is None else int(levels)}


def compare_identity(path, stored: dict | None, expected: dict) -> None:
    """Raise :class:`CheckpointError` naming both sides where ``stored`` and ``expected`` differ."""
    stored = stored or {}
    diff = [f"{k}: checkpoint {stored.get(k)!r}, expected {v!r}" for k, v in expected.items()
            if stored.get(k) != v]
    if diff:
        raise CheckpointError(f"checkpoint {path} was trained for something else ({'; '.join(diff)})")


# ==================================================================== reading and writing
def load_checkpoint(path, *, map_location="cpu", expect: dict | None = None) -> dict:
    """Read a probdiff checkpoint and verify it; raise :class:`CheckpointError` if it is missing, corrupt
    (checksum), foreign, of another version, not finite, or (with ``expect``, an :func:`identity`) trained
    for something else."""
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
                              f"reads version {VERSION} (sealed by a checksum)")
    stored = ckpt.pop("sha256", None)
    if stored != content_digest(ckpt):
        raise CheckpointError(f"checkpoint {path} is corrupt: its content does not match its sha256 checksum")
    missing = [k for k in ("step", "net", "ema", "optimizer", "rng", "trainer", "identity") if k not in ckpt]
    if missing:
        raise CheckpointError(f"checkpoint {path} is incomplete: missing {missing}")
    check_finite_state(ckpt, f"checkpoint {path}")
    if expect is not None:
        compare_identity(path, ckpt["identity"], expect)
    return ckpt


def save_checkpoint(state: dict, path) -> None:
    """Seal ``state`` with its :func:`content_digest` and write it atomically; refuse non-finite state."""
    check_finite_state(state, "the state to checkpoint")
    sealed = dict(state)
    sealed.pop("sha256", None)
    sealed["sha256"] = content_digest(sealed)
    save_atomic(sealed, Path(path))


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _temp_prefix(path: Path) -> str:
    return f".{path.name}."


def save_atomic(obj, path: Path) -> None:
    """``torch.save(obj)`` to ``path`` atomically: readers see the old file or the new one, never half.

    The temporary file is named ``.NAME.PID.*.tmp`` (so a later writer knows whose it was) and the final
    file gets the permissions ``0o666 & ~umask``, like any file the user creates.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f"{_temp_prefix(path)}{os.getpid()}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(obj, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)  # atomic on POSIX and Windows: readers see the old or the new file, never half
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def stale_temp_files(path) -> list[Path]:
    """Temporary files of ``path`` whose writer (the pid in their name) no longer runs."""
    path = Path(path)
    found = []
    if not path.parent.is_dir():
        return found
    for f in path.parent.glob(f"{_temp_prefix(path)}*.tmp"):
        pid = f.name[len(_temp_prefix(path)):].split(".")[0]
        if not pid.isdigit() or not _alive(int(pid)):
            found.append(f)
    return found


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


class CheckpointLock:
    """An advisory lock on a checkpoint path (``fcntl.flock`` on ``.NAME.lock`` beside it), for writers.

    Acquiring it refuses (:class:`CheckpointError`) when another process holds it, naming that process' pid,
    and removes the temporary files that dead writers left behind. Re-entrant within one process. On systems
    without ``fcntl`` the lock only cleans up.
    """

    _held: dict[str, int] = {}

    def __init__(self, path):
        self.path = Path(path)
        self.lock_path = self.path.parent / f".{self.path.name}.lock"
        self._fd = None

    def __enter__(self) -> "CheckpointLock":
        key = str(self.lock_path.resolve())
        if key in CheckpointLock._held:
            CheckpointLock._held[key] += 1
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows
            fcntl = None
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                holder = os.read(fd, 64).decode(errors="replace").strip() or "unknown"
                os.close(fd)
                raise CheckpointError(f"checkpoint {self.path} is being written by another process (pid {holder}, "
                                      f"lock {self.lock_path}); wait for it or use another --checkpoint") from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd
        CheckpointLock._held[key] = 1
        for f in stale_temp_files(self.path):
            with contextlib.suppress(FileNotFoundError):
                f.unlink()
        return self

    def __exit__(self, *exc) -> None:
        key = str(self.lock_path.resolve())
        CheckpointLock._held[key] -= 1
        if CheckpointLock._held[key]:
            return
        del CheckpointLock._held[key]
        fd = self._fd
        if fd is None:
            return
        with contextlib.suppress(FileNotFoundError):
            self.lock_path.unlink()  # while still held, so that nobody waits on a removed file
        os.close(fd)
        self._fd = None
