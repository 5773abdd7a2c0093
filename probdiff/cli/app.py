"""The entry point of the ``probdiff`` command: dispatch to a command, report errors in one line, and the
``quickstart`` that runs train, sample and likelihood in a row."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

from ..recipes import OptionError
from .commands import likelihood, sample, train
from .parser import UsageError, parse_args
from .plot import plot
from .pretrained import PRETRAINED
from .runs import say

__all__ = ["main", "failure_message", "dispatch", "quickstart", "COMMANDS", "EXTRA", "QUICKSTART_MAX_THREADS", "QUICKSTART_TRAIN"]


#: Most torch threads the quickstart takes by default. On two idle cores, two threads made the exact
#: likelihood 1.7x faster than one (38 s -> 22 s for 32 test images) and training 1.2x faster; beyond a few
#: threads the small network gains little.
QUICKSTART_MAX_THREADS = 4

#: The quickstart's training settings — a fixed recipe sized for the 10-minute budget on two CPU cores
#: (a 0.7M-parameter residual MLP under the lattice head). 1438 training images are easy to over-fit: on a
#: validation split this network was best after about 1000 steps (2.09 bits/dim; 2.14 after 2000), hence
#: the quickstart's default of 1000 steps.
QUICKSTART_TRAIN = ["--net", "mlp", "--hidden", "256", "--depth", "3", "--dropout", "0.1", "--process", "vp",
                    "--model", "lattice", "--weighting", "importance", "--batch-size", "128", "--lr", "2e-3"]


def quickstart(a) -> str:
    """Train on the bundled digits, write a sample grid, print held-out exact bits/dim."""
    out = Path(a.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ckpt = out / "digits.pt"
    threads = a.threads or min(QUICKSTART_MAX_THREADS, torch.get_num_threads())
    common = ["--threads", str(threads)] + (["--quiet"] if a.quiet else [])
    base = ["--checkpoint", str(ckpt), "--steps", str(a.steps), "--seed", str(a.seed), "--overwrite", *common]
    t0 = time.time()
    say(f"[1/3] training on the bundled 8x8 digits ({a.steps} steps)")
    s1 = dispatch(["train", *base, *QUICKSTART_TRAIN])
    say(s1)
    say("[2/3] sampling 64 digits")
    s2 = dispatch(["sample", "--checkpoint", str(ckpt), "--num", "64", "--out", str(out / "samples.png"), *common])
    say(s2)
    say("[3/3] exact held-out bits/dim (probability-flow ODE, dequantised)")
    limit = ["--limit", str(a.limit)] if a.limit else []
    # small batches: the exact trace replicates each batch once per pixel, and the adaptive solver's steps
    # follow the hardest image of the batch; 16 images per batch was at least 2.7x as fast per image as 128
    s3 = dispatch(["likelihood", "--checkpoint", str(ckpt), "--method", "exact", "--rtol", "1e-3",
                   "--batch-size", "16", *limit, *common])
    return (f"quickstart done in {time.time() - t0:.0f}s: held-out {s3.summaries['exact']} (exact, dequantised; "
            f"scikit-learn's GaussianMixture: see benchmarks/digits.py), samples in {out / 'samples.png'}")


#: The top-level modules of the ``cli`` extra (pyproject.toml), imported only where they are used.
EXTRA = ("matplotlib", "PIL", "sklearn", "tqdm")

#: The commands by name — ``f(options) -> one-line summary``.
COMMANDS = {"train": train, "sample": sample, "likelihood": likelihood, "plot": plot, "quickstart": quickstart}


def dispatch(argv: list[str]) -> str:
    """Parse ``argv`` and run its command; returns the command's summary."""
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.command in PRETRAINED and args.diffusers is not None:
        return PRETRAINED[args.command](args)
    return COMMANDS[args.command](args)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``probdiff`` command; returns the exit status.

    A failure is one line on stderr, ``probdiff: error: <what, which argument, what is allowed>``, with exit
    status 2 for usage errors (argparse) and 1 otherwise; ``--debug`` re-raises it with its traceback.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    try:
        summary = dispatch(argv)
    except SystemExit as exc:  # argparse: usage errors (status 2) and --help (status 0)
        return int(exc.code or 0)
    except KeyboardInterrupt:
        print("probdiff: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - every failure becomes one line unless --debug
        if debug:
            raise
        print(f"probdiff: error: {failure_message(exc)}", file=sys.stderr)
        return 2 if isinstance(exc, UsageError) else 1
    say(summary)
    return 0


def failure_message(exc: BaseException) -> str:
    """The one-line message of a failure of a command."""
    if isinstance(exc, ModuleNotFoundError) and (exc.name or "").split(".")[0] in EXTRA:
        return (f"{exc.name.split('.')[0]} is missing; the command line needs the cli extra "
                "(pip install 'probdiff[cli]')")
    if isinstance(exc, OptionError):  # a recipe's option, spelt as on the command line
        return f"--{exc.option.replace('_', '-')} {exc.text}"
    if isinstance(exc, MemoryError) or (isinstance(exc, RuntimeError) and "alloc" in str(exc).lower()):
        return (f"not enough memory: {_first_line(exc) or 'an allocation failed'}; use smaller sizes "
                "(--hidden, --depth, --batch-size, --num, --levels)")
    if isinstance(exc, (ValueError, TypeError, FloatingPointError, OSError)):
        return _first_line(exc)
    return f"{type(exc).__name__}: {_first_line(exc)} (an unexpected failure; --debug shows the traceback)"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
