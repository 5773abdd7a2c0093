r"""Training: one :class:`Trainer` for a single process or ``torchrun --nproc_per_node=N``.

The trainer minimises the mean over a global batch of a per-sample loss ``loss(model, x0, generator=g)``
(:mod:`probdiff.losses`) with AdamW (Loshchilov & Hutter, "Decoupled Weight Decay Regularization",
ICLR 2019), gradient-norm clipping, a linear warm-up then cosine decay of the learning rate, and an
exponential moving average of the weights (EMA; used for sampling and evaluation, as in Song et al. 2021
and Karras et al. 2022).

**Reproducibility.** All randomness of step ``k`` (the data transform's dequantisation noise, the loss'
times and noise, dropout) is drawn from generators seeded by ``(seed, k, shard)``, and the data order of
epoch ``e`` from ``(seed, e)``. A run therefore depends on nothing but its seed, and a run resumed from
a checkpoint (model, optimiser, EMA, step, data position, and the torch/NumPy/Python RNG states for the
user's own code) produces exactly the losses the uninterrupted run would have produced.

**Distributed.** Under ``torchrun`` (``WORLD_SIZE > 1``) the process group is initialised with gloo on
CPU or nccl on CUDA. Each global batch of ``batch_size`` points is cut into ``world_size × accumulate``
equal shards; rank ``r`` processes shards ``r·accumulate … (r+1)·accumulate - 1`` and gradients are
averaged by one all-reduce. Because a shard's randomness depends on its global index only, a run on N
processes computes the same gradients as a single process with ``accumulate=N`` (up to floating-point
summation order). :func:`distributed_map` shards evaluation (e.g. likelihoods over a data set) the same way.

**Checkpoints** are written atomically (a temporary file in the same folder, then ``os.replace``) by rank
0 every ``checkpoint_every`` steps and at the end. A checkpoint that cannot be read, is not a probdiff
checkpoint, or does not fit the model raises ``ValueError``; nothing restarts silently.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import math
import os
import random
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.distributed as dist

from ._util import check_positive_int

__all__ = ["Trainer", "CheckpointError", "init_distributed", "world", "distributed_map", "load_checkpoint"]

_FORMAT = "probdiff-checkpoint"
_VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: missing, corrupt, or incompatible with the model."""


# ==================================================================== distributed helpers
def init_distributed() -> tuple[int, int]:
    """Join the process group when started by ``torchrun`` (``WORLD_SIZE > 1``); return ``(rank, world)``.

    gloo on CPU, nccl when CUDA is available. Idempotent; a no-op for a single process.
    """
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size > 1 and dist.is_available() and not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend=backend)
    return world()


def world() -> tuple[int, int]:
    """``(rank, world_size)`` of this process (``(0, 1)`` outside torch.distributed)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def default_device() -> torch.device:
    """This process' CUDA device (``LOCAL_RANK``) when CUDA is available, else the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")


def _all_reduce_mean(tensor: torch.Tensor) -> torch.Tensor:
    rank, size = world()
    if size > 1:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        tensor /= size
    return tensor


def distributed_map(fn: Callable[[torch.Tensor], torch.Tensor], data: torch.Tensor, *, batch_size: int = 256,
                    progress: bool = False, desc: str = "evaluating") -> torch.Tensor:
    """``fn`` applied to ``data`` in batches, sharded over the processes; every rank gets the full result.

    Rank ``r`` of ``N`` evaluates the contiguous block ``r`` of ``N`` near-equal blocks; the per-sample
    results ``(n,)`` (or ``(n, ...)``) are gathered back into data order. Single process: a batched map.
    """
    check_positive_int("batch_size", batch_size)
    rank, size = world()
    n = data.shape[0]
    bounds = [n * r // size for r in range(size + 1)]
    local = data[bounds[rank]:bounds[rank + 1]]
    outs = []
    batches = range(0, local.shape[0], int(batch_size))
    for i in _bar(batches, progress and rank == 0, desc, "batch"):
        outs.append(fn(local[i:i + int(batch_size)]).detach())
    if outs:
        out = torch.cat(outs)
    else:  # an empty shard still has to answer with the right trailing shape: ask for one point
        out = fn(data[:1]).detach()[:0]
    if size == 1:
        return out
    longest = max(bounds[r + 1] - bounds[r] for r in range(size))
    padded = torch.zeros((longest, *out.shape[1:]), dtype=out.dtype, device=out.device)
    padded[:out.shape[0]] = out
    gathered = [torch.empty_like(padded) for _ in range(size)]
    dist.all_gather(gathered, padded)
    return torch.cat([g[:bounds[r + 1] - bounds[r]] for r, g in enumerate(gathered)])


def _bar(iterable, enabled: bool, desc: str, unit: str, total: int | None = None, initial: int = 0):
    if not enabled:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=desc, unit=unit, total=total, initial=initial, dynamic_ncols=True)


# ==================================================================== seeding
def _seed(*parts: int) -> int:
    """A 63-bit seed from integers (SHA-256, so nearby inputs give unrelated streams)."""
    digest = hashlib.sha256(b"probdiff" + b"".join(int(p).to_bytes(8, "little", signed=True) for p in parts))
    return int.from_bytes(digest.digest()[:8], "little") >> 1


def _rng_state() -> dict:
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


def _set_rng_state(state: dict) -> None:
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
    if not isinstance(ckpt, dict) or ckpt.get("format") != _FORMAT:
        raise CheckpointError(f"checkpoint {path} is not a probdiff checkpoint (no '{_FORMAT}' header)")
    if ckpt.get("version") != _VERSION:
        raise CheckpointError(f"checkpoint {path} has format version {ckpt.get('version')}, this probdiff "
                              f"reads version {_VERSION}")
    missing = [k for k in ("step", "net", "ema", "optimizer", "rng", "trainer") if k not in ckpt]
    if missing:
        raise CheckpointError(f"checkpoint {path} is incomplete: missing {missing}")
    return ckpt


def _atomic_save(obj, path: Path) -> None:
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


# ==================================================================== the trainer
class Trainer:
    """Train ``model.net`` by minimising ``loss`` over ``data``.

    Args:
        model: a model wrapping an ``nn.Module`` as ``model.net`` (any probdiff model parameterisation).
        loss: per-sample loss ``loss(model, x0, generator=g) -> (batch,)``, e.g.
            :class:`probdiff.losses.DenoisingScoreMatching`.
        data: training data ``(N, *event)`` (integer levels or floats), kept on the CPU.
        transform: ``transform(batch, generator) -> x0`` applied to every batch, e.g.
            :class:`probdiff.data.Dequantize` (default: the batch as it is).
        steps: total optimisation steps (sets the learning-rate schedule).
        batch_size: the global batch, the same whatever the number of processes.
        lr, weight_decay, betas: AdamW settings.
        warmup: steps of linear learning-rate warm-up; then cosine decay to ``min_lr_ratio · lr``.
        ema_decay: EMA decay (the effective decay ramps up as ``min(decay, (1+k)/(10+k))``).
        clip: maximal global gradient norm (``None``: no clipping).
        seed: the run's seed.
        accumulate: shards per process per step (gradient accumulation).
        checkpoint: path of the checkpoint file (``None``: no checkpoints).
        checkpoint_every: steps between checkpoints.
        config: a JSON-like dict stored in the checkpoint (e.g. how to rebuild the model).
        device: where to train (default: this process' CUDA device, else CPU).
    """

    def __init__(self, model, loss: Callable, data: torch.Tensor, *, transform: Callable | None = None,
                 steps: int = 1000, batch_size: int = 128, lr: float = 1e-3, weight_decay: float = 0.0,
                 betas=(0.9, 0.999), warmup: int = 100, min_lr_ratio: float = 0.1, ema_decay: float = 0.999,
                 clip: float | None = 1.0, seed: int = 0, accumulate: int = 1, checkpoint=None,
                 checkpoint_every: int = 1000, config: dict | None = None, device=None):
        net = getattr(model, "net", None)
        if not isinstance(net, torch.nn.Module):
            raise ValueError(f"model.net must be a torch.nn.Module to be trained, got {type(net).__name__}")
        if not callable(loss):
            raise ValueError(f"loss must be callable as loss(model, x0, generator=g), got {type(loss).__name__}")
        if not isinstance(data, torch.Tensor) or data.dim() < 2:
            raise ValueError("data must be a tensor of shape (N, *event)")
        for name, value in (("steps", steps), ("batch_size", batch_size), ("accumulate", accumulate),
                            ("checkpoint_every", checkpoint_every)):
            check_positive_int(name, value)
        if not lr > 0:
            raise ValueError(f"lr must be > 0, got {lr}")
        if not 0.0 <= ema_decay < 1.0:
            raise ValueError(f"ema_decay must lie in [0, 1), got {ema_decay}")
        if clip is not None and not clip > 0:
            raise ValueError(f"clip must be > 0 or None, got {clip}")
        if int(warmup) < 0:
            raise ValueError(f"warmup must be >= 0, got {warmup}")
        self.rank, self.world_size = world()
        self.shards = self.world_size * int(accumulate)
        if batch_size % self.shards:
            raise ValueError(f"batch_size={batch_size} must be divisible by world_size × accumulate = {self.shards}")
        if data.shape[0] < batch_size:
            raise ValueError(f"batch_size={batch_size} is larger than the data set ({data.shape[0]} points)")
        self.device = torch.device(device) if device is not None else default_device()
        self.model, self.net = model, net.to(self.device)
        self.loss, self.data = loss, data
        self.transform = transform if transform is not None else (lambda x, generator=None: x)
        self.steps, self.batch_size, self.accumulate = int(steps), int(batch_size), int(accumulate)
        self.lr, self.warmup, self.min_lr_ratio = float(lr), int(warmup), float(min_lr_ratio)
        self.ema_decay, self.clip, self.seed = float(ema_decay), clip, int(seed)
        self.checkpoint = Path(checkpoint) if checkpoint is not None else None
        self.checkpoint_every = int(checkpoint_every)
        self.config = dict(config or {})
        self.optimizer = torch.optim.AdamW(self.net.parameters(), lr=self.lr, betas=tuple(betas),
                                           weight_decay=weight_decay)
        self.ema = {k: v.detach().clone() for k, v in self.net.state_dict().items()}
        self.step = 0
        self.losses: list[float] = []
        if self.world_size > 1:  # every rank starts from rank 0's weights
            for p in self.net.state_dict().values():
                dist.broadcast(p, src=0)
            self.ema = {k: v.detach().clone() for k, v in self.net.state_dict().items()}

    # ---------------------------------------------------------------- schedule and data order
    def learning_rate(self, step: int) -> float:
        """Linear warm-up over ``warmup`` steps, then cosine decay to ``min_lr_ratio · lr`` at ``steps``."""
        if step < self.warmup:
            return self.lr * (step + 1) / self.warmup
        frac = (step - self.warmup) / max(1, self.steps - self.warmup)
        cos = 0.5 * (1 + math.cos(math.pi * min(1.0, frac)))
        return self.lr * (self.min_lr_ratio + (1 - self.min_lr_ratio) * cos)

    def batch_indices(self, step: int) -> torch.Tensor:
        """Indices of the global batch of ``step``: epochs of a permutation seeded by ``(seed, epoch)``."""
        per_epoch = self.data.shape[0] // self.batch_size  # the incomplete last batch is dropped
        epoch, position = divmod(step, per_epoch)
        g = torch.Generator().manual_seed(_seed(self.seed, -1, epoch))
        perm = torch.randperm(self.data.shape[0], generator=g)
        return perm[position * self.batch_size:(position + 1) * self.batch_size]

    def _generator(self, step: int, shard: int) -> torch.Generator:
        g = torch.Generator(device=self.device)
        g.manual_seed(_seed(self.seed, step, shard))
        return g

    # ---------------------------------------------------------------- one step
    def train_step(self) -> float:
        """One optimisation step on the next global batch; returns its mean loss (over all shards)."""
        step = self.step
        idx = self.batch_indices(step)
        shard_size = self.batch_size // self.shards
        self.net.train()
        self.optimizer.zero_grad(set_to_none=True)
        total = torch.zeros((), dtype=torch.float64, device=self.device)
        for m in range(self.accumulate):
            shard = self.rank * self.accumulate + m
            g = self._generator(step, shard)
            torch.manual_seed(_seed(self.seed, step, shard, 1))  # dropout and any global-RNG use
            batch = self.data[idx[shard * shard_size:(shard + 1) * shard_size]].to(self.device)
            x0 = self.transform(batch, generator=g)
            value = self.loss(self.model, x0, generator=g).mean()
            if not bool(torch.isfinite(value)):
                raise FloatingPointError(f"the loss is not finite at step {step}; lower lr or check the data")
            (value / self.accumulate).backward()
            total += value.detach().to(torch.float64) / self.accumulate
        params = [p for p in self.net.parameters() if p.grad is not None]
        if self.world_size > 1 and params:
            flat = torch.cat([p.grad.reshape(-1) for p in params])
            _all_reduce_mean(flat)
            offset = 0
            for p in params:
                p.grad.copy_(flat[offset:offset + p.numel()].view_as(p))
                offset += p.numel()
        if self.clip is not None:
            torch.nn.utils.clip_grad_norm_(self.net.parameters(), self.clip)
        for group in self.optimizer.param_groups:
            group["lr"] = self.learning_rate(step)
        self.optimizer.step()
        self._update_ema()
        self.step += 1
        loss = float(_all_reduce_mean(total))
        self.losses.append(loss)
        return loss

    @torch.no_grad()
    def _update_ema(self) -> None:
        decay = min(self.ema_decay, (1 + self.step) / (10 + self.step))
        for k, v in self.net.state_dict().items():
            if v.is_floating_point():
                self.ema[k].lerp_(v, 1 - decay)
            else:
                self.ema[k].copy_(v)

    # ---------------------------------------------------------------- the loop
    def fit(self, until: int | None = None, *, progress: bool = False) -> list[float]:
        """Train up to step ``until`` (default ``steps``), checkpointing on the way; returns the new losses."""
        until = self.steps if until is None else int(until)
        if until > self.steps:
            raise ValueError(f"until must be <= steps = {self.steps}, got {until}")
        start = self.step
        bar = _bar(range(start, until), progress and self.rank == 0, "training", "step",
                   total=until, initial=start)
        for _ in bar:
            loss = self.train_step()
            if hasattr(bar, "set_postfix"):
                bar.set_postfix(loss=f"{loss:.4g}", refresh=False)
            if self.checkpoint is not None and (self.step % self.checkpoint_every == 0 or self.step == self.steps):
                self.save()
        return self.losses[start:]

    # ---------------------------------------------------------------- EMA view
    @contextlib.contextmanager
    def ema_weights(self):
        """Context in which ``model.net`` holds the EMA weights (restored on exit)."""
        saved = copy.deepcopy(self.net.state_dict())
        self.net.load_state_dict(self.ema)
        was_training = self.net.training
        self.net.eval()
        try:
            yield self.model
        finally:
            self.net.load_state_dict(saved)
            self.net.train(was_training)

    # ---------------------------------------------------------------- checkpoints
    def _settings(self) -> dict:
        return {"batch_size": self.batch_size, "seed": self.seed, "steps": self.steps,
                "num_data": int(self.data.shape[0])}

    def state_dict(self) -> dict:
        return {
            "format": _FORMAT,
            "version": _VERSION,
            "step": self.step,
            "net": self.net.state_dict(),
            "ema": self.ema,
            "optimizer": self.optimizer.state_dict(),
            "rng": _rng_state(),
            "trainer": self._settings(),
            "losses": torch.tensor(self.losses, dtype=torch.float64),
            "config": self.config,
        }

    def save(self, path=None) -> Path | None:
        """Write a checkpoint atomically (rank 0 writes; every rank waits for it)."""
        path = Path(path) if path is not None else self.checkpoint
        if path is None:
            raise ValueError("no checkpoint path: pass path or construct the Trainer with checkpoint=...")
        if self.rank == 0:
            _atomic_save(self.state_dict(), path)
        if self.world_size > 1:
            dist.barrier()
        return path

    def resume(self, path=None) -> "Trainer":
        """Restore everything from a checkpoint; raise :class:`CheckpointError` if it does not fit."""
        path = Path(path) if path is not None else self.checkpoint
        if path is None:
            raise ValueError("no checkpoint path: pass path or construct the Trainer with checkpoint=...")
        ckpt = load_checkpoint(path, map_location=self.device)
        settings = self._settings()
        changed = {k: (ckpt["trainer"].get(k), v) for k, v in settings.items()
                   if k != "steps" and ckpt["trainer"].get(k) != v}
        if changed:
            raise CheckpointError(f"checkpoint {path} was written with other settings "
                                  f"(checkpoint, now): {changed}; resuming would not continue the same run")
        try:
            self.net.load_state_dict(ckpt["net"])
            self.optimizer.load_state_dict(ckpt["optimizer"])
        except (RuntimeError, ValueError, KeyError) as exc:
            first = str(exc).strip().splitlines()
            raise CheckpointError(f"checkpoint {path} does not fit this model: {' '.join(first[:3])}") from None
        if set(ckpt["ema"]) != set(self.ema):
            raise CheckpointError(f"checkpoint {path} does not fit this model (EMA keys differ)")
        self.ema = {k: v.to(self.device) for k, v in ckpt["ema"].items()}
        self.step = int(ckpt["step"])
        if self.step > self.steps:
            raise CheckpointError(f"checkpoint {path} is at step {self.step}, beyond steps = {self.steps}")
        self.losses = [float(v) for v in ckpt.get("losses", torch.zeros(0)).tolist()]
        _set_rng_state(ckpt["rng"])
        return self

    def __repr__(self) -> str:
        return (f"Trainer(step={self.step}/{self.steps}, batch_size={self.batch_size}, lr={self.lr:g}, "
                f"world_size={self.world_size}, device={self.device})")
