"""Evidence lower bounds, derived once per process family and dispatched by registration."""

from __future__ import annotations

from .._registry import Registry

__all__ = ["ELBO", "elbo"]

#: Registry of ``bound(process, model, x, *, grid=None, **options) -> Tensor (batch,)`` per family.
ELBO = Registry("evidence lower bound")


def elbo(process, model, x, *, grid=None, **options):
    """Per-sample lower bound on log p(x) in nats, shape ``(batch,)``.

    Continuous time when ``grid`` is None, discrete time on ``grid`` otherwise; the implementation is
    the one registered in :data:`ELBO` for the family of ``process``.
    """
    return ELBO.lookup(process)(process, model, x, grid=grid, **options)
