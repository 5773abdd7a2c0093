"""probdiff: declare a forward process; derive reverse-time processes, targets, samplers and likelihoods.

Public API re-exports only (see DESIGN.md, "Public API").
"""

from . import grids, likelihood, losses, oracles, solvers
from .models import DenoiserModel, EpsilonModel, GaussianModel, ScoreModel, VelocityModel
from .processes import (
    CosineVP,
    ForwardProcess,
    GaussianProcess,
    LinearBlend,
    LinearSDE,
    SubVPSDE,
    VESDE,
    VPSDE,
)

from .likelihood import elbo
from .reverse import ReverseProcess, probability_flow, reverse
from .sampling import Solution, sample

__version__ = "0.1.0"

# --- sampling (issue 3) ---
from . import geometry  # noqa: E402
# --- likelihood (issue 4) ---
from .likelihood import ExactTrace, Hutchinson, bits_per_dim, dequantize, log_likelihood  # noqa: E402
from . import ppl  # noqa: E402
# --- discrete (issue 5) ---
from . import oracles_discrete as _oracles_discrete, reverse_discrete as _reverse_discrete  # noqa: F401,E402  (registrations)
from .models import BlackoutModel, CategoricalModel  # noqa: E402
from .processes import AbsorbingChain, Blackout, MarkovChain, UniformChain  # noqa: E402
# --- training, data, cli (issue 6) ---
from . import data, nn  # noqa: E402
from .train import Trainer  # noqa: E402
# --- testing toolkit (issue 7) ---
from . import testing  # noqa: E402
