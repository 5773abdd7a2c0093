"""Deprecated: ``probdiff.models.discrete`` moved in the layered layout; this path is kept for one release.

New home: probdiff.models.chain.
"""

import warnings

from .chain import BlackoutModel, CategoricalModel, DiscreteModel

warnings.warn(
    "probdiff.models.discrete is deprecated; import from probdiff.models.chain",
    DeprecationWarning, stacklevel=2)

__all__ = ["BlackoutModel", "CategoricalModel", "DiscreteModel"]
