"""Deprecated: ``probdiff.grids.gaussian`` moved in the layered layout; this path is kept for one release.

New home: probdiff.placement and probdiff.tuning (time_of_log_snr is now GaussianProcess.time_of_log_snr).
"""

import warnings

from ..placement import Karras, LogSNR
from ..tuning import ScoreOptimal

warnings.warn(
    "probdiff.grids.gaussian is deprecated; import from probdiff.placement and probdiff.tuning",
    DeprecationWarning, stacklevel=2)

__all__ = ["Karras", "LogSNR", "ScoreOptimal"]
