"""Forward processes: the one object a user declares (THEORY.md §1, §5)."""

from .base import ForwardProcess
from .blackout import Blackout, ShiftedBinomial
from . import schedules
from .atomic import AtomicCategorical
from .chain import MarkovChain
from .discrete_vp import DiscreteVP, cosine_betas, linear_betas
from .edm import EDM
from .interpolating import InterpolatingChain
from .uniform_masking import AbsorbingChain, UniformAbsorbingChain, UniformChain
from .gaussian import VESDE, ForwardSDE, GaussianProcess, LinearBlend
from .linear_sde import LinearSDE
from .schedules import ChainSchedule
from .vp import VPSDE, CosineVP, SubVPSDE

__all__ = ["ForwardProcess", "GaussianProcess", "ForwardSDE", "VPSDE", "SubVPSDE", "VESDE", "CosineVP", "LinearBlend",
           "LinearSDE", "DiscreteVP", "EDM", "linear_betas", "cosine_betas", "MarkovChain", "UniformChain",
           "AbsorbingChain", "Blackout", "ShiftedBinomial", "InterpolatingChain", "UniformAbsorbingChain",
           "AtomicCategorical", "ChainSchedule", "schedules"]
