"""The commands ``probdiff train``, ``sample`` and ``likelihood`` (``plot`` is in :mod:`probdiff.cli.plot`).

Each takes the parsed options (an ``argparse.Namespace``) and returns its one-line summary.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .. import recipes
from ..likelihood import (BitsPerDim, ExactTrace, Hutchinson, bits_per_dim, bits_per_dim_summary, elbo,
                          log_likelihood)
from ..processes import GaussianProcess
from ..train import (EMA, AdamW, CheckpointError, Run, Trainer, WarmupCosine, distributed_map, init_distributed,
                     load_checkpoint, world)
from ..train.checkpoint import derive_seed
from ..train.trainer import seed_globals
from .runs import RUN_KEYS, Setup, build, device_of, draw, from_checkpoint, image_grid, save_png, say

__all__ = ["train", "sample", "likelihood", "Summary", "Scores", "run_methods", "scored_likelihood",
           "trace_of", "METHODS", "CHANGEABLE"]


#: ``--allow-change`` names: the training options a resumed run may change, and the Trainer setting each is.
CHANGEABLE = {"lr": "optimizer", "clip": "optimizer", "warmup": "scheduler", "ema": "ema",
              "batch-size": "batch_size", "seed": "seed"}


def train(a) -> str:
    """``probdiff train``: build the run, train it (or resume it), checkpoint it."""
    rank, size = init_distributed()
    device = device_of(a)
    config = {k: getattr(a, k) for k in RUN_KEYS}
    seed_globals(derive_seed(a.seed, -2))  # the network's initial weights: the same seed, the same run
    setup = build(config)
    # the checkpoint records what the defaults resolved to, so that later defaults cannot change its meaning
    config["model"] = config["model"] or setup.family.model
    if config["t_min"] is None and isinstance(setup.process, GaussianProcess):
        config["t_min"] = float(setup.process.t_min)
    options = {k: getattr(a, k.replace("-", "_")) for k in CHANGEABLE}
    loss = recipes.loss(setup.model, a.weighting, setup.transform)
    checkpoint = Path(a.checkpoint)
    trainer = Trainer(setup.model, loss, setup.split.train.counts, transform=setup.transform, steps=a.steps,
                      batch_size=a.batch_size, optimizer=AdamW(lr=a.lr, clip=a.clip),
                      scheduler=WarmupCosine(warmup=min(a.warmup, a.steps)), ema=EMA(a.ema),
                      run=Run(seed=a.seed, device=device, checkpoint=checkpoint,
                              checkpoint_every=a.checkpoint_every, config={**config, "options": options,
                                                                      "data_levels": setup.dataset.levels}))
    if a.resume:
        saved = load_checkpoint(checkpoint).get("config") or {}  # options first: they name what changed
        changed = {k: (saved.get(k), v) for k, v in config.items() if saved.get(k) != v}
        if changed:
            raise CheckpointError(f"checkpoint {checkpoint} was trained with other settings (checkpoint, now): "
                                  f"{changed}; resume with the same options")
        allowed = set(a.allow_change)
        before = saved.get("options") or {}
        refused = {f"--{k}": (before.get(k), v) for k, v in options.items() if before.get(k) != v and k not in allowed}
        if refused:
            raise CheckpointError(f"checkpoint {checkpoint} was trained with other options (checkpoint, now): "
                                  f"{refused}; resuming would not continue the same run: pass the same options, "
                                  f"or --allow-change {','.join(k[2:] for k in refused)} to change them")
        trainer.resume(allow_change={CHANGEABLE[k] for k in allowed})
        say(f"resumed from {checkpoint} at step {trainer.step}")
    elif checkpoint.exists() and not a.overwrite:
        raise ValueError(f"{checkpoint} exists; pass --resume to continue that run or --overwrite to start anew")
    nparams = sum(p.numel() for p in setup.model.net.parameters())
    say(f"training {a.net} ({nparams:,} parameters), parameterisation {config['model']}, process "
        f"{type(setup.process).__name__} on {setup.dataset.name}: {len(setup.split.train)} train / "
        f"{len(setup.split.test)} test, {size} process(es), device {trainer.device}")
    t0, start = time.time(), trainer.step
    losses = trainer.fit(progress=not a.quiet)
    if trainer.step == start:  # nothing to do, but still leave a final checkpoint
        trainer.save()
    rate = (trainer.step - start) * a.batch_size / max(time.time() - t0, 1e-9)
    last = np.mean(losses[-50:]) if losses else float("nan")
    return (f"trained {trainer.step}/{a.steps} steps in {time.time() - t0:.0f}s ({rate:.0f} images/s), "
            f"final loss {last:.4g}, checkpoint {checkpoint}")


def sample(a) -> str:
    """``probdiff sample``: a PNG grid and an ``.npz`` of samples from a checkpoint."""
    device = device_of(a)
    setup, _ = from_checkpoint(a.checkpoint, device)
    t0 = time.time()
    sol, solver_name, grid_name = draw(setup, a.num, a.solver, a.grid, a.steps, a.noise, a.seed, device,
                                       progress=not a.quiet)
    counts = setup.transform.quantize(sol.x.cpu())
    out = Path(a.out)
    save_png(image_grid(counts, setup.dataset.levels), out)
    npz = Path(a.npz) if a.npz else out.with_suffix(".npz")
    npz.parent.mkdir(parents=True, exist_ok=True)
    np.savez(npz, samples=sol.x.cpu().numpy(), counts=counts.numpy(), levels=setup.dataset.levels)
    return (f"{a.num} samples ({solver_name}, {grid_name} grid, {a.steps} steps, {sol.nfe} model evaluations) in "
            f"{time.time() - t0:.1f}s -> {out}, {npz}")


class Summary(str):
    """A command's one-line summary that also carries its numbers: ``values`` (method -> per-image bits/dim)
    and ``summaries`` (method -> :class:`~probdiff.BitsPerDim`, the mean with both uncertainties)."""

    def __new__(cls, text: str, values: dict, summaries: dict | None = None):
        obj = super().__new__(cls, text)
        obj.values = values
        obj.summaries = summaries or {}
        return obj


@dataclass
class Scores:
    """Per-image results of one likelihood method: ``log_prob`` (nats, ``(n,)``), its ``se`` from the trace
    estimator (nats; 0 for the exact trace, NaN where unknown), and what :func:`probdiff.bits_per_dim` needs
    (``event_shape``; ``options``: ``levels`` and ``data_range`` for a dequantised density, none for a
    log-probability)."""

    log_prob: torch.Tensor
    se: torch.Tensor | None
    event_shape: tuple
    options: dict

    def bits(self) -> torch.Tensor:
        return bits_per_dim(self.log_prob, self.event_shape, **self.options)

    def summary(self) -> BitsPerDim:
        return bits_per_dim_summary(self.log_prob, self.se, self.event_shape, **self.options)

    @classmethod
    def from_bits(cls, bits: torch.Tensor, event_shape) -> "Scores":
        """A lossless code length (bits/dim per image) with no trace estimate (``se`` unknown)."""
        dim = math.prod(int(s) for s in event_shape)
        return cls(-bits.double() * dim * math.log(2.0), torch.full_like(bits.double(), float("nan")),
                   tuple(event_shape), {})


def run_methods(table: dict, names, compute, head: str) -> Summary:
    """Run the likelihood ``names`` of ``table`` (name -> ``(function, note)``), each by ``compute(function)``
    giving its :class:`Scores`; print one line per method as it finishes, "``name``: bits/dim ± SE(trace) ±
    95% CI(data) (``note``)" (:func:`probdiff.bits_per_dim_summary`), and return them all, the lines prefixed
    by ``head`` and the elapsed time."""
    t0, lines, values, summaries = time.time(), [], {}, {}
    for name in names:
        method, note = table[name]
        scores = compute(method)
        values[name], summaries[name] = scores.bits(), scores.summary()
        lines.append(f"{name}: {summaries[name]} ({note})")
        say(lines[-1])
    return Summary(f"{head}, {time.time() - t0:.0f}s: " + "; ".join(lines), values, summaries)


def trace_of(a):
    """The divergence estimator ``--probes`` asks for: the exact trace by default, else Hutchinson's."""
    probes = getattr(a, "probes", None)
    return ExactTrace() if not probes else Hutchinson(num_probes=probes)


def scored_likelihood(log_density, x: torch.Tensor, a, desc: str, event_shape, options: dict) -> Scores:
    """:class:`Scores` of ``log_density(xb) -> (log_prob, stats)`` over ``x`` in batches, sharded over ranks."""
    def batch(xb):
        lp, stats = log_density(xb)
        return torch.stack([lp, stats.se.to(lp.dtype)], 1).cpu()

    out = distributed_map(batch, x, batch_size=a.batch_size, progress=not a.quiet, desc=desc)
    return Scores(out[:, 0], out[:, 1], tuple(event_shape), options)


def _exact_bits(setup: Setup, counts: torch.Tensor, a, device) -> Scores:
    """Held-out bits/dim by the probability-flow ODE with uniform dequantisation (THEORY.md §4)."""
    if not isinstance(setup.process, GaussianProcess):
        raise ValueError(f"--method exact needs a Gaussian process (a probability-flow ODE); "
                         f"{type(setup.process).__name__} is discrete: use --method elbo (lossless bits/dim)")
    x = setup.transform(counts, torch.Generator().manual_seed(a.seed))
    g = torch.Generator(device=device).manual_seed(a.seed + 3 + world()[0])   # probes, independent per shard
    trace = trace_of(a)

    def log_density(xb):
        return log_likelihood(setup.process, setup.model, xb.to(device), trace=trace, rtol=a.rtol, atol=a.rtol,
                              generator=g, return_stats=True)

    return scored_likelihood(log_density, x, a, "exact likelihood", x.shape[1:], setup.transform.bits_options())


def _elbo_bits(setup: Setup, counts: torch.Tensor, a, device) -> Scores:
    """Bits/dim from the ELBO (dequantised density bound for Gaussian processes, lossless for chains)."""
    x = setup.transform(counts, torch.Generator().manual_seed(a.seed))
    g = torch.Generator(device=device).manual_seed(a.seed + 1 + world()[0])  # independent draws per shard
    name = a.elbo_grid or setup.family.elbo_grid
    grid = None if name is None else recipes.grid(name, a.elbo_steps)

    def batch_bound(xb):
        with torch.no_grad():
            return elbo(setup.process, setup.model, xb.to(device), grid=grid, num_samples=a.elbo_samples,
                        generator=g).cpu()

    bound = distributed_map(batch_bound, x, batch_size=a.batch_size, progress=not a.quiet, desc="ELBO")
    # no trace here: the bound's Monte-Carlo noise is part of the spread over the images (the CI)
    return Scores(bound, torch.full_like(bound, float("nan")), tuple(x.shape[1:]), setup.transform.bits_options())


#: What ``likelihood --method`` computes — name -> (function ``f(setup, counts, options, device)``, note).
METHODS = {
    "exact": (_exact_bits, "exact, probability-flow ODE, dequantised"),
    "elbo": (_elbo_bits, "ELBO, an upper bound; its Monte-Carlo noise is inside the CI"),
}


def likelihood(a) -> Summary:
    """``probdiff likelihood``: held-out bits/dim with 95% intervals, sharded over ``torchrun`` processes."""
    init_distributed()
    device = device_of(a)
    setup, _ = from_checkpoint(a.checkpoint, device)
    split = setup.split.test if a.split == "test" else setup.split.train
    counts = split.counts[: a.limit] if a.limit else split.counts
    return run_methods(METHODS, a.method, lambda method: method(setup, counts, a, device),
                       f"{a.split} split of {setup.dataset.name}, {counts.shape[0]} images")
