"""Deprecated: ``probdiff.processes.discrete`` moved in the layered layout; this path is kept for one release.

New home: probdiff.processes.chain.
"""

import warnings

from .chain import MarkovChain
from .uniform_masking import AbsorbingChain, UniformChain
from .matrices import sample_categorical

warnings.warn(
    "probdiff.processes.discrete is deprecated; import from probdiff.processes.chain",
    DeprecationWarning, stacklevel=2)

__all__ = ["AbsorbingChain", "MarkovChain", "UniformChain", "sample_categorical"]
