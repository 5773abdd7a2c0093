"""Ancestral sampling: exact posterior steps of the forward process with the model's data estimate.

One solver for every process family: the step is looked up in :attr:`Ancestral.steps` by the type of
``reverse.process`` (Gaussian processes and Markov chains register their own).
"""

from __future__ import annotations

from .._registry import Registry
from .base import Solver, Step

__all__ = ["Ancestral"]


class Ancestral(Solver):
    """Ancestral sampler; the family-specific step is registered with :meth:`Ancestral.register`.

    A registered step has the signature ``step(solver, reverse, x, t, s, state, generator) -> Step``.
    """

    order = 1
    steps = Registry("ancestral step")

    @classmethod
    def register(cls, process_type: type):
        """Decorator registering the ancestral step for ``process_type``."""
        return cls.steps.register(process_type)

    def check(self, reverse) -> None:
        self.steps.lookup(reverse.process)

    def step(self, reverse, x, t, s, state, generator) -> Step:
        return self.steps.lookup(reverse.process)(self, reverse, x, t, s, state, generator)
