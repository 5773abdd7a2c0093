r"""How the trainer updates the weights: the optimiser, the learning-rate schedule and the weights' EMA.

Each is a small frozen configuration object that the :class:`~probdiff.train.Trainer` takes (today's
choices are its defaults) and a user can replace by their own subclass:

* :class:`Optimizer` — builds a ``torch.optim`` optimiser for the network's parameters and says how the
  gradient is clipped; :class:`AdamW` (Loshchilov & Hutter, "Decoupled Weight Decay Regularization",
  ICLR 2019) with a global gradient-norm clip.
* :class:`Schedule` — the learning rate at each step; :class:`WarmupCosine` (a linear warm-up, then
  cosine decay; Loshchilov & Hutter, "SGDR", ICLR 2017, without restarts) and :class:`Constant`.
* :class:`EMA` — the exponential moving average of the weights used for sampling and evaluation (as in
  Song et al. 2021 and Karras et al. 2022), with a warm-up of its decay.

They hold configuration only; the state (the optimiser's moments, the EMA weights) lives in the trainer
and in its checkpoints.
"""

from __future__ import annotations

import abc
import math
from dataclasses import dataclass

import torch

__all__ = ["Optimizer", "AdamW", "Schedule", "WarmupCosine", "Constant", "EMA"]


class Optimizer(abc.ABC):
    """How the weights are updated (abstract): a ``torch.optim`` optimiser and a gradient clip.

    Subclasses are frozen dataclasses with at least the fields ``lr`` (the base learning rate that the
    :class:`Schedule` scales) and ``clip`` (maximal global gradient norm, ``None``: no clipping).
    """

    lr: float
    clip: float | None

    @abc.abstractmethod
    def build(self, params) -> torch.optim.Optimizer:
        """A fresh optimiser over ``params`` (the trainer sets each group's ``lr`` before every step)."""

    def _check(self) -> None:
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.clip is not None and not self.clip > 0:
            raise ValueError(f"clip must be > 0 or None, got {self.clip}")


@dataclass(frozen=True)
class AdamW(Optimizer):
    """AdamW with decoupled weight decay, after clipping the global gradient norm to ``clip``.

    Args:
        lr: base learning rate.
        weight_decay: decoupled weight decay.
        betas: Adam's moment decays.
        clip: maximal global gradient norm (``None``: no clipping).
    """

    lr: float = 1e-3
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    clip: float | None = 1.0

    def __post_init__(self):
        self._check()

    def build(self, params) -> torch.optim.Optimizer:
        return torch.optim.AdamW(params, lr=self.lr, betas=tuple(self.betas), weight_decay=self.weight_decay)


class Schedule(abc.ABC):
    """The learning rate of each step (abstract)."""

    @abc.abstractmethod
    def __call__(self, lr: float, step: int, steps: int) -> float:
        """The learning rate at ``step`` (0-based) of a run of ``steps`` steps with base rate ``lr``."""


@dataclass(frozen=True)
class WarmupCosine(Schedule):
    r"""Linear warm-up over ``warmup`` steps, then cosine decay to ``min_ratio · lr`` at the last step.

    :math:`\eta_k = \eta\,(k+1)/W` for :math:`k < W`, then
    :math:`\eta_k = \eta\,(r + (1-r)\,\tfrac12(1 + \cos(\pi \min(1, (k-W)/\max(1, K-W)))))`.
    """

    warmup: int = 100
    min_ratio: float = 0.1

    def __post_init__(self):
        if int(self.warmup) < 0:
            raise ValueError(f"warmup must be >= 0, got {self.warmup}")

    def __call__(self, lr: float, step: int, steps: int) -> float:
        if step < self.warmup:
            return lr * (step + 1) / self.warmup
        frac = (step - self.warmup) / max(1, steps - self.warmup)
        cos = 0.5 * (1 + math.cos(math.pi * min(1.0, frac)))
        return lr * (self.min_ratio + (1 - self.min_ratio) * cos)


@dataclass(frozen=True)
class Constant(Schedule):
    """The base learning rate at every step."""

    def __call__(self, lr: float, step: int, steps: int) -> float:
        return lr


@dataclass(frozen=True)
class EMA:
    r"""Exponential moving average of the weights, :math:`\bar w \leftarrow d_k \bar w + (1 - d_k) w`.

    The decay ramps up as :math:`d_k = \min(d, (1+k)/(10+k))` so that the average forgets the random
    initialisation quickly; integer buffers are copied.

    Args:
        decay: the final decay :math:`d \in [0, 1)` (0: the EMA is the weights).
    """

    decay: float = 0.999

    def __post_init__(self):
        if not 0.0 <= self.decay < 1.0:
            raise ValueError(f"ema decay must lie in [0, 1), got {self.decay}")

    def rate(self, step: int) -> float:
        """The decay :math:`d_k` applied after step ``step``."""
        return min(self.decay, (1 + step) / (10 + step))

    @staticmethod
    def init(state: dict) -> dict:
        """The average's starting value: a copy of the weights ``state`` (a ``state_dict``)."""
        return {k: v.detach().clone() for k, v in state.items()}

    @torch.no_grad()
    def update(self, average: dict, state: dict, step: int) -> None:
        """Move ``average`` towards ``state`` in place, after optimisation step ``step``."""
        decay = self.rate(step)
        for k, v in state.items():
            if v.is_floating_point():
                average[k].lerp_(v, 1 - decay)
            else:
                average[k].copy_(v)
