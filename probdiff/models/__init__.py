"""Model parameterisations: a network predicts one quantity, the process converts it to the others."""

from .base import Model
from .chain import BlackoutModel, CategoricalModel, ChainModel, DiscreteModel, SUBSModel
from .gaussian import DenoiserModel, EpsilonModel, GaussianModel, ScoreModel, VelocityModel

__all__ = ["Model", "GaussianModel", "DenoiserModel", "EpsilonModel", "ScoreModel", "VelocityModel", "ChainModel",
           "CategoricalModel", "BlackoutModel", "DiscreteModel", "SUBSModel"]
