"""Deprecated: ``probdiff.reverse_discrete`` moved in the layered layout; this path is kept for one release.

New home: probdiff.reverse.
"""

import warnings

from .reverse.chain import BlackoutReverse, ChainReverse

warnings.warn(
    "probdiff.reverse_discrete is deprecated; import from probdiff.reverse",
    DeprecationWarning, stacklevel=2)

__all__ = ["BlackoutReverse", "ChainReverse"]
