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
from .solvers.base import Solver, require_kernel

__all__ = ["Solution", "sample", "path_log_prob"]


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
        log_prob: with ``log_prob=True``, the log-probability of the sampled path, shape ``(batch,)``: the
            prior's log-density at ``xs[0]`` plus every step's kernel log-probability (THEORY.md §12); else
            ``None``.
        step_log_probs: with ``log_prob=True``, the kernel terms alone, ``(steps, batch)``; else ``None``.
    """

    x: torch.Tensor
    ts: torch.Tensor
    xs: torch.Tensor | None = None
    denoised: torch.Tensor | None = None
    nfe: int = 0
    log_prob: torch.Tensor | None = None
    step_log_probs: torch.Tensor | None = None


def _progress(iterable, enabled: bool, total: int):
    if not enabled:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc="sampling", unit="step", leave=False)


def sample(reverse: ReverseProcess, shape=None, *, x_init: torch.Tensor | None = None, solver: Solver,
           grid: Grid, generator: torch.Generator | None = None, trajectory: bool = False,
           device=None, dtype=None, progress: bool = False, log_prob: bool = False) -> Solution:
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
        log_prob: also return the path's log-probability (``Solution.log_prob``, ``Solution.step_log_probs``).
            Each step is then drawn from the solver's :meth:`~probdiff.solvers.HasKernel.kernel` (which is what
            its ``step`` does, so the samples are the same bit for bit; up to rounding for
            :class:`~probdiff.solvers.TorchSDE`) and scored under it; a solver without the
            :class:`~probdiff.solvers.HasKernel` capability raises ``ValueError`` naming it.
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
    if log_prob:
        require_kernel(solver)
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
    prior_lp = reverse.prior(x.shape[1:], device=x.device, dtype=time_dtype).log_prob(x) if log_prob else None
    step_lps = []
    for i in _progress(range(len(ts) - 1), progress, len(ts) - 1):
        if log_prob:
            kernel, step_denoised = solver.kernel_and_denoised(reverse, x, ts[i], ts[i + 1])
            x, nfe = kernel.draw(generator), nfe + 1
            step_lps.append(kernel.log_prob(x))
        else:
            step = solver.step(reverse, x, ts[i], ts[i + 1], state, generator)
            x, state, nfe, step_denoised = step.x, step.state, nfe + step.nfe, step.denoised
        if trajectory:
            xs.append(x)
            if step_denoised is not None:
                denoised.append(step_denoised)
    steps = torch.stack(step_lps) if log_prob else None
    return Solution(
        x=x,
        ts=ts,
        xs=torch.stack(xs) if trajectory else None,
        denoised=torch.stack(denoised) if trajectory and len(denoised) == len(ts) - 1 else None,
        nfe=nfe,
        log_prob=prior_lp + steps.sum(0) if log_prob else None,
        step_log_probs=steps,
    )


def path_log_prob(reverse: ReverseProcess, solver: Solver, xs: torch.Tensor, ts: torch.Tensor, *,
                  return_steps: bool = False):
    r"""Log-probability of a given path under the sampler ``(reverse, solver)`` (THEORY.md §12):

    .. math::

        \log p(x_{t_0}, \dots, x_{t_K}) = \log p_{\mathrm{ref}}(x_{t_0})
            + \sum_{k=0}^{K-1} \log k_{\theta}(x_{t_{k+1}} \mid x_{t_k}),

    with ``solver.kernel(reverse, ...)`` as :math:`k_\theta`. The path can come from any sampler, for
    instance from another model: the difference of two models' path log-probabilities on one path is the
    log importance ratio used by policy-gradient post-training (Black et al., "Training Diffusion Models
    with Reinforcement Learning", 2024; Liu et al., "Flow-GRPO", 2025).

    Args:
        reverse: the :class:`~probdiff.ReverseProcess` scoring the path.
        solver: a solver with a kernel (:class:`~probdiff.solvers.HasKernel`); others raise ``ValueError``.
        xs: the path, ``(K + 1, batch, *event)``, ``xs[0]`` at ``ts[0] = t_max``.
        ts: ``(K + 1,)`` strictly decreasing times (``Solution.ts``).
        return_steps: also return the per-step terms ``(K, batch)``.

    Returns:
        ``(batch,)`` log-probabilities, or ``(log_prob, step_log_probs)`` with ``return_steps=True``.
    """
    if not isinstance(reverse, ReverseProcess):
        raise ValueError(f"reverse must be a ReverseProcess (see probdiff.reverse), got {type(reverse).__name__}")
    if not isinstance(solver, Solver):
        raise ValueError(f"solver must be a probdiff.solvers.Solver, got {type(solver).__name__}")
    solver.check(reverse)
    require_kernel(solver)
    ts = torch.as_tensor(ts)
    if not isinstance(xs, torch.Tensor) or xs.dim() < 3:
        raise ValueError("xs must be a tensor of shape (steps + 1, batch, *event)")
    if ts.dim() != 1 or ts.shape[0] != xs.shape[0] or ts.shape[0] < 2:
        raise ValueError(f"ts must have shape (steps + 1,) = ({xs.shape[0]},) with at least 2 times, "
                         f"got {tuple(ts.shape)}")
    if not bool((ts[1:] < ts[:-1]).all()):
        raise ValueError("ts must be strictly decreasing (from t_max towards t_min)")
    time_dtype = xs.dtype if xs.is_floating_point() else torch.get_default_dtype()
    ts = ts.to(device=xs.device, dtype=time_dtype)
    prior = reverse.prior(xs.shape[2:], device=xs.device, dtype=time_dtype).log_prob(xs[0])
    steps = torch.stack([solver.kernel(reverse, xs[k], ts[k], ts[k + 1]).log_prob(xs[k + 1])
                         for k in range(len(ts) - 1)])
    total = prior + steps.sum(0)
    return (total, steps) if return_steps else total
