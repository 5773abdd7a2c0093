"""Solvers: small stateless objects advancing a sample from ``t`` to an earlier ``s``."""

from .ancestral import Ancestral
from .base import Solver, Step
from . import gaussian  # registers the Gaussian ancestral step (DDPM/DDIM)

__all__ = ["Solver", "Step", "Ancestral"]
