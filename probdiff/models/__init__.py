"""Model parameterisations: a network predicts one quantity, the process converts it to the others."""

from .base import Model
from .discrete import BlackoutModel, CategoricalModel, DiscreteModel
from .gaussian import DenoiserModel, EpsilonModel, GaussianModel, ScoreModel, VelocityModel

__all__ = ["Model", "GaussianModel", "DenoiserModel", "EpsilonModel", "ScoreModel", "VelocityModel", "DiscreteModel",
           "CategoricalModel", "BlackoutModel"]
