"""Forward processes: the one object a user declares (THEORY.md §1, §5)."""

from .base import ForwardProcess
from .blackout import Blackout, ShiftedBinomial
from .chain import AbsorbingChain, MarkovChain, UniformChain
from .discrete_vp import DiscreteVP, cosine_betas, linear_betas
from .edm import EDM
from .gaussian import VESDE, ForwardSDE, GaussianProcess, LinearBlend
from .linear_sde import LinearSDE
from .vp import VPSDE, CosineVP, SubVPSDE

__all__ = ["ForwardProcess", "GaussianProcess", "ForwardSDE", "VPSDE", "SubVPSDE", "VESDE", "CosineVP", "LinearBlend",
           "LinearSDE", "DiscreteVP", "EDM", "linear_betas", "cosine_betas", "MarkovChain", "UniformChain", "AbsorbingChain", "Blackout", "ShiftedBinomial"]
