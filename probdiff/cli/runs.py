"""A run of the command line: data, process, model and transform rebuilt from a run configuration (the one a
checkpoint stores), and the small helpers every command shares (sampling, printing, PNG output).

Every default comes from :mod:`probdiff.recipes`; this module only reads the configuration's names.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .. import data as datalib
from .. import recipes
from ..processes import ForwardProcess
from ..reverse import reverse
from ..sampling import sample
from ..train import CheckpointError, default_device, load_checkpoint, world
from .._util import check_memory
from ..train.checkpoint import compare_identity, identity

__all__ = ["RUN_KEYS", "Setup", "build", "from_checkpoint", "draw", "device_of", "say", "image_grid", "save_png"]

#: The options of ``probdiff train`` that define a run; a checkpoint stores them as its ``config``.
RUN_KEYS = ("data", "levels", "test_fraction", "split_seed", "process", "t_min", "model", "net", "hidden", "depth",
            "base", "mults", "dropout", "weighting")


#: Bytes of memory reserved per sampled value before sampling: float32 state, the solver's stages and the
#: network's activations (a 256-wide MLP on 64 pixels holds about 4 hidden values per pixel per layer).
SAMPLE_BYTES = 4 * 64


@dataclass
class Setup:
    """Everything a command needs: data, process, model, transform, and the config they came from."""

    config: dict
    dataset: datalib.Dataset
    split: datalib.Split
    process: ForwardProcess
    family: recipes.Defaults
    model: object
    transform: object


def build(config: dict) -> Setup:
    """Data, process, network and model from a run configuration (the keys :data:`RUN_KEYS`)."""
    options = {} if config["levels"] is None else {"levels": config["levels"]}
    dataset = datalib.load(config["data"], **options)
    split = dataset.split(config["test_fraction"], seed=config["split_seed"])
    process = recipes.process(config["process"], dataset.levels, config.get("t_min"))
    family = recipes.defaults(process)
    net = recipes.NetOptions(hidden=config["hidden"], depth=config["depth"], base=config["base"],
                             mults=tuple(int(m) for m in str(config["mults"]).split(",")),
                             dropout=config.get("dropout", 0.0))
    model = recipes.build_model(process, dataset.event_shape, levels=dataset.levels, model=config["model"],
                                net=config["net"], options=net)
    return Setup(config, dataset, split, process, family, model, family.transform(dataset.levels))


def from_checkpoint(path, device) -> tuple[Setup, dict]:
    """The run a checkpoint of ``probdiff train`` describes, with its EMA weights, on ``device``."""
    ckpt = load_checkpoint(path, map_location="cpu")
    config = ckpt.get("config") or {}
    if "process" not in config:
        raise CheckpointError(f"checkpoint {path} has no run configuration (was it written by `probdiff train`?)")
    setup = build(config)
    compare_identity(path, ckpt["identity"], identity(setup.model, setup.dataset.event_shape, setup.dataset.levels))
    try:
        setup.model.net.load_state_dict(ckpt["ema"])
    except RuntimeError as exc:
        raise CheckpointError(f"checkpoint {path} does not fit the network it describes: "
                              f"{str(exc).splitlines()[0]}") from None
    setup.model.net.to(device).eval()
    return setup, ckpt


def draw(setup: Setup, num: int, solver_name: str | None, grid_name: str | None, steps: int, noise: float | None,
         seed: int, device, trajectory: bool = False, progress: bool = True):
    """``num`` samples by the named solver and grid (default: the family's); returns the solution and names."""
    solver_name = solver_name or setup.family.solver
    grid_name = grid_name or setup.family.grid
    solver, default_noise = recipes.solver(solver_name)
    rev = reverse(setup.process, setup.model, noise=default_noise if noise is None else noise)
    g = torch.Generator(device=device).manual_seed(seed)
    shape = (num, *setup.dataset.event_shape)
    # the solver's state, the network's activations and the trajectory: SAMPLE_BYTES bytes per value drawn
    check_memory(f"--num {num} samples of shape {tuple(setup.dataset.event_shape)}",
                 SAMPLE_BYTES * math.prod(shape) * (steps + 1 if trajectory else 1), device=device)
    with torch.no_grad():
        sol = sample(rev, shape, solver=solver, grid=recipes.grid(grid_name, steps), generator=g, device=device,
                     trajectory=trajectory, progress=progress and world()[0] == 0)
    return sol, solver_name, grid_name


def device_of(a) -> torch.device:
    """``--device``, or this process' CUDA device when CUDA is available, else the CPU; checked before use."""
    if not a.device:
        return default_device()
    try:
        device = torch.device(a.device)
    except (RuntimeError, ValueError):
        raise ValueError(f"--device {a.device!r} is not a torch device; allowed: cpu, cuda, cuda:N") from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ValueError(f"--device {a.device}: CUDA is not available here; allowed: cpu")
        if device.index is not None and device.index >= count:
            raise ValueError(f"--device {a.device}: this machine has {count} CUDA device(s), cuda:0 to "
                             f"cuda:{count - 1}")
    elif device.type != "cpu":
        try:
            torch.empty(0, device=device)
        except (RuntimeError, AssertionError) as exc:
            raise ValueError(f"--device {a.device} cannot be used here ({str(exc).splitlines()[0]}); "
                             "allowed: cpu, cuda") from None
    return device


def say(*args) -> None:
    """Print on rank 0 only."""
    if world()[0] == 0:
        print(*args, flush=True)


def image_grid(counts: torch.Tensor, levels: int, scale: int = 4, cols: int | None = None) -> np.ndarray:
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


def save_png(array: np.ndarray, path: Path) -> None:
    """Write a uint8 picture as PNG (Pillow, of the ``cli`` extra), making the folder if needed."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
