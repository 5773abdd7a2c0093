"""``probdiff sample --diffusers DIR`` and ``probdiff likelihood --diffusers DIR --data PATH``: the commands on a
diffusers model saved with ``save_pretrained`` (:mod:`probdiff.integrations.diffusers`; nothing is downloaded).

Images are 8-bit, mapped to :math:`x = 2n/255 - 1` as DDPM trains on them.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from .. import data as datalib
from .. import recipes
from ..integrations import diffusers as pdd
from ..likelihood import Hutchinson, ddpm_vlb, dequantize, log_likelihood
from ..reverse import reverse
from ..sampling import sample
from ..train import distributed_map, init_distributed, world
from .commands import Scores, Summary, run_methods, scored_likelihood
from .runs import device_of, image_grid, save_png

__all__ = ["load_model", "sample_pretrained", "likelihood_pretrained", "PRETRAINED", "LATTICE", "PRETRAINED_METHODS"]

#: The bin edges of :math:`x = 2n/255 - 1` (the convention of :func:`probdiff.bits_per_dim`).
LATTICE = (-1 - 1 / 255, 1 + 1 / 255)


def load_model(a, device):
    """``(process, model, event_shape)`` of ``--diffusers DIR`` on ``device``."""
    process, model = pdd.load(a.diffusers)
    unet = model.net.unet.to(device)
    cfg = unet.config
    return process, model, (int(cfg.in_channels), int(cfg.sample_size), int(cfg.sample_size))


def sample_pretrained(a) -> str:
    """``probdiff sample --diffusers DIR``: a PNG grid and an ``.npz`` of 8-bit samples."""
    device = device_of(a)
    process, model, event = load_model(a, device)
    solver_name, grid_name = a.solver or "heun", a.grid or "karras"
    solver, default_noise = recipes.solver(solver_name)
    rev = reverse(model, noise=default_noise if a.noise is None else a.noise)
    g = torch.Generator(device=device).manual_seed(a.seed)
    t0 = time.time()
    with torch.no_grad():
        sol = sample(rev, (a.num, *event), solver=solver, grid=recipes.grid(grid_name, a.steps), generator=g,
                     device=device, progress=not a.quiet and world()[0] == 0)
    counts = torch.round((sol.x.cpu().clamp(-1, 1) + 1) * 127.5).to(torch.int64)
    out = Path(a.out)
    save_png(image_grid(counts, 256), out)
    npz = Path(a.npz) if a.npz else out.with_suffix(".npz")
    npz.parent.mkdir(parents=True, exist_ok=True)
    np.savez(npz, samples=sol.x.cpu().numpy(), counts=counts.numpy(), levels=256)
    return (f"{a.num} samples of {a.diffusers} ({solver_name}, {grid_name} grid, {a.steps} steps, {sol.nfe} model "
            f"evaluations) in {time.time() - t0:.1f}s -> {out}, {npz}")


def _exact(model, counts, a, device):
    x = dequantize(counts, 256, LATTICE, generator=torch.Generator().manual_seed(a.seed))
    g = torch.Generator(device=device).manual_seed(a.seed + 1 + world()[0])
    trace = Hutchinson(num_probes=a.probes or PRETRAINED_PROBES)

    def log_density(xb):
        return log_likelihood(model, xb.to(device), trace=trace, rtol=a.rtol, atol=a.rtol, generator=g,
                              return_stats=True)

    return scored_likelihood(log_density, x, a, "exact likelihood", x.shape[1:],
                             {"levels": 256, "data_range": LATTICE})


def _vlb(model, counts, a, device):
    x = 2 * counts.to(torch.float32) / 255 - 1
    g = torch.Generator(device=device).manual_seed(a.seed + 2 + world()[0])

    def batch_bits(xb):
        return ddpm_vlb(model, xb.to(device), generator=g).cpu()

    bits = distributed_map(batch_bits, x, batch_size=a.batch_size, progress=not a.quiet, desc="DDPM bound")
    return Scores.from_bits(bits, x.shape[1:])


#: Hutchinson probes per image of ``--method exact`` with ``--diffusers`` (the exact trace costs one backward
#: pass per pixel there); two is the fewest that give a standard error.
PRETRAINED_PROBES = 2

#: ``likelihood --diffusers`` methods: name -> (function, note).
PRETRAINED_METHODS = {
    "exact": (_exact, "probability-flow ODE, Hutchinson trace, dequantised"),
    "vlb": (_vlb, "Ho et al.'s bound, lossless"),
}


def likelihood_pretrained(a) -> Summary:
    """``probdiff likelihood --diffusers DIR --data PATH``: bits/dim with 95% intervals (``exact``, ``vlb``),
    sharded over ``torchrun`` processes like ``--checkpoint``."""
    init_distributed()
    device = device_of(a)
    if not a.data:
        raise ValueError("--diffusers needs --data PATH (a folder of images or a .npy/.npz array of 8-bit images)")
    unknown = [m for m in a.method if m not in PRETRAINED_METHODS]
    if unknown:
        raise ValueError(f"--method {' '.join(unknown)} does not apply to --diffusers; use {sorted(PRETRAINED_METHODS)}")
    _, model, event = load_model(a, device)
    dataset = datalib.load(a.data)
    if dataset.levels != 256 or tuple(dataset.counts.shape[1:]) != event:
        raise ValueError(f"--data {a.data}: expected 8-bit images of shape {event}, got {dataset.levels} levels and "
                         f"shape {tuple(dataset.counts.shape[1:])}")
    counts = dataset.counts[: a.limit] if a.limit else dataset.counts
    return run_methods(PRETRAINED_METHODS, a.method, lambda fn: fn(model, counts, a, device),
                       f"{counts.shape[0]} images of {a.data} under {a.diffusers}")


#: The commands that take ``--diffusers DIR`` instead of ``--checkpoint``.
PRETRAINED = {"sample": sample_pretrained, "likelihood": likelihood_pretrained}
