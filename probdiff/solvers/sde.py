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

    *Out of a singular time.* Where the SDE's coefficients are infinite (:math:`\eta > 0` and
    :math:`g(t) = \infty`, i.e. :math:`\alpha_t = 0`: ``LinearBlend(t_max=1.0)`` at :math:`t = 1`) the
    Euler–Maruyama step is undefined; the step out of such a time draws from
    :meth:`~probdiff.reverse.GaussianReverse.frozen_denoiser_kernel` instead, the exact solution over the
    step with the denoiser frozen, which there is :math:`\mathcal N(\alpha_s D(x_t, t), \sigma_s^2 I)`
    (:math:`x_t` carries no information about :math:`x_0` at :math:`\alpha_t = 0`). :meth:`kernel` reports
    the same law. Every other step is Euler–Maruyama.
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
    diffusion coefficient the scheme uses over the step). At a singular ``t`` (no data left, as the blend's
    t = 1) the step is :meth:`~probdiff.reverse.gaussian.GaussianReverse.frozen_denoiser_kernel`. ``ValueError``
    naming ``solver`` at ``reverse.noise == 0``, where the step is deterministic."""
    if reverse.noise == 0.0:
        raise ValueError(f"{solver!r} at noise 0 takes the deterministic Euler step: it has no kernel "
                         "(use pd.reverse(model, noise) with noise > 0)")
    if reverse.singular(t):
        return reverse.frozen_denoiser_kernel(x, t, s)
    drift, denoised = reverse.drift_and_denoised(x, t)
    scale = expand_like(noise_coefficient * torch.sqrt(t - s), x)
    return GaussianKernel(x + (s - t) * drift, scale), denoised
