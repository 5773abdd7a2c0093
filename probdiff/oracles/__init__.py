"""Exact models: the ground truth every test and benchmark leans on (THEORY.md §2)."""

from .chain import EmpiricalChainModel
from .empirical import Empirical, exact_model
from .gaussian import EmpiricalGaussianModel, GaussianMixture, MixtureModel

__all__ = ["GaussianMixture", "MixtureModel", "Empirical", "exact_model", "EmpiricalGaussianModel",
           "EmpiricalChainModel"]
