"""Training: the :class:`Trainer`, its optimiser, schedule and EMA objects, checkpoints, data parallelism."""

from .checkpoint import CheckpointError, load_checkpoint
from .distributed import default_device, distributed_map, init_distributed, world
from .optim import EMA, AdamW, Constant, Optimizer, Schedule, WarmupCosine
from .trainer import Run, Trainer

__all__ = [
    "Trainer", "Run", "Optimizer", "AdamW", "Schedule", "WarmupCosine", "Constant", "EMA",
    "CheckpointError", "load_checkpoint", "init_distributed", "world", "default_device", "distributed_map",
]
