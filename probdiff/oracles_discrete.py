"""Deprecated: ``probdiff.oracles_discrete`` moved in the layered layout; this path is kept for one release.

New home: probdiff.oracles.
"""

import warnings

from .oracles.chain import EmpiricalChainModel

warnings.warn(
    "probdiff.oracles_discrete is deprecated; import from probdiff.oracles",
    DeprecationWarning, stacklevel=2)

__all__ = ["EmpiricalChainModel"]
