r"""Euler–Maruyama for the reverse family of a Gaussian process at any noise level."""

from __future__ import annotations

import torch

from .._util import expand_like
from ..reverse.kernels import GaussianKernel
from .base import HasKernel, SDESolver, Step

__all__ = ["EulerMaruyama", "gaussian_increment_kernel"]


class EulerMaruyama(SDESolver, HasKernel):
    r"""Euler–Maruyama on the reverse-time SDE (Kloeden & Platen, "Numerical Solution of Stochastic
    Differential Equations", §9.1), integrated backwards from ``t`` to ``s < t``:

    .. math::

        x_s = x_t + (s - t)\,b_\eta(x_t, t) + \eta\,g(t)\sqrt{t - s}\;z,\qquad z\sim\mathcal N(0, I),

    with :math:`b_\eta` = ``reverse.drift`` and :math:`\eta g` = ``reverse.diffusion`` (THEORY.md §3). The drift
    is evaluated through the denoiser (:meth:`~probdiff.reverse.GaussianReverse.drift_and_denoised`, which
    ``reverse.drift`` is) so that the step also reports :math:`D(x_t,t)`. The noise is state-independent
    (additive), so the strong order is 1, and the weak order is 1: ``order = 1``. At ``noise = 0`` it is
    :class:`~probdiff.solvers.Euler`. One model evaluation per step; noise drawn from ``generator``.
    """

    order = 1

    def step(self, reverse, x, t, s, state, generator) -> Step:
        if reverse.noise != 0.0:
            kernel, denoised = self.kernel_and_denoised(reverse, x, t, s)
            return Step(kernel.draw(generator), denoised, state, 1)
        drift, denoised = reverse.drift_and_denoised(x, t)
        return Step(x + (s - t) * drift, denoised, state, 1)

    def kernel_and_denoised(self, reverse, x, t, s):
        r"""The step's law :math:`\mathcal N\big(x + (s - t)\,b_\eta(x, t),\ \eta^2 g(t)^2 (t - s) I\big)`
        (THEORY.md §12) and :math:`D(x, t)`; ``ValueError`` at ``noise == 0`` (the step is deterministic)."""
        return gaussian_increment_kernel(self, reverse, x, t, s, reverse.diffusion(t))


def gaussian_increment_kernel(solver, reverse, x, t, s, noise_coefficient):
    r"""``(kernel, denoised)`` of a step :math:`x_s = x + (s - t)\,b_\eta(x, t) + c\,\sqrt{t - s}\,z`:
    :math:`\mathcal N\big(x + (s-t)\,b_\eta(x,t),\ c^2 (t - s) I\big)` with ``c = noise_coefficient`` (the
    diffusion coefficient the scheme uses over the step). ``ValueError`` naming ``solver`` at
    ``reverse.noise == 0``, where the step is deterministic."""
    if reverse.noise == 0.0:
        raise ValueError(f"{solver!r} at noise 0 takes the deterministic Euler step: it has no kernel "
                         "(use pd.reverse(model, noise) with noise > 0)")
    drift, denoised = reverse.drift_and_denoised(x, t)
    scale = expand_like(noise_coefficient * torch.sqrt(t - s), x)
    return GaussianKernel(x + (s - t) * drift, scale), denoised
