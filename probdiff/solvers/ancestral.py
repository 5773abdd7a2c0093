"""Ancestral sampling: exact posterior steps of the forward process with the model's data estimate.

One solver for every process family: the step is looked up in :attr:`Ancestral.steps` by the type of
``reverse.process`` (Gaussian processes and Markov chains register their own).
"""

from __future__ import annotations

from .._registry import Registry
from .._validation import check_finite
from .base import Solver, Step

__all__ = ["Ancestral"]


class Ancestral(Solver):
    """Ancestral sampler; the family-specific step is registered with :meth:`Ancestral.register`.

    A registered step has the signature ``step(solver, reverse, x, t, s, state, generator) -> Step``.
    Order 1 (weak order of the sampled law in the step size).

    Args:
        eta: stochasticity of the step (DDIM's :math:`\\eta`, Song, Meng & Ermon, "Denoising Diffusion
            Implicit Models", ICLR 2021, Eq. (16)): ``1`` samples the exact posterior (DDPM), ``0`` is
            deterministic (DDIM). ``None`` follows the reverse process' ``noise`` level, which is the
            continuous-time limit of the same family. Families interpret it in their registered step.
    """

    order = 1
    steps = Registry("ancestral step")

    def __init__(self, eta: float | None = 1.0):
        if eta is not None:
            check_finite("eta", eta)
            if eta < 0:
                raise ValueError(f"eta must be >= 0 or None (follow reverse.noise), got {eta}")
            eta = float(eta)
        self.eta = eta

    def noise_level(self, reverse) -> float:
        """The effective :math:`\\eta`: the configured ``eta``, or ``reverse.noise`` when ``eta is None``."""
        return float(reverse.noise) if self.eta is None else self.eta

    @classmethod
    def register(cls, process_type: type):
        """Decorator registering the ancestral step for ``process_type``."""
        return cls.steps.register(process_type)

    def check(self, reverse) -> None:
        self.steps.lookup(reverse.process)

    def step(self, reverse, x, t, s, state, generator) -> Step:
        return self.steps.lookup(reverse.process)(self, reverse, x, t, s, state, generator)
