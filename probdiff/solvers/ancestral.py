"""Ancestral sampling: exact posterior steps of the forward process with the model's data estimate.

One solver for every process family: the step is a question about the reverse process, answered by its
:meth:`~probdiff.ReverseProcess.ancestral_step` (DDPM/DDIM for Gaussian processes, the mixture of
posteriors for Markov chains).
"""

from __future__ import annotations

import math

from .._util import check_finite
from .base import HasKernel, SDESolver, Solver, Step

__all__ = ["Ancestral", "CoefficientPreserving"]


class Ancestral(Solver, HasKernel):
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


class CoefficientPreserving(SDESolver, HasKernel):
    r"""Coefficient-preserving sampling (CPS; F. Wang & Z. Yu, "Coefficients-Preserving Sampling for
    Reinforcement Learning with Flow Matching", arXiv:2509.05952, 2025): the ancestral step of a Gaussian
    process with a fixed fraction :math:`\rho = \sin^2(\eta\pi/2)` of the noise at ``s`` drawn afresh,

    .. math::

        x_s = \alpha_s\hat x_0 + \sigma_s\cos(\eta\pi/2)\,\hat\epsilon + \sigma_s\sin(\eta\pi/2)\,z,

    (:meth:`~probdiff.reverse.GaussianReverse.coefficient_preserving_kernel`). For the linear blend
    (:math:`\alpha = 1 - t`, :math:`\sigma = t`) this is the paper's update. Unlike the Euler–Maruyama
    discretisation of the reverse SDE (the Flow-GRPO sampler), the sample's coefficients of data and noise
    are exactly the process' at every step, so no excess noise accumulates on coarse grids; the noise added
    per step does not shrink with the step, so it is a member of DDIM's non-Markovian family (Song et al.
    2021, §4.1) rather than a discretisation of one SDE. ``eta = 0`` is DDIM. Gaussian processes only; one
    model evaluation per step.

    Args:
        eta: in ``[0, 1]``.
    """

    order = 1

    def __init__(self, eta: float = 0.5):
        check_finite("eta", eta)
        if not 0.0 <= eta <= 1.0:
            raise ValueError(f"eta must lie in [0, 1], got {eta}")
        self.eta = float(eta)

    def step(self, reverse, x, t, s, state, generator) -> Step:
        if self.eta == 0.0:
            x_s, denoised = reverse.ancestral_step(x, t, s, 0.0, generator)
            return Step(x_s, denoised, state, 1)
        kernel, denoised = self.kernel_and_denoised(reverse, x, t, s)
        return Step(kernel.draw(generator), denoised, state, 1)

    def kernel_and_denoised(self, reverse, x, t, s):
        """The step's Gaussian law and the denoised estimate; ``ValueError`` at ``eta == 0`` (DDIM)."""
        if self.eta == 0.0:
            raise ValueError("CoefficientPreserving(eta=0) is the deterministic DDIM step: it has no kernel")
        return reverse.coefficient_preserving_kernel(x, t, s, math.sin(self.eta * math.pi / 2) ** 2)
