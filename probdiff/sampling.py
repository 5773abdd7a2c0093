"""One sampling loop for every process × model × solver × grid (DESIGN.md principle 3).

:func:`sample` draws the start at ``t_max`` from the process' reference (or takes ``x_init``), asks the
grid for its times, and lets the solver step from ``t_max`` down to ``t_min``. Which family the process
belongs to is the solver's business (it checks it); the loop is the same for Gaussian SDEs, linear
blends and Markov chains.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .placement import Grid
from .reverse.base import ReverseProcess
from .solvers.base import Solver

__all__ = ["Solution", "sample"]


@dataclass
class Solution:
    """Result of :func:`sample`.

    Attributes:
        x: samples at ``t_min``, shape ``(batch, *event)``.
        ts: the grid times, shape ``(steps + 1,)``, decreasing from ``t_max`` to ``t_min``.
        xs: the sampling trajectory ``(steps + 1, batch, *event)`` (``xs[0]`` at ``t_max``) when
            ``trajectory=True``, else ``None``.
        denoised: the denoising trajectory ``(steps, batch, *event)``: the solver's estimate of
            E[x_0 | x_t] at each step's start ``ts[:-1]`` (Chen et al. 2023), when ``trajectory=True``
            and the solver provides one, else ``None``.
        nfe: number of model evaluations.
    """

    x: torch.Tensor
    ts: torch.Tensor
    xs: torch.Tensor | None = None
    denoised: torch.Tensor | None = None
    nfe: int = 0


def _progress(iterable, enabled: bool, total: int):
    if not enabled:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc="sampling", unit="step", leave=False)


def sample(reverse: ReverseProcess, shape=None, *, x_init: torch.Tensor | None = None, solver: Solver,
           grid: Grid, generator: torch.Generator | None = None, trajectory: bool = False,
           device=None, dtype=None, progress: bool = False) -> Solution:
    """Sample by integrating ``reverse`` from ``t_max`` to ``t_min`` on ``grid`` with ``solver``.

    Args:
        reverse: a :class:`~probdiff.ReverseProcess` (from :func:`probdiff.reverse`).
        shape: ``(batch, *event)`` of the samples; the start is drawn from the process' reference.
            Give exactly one of ``shape`` and ``x_init``.
        x_init: the state at ``t_max`` (e.g. shared noise when comparing solvers).
        solver: a :class:`~probdiff.solvers.Solver`.
        grid: a :class:`~probdiff.grids.Grid`.
        generator: random source for the start and for stochastic solvers; the same generator state
            gives the same samples.
        trajectory: also return the sampling and the denoising trajectories.
        device, dtype: of the samples drawn from ``shape`` (default: torch's defaults).
        progress: show a progress bar.
    """
    if not isinstance(reverse, ReverseProcess):
        raise ValueError(f"reverse must be a ReverseProcess (see probdiff.reverse), got {type(reverse).__name__}")
    if not isinstance(solver, Solver):
        raise ValueError(f"solver must be a probdiff.solvers.Solver, got {type(solver).__name__}")
    if not isinstance(grid, Grid):
        raise ValueError(f"grid must be a probdiff.grids.Grid, got {type(grid).__name__}")
    if (shape is None) == (x_init is None):
        raise ValueError("give exactly one of shape and x_init")
    solver.check(reverse)
    process = reverse.process
    if x_init is None:
        shape = tuple(int(n) for n in shape)
        if len(shape) < 2 or min(shape) < 1:
            raise ValueError(f"shape must be (batch, *event) with positive sizes, got {shape}")
        x = process.sample_prior(shape[0], shape[1:], generator=generator, device=device, dtype=dtype)
    else:
        if not isinstance(x_init, torch.Tensor) or x_init.dim() < 2:
            raise ValueError("x_init must be a tensor of shape (batch, *event)")
        process.check_state("x_init", x_init)
        x = x_init
    time_dtype = x.dtype if x.is_floating_point() else torch.get_default_dtype()
    ts = grid.times(process).to(device=x.device, dtype=time_dtype)
    state = solver.init(reverse, x, ts)
    xs, denoised, nfe = ([x] if trajectory else None), ([] if trajectory else None), 0
    for i in _progress(range(len(ts) - 1), progress, len(ts) - 1):
        step = solver.step(reverse, x, ts[i], ts[i + 1], state, generator)
        x, state, nfe = step.x, step.state, nfe + step.nfe
        if trajectory:
            xs.append(x)
            if step.denoised is not None:
                denoised.append(step.denoised)
    return Solution(
        x=x,
        ts=ts,
        xs=torch.stack(xs) if trajectory else None,
        denoised=torch.stack(denoised) if trajectory and len(denoised) == len(ts) - 1 else None,
        nfe=nfe,
    )
