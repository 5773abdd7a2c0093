"""Deprecated: ``probdiff.losses.discrete`` moved in the layered layout; this path is kept for one release.

New home: probdiff.losses.chain.
"""

import warnings

from ..processes.matrices import poisson_kl
from ..timevars import LogitTime
from .chain import BlackoutLikelihood, BlackoutLoss, BlackoutOriginal, BlackoutWeight, CategoricalCrossEntropy

warnings.warn(
    "probdiff.losses.discrete is deprecated; import from probdiff.losses.chain",
    DeprecationWarning, stacklevel=2)

__all__ = ["BlackoutLikelihood", "BlackoutLoss", "BlackoutOriginal", "BlackoutWeight", "CategoricalCrossEntropy", "LogitTime", "poisson_kl"]
