"""Solvers: small stateless objects advancing a sample from ``t`` to an earlier ``s``."""

from .base import Solver, Step

__all__ = ["Solver", "Step"]
