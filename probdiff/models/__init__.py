"""Model parameterisations: a network predicts one quantity, the process converts it to the others."""

from .discrete import BlackoutModel, CategoricalModel, DiscreteModel  # noqa: F401  (issue 5)
from .gaussian import DenoiserModel, EpsilonModel, GaussianModel, ScoreModel, VelocityModel

__all__ = ["GaussianModel", "DenoiserModel", "EpsilonModel", "ScoreModel", "VelocityModel"]
