"""Deprecated: ``probdiff.solvers.discrete`` moved in the layered layout; this path is kept for one release.

New home: probdiff.solvers.ctmc.
"""

import warnings

from .ctmc import BinomialBridge, TauLeaping

warnings.warn(
    "probdiff.solvers.discrete is deprecated; import from probdiff.solvers.ctmc",
    DeprecationWarning, stacklevel=2)

__all__ = ["BinomialBridge", "TauLeaping"]
