r"""Training: one :class:`Trainer` for a single process or ``torchrun --nproc_per_node=N``.

The trainer minimises the mean over a global batch of a per-sample loss ``loss(model, x0, generator=g)``
(:mod:`probdiff.losses`) with an :class:`~probdiff.train.Optimizer` (default :class:`~probdiff.train.AdamW`
with gradient-norm clipping), a learning-rate :class:`~probdiff.train.Schedule` (default
:class:`~probdiff.train.WarmupCosine`) and an :class:`~probdiff.train.EMA` of the weights (used for sampling
and evaluation, as in Song et al. 2021 and Karras et al. 2022).

**Reproducibility.** All randomness of step ``k`` (the data transform's dequantisation noise, the loss'
times and noise, dropout, and whatever the user's code draws from the global torch, NumPy or Python
generators, which are all re-seeded before each shard) is drawn from generators seeded by
``(seed, k, shard)``, and the data order of epoch ``e`` from ``(seed, e)``. Given its initial weights, a run
therefore depends on nothing but its seed: the loss sequence, the weights and the EMA are bit-identical in
one process and across processes on the same machine with the same number of threads, and a run resumed
from any of its checkpoints (model, optimiser, EMA, step, data position and RNG states) continues
bit-identically. What does *not* hold: across thread counts, CPU kernels may split reductions differently
(results agree to rounding, not bit for bit); on CUDA, bit-identity needs
``torch.use_deterministic_algorithms(True)`` (and ``CUBLAS_WORKSPACE_CONFIG=:4096:8``), otherwise atomics
in some kernels reorder sums; and across machines or library versions nothing is promised beyond rounding.
The initial weights are the caller's: ``probdiff train`` draws them from ``--seed``.

**Distributed.** Under ``torchrun`` (``WORLD_SIZE > 1``) the process group is initialised with gloo on
CPU or nccl on CUDA. Each global batch of ``batch_size`` points is cut into ``world_size × accumulate``
equal shards; rank ``r`` processes shards ``r·accumulate … (r+1)·accumulate - 1`` and gradients are
averaged by one all-reduce. Because a shard's randomness depends on its global index only, a run on N
processes computes the same gradients as a single process with ``accumulate=N`` (up to floating-point
summation order). :func:`~probdiff.train.distributed_map` shards evaluation (e.g. likelihoods over a data
set) the same way.

**Checkpoints** are written atomically by rank 0 every ``checkpoint_every`` steps and at the end, sealed
by a checksum, under an advisory lock held while :meth:`Trainer.fit` runs
(:mod:`probdiff.train.checkpoint`). A checkpoint that cannot be read, is corrupt, holds non-finite values,
was trained for another process, model or data shape (its ``identity``), or was written with other
settings raises :class:`~probdiff.train.CheckpointError` (a ``ValueError``); nothing restarts silently.
"""

from __future__ import annotations

import contextlib
import copy
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.distributed as dist

from .._util import check_positive_int
from .checkpoint import (FORMAT, VERSION, CheckpointError, CheckpointLock, derive_seed, identity, load_checkpoint,
                         rng_state, save_checkpoint, set_rng_state)
from .distributed import all_reduce_mean, default_device, progress_bar, world
from ..models import Model
from .optim import EMA, AdamW, Optimizer, Schedule, WarmupCosine

__all__ = ["Trainer", "Run", "seed_globals"]


@dataclass(frozen=True)
class Run:
    """How a training run executes: its seed, how each batch is sharded, where it runs, where it is saved.

    Args:
        seed: the run's seed (data order, the loss' noise, dropout; see the module's notes).
        accumulate: shards per process per step (gradient accumulation; the same gradients either way).
        device: where to train (default: this process' CUDA device, else CPU).
        checkpoint: path of the checkpoint file (``None``: no checkpoints).
        checkpoint_every: steps between checkpoints.
        config: a JSON-like dict stored in the checkpoint (e.g. how to rebuild the model); its
            ``data_levels``, if any, is the number of data levels recorded in the checkpoint's identity.
        autocast: ``torch.bfloat16`` runs each shard's loss under :func:`torch.autocast` on the run's device
            (mixed precision, Micikevicius et al. 2018, "Mixed Precision Training": matrix products and
            attention in bfloat16, the weights, their gradients, the optimiser and the EMA in float32; what
            the loss casts explicitly, e.g. the chain bounds' float64, stays as written). ``None`` (default):
            full precision. bfloat16 keeps float32's exponent range, so no loss scaling is needed; float16,
            which would need it, is refused. Worth it where the hardware has bfloat16 arithmetic (CUDA,
            CPUs with AVX512-BF16 or AMX); elsewhere it can be slower. Runs stay reproducible: the same seed
            gives the same bits on the same machine.
    """

    seed: int = 0
    accumulate: int = 1
    device: str | torch.device | None = None
    checkpoint: str | Path | None = None
    checkpoint_every: int = 1000
    config: dict | None = None
    autocast: torch.dtype | None = None

    def __post_init__(self):
        check_positive_int("accumulate", self.accumulate)
        check_positive_int("checkpoint_every", self.checkpoint_every)
        if self.autocast is not None and self.autocast is not torch.bfloat16:
            raise ValueError(f"autocast must be None or torch.bfloat16, got {self.autocast!r} (float16 would need "
                             "loss scaling, which the trainer does not do)")


# ==================================================================== the trainer
class Trainer:
    """Train ``model.net`` by minimising ``loss`` over ``data``.

    Args:
        model: a model wrapping an ``nn.Module`` as ``model.net`` (any probdiff model parameterisation).
        loss: per-sample loss ``loss(model, x0, generator=g) -> (batch,)``, e.g.
            :class:`probdiff.losses.DenoisingScoreMatching` (:func:`probdiff.recipes.loss` picks one).
        data: training data ``(N, *event)`` (integer levels or floats), kept on the CPU.
        transform: ``transform(batch, generator) -> x0`` applied to every batch, e.g.
            :class:`probdiff.data.Dequantize` (default: the batch as it is).
        steps: total optimisation steps (the horizon of the learning-rate schedule).
        batch_size: the global batch, the same whatever the number of processes.
        optimizer: the update rule and gradient clip (default :class:`~probdiff.train.AdamW`: lr 1e-3, no
            weight decay, clip 1).
        scheduler: the learning rate of each step (default :class:`~probdiff.train.WarmupCosine`: 100
            warm-up steps, then cosine decay to 0.1 lr).
        ema: the average of the weights kept for evaluation (default :class:`~probdiff.train.EMA`, decay
            0.999).
        run: seed, accumulation, device and checkpoints (:class:`~probdiff.train.Run`).
    """

    def __init__(self, model, loss: Callable, data: torch.Tensor, *, transform: Callable | None = None,
                 steps: int = 1000, batch_size: int = 128, optimizer: Optimizer = AdamW(),
                 scheduler: Schedule = WarmupCosine(), ema: EMA = EMA(), run: Run = Run()):
        net = model.net if isinstance(model, Model) else None
        if not isinstance(net, torch.nn.Module):
            raise ValueError(f"model.net must be a torch.nn.Module to be trained, got {type(net).__name__}")
        if not callable(loss):
            raise ValueError(f"loss must be callable as loss(model, x0, generator=g), got {type(loss).__name__}")
        if not isinstance(data, torch.Tensor) or data.dim() < 2:
            raise ValueError("data must be a tensor of shape (N, *event)")
        check_positive_int("steps", steps)
        check_positive_int("batch_size", batch_size)
        for name, value, kind in (("optimizer", optimizer, Optimizer), ("scheduler", scheduler, Schedule),
                                  ("ema", ema, EMA), ("run", run, Run)):
            if not isinstance(value, kind):
                raise ValueError(f"{name} must be a probdiff.train.{kind.__name__}, got {type(value).__name__}")
        self.rank, self.world_size = world()
        self.shards = self.world_size * int(run.accumulate)
        if batch_size % self.shards:
            raise ValueError(f"batch_size={batch_size} must be divisible by world_size × accumulate = {self.shards}")
        if data.shape[0] < batch_size:
            raise ValueError(f"batch_size={batch_size} is larger than the data set ({data.shape[0]} points)")
        self.device = torch.device(run.device) if run.device is not None else default_device()
        self.model, self.net = model, net.to(self.device)
        self.loss, self.data = loss, data
        self.transform = transform if transform is not None else (lambda x, generator=None: x)
        self.steps, self.batch_size, self.accumulate = int(steps), int(batch_size), int(run.accumulate)
        self.optimizer_config, self.scheduler, self.ema_config, self.run = optimizer, scheduler, ema, run
        self.seed = int(run.seed)
        self.checkpoint = Path(run.checkpoint) if run.checkpoint is not None else None
        self.checkpoint_every = int(run.checkpoint_every)
        self.config = dict(run.config or {})
        self.optimizer = optimizer.build(self.net.parameters())
        self.step = 0
        self.losses: list[float] = []
        if self.world_size > 1:  # every rank starts from rank 0's weights
            for p in self.net.state_dict().values():
                dist.broadcast(p, src=0)
        self.ema = ema.init(self.net.state_dict())

    # ---------------------------------------------------------------- schedule and data order
    def learning_rate(self, step: int) -> float:
        """The scheduler's learning rate at ``step`` for the optimizer's base rate."""
        return self.scheduler(self.optimizer_config.lr, step, self.steps)

    def batch_indices(self, step: int) -> torch.Tensor:
        """Indices of the global batch of ``step``: epochs of a permutation seeded by ``(seed, epoch)``."""
        per_epoch = self.data.shape[0] // self.batch_size  # the incomplete last batch is dropped
        epoch, position = divmod(step, per_epoch)
        g = torch.Generator().manual_seed(derive_seed(self.seed, -1, epoch))
        perm = torch.randperm(self.data.shape[0], generator=g)
        return perm[position * self.batch_size:(position + 1) * self.batch_size]

    def _generator(self, step: int, shard: int) -> torch.Generator:
        g = torch.Generator(device=self.device)
        g.manual_seed(derive_seed(self.seed, step, shard))
        return g

    def _precision(self):
        """The context of the loss' forward pass: :func:`torch.autocast` when the run asks for it."""
        if self.run.autocast is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.run.autocast)

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
            seed_globals(derive_seed(self.seed, step, shard, 1))  # dropout and any global-RNG use
            batch = self.data[idx[shard * shard_size:(shard + 1) * shard_size]].to(self.device)
            x0 = self.transform(batch, generator=g)
            with self._precision():
                value = self.loss(self.model, x0, generator=g).mean()
            if not bool(torch.isfinite(value)):
                raise FloatingPointError(f"the loss is not finite at step {step}; lower lr or check the data")
            (value / self.accumulate).backward()
            total += value.detach().to(torch.float64) / self.accumulate
        params = [p for p in self.net.parameters() if p.grad is not None]
        if self.world_size > 1 and params:
            flat = torch.cat([p.grad.reshape(-1) for p in params])
            all_reduce_mean(flat)
            offset = 0
            for p in params:
                p.grad.copy_(flat[offset:offset + p.numel()].view_as(p))
                offset += p.numel()
        if self.optimizer_config.clip is not None:
            torch.nn.utils.clip_grad_norm_(self.net.parameters(), self.optimizer_config.clip)
        for group in self.optimizer.param_groups:
            group["lr"] = self.learning_rate(step)
        self.optimizer.step()
        self.ema_config.update(self.ema, self.net.state_dict(), step)
        self.step += 1
        loss = float(all_reduce_mean(total))
        self.losses.append(loss)
        return loss

    # ---------------------------------------------------------------- the loop
    def fit(self, until: int | None = None, *, progress: bool = False) -> list[float]:
        """Train up to step ``until`` (default ``steps``), checkpointing on the way; returns the new losses."""
        until = self.steps if until is None else int(until)
        if until > self.steps:
            raise ValueError(f"until must be <= steps = {self.steps}, got {until}")
        start = self.step
        shown = progress and self.rank == 0
        bar = progress_bar(range(start, until), shown, "training", "step", total=until, initial=start)
        with self._lock():
            for _ in bar:
                loss = self.train_step()
                if shown:  # a tqdm bar
                    bar.set_postfix(loss=f"{loss:.4g}", refresh=False)
                if self.checkpoint is not None and (self.step % self.checkpoint_every == 0
                                                    or self.step == self.steps):
                    self.save()
        return self.losses[start:]

    def _lock(self, path=None):
        """The checkpoint's advisory lock on rank 0 (nothing to lock without a checkpoint or on other ranks)."""
        path = path if path is not None else self.checkpoint
        return CheckpointLock(path) if path is not None and self.rank == 0 else contextlib.nullcontext()

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
        """What a resumed run must share with the checkpoint to continue it (``steps`` may grow)."""
        return {"batch_size": self.batch_size, "seed": self.seed, "steps": self.steps,
                "num_data": int(self.data.shape[0]), "optimizer": repr(self.optimizer_config),
                "scheduler": repr(self.scheduler), "ema": repr(self.ema_config),
                "autocast": None if self.run.autocast is None else str(self.run.autocast)}

    def identity(self) -> dict:
        """What this trainer trains (:func:`probdiff.train.checkpoint.identity`): stored in and checked
        against every checkpoint."""
        return identity(self.model, self.data.shape[1:], self.config.get("data_levels"))

    def state_dict(self) -> dict:
        return {
            "format": FORMAT,
            "version": VERSION,
            "step": self.step,
            "net": self.net.state_dict(),
            "ema": self.ema,
            "optimizer": self.optimizer.state_dict(),
            "rng": rng_state(),
            "trainer": self._settings(),
            "identity": self.identity(),
            "losses": torch.tensor(self.losses, dtype=torch.float64),
            "config": self.config,
        }

    def save(self, path=None) -> Path | None:
        """Write a checkpoint atomically (rank 0 writes; every rank waits for it)."""
        path = Path(path) if path is not None else self.checkpoint
        if path is None:
            raise ValueError("no checkpoint path: pass path or construct the Trainer with run=Run(checkpoint=...)")
        if self.rank == 0:
            with self._lock(path):
                save_checkpoint(self.state_dict(), path)
        if self.world_size > 1:
            dist.barrier()
        return path

    def resume(self, path=None, *, allow_change=()) -> "Trainer":
        """Restore everything from a checkpoint; raise :class:`CheckpointError` if it does not fit.

        Args:
            path: the checkpoint (default: the run's).
            allow_change: settings that may differ from the checkpoint's (``"batch_size"``, ``"seed"``,
                ``"num_data"``, ``"optimizer"``, ``"scheduler"``, ``"ema"``, ``"autocast"``); any other change is refused,
                since the resumed run would not continue the same run. ``steps`` may always change.
        """
        path = Path(path) if path is not None else self.checkpoint
        if path is None:
            raise ValueError("no checkpoint path: pass path or construct the Trainer with run=Run(checkpoint=...)")
        settings = self._settings()
        unknown = sorted(set(allow_change) - set(settings) - {"steps"})
        if unknown:
            raise ValueError(f"allow_change names unknown settings {unknown}; known: {sorted(settings)}")
        ckpt = load_checkpoint(path, map_location=self.device, expect=self.identity())
        changed = {k: (ckpt["trainer"].get(k), v) for k, v in settings.items()
                   if k != "steps" and k not in allow_change and ckpt["trainer"].get(k) != v}
        if changed:
            raise CheckpointError(f"checkpoint {path} was written with other settings "
                                  f"(checkpoint, now): {changed}; resuming would not continue the same run "
                                  "(allow the change explicitly to resume anyway)")
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
        set_rng_state(ckpt["rng"])
        return self

    def __repr__(self) -> str:
        return (f"Trainer(step={self.step}/{self.steps}, batch_size={self.batch_size}, "
                f"optimizer={self.optimizer_config}, "
                f"world_size={self.world_size}, device={self.device})")


def seed_globals(seed: int) -> None:
    """Seed the global torch (all devices), NumPy and Python generators from one 63-bit seed."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)
