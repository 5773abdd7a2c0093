"""The parser of the ``probdiff`` command, and ``--config FILE`` (TOML whose keys are the long options).

``--config`` values may sit at the top level or in a table named after the command (``[train]``); they
become the command's defaults, so options given on the command line win. Each command's options are
recorded as they are added (:class:`argparse.Action` objects), and the file is checked against them.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from .. import recipes
from .commands import CHANGEABLE, METHODS
from .pretrained import PRETRAINED_METHODS

__all__ = ["build_parser", "parse_args", "UsageError"]


class _Options:
    """One command's sub-parser and the actions added to it, by destination."""

    def __init__(self, parser: argparse.ArgumentParser):
        self.parser = parser
        self.actions: dict[str, argparse.Action] = {}

    def add_argument(self, *flags, **kwargs) -> argparse.Action:
        action = self.parser.add_argument(*flags, **kwargs)
        self.actions[action.dest] = action
        return action


def _positive(name, kind=int):
    """An argparse type: ``kind(text)`` that must be finite and > 0 (an integer for ``kind=int``)."""
    what = "a positive integer" if kind is int else "a positive number"

    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be {what}, got {text!r}") from None
        if not (value > 0 and math.isfinite(value)):
            raise argparse.ArgumentTypeError(f"{name} must be {what}, got {text!r}")
        return value
    return parse


#: Seeds are 63-bit: they go through :func:`probdiff.train.checkpoint.derive_seed` and torch's generators.
MAX_SEED = 2**63 - 1


def _seed(name):
    """An argparse type: an integer seed in ``[0, 2**63 - 1]``."""
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be an integer in [0, 2**63 - 1], got {text!r}") from None
        if not 0 <= value <= MAX_SEED:
            raise argparse.ArgumentTypeError(f"{name} must be an integer in [0, 2**63 - 1], got {text!r}")
        return value
    return parse


def _fraction(name, lo=0.0, hi=1.0, *, closed_hi=False):
    """An argparse type: a float in ``[lo, hi)`` (``[lo, hi]`` with ``closed_hi``)."""
    bracket = "]" if closed_hi else ")"

    def parse(text):
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not (lo <= value <= hi if closed_hi else lo <= value < hi):
            raise argparse.ArgumentTypeError(f"{name} must be a number in [{lo:g}, {hi:g}{bracket}, got {text!r}")
        return value
    return parse


def _non_negative_int(name):
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            value = -1
        if value < 0:
            raise argparse.ArgumentTypeError(f"{name} must be an integer >= 0, got {text!r}")
        return value
    return parse


def _names(name, allowed):
    """An argparse type: a comma-separated list of names out of ``allowed``."""
    def parse(text):
        items = [w.strip() for w in str(text).split(",") if w.strip()]
        bad = [w for w in items if w not in allowed]
        if bad or not items:
            raise argparse.ArgumentTypeError(f"{name} takes a comma-separated list out of {', '.join(allowed)}, "
                                             f"got {text!r}")
        return items
    return parse


class UsageError(ValueError):
    """A usage error found outside argparse (a ``--config`` file's key or value): exit status 2, like
    the parser's own errors."""


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line, ``probdiff: error: ...``, and exit status 2."""

    def error(self, message):
        self.exit(2, f"probdiff: error: {message} (see `{self.prog} --help`)\n")


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
  probdiff likelihood --diffusers DIR --data images/ --method vlb exact   # a diffusers model's bits/dim

Distributed: torchrun --nproc_per_node=2 -m probdiff.cli train ... (same global batch).
Run `probdiff COMMAND --help` for the options of a command.
"""


def _common(p: _Options) -> None:
    p.add_argument("--config", metavar="FILE", help="TOML file of options (keys are the long option names)")
    p.add_argument("--device", help="torch device, e.g. cpu or cuda:0 (default: CUDA when available)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--threads", type=_positive("--threads"), help="CPU threads of torch (default: torch's choice; "
                   "1 is often fastest for small networks on a busy machine)")
    p.add_argument("--debug", action="store_true", help="show the Python traceback of a failure")


def _source(p: _Options) -> None:
    """``--checkpoint FILE`` or ``--diffusers DIR`` (exactly one; checked by :func:`parse_args`)."""
    p.add_argument("--checkpoint", help="checkpoint written by `probdiff train`")
    p.add_argument("--diffusers", metavar="DIR", help="a diffusers UNet2DModel and scheduler saved with "
                   "save_pretrained (local directory; nothing is downloaded) instead of --checkpoint")


def _sampling_options(p: _Options, default_num: int, pretrained: bool = False) -> None:
    if pretrained:
        _source(p)
    else:
        p.add_argument("--checkpoint", required=True, help="checkpoint written by `probdiff train`")
    p.add_argument("--num", type=_positive("--num"), default=default_num, help="number of samples")
    p.add_argument("--solver", choices=sorted(recipes.SOLVERS), help="sampler (default: heun for Gaussian processes, "
                   "ancestral for chains, binomial-bridge for Blackout)")
    p.add_argument("--grid", choices=sorted(recipes.GRIDS), help="time grid (default: karras / uniform / logit)")
    p.add_argument("--steps", type=_positive("--steps"), default=50, help="grid steps")
    p.add_argument("--noise", type=_fraction("--noise", 0.0, math.inf), help="noise level eta of the reverse process (default: the solver's: "
                   "0 for ODE solvers, 1 for stochastic ones)")
    p.add_argument("--seed", type=_seed("--seed"), default=0, help="random seed")


def _build() -> tuple[argparse.ArgumentParser, dict[str, _Options]]:
    """The parser, and the options of each command as they were added."""
    parser = _Parser(prog="probdiff", description=_HELP,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    commands: dict[str, _Options] = {}

    def command(name, **kwargs) -> _Options:
        commands[name] = _Options(sub.add_parser(name, **kwargs))
        commands[name].parser.error = parser.error.__get__(commands[name].parser)
        return commands[name]

    p = command("train", help="train a model; writes a checkpoint",
                       description="Train a diffusion model on a data set and write checkpoints (atomically) "
                                   "that --resume continues exactly.")
    _common(p)
    p.add_argument("--data", default="digits", help="'digits' (bundled), a folder of PNG/JPEG images, a .npy/.npz "
                   "array of integer levels, or an IDX file (MNIST format)")
    p.add_argument("--levels", type=_positive("--levels"), help="number of data levels K (default: from the data)")
    p.add_argument("--test-fraction", type=_fraction("--test-fraction"), default=0.2, help="held-out fraction (deterministic split)")
    p.add_argument("--split-seed", type=_seed("--split-seed"), default=0, help="seed of the train/test split")
    p.add_argument("--process", choices=sorted(recipes.PROCESSES), default="vp", help="forward process")
    p.add_argument("--t-min", type=_positive("--t-min", float), help="time at which the data sit (default: "
                   "Gaussian processes stop at a noise level of %g data bins; chains start at 0)" % recipes.NOISE_FLOOR)
    p.add_argument("--model", choices=sorted(recipes.MODELS), help="what the network predicts (default: lattice for "
                   "Gaussian processes — per-level logits with the exact within-bin posterior of dequantised "
                   "data —, categorical for chains, blackout for Blackout)")
    p.add_argument("--weighting", choices=sorted(recipes.WEIGHTINGS), help="loss weighting (default: importance, the "
                   "ELBO with t importance-sampled, for Gaussian processes)")
    p.add_argument("--net", choices=sorted(recipes.NETS), default="mlp", help="network")
    p.add_argument("--hidden", type=_positive("--hidden"), default=256, help="MLP width")
    p.add_argument("--depth", type=_positive("--depth"), default=3, help="MLP residual blocks")
    p.add_argument("--base", type=_positive("--base"), default=32, help="U-Net channels at the first level")
    p.add_argument("--mults", default="1,2", help="U-Net channel multipliers per level, e.g. 1,2,2")
    p.add_argument("--dropout", type=_fraction("--dropout"), default=0.0, help="dropout rate inside the network's blocks")
    p.add_argument("--steps", type=_positive("--steps"), default=2000, help="optimisation steps in total")
    p.add_argument("--batch-size", type=_positive("--batch-size"), default=128, help="global batch size")
    p.add_argument("--lr", type=_positive("--lr", float), default=1e-3, help="AdamW learning rate")
    p.add_argument("--warmup", type=_non_negative_int("--warmup"), default=100, help="learning-rate warm-up steps")
    p.add_argument("--ema", type=_fraction("--ema"), default=0.999, help="EMA decay of the weights")
    p.add_argument("--clip", type=_positive("--clip", float), default=1.0, help="gradient-norm clip")
    p.add_argument("--seed", type=_seed("--seed"), default=0, help="random seed")
    p.add_argument("--checkpoint", default="probdiff-run.pt", help="checkpoint file")
    p.add_argument("--checkpoint-every", type=_positive("--checkpoint-every"), default=500,
                   help="steps between checkpoints")
    p.add_argument("--resume", action="store_true", help="continue from --checkpoint")
    p.add_argument("--overwrite", action="store_true", help="start anew even if --checkpoint exists")
    p.add_argument("--allow-change", type=_names("--allow-change", tuple(CHANGEABLE)), default=[],
                   help="with --resume: options that may differ from the checkpoint's, e.g. lr,ema (any other "
                        "change is refused)")

    p = command("sample", help="draw samples; writes a PNG grid and an .npz",
                       description="Draw samples from a trained model.")
    _common(p)
    _sampling_options(p, 64, pretrained=True)
    p.add_argument("--out", default="samples.png", help="PNG grid of the samples")
    p.add_argument("--npz", help="samples as arrays (default: --out with .npz)")

    p = command("likelihood", help="held-out bits/dim: exact (probability-flow ODE) and ELBO",
                       description="Bits/dim over a data split, ± the standard error of the trace estimate and ± the 95%% "
                                   "confidence interval over the images. 'exact' integrates "
                                   "the probability-flow ODE (Gaussian processes; uniform dequantisation); 'elbo' is "
                                   "the variational bound (lossless for discrete processes).")
    _common(p)
    _source(p)
    p.add_argument("--data", help="with --diffusers: a folder of images or a .npy/.npz array of 8-bit images")
    p.add_argument("--split", choices=("test", "train"), default="test", help="which split")
    p.add_argument("--limit", type=_positive("--limit"), help="use only the first N images of the split")
    p.add_argument("--method", nargs="+", choices=sorted(set(METHODS) | set(PRETRAINED_METHODS)), default=["exact"],
                   help="what to compute ('vlb': Ho et al.'s bound, with --diffusers)")
    p.add_argument("--batch-size", type=_positive("--batch-size"), default=128, help="images per batch")
    p.add_argument("--rtol", type=_positive("--rtol", float), default=1e-5, help="ODE tolerance (rtol = atol)")
    p.add_argument("--probes", type=_positive("--probes"),
                   help="estimate the divergence with N Hutchinson probes per image instead of the exact trace "
                        "(N >= 2 gives each image a standard error; default: exact trace, or 2 with --diffusers)")
    p.add_argument("--elbo-samples", type=_positive("--elbo-samples"), default=16,
                   help="Monte-Carlo draws of the ELBO per image")
    p.add_argument("--elbo-grid", choices=sorted(recipes.GRIDS), help="grid of the discrete-time ELBO (default: "
                   "continuous time for Gaussian processes and Blackout, uniform for chains)")
    p.add_argument("--elbo-steps", type=_positive("--elbo-steps"), default=100, help="steps of --elbo-grid")
    p.add_argument("--seed", type=_seed("--seed"), default=0, help="seed of the dequantisation noise")

    p = command("plot", help="plot the grid/schedule, trajectories and the loss curve as PNG",
                       description="Plots of a trained model: its time grid and noise schedule, sampling and "
                                   "denoising trajectories, and its training loss.")
    _common(p)
    _sampling_options(p, 8)
    p.add_argument("--out-dir", default="probdiff-plots", help="folder for the PNG files")

    p = command("quickstart", help="train on the bundled digits, sample, print exact held-out bits/dim",
                       description="The main job: train on the bundled digits, write a sample grid and print "
                                   "the held-out exact bits/dim, in at most 10 minutes on two CPU cores. Runs "
                                   "torch on up to 4 threads (as many as torch would use) unless --threads says "
                                   "otherwise; on a busy machine --threads 1 can be faster.")
    _common(p)
    p.add_argument("--out-dir", default="probdiff-quickstart", help="folder for the checkpoint and samples")
    p.add_argument("--steps", type=_positive("--steps"), default=1000, help="training steps")
    p.add_argument("--limit", type=_positive("--limit"), help="evaluate only the first N test images")
    p.add_argument("--seed", type=_seed("--seed"), default=0, help="random seed")
    return parser, commands


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``probdiff COMMAND [options]``."""
    return _build()[0]


def parse_args(argv: list[str]) -> argparse.Namespace:
    """Parse ``argv``; when ``--config FILE`` is given, its TOML values become the command's defaults."""
    parser, commands = _build()
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config")
    known, _ = pre.parse_known_args(argv)
    command = next((w for w in argv if not w.startswith("-")), None)
    if not known.config or command not in commands:
        return _check_source(_checked(parser, parser.parse_args(argv)), commands)
    options = commands[command]
    defaults = _config_defaults(Path(known.config), command, options.actions, tuple(commands))
    options.parser.set_defaults(**defaults)
    for dest in defaults:  # a value from the file satisfies a required option
        options.actions[dest].required = False
    return _check_source(_checked(parser, parser.parse_args(argv)), commands)


def _check_source(args: argparse.Namespace, commands: dict[str, _Options]) -> argparse.Namespace:
    """Usage errors (exit 2) for the model's source: exactly one of --checkpoint and --diffusers, and the
    options that apply to one source only."""
    if "diffusers" not in commands[args.command].actions:
        return args
    error = commands[args.command].parser.error
    if (args.checkpoint is None) == (args.diffusers is None):
        error("give exactly one of --checkpoint FILE and --diffusers DIR")
    method = getattr(args, "method", [])
    if args.diffusers is None and "vlb" in method:
        error("--method vlb needs --diffusers DIR (a DDPM beta table)")
    if args.diffusers is not None and "elbo" in method:
        error("--method elbo needs --checkpoint; with --diffusers use exact or vlb")
    return args


def _checked(parser: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.Namespace:
    """Refuse options that contradict each other (whether from the command line or ``--config``)."""
    if getattr(args, "resume", False) and getattr(args, "overwrite", False):
        parser.error("--resume and --overwrite conflict: --resume continues the checkpoint, --overwrite replaces "
                     "it; pass one")
    if getattr(args, "allow_change", None) and not getattr(args, "resume", False):
        parser.error("--allow-change only applies with --resume")
    return args


def _config_defaults(path: Path, command: str, actions: dict[str, argparse.Action], commands=()) -> dict:
    """The values of a TOML file for ``command``, converted and checked like the command-line options.

    Strict: an unknown key or table is an error, a flag (``quiet``, ``resume``, ...) takes only ``true`` or
    ``false``, an option that takes one value refuses a list, a boolean or a table, and every value goes
    through the same type and range check as on the command line.
    """
    import tomllib

    if not path.is_file():
        raise UsageError(f"--config {path}: no such file")
    try:
        table = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise UsageError(f"--config {path}: not valid TOML ({exc})") from None
    tables = [k for k, v in table.items() if isinstance(v, dict)]
    stray = [k for k in tables if k not in commands]
    if stray:
        raise UsageError(f"--config {path}: unknown table [{stray[0]}]; tables are named after commands: "
                         f"{', '.join(commands)}")
    values = {k: v for k, v in table.items() if not isinstance(v, dict)}
    values.update(table.get(command, {}))
    known = {dest: action for dest, action in actions.items() if dest not in ("config", "help")}
    defaults = {}
    for key, value in values.items():
        dest = key.replace("-", "_")
        if dest not in known:
            raise UsageError(f"--config {path}: unknown option {key!r} for `probdiff {command}`; known: "
                             f"{', '.join(sorted(k.replace('_', '-') for k in known))}")
        defaults[dest] = _config_value(path, key, known[dest], value)
    return defaults


def _config_value(path: Path, key: str, action: argparse.Action, value):
    """One TOML value, checked as the command line checks ``--key``."""
    where = f"--config {path}: {key}"
    if action.nargs == 0:  # a flag
        if not isinstance(value, bool):
            raise UsageError(f"{where} is a flag and takes true or false, got {value!r}")
        return value
    if isinstance(value, (bool, dict)):
        raise UsageError(f"{where} takes {'a list of values' if action.nargs in ('+', '*') else 'one value'}, "
                         f"got {value!r}")
    many = action.nargs in ("+", "*")
    if isinstance(value, list) != many:
        raise UsageError(f"{where} takes {'a list of values' if many else 'one value, not a list'}, got {value!r}")
    items = value if many else [value]
    if any(isinstance(v, (bool, dict, list)) for v in items):
        raise UsageError(f"{where}: each value must be a number or a string, got {value!r}")
    convert = action.type if action.type is not None else str
    try:
        items = [convert(str(v)) for v in items]
    except (argparse.ArgumentTypeError, ValueError) as exc:
        raise UsageError(f"{where}: {exc}") from None
    if action.choices is not None and any(v not in action.choices for v in items):
        raise UsageError(f"{where}: {key} must be one of {', '.join(map(str, action.choices))}, got {value!r}")
    return items if many else items[0]
