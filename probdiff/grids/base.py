"""Time grids: where a sampler evaluates the model (DESIGN.md, "Public API").

Every grid answers :meth:`Grid.times`: a strictly decreasing float64 tensor of ``steps + 1`` times
from ``process.t_max`` to ``process.t_min``, endpoints included exactly.
"""

from __future__ import annotations

import abc

import torch

__all__ = ["Grid", "Uniform"]


class Grid(abc.ABC):
    """Abstract time grid with a number of ``steps``."""

    def __init__(self, steps: int):
        if isinstance(steps, bool) or int(steps) != steps or steps < 1:
            raise ValueError(f"steps must be a positive integer, got {steps!r}")
        self.steps = int(steps)

    @abc.abstractmethod
    def times(self, process) -> torch.Tensor:
        """Strictly decreasing times ``t_max = t_0 > t_1 > ... > t_steps = t_min`` (float64)."""

    @staticmethod
    def _finish(ts: torch.Tensor, process) -> torch.Tensor:
        """Pin the endpoints exactly and check strict monotonicity."""
        ts = ts.to(torch.float64).clone()
        ts[0], ts[-1] = process.t_max, process.t_min
        if not bool((ts[1:] < ts[:-1]).all()):
            raise ValueError("grid times must be strictly decreasing; use fewer steps or another grid")
        return ts

    def __repr__(self) -> str:
        return f"{type(self).__name__}(steps={self.steps})"


class Uniform(Grid):
    """Equally spaced times from ``t_max`` to ``t_min``."""

    def times(self, process) -> torch.Tensor:
        return self._finish(torch.linspace(process.t_max, process.t_min, self.steps + 1, dtype=torch.float64), process)
