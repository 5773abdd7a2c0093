"""Forward processes: the one object a user declares."""

from .base import ForwardProcess
from .discrete import AbsorbingChain, MarkovChain, UniformChain  # noqa: F401  (issue 5)
from .blackout import Blackout  # noqa: F401  (issue 5)
from .gaussian import CosineVP, GaussianProcess, LinearBlend, LinearSDE, SubVPSDE, VESDE, VPSDE

__all__ = ["ForwardProcess", "GaussianProcess", "VPSDE", "SubVPSDE", "VESDE", "CosineVP", "LinearBlend",
           "LinearSDE"]
