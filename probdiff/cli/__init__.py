"""The ``probdiff`` command: train, sample, likelihood, plot, quickstart — a thin layer over :mod:`probdiff.recipes`.

Every choice made by name on the command line (process, model parameterisation, weighting, network,
solver, grid) is looked up in the tables of :mod:`probdiff.recipes`, and what depends on the process
family comes from :func:`probdiff.recipes.defaults`. A run's checkpoint stores the configuration it was
built from, so ``sample``, ``likelihood`` and ``plot`` need only ``--checkpoint``. ``--config FILE`` reads
TOML whose keys are the long options (:mod:`probdiff.cli.parser`).
"""

from ..recipes import GRIDS, MODELS, NETS, NOISE_FLOOR, PROCESSES, SOLVERS, WEIGHTINGS, LevelLogits
from .app import main
from .parser import build_parser
from .runs import build

__all__ = ["main", "build_parser", "build", "NOISE_FLOOR", "PROCESSES", "MODELS", "LevelLogits", "WEIGHTINGS",
           "NETS", "SOLVERS", "GRIDS"]
