"""Deprecated: ``probdiff.likelihood.timechange`` moved in the layered layout; this path is kept for one release.

New home: probdiff.timevars.
"""

import warnings

from ..timevars import LogSNRTime, PhysicalTime, TimeVariable

warnings.warn(
    "probdiff.likelihood.timechange is deprecated; import from probdiff.timevars",
    DeprecationWarning, stacklevel=2)

__all__ = ["LogSNRTime", "PhysicalTime", "TimeVariable"]
