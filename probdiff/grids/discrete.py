"""Deprecated: ``probdiff.grids.discrete`` moved in the layered layout; this path is kept for one release.

New home: probdiff.placement.
"""

import warnings

from ..placement import LogitObservation

warnings.warn(
    "probdiff.grids.discrete is deprecated; import from probdiff.placement",
    DeprecationWarning, stacklevel=2)

__all__ = ["LogitObservation"]
