"""Deprecated: ``probdiff.solvers.gaussian`` moved in the layered layout; this path is kept for one release.

New home: probdiff.reverse.GaussianReverse (drift_and_denoised and ancestral_step are its methods).
"""

import warnings

from ..reverse.gaussian import GaussianReverse

warnings.warn(
    "probdiff.solvers.gaussian is deprecated; import from probdiff.reverse.GaussianReverse",
    DeprecationWarning, stacklevel=2)

__all__ = ["GaussianReverse"]
