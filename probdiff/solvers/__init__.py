"""Solvers: small stateless objects advancing a sample from ``t`` to an earlier ``s``.

Named by what they integrate: :mod:`~probdiff.solvers.ode` (the probability-flow ODE),
:mod:`~probdiff.solvers.sde` (the reverse SDE), :mod:`~probdiff.solvers.ctmc` (reverse Markov chains),
:mod:`~probdiff.solvers.ancestral` (exact posterior steps of any family), :mod:`~probdiff.solvers.adapters`
(torchdiffeq and torchsde integrators).
"""

from .adapters import TorchDiffEq, TorchSDE
from .ancestral import Ancestral, CoefficientPreserving
from .base import CTMCSolver, HasKernel, ODESolver, SDESolver, Solver, Step
from .ctmc import BinomialBridge, MaskedAncestral, NearestRounding, Rounding, StochasticRounding, TauLeaping
from .multistep import ExponentialMultistep
from .ode import Deblend, DPMSolver2M, Euler, Heun, UniPC
from .sde import EulerMaruyama

__all__ = ["Solver", "Step", "ODESolver", "SDESolver", "CTMCSolver", "HasKernel", "Ancestral", "Euler", "Heun",
           "DPMSolver2M", "UniPC", "ExponentialMultistep", "Deblend", "EulerMaruyama", "TauLeaping", "BinomialBridge",
           "TorchSDE", "TorchDiffEq", "CoefficientPreserving", "Rounding", "StochasticRounding", "NearestRounding",
           "MaskedAncestral"]
