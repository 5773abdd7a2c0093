"""Solvers: small stateless objects advancing a sample from ``t`` to an earlier ``s``."""

from .ancestral import Ancestral
from .base import Solver, Step
from .discrete import BinomialBridge, TauLeaping  # noqa: F401  (issue 5)
from . import gaussian  # registers the Gaussian ancestral step (DDPM/DDIM)
from .adapters import TorchDiffEq, TorchSDE
from .ode import Deblend, DPMSolver2M, Euler, Heun, UniPC
from .sde import EulerMaruyama

__all__ = ["Solver", "Step", "Ancestral", "Euler", "Heun", "DPMSolver2M", "UniPC", "Deblend", "EulerMaruyama",
           "TorchSDE", "TorchDiffEq"]
