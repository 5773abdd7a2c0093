"""Likelihoods: exact log p(x) by the probability-flow ODE, ELBOs, bits/dim (THEORY.md §4)."""

from .elbo import ELBO, elbo

__all__ = ["ELBO", "elbo"]
