"""Deprecated: ``probdiff.grids.endpoint`` moved in the layered layout; this path is kept for one release.

New home: probdiff.tuning.
"""

import warnings

from ..tuning import EndpointOptimal

warnings.warn(
    "probdiff.grids.endpoint is deprecated; import from probdiff.tuning",
    DeprecationWarning, stacklevel=2)

__all__ = ["EndpointOptimal"]
