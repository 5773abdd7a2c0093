"""Likelihoods: exact log p(x) by the probability-flow ODE, ELBOs, bits/dim (THEORY.md §4)."""

from .elbo import ELBO, elbo
from . import discrete as _discrete  # noqa: F401  (issue 5: registers the chain ELBOs)

__all__ = ["ELBO", "elbo"]
