"""The ``probdiff`` command: train, sample, likelihood, plot, quickstart.

Every choice made by name on the command line (process, model parameterisation, weighting, network,
solver, grid) is looked up in one of the tables below, which map names to the library's constructors;
what depends on the process *family* (time embedding, data transform, loss, likelihoods) is looked up in
registries along the class hierarchy. There is no ``if name == ...`` anywhere.

A run's checkpoint stores the configuration it was built from, so ``sample``, ``likelihood`` and ``plot``
need only ``--checkpoint``. ``--config FILE`` reads TOML whose keys are the long options (``batch_size =
256`` or ``batch-size = 256``), at the top level or in a table named after the command (``[train]``);
options given on the command line win.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from . import data as datalib
from . import grids, losses, solvers
import functools
from .models import BlackoutModel, CategoricalModel, DenoiserModel, EpsilonModel, ScoreModel, VelocityModel
from .models.gaussian import GaussianModel
from .nn import MLP, FourierLogSNR, FourierTime, LatticeDenoiser, UNet
from .processes import (AbsorbingChain, Blackout, CosineVP, ForwardProcess, GaussianProcess, LinearBlend, MarkovChain,
                        SubVPSDE, UniformChain, VESDE, VPSDE)
from .train import CheckpointError, Trainer, distributed_map, init_distributed, load_checkpoint, world

__all__ = ["main", "build_parser", "PROCESSES", "MODELS", "LevelLogits", "WEIGHTINGS", "NETS", "SOLVERS", "GRIDS"]


# ==================================================================== name -> object tables (the one place)
#: Noise floor of Gaussian processes, in bin widths of the data: ``t_min`` is where
#: :math:`\sigma_t/\alpha_t` reaches this fraction of ``2/K`` (data on [-1, 1]). The model's density at
#: ``t_min`` is the data's blurred by this noise, which costs up to 0.07 bits per dimension at 0.05 bins
#: (0.57 at 0.4 bins, for a level that is certain given the rest of the image). With the lattice head
#: (``--model lattice``), which resolves the bin edges exactly, 0.05 bins gave better held-out bits/dim on
#: the digits than 0.1 and 0.4 (validation split, benchmarks/digits.py); an epsilon MLP gained nothing
#: below 0.4 bins.
NOISE_FLOOR = 0.05


def _gaussian(cls, **kwargs) -> Callable:
    """Builder of a Gaussian process whose ``t_min`` defaults to the noise floor of K-level data."""

    def make(levels: int, t_min: float | None = None) -> GaussianProcess:
        if t_min is None:
            probe = cls(**kwargs)
            lam = -2.0 * math.log(NOISE_FLOOR * 2.0 / levels)  # log-SNR where sigma/alpha is the floor
            t_min = float(probe.time_of_log_snr(torch.tensor(lam, dtype=torch.float64)))
            t_min = max(t_min, probe.t_min)
        return cls(t_min=t_min, **kwargs)

    return make


def _chain(cls, extra_states: int = 0, **kwargs) -> Callable:
    def make(levels: int, t_min: float | None = None):
        return cls(levels + extra_states, **({} if t_min is None else {"t_min": t_min}), **kwargs)

    return make


def _blackout(levels: int, t_min: float | None = None) -> Blackout:
    if t_min is not None:
        raise ValueError("--t-min does not apply to --process blackout (it starts at t = 0)")
    return Blackout(max_count=levels - 1)


#: Process constructors ``f(levels, t_min=None)``: the number of data levels K fixes the state space of
#: chains and the noise floor of Gaussian processes.
PROCESSES: dict[str, Callable[..., ForwardProcess]] = {
    "vp": _gaussian(VPSDE),
    "subvp": _gaussian(SubVPSDE),
    "ve": _gaussian(VESDE, sigma_min=1e-3, sigma_max=10.0),
    "cosine": _gaussian(CosineVP),
    "blend": _gaussian(LinearBlend),
    "blackout": _blackout,
    "uniform": _chain(UniformChain),
    "absorbing": _chain(AbsorbingChain, extra_states=1),  # one extra state: the mask
}

class LevelLogits:
    """``--model lattice``: a :class:`~probdiff.DenoiserModel` whose network is a
    :class:`~probdiff.nn.LatticeDenoiser` head — the network outputs one logit per data level and dimension,
    and the posterior within each bin of the dequantised data is exact (:mod:`probdiff.nn.lattice`)."""

    def states(self, transform) -> int:
        """Logits per dimension: the number of data levels (ValueError for data that are not dequantised)."""
        return self._lattice(transform).levels

    def __call__(self, net, process, transform) -> DenoiserModel:
        return DenoiserModel(LatticeDenoiser(net, process, self._lattice(transform)), process)

    @staticmethod
    def _lattice(transform):
        lattice = getattr(transform, "lattice", None)
        if lattice is None:
            raise ValueError("--model lattice needs a Gaussian process on dequantised data (--process vp, subvp, "
                             "ve, cosine or blend)")
        return lattice


#: Model parameterisations ``cls(net, process)``, or a :class:`LevelLogits` builder (``(net, process,
#: transform)``, its network sized by :meth:`LevelLogits.states`).
MODELS: dict[str, Callable] = {
    "denoiser": DenoiserModel,
    "epsilon": EpsilonModel,
    "score": ScoreModel,
    "velocity": VelocityModel,
    "lattice": LevelLogits(),
    "blackout": BlackoutModel,
    "categorical": CategoricalModel,
}

#: Loss weightings by name, per loss family (see :func:`make_loss`).
WEIGHTINGS: dict[str, Callable] = {
    "natural": losses.Natural,
    "likelihood": losses.LikelihoodWeighting,
    "importance": losses.ImportanceSampled,
    "blackout-likelihood": losses.BlackoutLikelihood,
    "blackout-original": losses.BlackoutOriginal,
}

#: Networks ``f(event_shape, out_states, time_embedding, args) -> nn.Module``.
NETS: dict[str, Callable] = {
    "mlp": lambda shape, states, emb, a: MLP(shape, hidden=a.hidden, depth=a.depth, time=emb,
                                             dropout=getattr(a, "dropout", 0.0),
                                             out_shape=None if states is None else (*shape, states)),
    "unet": lambda shape, states, emb, a: _unet(shape, states, emb, a),
}

#: Solvers by name: ``(constructor, default noise level of the reverse process)``.
SOLVERS: dict[str, tuple[Callable, float]] = {
    "euler": (solvers.Euler, 0.0),
    "heun": (solvers.Heun, 0.0),
    "dpm2m": (solvers.DPMSolver2M, 0.0),
    "deblend": (solvers.Deblend, 0.0),
    "dopri5": (lambda: solvers.TorchDiffEq("dopri5"), 0.0),
    "euler-maruyama": (solvers.EulerMaruyama, 1.0),
    "torchsde": (solvers.TorchSDE, 1.0),
    "ancestral": (solvers.Ancestral, 1.0),
    "ddim": (lambda: solvers.Ancestral(eta=0.0), 0.0),
    "tau-leaping": (solvers.TauLeaping, 1.0),
    "binomial-bridge": (solvers.BinomialBridge, 1.0),
}

#: Time grids ``f(steps)``.
GRIDS: dict[str, Callable[[int], grids.Grid]] = {
    "uniform": grids.Uniform,
    "karras": grids.Karras,
    "logsnr": grids.LogSNR,
    "logit": grids.LogitObservation,
}


# ==================================================================== what depends on the family
@dataclass(frozen=True)
class Family:
    """How a process family is trained and evaluated by the command line."""

    embedding: Callable          # process -> time embedding
    transform: Callable          # levels -> data transform (Dequantize or Counts)
    states: Callable             # process -> number of output states per dimension (None: x's shape)
    default_model: str
    default_solver: str
    default_grid: str
    elbo_grid: str | None = None  # grid of the discrete-time ELBO (None: the continuous-time bound)


@functools.singledispatch
def family_defaults(process: ForwardProcess) -> Family:
    """The command line's defaults for ``process``'s family (dispatch on the family)."""
    raise ValueError(f"the command line has no defaults for {type(process).__name__}")


family_defaults.register(GaussianProcess, lambda p: _GAUSSIAN)
family_defaults.register(MarkovChain, lambda p: _CHAIN)
family_defaults.register(Blackout, lambda p: _BLACKOUT)

_GAUSSIAN = (Family(
    embedding=lambda p: FourierLogSNR(p), transform=lambda k: datalib.Dequantize(k), states=lambda p: None,
    default_model="lattice", default_solver="heun", default_grid="karras"))
_CHAIN = (Family(
    embedding=lambda p: FourierTime(t_max=p.t_max), transform=lambda k: datalib.Counts(),
    states=lambda p: p.num_states, default_model="categorical", default_solver="ancestral", default_grid="uniform",
    elbo_grid="uniform"))
_BLACKOUT = (Family(
    embedding=lambda p: FourierTime(t_max=p.t_max), transform=lambda k: datalib.Counts(), states=lambda p: None,
    default_model="blackout", default_solver="binomial-bridge", default_grid="logit"))

#: Loss builders by model class: ``f(process, weighting_name or None, transform) -> loss``. Gaussian models
#: on dequantised data regress on the Rao-Blackwellised targets (``quantization=``: the same minimiser
#: without the within-bin variance of the dequantisation noise).
@functools.singledispatch
def make_loss(model, process, weighting, transform):
    """The training loss of ``model``'s class (dispatch on the model)."""
    raise ValueError(f"the command line has no loss for {type(model).__name__}")


make_loss.register(GaussianModel, lambda m, p, w, tf: losses.DenoisingScoreMatching(p, _weighting(w, "importance", (
    "natural", "likelihood", "importance")), quantization=getattr(tf, "lattice", None)))
make_loss.register(BlackoutModel, lambda m, p, w, tf: losses.BlackoutLoss(p, _weighting(w, "blackout-likelihood", (
    "blackout-likelihood", "blackout-original"))))
make_loss.register(CategoricalModel, lambda m, p, w, tf: losses.CategoricalCrossEntropy(p) if w in (None, "natural") else
                                  _weighting(w, "natural", ("natural",)))


def _weighting(name, default, allowed):
    name = default if name is None else name
    if name not in allowed:
        raise ValueError(f"--weighting {name!r} does not apply to this model; allowed: {', '.join(allowed)}")
    return WEIGHTINGS[name]()


class _StateLogits(torch.nn.Module):
    """A U-Net with ``C·S`` output channels seen as per-pixel logits ``(batch, C, H, W, S)``."""

    def __init__(self, unet: UNet, states: int):
        super().__init__()
        self.unet, self.states = unet, states

    def forward(self, x, t):
        out = self.unet(x, t)
        b, _, h, w = out.shape
        return out.reshape(b, -1, self.states, h, w).permute(0, 1, 3, 4, 2)


def _unet(shape, states, emb, a):
    if len(shape) != 3:
        raise ValueError(f"--net unet needs images of shape (C, H, W), the data have shape {tuple(shape)}; "
                         "use --net mlp")
    mults = tuple(int(m) for m in str(a.mults).split(","))
    drop = getattr(a, "dropout", 0.0)
    if states is None:
        return UNet(shape[0], base=a.base, mults=mults, time=emb, dropout=drop)
    return _StateLogits(UNet(shape[0], base=a.base, mults=mults, time=emb, out_channels=shape[0] * states,
                             dropout=drop), states)


# ==================================================================== building a run from its configuration
@dataclass
class Run:
    """Everything a command needs: data, process, model, transform, and the config they came from."""

    config: dict
    dataset: datalib.Dataset
    split: datalib.Split
    process: ForwardProcess
    family: Family
    model: object
    transform: object


def build(config: dict) -> Run:
    """Data, process, network and model from a run configuration (the checkpoint's ``config``)."""
    a = argparse.Namespace(**config)
    options = {} if a.levels is None else {"levels": a.levels}
    dataset = datalib.load(a.data, **options)
    split = dataset.split(a.test_fraction, seed=a.split_seed)
    process = PROCESSES[a.process](dataset.levels, getattr(a, "t_min", None))
    family = family_defaults(process)
    model_name = a.model or family.default_model
    emb = family.embedding(process)
    transform = family.transform(dataset.levels)
    maker = MODELS[model_name]
    per_level = isinstance(maker, LevelLogits)
    states = maker.states(transform) if per_level else family.states(process)
    net = NETS[a.net](tuple(dataset.event_shape), states, emb, a)
    model = maker(net, process, transform) if per_level else maker(net, process)
    return Run(config, dataset, split, process, family, model, transform)


def _run_from_checkpoint(path, device) -> tuple[Run, dict]:
    ckpt = load_checkpoint(path, map_location="cpu")
    config = ckpt.get("config") or {}
    if "process" not in config:
        raise CheckpointError(f"checkpoint {path} has no run configuration (was it written by `probdiff train`?)")
    run = build(config)
    try:
        run.model.net.load_state_dict(ckpt["ema"])
    except RuntimeError as exc:
        raise CheckpointError(f"checkpoint {path} does not fit the network it describes: "
                              f"{str(exc).splitlines()[0]}") from None
    run.model.net.to(device).eval()
    return run, ckpt


# ==================================================================== output helpers
def _say(*args) -> None:
    if world()[0] == 0:
        print(*args, flush=True)


def _image_grid(counts: torch.Tensor, levels: int, scale: int = 4, cols: int | None = None) -> np.ndarray:
    """Integer images ``(n, C, H, W)`` -> one uint8 picture: ``cols`` per row (default: near-square), with
    1-pixel gutters; non-image data are shown as square tiles of their flattened values."""
    if counts.dim() != 4:
        side = int(math.ceil(math.sqrt(counts[0].numel())))
        flat = counts.reshape(counts.shape[0], -1)
        pad = torch.zeros(counts.shape[0], side * side - flat.shape[1], dtype=flat.dtype)
        counts = torch.cat([flat, pad], 1).reshape(-1, 1, side, side)
    n, c, h, w = counts.shape
    img = (counts.clamp(0, levels - 1).double() * (255.0 / (levels - 1))).round().to(torch.uint8).numpy()
    cols = int(cols or math.ceil(math.sqrt(n)))
    rows = int(math.ceil(n / cols))
    canvas = np.full((c, rows * (h + 1) + 1, cols * (w + 1) + 1), 128, dtype=np.uint8)
    for i in range(n):
        r, q = divmod(i, cols)
        canvas[:, 1 + r * (h + 1): 1 + r * (h + 1) + h, 1 + q * (w + 1): 1 + q * (w + 1) + w] = img[i]
    canvas = canvas.repeat(scale, axis=1).repeat(scale, axis=2)
    return canvas[0] if c == 1 else canvas[:3].transpose(1, 2, 0)


def _save_png(array: np.ndarray, path: Path) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def _positive(name):
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be a positive integer, got {text!r}") from None
        if value < 1:
            raise argparse.ArgumentTypeError(f"{name} must be a positive integer, got {text!r}")
        return value
    return parse


def _positive_float(name):
    def parse(text):
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be a positive number, got {text!r}") from None
        if not (value > 0 and math.isfinite(value)):
            raise argparse.ArgumentTypeError(f"{name} must be a positive number, got {text!r}")
        return value
    return parse


# ==================================================================== commands
def _sample(run: Run, num: int, solver_name: str | None, grid_name: str | None, steps: int, noise: float | None,
            seed: int, device, trajectory: bool = False, progress: bool = True):
    from .reverse import reverse
    from .sampling import sample

    solver_name = solver_name or run.family.default_solver
    grid_name = grid_name or run.family.default_grid
    make_solver, default_noise = SOLVERS[solver_name]
    rev = reverse(run.process, run.model, noise=default_noise if noise is None else noise)
    g = torch.Generator(device=device).manual_seed(seed)
    shape = (num, *run.dataset.event_shape)
    with torch.no_grad():
        sol = sample(rev, shape, solver=make_solver(), grid=GRIDS[grid_name](steps), generator=g, device=device,
                     trajectory=trajectory, progress=progress and world()[0] == 0)
    return sol, solver_name, grid_name


def cmd_train(a) -> str:
    rank, size = init_distributed()
    config = {k: getattr(a, k) for k in _RUN_KEYS}
    run = build(config)
    # the checkpoint records what the defaults resolved to, so that later defaults cannot change its meaning
    config["model"] = config["model"] or run.family.default_model
    if config["t_min"] is None and isinstance(run.process, GaussianProcess):
        config["t_min"] = float(run.process.t_min)
    device = torch.device(a.device) if a.device else None
    loss = make_loss(run.model, run.process, a.weighting, run.transform)
    checkpoint = Path(a.checkpoint)
    trainer = Trainer(run.model, loss, run.split.train.counts, transform=run.transform, steps=a.steps,
                      batch_size=a.batch_size, lr=a.lr, warmup=min(a.warmup, a.steps), ema_decay=a.ema,
                      clip=a.clip, seed=a.seed, checkpoint=checkpoint, checkpoint_every=a.checkpoint_every,
                      config=config, device=device)
    if a.resume:
        saved = load_checkpoint(checkpoint).get("config") or {}
        changed = {k: (saved.get(k), v) for k, v in config.items() if saved.get(k) != v}
        if changed:
            raise CheckpointError(f"checkpoint {checkpoint} was trained with other settings (checkpoint, now): "
                                  f"{changed}; resume with the same options")
        trainer.resume()
        _say(f"resumed from {checkpoint} at step {trainer.step}")
    elif checkpoint.exists() and not a.overwrite:
        raise ValueError(f"{checkpoint} exists; pass --resume to continue that run or --overwrite to start anew")
    nparams = sum(p.numel() for p in run.model.net.parameters())
    _say(f"training {a.net} ({nparams:,} parameters), parameterisation {a.model or run.family.default_model}, process "
         f"{type(run.process).__name__} on {run.dataset.name}: {len(run.split.train)} train / "
         f"{len(run.split.test)} test, {size} process(es), device {trainer.device}")
    t0, start = time.time(), trainer.step
    losses_ = trainer.fit(progress=not a.quiet)
    if trainer.step == start:  # nothing to do, but still leave a final checkpoint
        trainer.save()
    rate = (trainer.step - start) * a.batch_size / max(time.time() - t0, 1e-9)
    last = np.mean(losses_[-50:]) if losses_ else float("nan")
    return (f"trained {trainer.step}/{a.steps} steps in {time.time() - t0:.0f}s ({rate:.0f} images/s), "
            f"final loss {last:.4g}, checkpoint {checkpoint}")


def cmd_sample(a) -> str:
    device = _device(a)
    run, _ = _run_from_checkpoint(a.checkpoint, device)
    t0 = time.time()
    sol, solver_name, grid_name = _sample(run, a.num, a.solver, a.grid, a.steps, a.noise, a.seed, device,
                                          progress=not a.quiet)
    counts = run.transform.quantize(sol.x.cpu())
    out = Path(a.out)
    _save_png(_image_grid(counts, run.dataset.levels), out)
    npz = Path(a.npz) if a.npz else out.with_suffix(".npz")
    npz.parent.mkdir(parents=True, exist_ok=True)
    np.savez(npz, samples=sol.x.cpu().numpy(), counts=counts.numpy(), levels=run.dataset.levels)
    return (f"{a.num} samples ({solver_name}, {grid_name} grid, {a.steps} steps, {sol.nfe} model evaluations) in "
            f"{time.time() - t0:.1f}s -> {out}, {npz}")


class Summary(str):
    """A command's one-line summary that also carries its numbers (``values``: method -> per-image bits/dim)."""

    def __new__(cls, text: str, values: dict):
        obj = super().__new__(cls, text)
        obj.values = values
        return obj


def _mean_ci(bpd: torch.Tensor) -> tuple[float, float]:
    """Mean and half-width of its 95% normal confidence interval."""
    half = 1.96 * float(bpd.std()) / math.sqrt(bpd.numel()) if bpd.numel() > 1 else float("nan")
    return float(bpd.mean()), half


def _bits_summary(name: str, bpd: torch.Tensor, note: str) -> str:
    mean, half = _mean_ci(bpd)
    return f"{name}: {mean:.4f} ± {half:.4f} bits/dim (95% CI, n={bpd.numel()}, {note})"


def _exact_bits(run: Run, counts: torch.Tensor, *, batch_size: int, rtol: float, seed: int, device,
                progress: bool) -> torch.Tensor:
    """Held-out bits/dim by the probability-flow ODE with uniform dequantisation (THEORY.md §4)."""
    from .likelihood import bits_per_dim, log_likelihood

    if not isinstance(run.process, GaussianProcess):
        raise ValueError(f"--method exact needs a Gaussian process (a probability-flow ODE); "
                         f"{type(run.process).__name__} is discrete: use --method elbo (lossless bits/dim)")
    x = run.transform(counts, torch.Generator().manual_seed(seed))

    def batch_bits(xb):
        lp = log_likelihood(run.process, run.model, xb.to(device), rtol=rtol, atol=rtol)
        return bits_per_dim(lp, xb.shape[1:], **run.transform.bits_options()).cpu()

    return distributed_map(batch_bits, x, batch_size=batch_size, progress=progress, desc="exact likelihood")


def _elbo_bits(run: Run, counts: torch.Tensor, *, batch_size: int, samples: int, grid: str | None, steps: int,
               seed: int, device, progress: bool):
    """Bits/dim from the ELBO (dequantised density bound for Gaussian processes, lossless for chains)."""
    from .likelihood import bits_per_dim, elbo

    x = run.transform(counts, torch.Generator().manual_seed(seed))
    g = torch.Generator(device=device).manual_seed(seed + 1 + world()[0])  # independent draws per shard
    grid = grid or run.family.elbo_grid
    grid = None if grid is None else GRIDS[grid](steps)

    def batch_bits(xb):
        with torch.no_grad():
            bound = elbo(run.process, run.model, xb.to(device), grid=grid, num_samples=samples, generator=g)
        return bits_per_dim(bound, xb.shape[1:], **run.transform.bits_options()).cpu()

    return distributed_map(batch_bits, x, batch_size=batch_size, progress=progress, desc="ELBO")


#: What ``likelihood --method`` computes: name -> (function, note for the summary).
METHODS = {
    "exact": lambda run, counts, a, device: (_exact_bits(run, counts, batch_size=a.batch_size, rtol=a.rtol,
                                                         seed=a.seed, device=device, progress=not a.quiet),
                                             "exact, probability-flow ODE, dequantised"),
    "elbo": lambda run, counts, a, device: (_elbo_bits(run, counts, batch_size=a.batch_size, samples=a.elbo_samples,
                                                       grid=a.elbo_grid, steps=a.elbo_steps, seed=a.seed,
                                                       device=device, progress=not a.quiet),
                                            "ELBO, an upper bound"),
}


def cmd_likelihood(a) -> "Summary":
    init_distributed()
    device = _device(a)
    run, _ = _run_from_checkpoint(a.checkpoint, device)
    split = getattr(run.split, a.split)
    counts = split.counts[: a.limit] if a.limit else split.counts
    t0 = time.time()
    lines, values = [], {}
    for name in a.method:
        bpd, note = METHODS[name](run, counts, a, device)
        values[name] = bpd
        lines.append(_bits_summary(name, bpd, note))
        _say(lines[-1])
    head = f"{a.split} split of {run.dataset.name}, {counts.shape[0]} images, {time.time() - t0:.0f}s: "
    return Summary(head + "; ".join(lines), values)


def cmd_plot(a) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    device = _device(a)
    run, ckpt = _run_from_checkpoint(a.checkpoint, device)
    out = Path(a.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    sol, solver_name, grid_name = _sample(run, a.num, a.solver, a.grid, a.steps, a.noise, a.seed, device,
                                          trajectory=True, progress=not a.quiet)
    ts = sol.ts.cpu().double()
    written = []

    # 1. the grid and the schedule
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    axes[0].plot(range(len(ts)), ts.numpy(), "o-", ms=3)
    axes[0].set(xlabel="step", ylabel="t", title=f"{grid_name} grid, {a.steps} steps")
    if isinstance(run.process, GaussianProcess):
        dense = torch.linspace(run.process.t_min, run.process.t_max, 400, dtype=torch.float64)
        axes[1].plot(dense.numpy(), run.process.log_snr(dense).numpy(), label="log-SNR")
        axes[1].plot(ts.numpy(), run.process.log_snr(ts).numpy(), "o", ms=3, label="grid")
        axes[1].set(ylabel="log SNR")
    else:
        dense = torch.linspace(run.process.t_min, run.process.t_max, 400, dtype=torch.float64)
        axes[1].plot(dense.numpy(), dense.numpy(), label="t")
        axes[1].plot(ts.numpy(), ts.numpy(), "o", ms=3, label="grid")
    axes[1].set(xlabel="t", title=type(run.process).__name__)
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
        counts = run.transform.quantize(flat.float() if flat.is_floating_point() else flat)
        written.append(out / f"{name}_trajectory.png")
        _save_png(_image_grid(counts, run.dataset.levels, scale=3, cols=len(idx)), written[-1])

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


def cmd_quickstart(a) -> str:
    """Train on the bundled digits, write a sample grid, print held-out exact bits/dim."""
    out = Path(a.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ckpt = out / "digits.pt"
    threads = a.threads or min(QUICKSTART_MAX_THREADS, torch.get_num_threads())
    common = ["--threads", str(threads)] + (["--quiet"] if a.quiet else [])
    base = ["--checkpoint", str(ckpt), "--steps", str(a.steps), "--seed", str(a.seed), "--overwrite", *common]
    t0 = time.time()
    _say(f"[1/3] training on the bundled 8x8 digits ({a.steps} steps)")
    s1 = _dispatch(["train", *base, *QUICKSTART_TRAIN])
    _say(s1)
    _say("[2/3] sampling 64 digits")
    s2 = _dispatch(["sample", "--checkpoint", str(ckpt), "--num", "64", "--out", str(out / "samples.png"), *common])
    _say(s2)
    _say("[3/3] exact held-out bits/dim (probability-flow ODE, dequantised)")
    limit = ["--limit", str(a.limit)] if a.limit else []
    # small batches: the exact trace replicates each batch once per pixel, and the adaptive solver's steps
    # follow the hardest image of the batch; 16 images per batch was at least 2.7x as fast per image as 128
    s3 = _dispatch(["likelihood", "--checkpoint", str(ckpt), "--method", "exact", "--rtol", "1e-3",
                    "--batch-size", "16", *limit, *common])
    mean, half = _mean_ci(s3.values["exact"])
    return (f"quickstart done in {time.time() - t0:.0f}s: held-out {mean:.4f} ± {half:.4f} bits/dim "
            f"(exact, dequantised; "
            f"scikit-learn's GaussianMixture: see benchmarks/digits.py), samples in {out / 'samples.png'}")


#: Most torch threads the quickstart takes by default. On two idle cores, two threads made the exact
#: likelihood 1.7x faster than one (38 s -> 22 s for 32 test images) and training 1.2x faster; beyond a few
#: threads the small network gains little.
QUICKSTART_MAX_THREADS = 4

#: The quickstart's training settings: a fixed recipe sized for the 10-minute budget on two CPU cores
#: (a 0.7M-parameter residual MLP under the lattice head). 1438 training images are easy to over-fit: on a
#: validation split this network was best after about 1000 steps (2.09 bits/dim; 2.14 after 2000), hence
#: the quickstart's default of 1000 steps.
QUICKSTART_TRAIN = ["--net", "mlp", "--hidden", "256", "--depth", "3", "--dropout", "0.1", "--process", "vp",
                    "--model", "lattice", "--weighting", "importance", "--batch-size", "128", "--lr", "2e-3"]


def _device(a):
    from .train import default_device

    return torch.device(a.device) if a.device else default_device()


# ==================================================================== the parser
_RUN_KEYS = ("data", "levels", "test_fraction", "split_seed", "process", "t_min", "model", "net", "hidden", "depth",
             "base", "mults", "dropout", "weighting")

_HELP = """\
probdiff: declare a diffusion process, train it, sample it, and measure exact likelihoods.

The bundled data set is scikit-learn's 8x8 handwritten digits (17 grey levels), so every command
works without a download. A first session:

  probdiff quickstart                                   # everything below in one go (< 10 min on 2 cores)
  probdiff train --checkpoint run.pt --steps 2000       # train a model, checkpoint every 500 steps
  probdiff train --checkpoint run.pt --steps 4000 --resume   # continue the same run later
  probdiff sample --checkpoint run.pt --out samples.png       # PNG grid + samples.npz
  probdiff likelihood --checkpoint run.pt --method exact elbo # held-out bits/dim with 95% intervals
  probdiff plot --checkpoint run.pt --out-dir plots           # schedule, trajectories, loss curve

Distributed: torchrun --nproc_per_node=2 -m probdiff.cli train ... (same global batch).
Run `probdiff COMMAND --help` for the options of a command.
"""


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="FILE", help="TOML file of options (keys are the long option names)")
    p.add_argument("--device", help="torch device, e.g. cpu or cuda:0 (default: CUDA when available)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--threads", type=_positive("--threads"), help="CPU threads of torch (default: torch's choice; "
                   "1 is often fastest for small networks on a busy machine)")


def _sampling_options(p, default_num: int) -> None:
    p.add_argument("--checkpoint", required=True, help="checkpoint written by `probdiff train`")
    p.add_argument("--num", type=_positive("--num"), default=default_num, help="number of samples")
    p.add_argument("--solver", choices=sorted(SOLVERS), help="sampler (default: heun for Gaussian processes, "
                   "ancestral for chains, binomial-bridge for Blackout)")
    p.add_argument("--grid", choices=sorted(GRIDS), help="time grid (default: karras / uniform / logit)")
    p.add_argument("--steps", type=_positive("--steps"), default=50, help="grid steps")
    p.add_argument("--noise", type=float, help="noise level eta of the reverse process (default: the solver's: "
                   "0 for ODE solvers, 1 for stochastic ones)")
    p.add_argument("--seed", type=int, default=0, help="random seed")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="probdiff", description=_HELP,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("train", help="train a model; writes a checkpoint",
                       description="Train a diffusion model on a data set and write checkpoints (atomically) "
                                   "that --resume continues exactly.")
    _common(p)
    p.add_argument("--data", default="digits", help="'digits' (bundled), a folder of PNG/JPEG images, a .npy/.npz "
                   "array of integer levels, or an IDX file (MNIST format)")
    p.add_argument("--levels", type=_positive("--levels"), help="number of data levels K (default: from the data)")
    p.add_argument("--test-fraction", type=float, default=0.2, help="held-out fraction (deterministic split)")
    p.add_argument("--split-seed", type=int, default=0, help="seed of the train/test split")
    p.add_argument("--process", choices=sorted(PROCESSES), default="vp", help="forward process")
    p.add_argument("--t-min", type=_positive_float("--t-min"), help="time at which the data sit (default: "
                   "Gaussian processes stop at a noise level of %g data bins; chains start at 0)" % NOISE_FLOOR)
    p.add_argument("--model", choices=sorted(MODELS), help="what the network predicts (default: lattice for "
                   "Gaussian processes — per-level logits with the exact within-bin posterior of dequantised "
                   "data —, categorical for chains, blackout for Blackout)")
    p.add_argument("--weighting", choices=sorted(WEIGHTINGS), help="loss weighting (default: importance, the "
                   "ELBO with t importance-sampled, for Gaussian processes)")
    p.add_argument("--net", choices=sorted(NETS), default="mlp", help="network")
    p.add_argument("--hidden", type=_positive("--hidden"), default=256, help="MLP width")
    p.add_argument("--depth", type=_positive("--depth"), default=3, help="MLP residual blocks")
    p.add_argument("--base", type=_positive("--base"), default=32, help="U-Net channels at the first level")
    p.add_argument("--mults", default="1,2", help="U-Net channel multipliers per level, e.g. 1,2,2")
    p.add_argument("--dropout", type=float, default=0.0, help="dropout rate inside the network's blocks")
    p.add_argument("--steps", type=_positive("--steps"), default=2000, help="optimisation steps in total")
    p.add_argument("--batch-size", type=_positive("--batch-size"), default=128, help="global batch size")
    p.add_argument("--lr", type=_positive_float("--lr"), default=1e-3, help="AdamW learning rate")
    p.add_argument("--warmup", type=int, default=100, help="learning-rate warm-up steps")
    p.add_argument("--ema", type=float, default=0.999, help="EMA decay of the weights")
    p.add_argument("--clip", type=_positive_float("--clip"), default=1.0, help="gradient-norm clip")
    p.add_argument("--seed", type=int, default=0, help="random seed")
    p.add_argument("--checkpoint", default="probdiff-run.pt", help="checkpoint file")
    p.add_argument("--checkpoint-every", type=_positive("--checkpoint-every"), default=500,
                   help="steps between checkpoints")
    p.add_argument("--resume", action="store_true", help="continue from --checkpoint")
    p.add_argument("--overwrite", action="store_true", help="start anew even if --checkpoint exists")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("sample", help="draw samples; writes a PNG grid and an .npz",
                       description="Draw samples from a trained model.")
    _common(p)
    _sampling_options(p, 64)
    p.add_argument("--out", default="samples.png", help="PNG grid of the samples")
    p.add_argument("--npz", help="samples as arrays (default: --out with .npz)")
    p.set_defaults(func=cmd_sample)

    p = sub.add_parser("likelihood", help="held-out bits/dim: exact (probability-flow ODE) and ELBO",
                       description="Bits/dim over a data split with 95%% confidence intervals. 'exact' integrates "
                                   "the probability-flow ODE (Gaussian processes; uniform dequantisation); 'elbo' is "
                                   "the variational bound (lossless for discrete processes).")
    _common(p)
    p.add_argument("--checkpoint", required=True, help="checkpoint written by `probdiff train`")
    p.add_argument("--split", choices=("test", "train"), default="test", help="which split")
    p.add_argument("--limit", type=_positive("--limit"), help="use only the first N images of the split")
    p.add_argument("--method", nargs="+", choices=sorted(METHODS), default=["exact"], help="what to compute")
    p.add_argument("--batch-size", type=_positive("--batch-size"), default=128, help="images per batch")
    p.add_argument("--rtol", type=_positive_float("--rtol"), default=1e-5, help="ODE tolerance (rtol = atol)")
    p.add_argument("--elbo-samples", type=_positive("--elbo-samples"), default=16,
                   help="Monte-Carlo draws of the ELBO per image")
    p.add_argument("--elbo-grid", choices=sorted(GRIDS), help="grid of the discrete-time ELBO (default: "
                   "continuous time for Gaussian processes and Blackout, uniform for chains)")
    p.add_argument("--elbo-steps", type=_positive("--elbo-steps"), default=100, help="steps of --elbo-grid")
    p.add_argument("--seed", type=int, default=0, help="seed of the dequantisation noise")
    p.set_defaults(func=cmd_likelihood)

    p = sub.add_parser("plot", help="plot the grid/schedule, trajectories and the loss curve as PNG",
                       description="Plots of a trained model: its time grid and noise schedule, sampling and "
                                   "denoising trajectories, and its training loss.")
    _common(p)
    _sampling_options(p, 8)
    p.add_argument("--out-dir", default="probdiff-plots", help="folder for the PNG files")
    p.set_defaults(func=cmd_plot)

    p = sub.add_parser("quickstart", help="train on the bundled digits, sample, print exact held-out bits/dim",
                       description="The main job: train on the bundled digits, write a sample grid and print "
                                   "the held-out exact bits/dim, in at most 10 minutes on two CPU cores. Runs "
                                   "torch on up to 4 threads (as many as torch would use) unless --threads says "
                                   "otherwise; on a busy machine --threads 1 can be faster.")
    _common(p)
    p.add_argument("--out-dir", default="probdiff-quickstart", help="folder for the checkpoint and samples")
    p.add_argument("--steps", type=_positive("--steps"), default=1000, help="training steps")
    p.add_argument("--limit", type=_positive("--limit"), help="evaluate only the first N test images")
    p.add_argument("--seed", type=int, default=0, help="random seed")
    p.set_defaults(func=cmd_quickstart)
    return parser


def _apply_config(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    """Parse ``argv``; when ``--config FILE`` is given, its TOML values become the command's defaults."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config")
    known, _ = pre.parse_known_args(argv)
    command = next((w for w in argv if not w.startswith("-")), None)
    commands = parser._subparsers._group_actions[0].choices
    if not known.config or command not in commands:
        return parser.parse_args(argv)
    import tomllib

    path = Path(known.config)
    if not path.is_file():
        raise ValueError(f"--config {path}: no such file")
    try:
        table = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"--config {path}: not valid TOML ({exc})") from None
    values = {k: v for k, v in table.items() if not isinstance(v, dict)}
    section = table.get(command, {})
    if not isinstance(section, dict):
        raise ValueError(f"--config {path}: [{command}] must be a table")
    values.update(section)
    sub = commands[command]
    known_actions = {a.dest: a for a in sub._actions if a.dest not in ("help", "config")}
    defaults = {}
    for key, value in values.items():
        dest = key.replace("-", "_")
        if dest not in known_actions:
            raise ValueError(f"--config {path}: unknown option {key!r} for `probdiff {command}`; known: "
                             f"{', '.join(sorted(k.replace('_', '-') for k in known_actions if k != 'func'))}")
        action = known_actions[dest]
        items = value if isinstance(value, list) else [value]
        if action.type is not None and not isinstance(value, bool):
            try:
                items = [action.type(str(v)) for v in items]
            except (argparse.ArgumentTypeError, ValueError) as exc:
                raise ValueError(f"--config {path}: {key}: {exc}") from None
        if action.choices is not None and any(v not in action.choices for v in items):
            raise ValueError(f"--config {path}: {key} must be one of {', '.join(map(str, action.choices))}, "
                             f"got {value!r}")
        defaults[dest] = items if isinstance(value, list) else items[0]
    sub.set_defaults(**defaults)
    for action in sub._actions:  # a value from the file satisfies a required option
        if action.dest in defaults:
            action.required = False
    return parser.parse_args(argv)


def _dispatch(argv: list[str]) -> str:
    parser = build_parser()
    args = _apply_config(parser, argv)
    if getattr(args, "threads", None):
        torch.set_num_threads(args.threads)
    return args.func(args)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``probdiff`` command; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((w for w in argv if not w.startswith("-")), "probdiff")
    try:
        summary = _dispatch(argv)
    except SystemExit as exc:  # argparse: usage errors (status 2) and --help (status 0)
        return int(exc.code or 0)
    except KeyboardInterrupt:
        print(f"probdiff {command}: interrupted", file=sys.stderr)
        return 130
    except (ValueError, CheckpointError, FloatingPointError, OSError) as exc:
        print(f"probdiff {command}: error: {exc}", file=sys.stderr)
        return 1
    _say(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
