r"""The ancestral step of Gaussian processes: DDPM and DDIM in one rule.

With the model's data estimate :math:`\hat x_0 = D(x_t, t)` and noise estimate
:math:`\hat\epsilon = (x_t - \alpha_t\hat x_0)/\sigma_t`, the step from ``t`` to ``s < t`` draws

.. math::

    x_s = \alpha_s\hat x_0 + \sqrt{\sigma_s^2 - v}\,\hat\epsilon + \sqrt{v}\,z,\qquad
    v = \min\big(\eta^2\,\sigma_s^2(1 - e^{\lambda_t-\lambda_s}),\ \sigma_s^2\big),\quad z\sim\mathcal N(0, I).

For :math:`\eta = 1` this is exactly the posterior :math:`q(x_s\mid x_t, x_0=\hat x_0)` of the forward
process (Ho et al., "Denoising Diffusion Probabilistic Models", NeurIPS 2020, Eq. (7)); for
:math:`\eta = 0` it is DDIM (Song, Meng & Ermon, ICLR 2021, Eq. (12)), which is the first-order
exponential integrator of the probability-flow ODE (Lu et al., DPM-Solver, NeurIPS 2022, §3.4). As the
step shrinks, :math:`v \approx \eta^2 g(t)^2\,|dt|`, so :math:`\eta` plays the role of the reverse family's
noise level (THEORY.md §3); the clip at :math:`\sigma_s^2` only matters for :math:`\eta > 1` on coarse grids.

The module also holds the two helpers every Gaussian solver shares: :func:`check_gaussian` and
:func:`drift_and_denoised`, the reverse family's drift written through the denoiser.
"""

from __future__ import annotations

import torch

from ..processes.gaussian import GaussianProcess, _expand
from ..reverse import GaussianReverse
from .ancestral import Ancestral
from .base import Step

__all__ = ["gaussian_ancestral_step", "check_gaussian", "drift_and_denoised"]


def check_gaussian(solver, reverse, *, ode: bool) -> None:
    """Raise ``ValueError`` unless ``reverse`` is a Gaussian reverse process (and, for ``ode``, has noise 0).

    Deterministic solvers integrate the probability-flow ODE only: asking them for a reverse process
    with ``noise > 0`` would silently drop its Brownian term, so it is an error instead.
    """
    name = type(solver).__name__
    if not isinstance(reverse, GaussianReverse):
        raise ValueError(f"{name} integrates the reverse process of a GaussianProcess (pd.reverse(process, model, "
                         f"noise)), got {type(reverse).__name__} of {type(reverse.process).__name__}")
    if ode and reverse.noise != 0.0:
        raise ValueError(f"{name} integrates the probability-flow ODE: reverse.noise must be 0 (use "
                         f"pd.probability_flow(process, model)), got noise={reverse.noise:g}; for noise > 0 use "
                         "EulerMaruyama, Ancestral or TorchSDE")


def drift_and_denoised(reverse, x: torch.Tensor, t, noise: float | None = None):
    r"""The reverse family's drift at ``x``, ``t`` and the model's :math:`D(x,t)`, from one model evaluation.

    With :math:`\hat\epsilon = (x - \alpha_t D)/\sigma_t` the drift of THEORY.md §3,
    :math:`f x - \tfrac{1+\eta^2}{2}g^2 s`, equals

    .. math::

        \alpha_t' D + \sigma_t'\hat\epsilon + \frac{\eta^2}{2}\,\frac{g(t)^2}{\sigma_t}\,\hat\epsilon ,

    (use :math:`s = -\hat\epsilon/\sigma_t`, :math:`f\alpha = \alpha'`, :math:`\sigma' = \sigma(f - \lambda'/2)`,
    :math:`g^2 = -\sigma^2\lambda'`). The first two terms are the probability-flow velocity (Karras et al.
    2022, Eq. (4)); this form stays finite where :math:`\alpha_t = 0` and gives the denoising trajectory
    for free. ``noise`` defaults to ``reverse.noise``.

    Returns:
        ``(drift, denoised)``, both shaped like ``x``.
    """
    p = reverse.process
    t = p._time(t, x)
    noise = reverse.noise if noise is None else float(noise)
    denoised = reverse.model.denoise(x, t)
    alpha, sigma, f, g2 = p.alpha(t), p.sigma(t), p.drift_coef(t), p.diffusion(t) ** 2
    # alpha' = f alpha and sigma' = sigma f + g^2 / (2 sigma), unless the process has closed forms (LinearBlend's
    # alpha' = -1 stays finite at t = 1 where f = -inf); deriving them here saves the generic methods' repeated
    # evaluations of alpha and sigma (this runs once per step of every Gaussian solver).
    cls = type(p)
    a_dot = p.alpha_dot(t) if cls.alpha_dot is not GaussianProcess.alpha_dot else f * alpha
    s_dot = p.sigma_dot(t) if cls.sigma_dot is not GaussianProcess.sigma_dot else sigma * f + 0.5 * g2 / sigma
    if noise != 0.0:
        s_dot = s_dot + (0.5 * noise**2) * g2 / sigma
    eps = (x - _expand(alpha, x) * denoised) / _expand(sigma, x)
    return _expand(a_dot, x) * denoised + _expand(s_dot, x) * eps, denoised


@Ancestral.register(GaussianProcess)
def gaussian_ancestral_step(solver: Ancestral, reverse, x: torch.Tensor, t, s, state, generator) -> Step:
    """One DDPM/DDIM step of ``reverse`` (a Gaussian reverse process) from ``t`` to ``s``."""
    p = reverse.process
    t, s = p._time(t, x, "t"), p._time(s, x, "s")
    denoised = reverse.model.denoise(x, t)
    alpha_t, sigma_t = _expand(p.alpha(t), x), _expand(p.sigma(t), x)
    alpha_s, sigma_s = _expand(p.alpha(s), x), _expand(p.sigma(s), x)
    eps = (x - alpha_t * denoised) / sigma_t
    eta = solver.noise_level(reverse)
    if eta == 0.0:
        return Step(alpha_s * denoised + sigma_s * eps, denoised, state, 1)
    # 1 - r with r = exp(lambda_t - lambda_s) < 1, in expm1 form so that small steps keep their digits.
    one_minus_r = _expand(-torch.expm1(p.log_snr(t) - p.log_snr(s)), x)
    var = sigma_s**2 * torch.clamp(eta**2 * one_minus_r, max=1.0)
    z = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    x_s = alpha_s * denoised + torch.sqrt(sigma_s**2 - var) * eps + torch.sqrt(var) * z
    return Step(x_s, denoised, state, 1)
