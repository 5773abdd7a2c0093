"""Forward processes: the one object a user declares."""

from .base import ForwardProcess
from .gaussian import CosineVP, GaussianProcess, LinearBlend, LinearSDE, SubVPSDE, VESDE, VPSDE

__all__ = ["ForwardProcess", "GaussianProcess", "VPSDE", "SubVPSDE", "VESDE", "CosineVP", "LinearBlend",
           "LinearSDE"]
