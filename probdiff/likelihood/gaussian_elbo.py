"""Deprecated: ``probdiff.likelihood.gaussian_elbo`` moved in the layered layout; this path is kept for one release.

New home: probdiff.likelihood.gaussian and probdiff.timevars.
"""

import warnings

from ..timevars import TimeSampler, UniformLogSNR, UniformTime
from .gaussian import gaussian_elbo

warnings.warn(
    "probdiff.likelihood.gaussian_elbo is deprecated; import from probdiff.likelihood.gaussian and probdiff.timevars",
    DeprecationWarning, stacklevel=2)

__all__ = ["TimeSampler", "UniformLogSNR", "UniformTime", "gaussian_elbo"]
