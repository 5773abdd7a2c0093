r"""Euler–Maruyama for the reverse family of a Gaussian process at any noise level."""

from __future__ import annotations

import torch

from .base import SDESolver, Step

__all__ = ["EulerMaruyama"]


class EulerMaruyama(SDESolver):
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
        drift, denoised = reverse.drift_and_denoised(x, t)
        x_s = x + (s - t) * drift
        if reverse.noise != 0.0:
            z = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
            x_s = x_s + (reverse.diffusion(t) * torch.sqrt(t - s)) * z
        return Step(x_s, denoised, state, 1)
