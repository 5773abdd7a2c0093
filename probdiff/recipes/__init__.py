r"""Recipes: what each process family is trained, sampled and evaluated with by default.

The library's core asks the user for every choice; an application (the ``probdiff`` command, a notebook,
a benchmark) wants good defaults for quantised data instead. They live here, as a Python API:

* :func:`process` — a process by name for K-level data (``recipes.process("vp", 17)``), with Gaussian
  processes stopped at the :data:`NOISE_FLOOR` (:func:`noise_floor_t_min`);
* :func:`defaults` — a family's :class:`Defaults`: time embedding, data transform, network output size,
  default model parameterisation, solver, grid and ELBO grid;
* :func:`build_model` — network and model parameterisation by name (:data:`MODELS`, :data:`NETS`);
* :func:`loss` — the training loss of a model, with its weighting by name (:data:`WEIGHTINGS`);
* :func:`solver` and :func:`grid` — samplers and time grids by name (:data:`SOLVERS`, :data:`GRIDS`).

:func:`defaults` and :func:`loss` are :func:`functools.singledispatch` functions: a user's own process
family or model class registers its recipe from outside (``@recipes.defaults.register(MyChain)``).
A choice that does not apply raises :class:`OptionError`, a ``ValueError`` naming the option.
"""

from .families import (GRIDS, NOISE_FLOOR, PROCESSES, SOLVERS, BlackoutDefaults, ChainDefaults, Defaults,
                       GaussianDefaults, OptionError, defaults, grid, noise_floor_t_min, process, solver)
from .models import MODELS, NETS, WEIGHTINGS, LevelLogits, NetOptions, Parameterisation, build_model, loss

__all__ = [
    "NOISE_FLOOR", "OptionError", "noise_floor_t_min", "process", "PROCESSES",
    "Defaults", "GaussianDefaults", "ChainDefaults", "BlackoutDefaults", "defaults",
    "NetOptions", "NETS", "Parameterisation", "LevelLogits", "MODELS", "build_model",
    "WEIGHTINGS", "loss", "SOLVERS", "solver", "GRIDS", "grid",
]
