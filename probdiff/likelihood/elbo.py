"""Evidence lower bounds: one entry point, derived once per process family (THEORY.md §4, §5, §10).

:func:`elbo` dispatches on the process family with :func:`family_elbo`, a ``functools.singledispatch``
function: Gaussian processes (:mod:`probdiff.likelihood.gaussian`) and Markov chains
(:mod:`probdiff.likelihood.chain`) register theirs in this package; a new family registers its bound with
``@probdiff.likelihood.family_elbo.register``.
"""

from __future__ import annotations

import functools

from ..models.base import bind
from ..processes.base import ForwardProcess

__all__ = ["elbo", "family_elbo"]


@functools.singledispatch
def family_elbo(process: ForwardProcess, model, x, *, grid=None, **options):
    """The bound of ``process``'s family: ``bound(process, model, x, *, grid=None, **options) -> (batch,)``."""
    known = ", ".join(sorted(c.__name__ for c in family_elbo.registry if c is not object)) or "none"
    raise ValueError(f"no evidence lower bound is registered for {type(process).__name__}; registered: {known}")


def elbo(process_or_model, model=None, x=None, *, grid=None, **options):
    """Per-sample lower bound on log p(x) in nats, shape ``(batch,)``.

    Short form ``elbo(model, x, ...)`` (the model carries its process); long form ``elbo(process, model, x,
    ...)``, where ``process`` must be the model's. Continuous time when ``grid`` is None, discrete time on
    ``grid`` otherwise; the family's options are documented with its bound
    (:func:`~probdiff.likelihood.gaussian.gaussian_elbo`, :func:`~probdiff.likelihood.chain.chain_elbo`,
    :func:`~probdiff.likelihood.chain.blackout_elbo`).
    """
    if x is None:                         # elbo(model, x, ...)
        model, x = None, model
    process, model = bind(process_or_model, model, entry="elbo")
    return family_elbo(process, model, x, grid=grid, **options)
