"""probdiff: declare a forward process; derive reverse-time processes, targets, samplers and likelihoods.

Public API re-exports only (see DESIGN.md, "Public API"; the layers are on the docs' Concepts page).
"""

from . import data, geometry, grids, guidance, likelihood, losses, nn, oracles, ppl, recipes, solvers, testing, train
from .conditioning import LinearGaussian, condition
from ._util import expand_like
from .distribution import ELBO, ODE, ModelDistribution, Sampler, as_distribution
from .lattice import Quantization
from .likelihood import (
    BitsPerDim,
    ExactTrace,
    GaussianControlVariate,
    GaussianFrameAdams,
    HutchPlusPlus,
    Hutchinson,
    LikelihoodStats,
    bits_per_dim,
    bits_per_dim_summary,
    dequantize,
    elbo,
    log_likelihood,
)
from .models import (
    BlackoutModel,
    CategoricalModel,
    ChainModel,
    DenoiserModel,
    EpsilonModel,
    GaussianModel,
    Model,
    ScoreModel,
    SUBSModel,
    VelocityModel,
)
from .processes import (
    VESDE,
    VPSDE,
    AbsorbingChain,
    Blackout,
    EDM,
    CosineVP,
    DiscreteVP,
    ForwardProcess,
    GaussianProcess,
    InterpolatingChain,
    LinearBlend,
    LinearSDE,
    MarkovChain,
    SubVPSDE,
    UniformAbsorbingChain,
    UniformChain,
)
from .reverse import ReverseProcess, probability_flow, reverse
from .sampling import Solution, path_log_prob, sample
from .timevars import LogitTime, LogSNRTime, PhysicalTime, TimeVariable
from .train import Trainer

__version__ = "0.1.0"

__all__ = [
    "ForwardProcess", "GaussianProcess", "VPSDE", "SubVPSDE", "VESDE", "CosineVP", "LinearBlend", "LinearSDE",
    "DiscreteVP", "EDM",
    "MarkovChain", "UniformChain", "AbsorbingChain", "Blackout", "InterpolatingChain", "UniformAbsorbingChain",
    "Model", "GaussianModel", "DenoiserModel", "EpsilonModel", "ScoreModel", "VelocityModel", "ChainModel",
    "CategoricalModel", "BlackoutModel", "SUBSModel",
    "ReverseProcess", "reverse", "probability_flow", "sample", "Solution",
    "path_log_prob", "as_distribution", "ModelDistribution", "ODE", "ELBO", "Sampler",
    "condition", "LinearGaussian", "guidance",
    "log_likelihood", "LikelihoodStats", "ExactTrace", "Hutchinson", "elbo", "bits_per_dim", "dequantize",
    "Quantization", "TimeVariable", "PhysicalTime", "LogSNRTime", "LogitTime", "expand_like", "Trainer",
    "HutchPlusPlus", "GaussianControlVariate", "GaussianFrameAdams", "BitsPerDim", "bits_per_dim_summary",
    "data", "geometry", "grids", "likelihood", "losses", "nn", "oracles", "ppl", "recipes", "solvers", "testing", "train",
]
