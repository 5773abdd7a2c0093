"""Deprecated: ``probdiff.grids.base`` moved in the layered layout; this path is kept for one release.

New home: probdiff.placement.
"""

import warnings

from ..placement import Explicit, Grid, Uniform

warnings.warn(
    "probdiff.grids.base is deprecated; import from probdiff.placement",
    DeprecationWarning, stacklevel=2)

__all__ = ["Explicit", "Grid", "Uniform"]
