"""Ancestral sampling: exact posterior steps of the forward process with the model's data estimate.

One solver for every process family: the step is a question about the reverse process, answered by its
:meth:`~probdiff.ReverseProcess.ancestral_step` (DDPM/DDIM for Gaussian processes, the mixture of
posteriors for Markov chains).
"""

from __future__ import annotations

from .._util import check_finite
from .base import Solver, Step

__all__ = ["Ancestral"]


class Ancestral(Solver):
    """Ancestral sampler: ``reverse.ancestral_step`` on every grid interval. Order 1 (weak order of the
    sampled law in the step size).

    Args:
        eta: stochasticity of the step (DDIM's :math:`\\eta`, Song, Meng & Ermon, "Denoising Diffusion
            Implicit Models", ICLR 2021, Eq. (16)): ``1`` samples the exact posterior (DDPM), ``0`` is
            deterministic (DDIM). ``None`` follows the reverse process' ``noise`` level, which is the
            continuous-time limit of the same family. Markov chains accept only 1.
    """

    order = 1

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

    def step(self, reverse, x, t, s, state, generator) -> Step:
        x_s, denoised = reverse.ancestral_step(x, t, s, self.noise_level(reverse), generator)
        return Step(x_s, denoised, state, 1)

    def kernel_and_denoised(self, reverse, x, t, s):
        """The step's law, :meth:`reverse.ancestral_kernel <probdiff.ReverseProcess.ancestral_kernel>` (Gaussian
        for Gaussian processes, categorical for chains), and the denoised estimate."""
        return reverse.ancestral_kernel(x, t, s, self.noise_level(reverse))
