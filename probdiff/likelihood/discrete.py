"""Deprecated: ``probdiff.likelihood.discrete`` moved in the layered layout; this path is kept for one release.

New home: probdiff.likelihood.chain.
"""

import warnings

from .chain import blackout_elbo, chain_elbo, prior_kl

warnings.warn(
    "probdiff.likelihood.discrete is deprecated; import from probdiff.likelihood.chain",
    DeprecationWarning, stacklevel=2)

__all__ = ["blackout_elbo", "chain_elbo", "prior_kl"]
