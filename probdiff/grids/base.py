"""Time grids: where a sampler evaluates the model (DESIGN.md, "Public API").

Every grid answers :meth:`Grid.times`: a strictly decreasing float64 tensor of ``steps + 1`` times
from ``process.t_max`` to ``process.t_min``, endpoints included exactly.
"""

from __future__ import annotations

import abc

import torch

from .._validation import check_finite, check_positive_int

__all__ = ["Grid", "Uniform", "Explicit"]


class Grid(abc.ABC):
    """Abstract time grid with a number of ``steps``."""

    def __init__(self, steps: int):
        self.steps = check_positive_int("steps", steps)

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


class Explicit(Grid):
    """A grid of given times: strictly decreasing, from the ``t_max`` to the ``t_min`` of the process it is
    used with (e.g. a published schedule, or one fitted by :class:`~probdiff.grids.ScoreOptimal` or
    :class:`~probdiff.grids.EndpointOptimal`, which subclass it).

    Args:
        times: 1-D sequence of at least two finite, strictly decreasing times.

    Example:
        >>> import probdiff as pd
        >>> pd.grids.Explicit([1.0, 0.5, 0.1, 1e-3]).times(pd.VPSDE(t_min=1e-3)).tolist()
        [1.0, 0.5, 0.1, 0.001]
    """

    def __init__(self, times):
        ts = torch.as_tensor(times, dtype=torch.float64).detach().cpu()
        if ts.dim() != 1 or ts.shape[0] < 2:
            raise ValueError(f"times must be a 1-D tensor of at least two times, got shape {tuple(ts.shape)}")
        check_finite("times", ts)
        if not bool((ts[1:] < ts[:-1]).all()):
            raise ValueError("times must be strictly decreasing (from t_max to t_min)")
        super().__init__(ts.shape[0] - 1)
        self._ts = ts

    def times(self, process) -> torch.Tensor:
        ts = self._ts.clone()
        tol = 1e-9 * max(1.0, abs(process.t_max), abs(process.t_min))
        if abs(float(ts[0]) - process.t_max) > tol or abs(float(ts[-1]) - process.t_min) > tol:
            raise ValueError(f"this {type(self).__name__} grid spans [{float(ts[-1])}, {float(ts[0])}] but the "
                             f"process has [t_min, t_max] = [{process.t_min}, {process.t_max}]; build it for "
                             "this process")
        return self._finish(ts, process)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({[round(t, 6) for t in self._ts.tolist()]})"
