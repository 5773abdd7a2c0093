"""The command ``probdiff plot``: PNG figures of a trained model (matplotlib, of the ``cli`` extra)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..processes import GaussianProcess
from .runs import device_of, draw, from_checkpoint, image_grid, save_png

__all__ = ["plot"]


def plot(a) -> str:
    """``probdiff plot``: the time grid and schedule, sampling and denoising trajectories, the loss curve."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    device = device_of(a)
    setup, ckpt = from_checkpoint(a.checkpoint, device)
    out = Path(a.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    sol, solver_name, grid_name = draw(setup, a.num, a.solver, a.grid, a.steps, a.noise, a.seed, device,
                                       trajectory=True, progress=not a.quiet)
    ts = sol.ts.cpu().double()
    written = []

    # 1. the grid and the schedule
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    axes[0].plot(range(len(ts)), ts.numpy(), "o-", ms=3)
    axes[0].set(xlabel="step", ylabel="t", title=f"{grid_name} grid, {a.steps} steps")
    if isinstance(setup.process, GaussianProcess):
        dense = torch.linspace(setup.process.t_min, setup.process.t_max, 400, dtype=torch.float64)
        axes[1].plot(dense.numpy(), setup.process.log_snr(dense).numpy(), label="log-SNR")
        axes[1].plot(ts.numpy(), setup.process.log_snr(ts).numpy(), "o", ms=3, label="grid")
        axes[1].set(ylabel="log SNR")
    else:
        dense = torch.linspace(setup.process.t_min, setup.process.t_max, 400, dtype=torch.float64)
        axes[1].plot(dense.numpy(), dense.numpy(), label="t")
        axes[1].plot(ts.numpy(), ts.numpy(), "o", ms=3, label="grid")
    axes[1].set(xlabel="t", title=type(setup.process).__name__)
    axes[1].legend()
    fig.tight_layout()
    written.append(out / "schedule.png")
    fig.savefig(written[-1], dpi=100)
    plt.close(fig)

    # 2. sampling and denoising trajectories: one row per sample, one column per picked step
    picks = np.unique(np.linspace(0, len(ts) - 1, min(10, len(ts))).round().astype(int))
    for name, traj in (("sampling", sol.xs), ("denoising", sol.denoised)):
        if traj is None:  # the solver reports no denoised estimate
            continue
        idx = [int(i) for i in picks if i < traj.shape[0]]
        frames = traj[idx, : min(a.num, 8)].cpu().transpose(0, 1)               # (n, frames, *event)
        flat = frames.reshape(-1, *frames.shape[2:])
        counts = setup.transform.quantize(flat.float() if flat.is_floating_point() else flat)
        written.append(out / f"{name}_trajectory.png")
        save_png(image_grid(counts, setup.dataset.levels, scale=3, cols=len(idx)), written[-1])

    # 3. the training loss
    if "losses" in ckpt and ckpt["losses"].numel():
        fig, ax = plt.subplots(figsize=(5, 3.5))
        curve = ckpt["losses"].numpy()
        k = max(1, len(curve) // 100)
        ax.plot(np.convolve(curve, np.ones(k) / k, mode="valid"))
        ax.set(xlabel="step", ylabel="loss (running mean)", yscale="log")
        fig.tight_layout()
        written.append(out / "loss.png")
        fig.savefig(written[-1], dpi=100)
        plt.close(fig)
    return f"wrote {', '.join(str(p) for p in written)}"
