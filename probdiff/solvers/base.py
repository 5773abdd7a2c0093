"""The solver contract: one small, stateless object per integration rule (DESIGN.md principle 4).

A solver advances a sample from time ``t`` to the earlier time ``s < t`` of a grid; everything that
changes along the way (multistep history) travels in ``state``, which the solver creates with
:meth:`Solver.init` and :func:`probdiff.sample` passes back. Solvers hold configuration only.
"""

from __future__ import annotations

import abc
from typing import Any, NamedTuple

import torch

__all__ = ["Solver", "Step"]


class Step(NamedTuple):
    """Result of one solver step from ``t`` to ``s``.

    Attributes:
        x: the state at ``s``.
        denoised: the model's estimate of the data, E[x_0 | x_t], used for the step (``None`` if the
            solver used none); :class:`probdiff.Solution` collects it as the denoising trajectory.
        state: the solver state to pass to the next step.
        nfe: model evaluations spent on this step.
    """

    x: torch.Tensor
    denoised: torch.Tensor | None
    state: Any
    nfe: int


class Solver(abc.ABC):
    """Abstract solver. Subclasses set :attr:`order` and implement :meth:`step`.

    Attributes:
        order: convergence order of the global error in the step size (deterministic solvers), or the
            strong order (stochastic ones), as stated in the subclass docstring and tested.
    """

    order: int = 1

    def check(self, reverse) -> None:
        """Raise ``ValueError`` if this solver cannot integrate ``reverse`` (wrong family or noise)."""

    def init(self, reverse, x: torch.Tensor, ts: torch.Tensor) -> Any:
        """Initial solver state for sampling ``x`` along the grid ``ts`` (default: none)."""
        return None

    @abc.abstractmethod
    def step(self, reverse, x: torch.Tensor, t: torch.Tensor, s: torch.Tensor, state: Any,
             generator: torch.Generator | None) -> Step:
        """Advance ``x`` from time ``t`` to the earlier time ``s``."""

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({fields})"
