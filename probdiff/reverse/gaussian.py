r"""The reverse-time family of a Gaussian process, written once (THEORY.md §3, §12).

One drift serves every sampler and the likelihood: :meth:`GaussianReverse.drift_and_denoised` writes the
drift of the reverse family through the denoiser, so that the probability-flow ODE that
:func:`probdiff.log_likelihood` integrates is, to the last bit, the vector field the ODE solvers step
along. The exact posterior step on a grid (DDPM/DDIM) is :meth:`GaussianReverse.ancestral_step`.
"""

from __future__ import annotations

import torch

from .._util import expand_like
from ..models.gaussian import noiseless
from ..processes.gaussian import GaussianProcess
from .base import ReverseProcess, build_reverse
from .kernels import GaussianKernel

__all__ = ["GaussianReverse"]


class GaussianReverse(ReverseProcess):
    r"""The reverse-time family of a Gaussian process at noise level :math:`\eta` (``noise``).

    ``drift(x, t)`` :math:`= f(t)x - \tfrac{1+\eta^2}{2}g(t)^2 s(x,t)` is the drift in forward time
    ``t`` (so the integration runs with ``dt < 0``); ``diffusion(t)`` :math:`= \eta\,g(t)`.
    """

    def drift_and_denoised(self, x: torch.Tensor, t) -> tuple[torch.Tensor, torch.Tensor]:
        r"""The drift at ``x``, ``t`` and the model's :math:`D(x,t)`, from one model evaluation.

        With :math:`\hat\epsilon = (x - \alpha_t D)/\sigma_t` the drift :math:`f x - \tfrac{1+\eta^2}{2}g^2 s`
        equals

        .. math::

            \alpha_t' D + \sigma_t'\hat\epsilon + \frac{\eta^2}{2}\,\frac{g(t)^2}{\sigma_t}\,\hat\epsilon ,

        (use :math:`s = -\hat\epsilon/\sigma_t`, :math:`f\alpha = \alpha'`, :math:`\sigma' = \sigma f +
        g^2/(2\sigma)`). The first two terms are the probability-flow velocity (Karras et al. 2022, Eq. (4));
        this form stays finite where :math:`\alpha_t = 0` and gives the denoising trajectory for free.
        Where :math:`\sigma_t = 0` (``LinearBlend(t_min=0)``) it takes the limit :math:`\hat\epsilon = 0`
        (the noise is independent of :math:`x_0 = x_t/\alpha_t`), so the probability flow is
        :math:`(\alpha_t'/\alpha_t)\,x` there; also below :math:`\sigma_t = \sqrt{\varepsilon}` of the
        dtype (:meth:`noiseless`), where the rounding of :math:`x - \alpha_t D` divided by :math:`\sigma_t`
        exceeds :math:`\hat\epsilon` itself (:math:`O(\sigma_t)` for a smooth data density). Both come
        from the model (:meth:`GaussianModel.denoise_and_epsilon
        <probdiff.GaussianModel.denoise_and_epsilon>`): a :class:`~probdiff.VelocityModel`
        gives its own finite :math:`\hat\epsilon` there, so its drift is its network's velocity at both ends.

        Returns:
            ``(drift, denoised)``, both shaped like ``x``.
        """
        t = self.process.check_time(t, x)
        _, _, a_dot, s_dot = self._coefficients(t)
        if not bool(torch.isfinite(s_dot).all()):
            raise ValueError(
                f"the reverse SDE's drift is infinite at t = {float(torch.as_tensor(t).max()):g} for noise = {self.noise:g}: "
                f"there alpha_t = 0 and g(t) = inf ({self.process!r}); the samplers step out of such a time "
                "exactly (GaussianReverse.frozen_denoiser_kernel); the probability flow (noise 0) is finite there")
        denoised, eps = self.model.denoise_and_epsilon(x, t)
        return expand_like(a_dot, x) * denoised + expand_like(s_dot, x) * eps, denoised

    def noiseless(self, t, dtype) -> torch.Tensor:
        """Where the drift takes its sigma -> 0 limit (:func:`probdiff.models.gaussian.noiseless`)."""
        return noiseless(self.process, t, dtype)

    def _coefficients(self, t):
        r""":math:`\alpha_t, \sigma_t, \alpha_t'` and the noise-adjusted :math:`\sigma_t'` of the drift."""
        p = self.process
        alpha, sigma = p.alpha(t), p.sigma(t)
        a_dot, s_dot = p.alpha_dot(t), p.sigma_dot(t)
        if self.noise != 0.0:
            s_dot = s_dot + (0.5 * self.noise**2) * _g2_over_sigma(p, t, sigma, s_dot)
        return alpha, sigma, a_dot, s_dot

    def drift_coefficients(self, t) -> tuple[torch.Tensor, torch.Tensor]:
        r"""The drift split into its affine part and the denoiser's: :math:`(a, b)` with
        :math:`\text{drift}(x, t) = a(t)\,x + b(t)\,D(x, t)`,

        .. math:: a = \frac{\sigma_t'}{\sigma_t}, \qquad b = \alpha_t' - \frac{\sigma_t'\,\alpha_t}{\sigma_t}

        (the same :math:`\sigma_t'` as :meth:`drift_and_denoised`, noise included). For the probability
        flow :math:`a = f + g^2/(2\sigma^2)` and :math:`b = -g^2\alpha/(2\sigma^2)` (THEORY.md §13), so
        :math:`\nabla\cdot\text{drift} = a\,d + b\,\nabla\cdot D`: the part that carries the large
        :math:`1/\sigma_t^2` near the data is exact and only :math:`\nabla\cdot D` needs estimating
        (:func:`probdiff.log_likelihood`). Infinite where :math:`\sigma_t = 0`.
        """
        t = self.process.check_time(t)
        alpha, sigma, a_dot, s_dot = self._coefficients(t)
        return s_dot / sigma, a_dot - s_dot * alpha / sigma

    def drift(self, x: torch.Tensor, t) -> torch.Tensor:
        """The drift :math:`f x - \\tfrac{1+\\eta^2}{2}g^2 s` at ``x``, ``t`` (see :meth:`drift_and_denoised`)."""
        return self.drift_and_denoised(x, t)[0]

    def diffusion(self, t) -> torch.Tensor:
        r""":math:`\eta\,g(t)`; exactly 0 for the probability flow (also where :math:`g = \infty`)."""
        g = self.process.diffusion(t)
        return torch.zeros_like(g) if self.noise == 0.0 else self.noise * g

    def singular(self, t) -> bool:
        r"""Whether the reverse SDE's coefficients are infinite at ``t`` (a scalar time): :math:`\eta > 0`
        and :math:`g(t) = \infty`, which happens where :math:`\alpha_t = 0` (``LinearBlend(t_max=1.0)`` at
        :math:`t = 1`, where :math:`f = -1/(1-t)`). The Euler–Maruyama samplers step out of such a time
        with :meth:`frozen_denoiser_kernel` instead of evaluating the drift there."""
        if self.noise == 0.0:
            return False
        g = self.process.diffusion(torch.as_tensor(t, dtype=torch.float64))
        return not bool(torch.isfinite(g).all())

    def frozen_denoiser_kernel(self, x, t, s):
        r"""The exact law of the reverse SDE from ``t`` to ``s < t`` with the denoiser held at
        :math:`\hat x_0 = D(x_t, t)` over the step (the first-order exponential integrator), and
        :math:`\hat x_0`:

        .. math::

            x_s \sim \mathcal N\big(\alpha_s\hat x_0 + \sigma_s e^{-\eta^2 h/2}\,\hat\epsilon,\
            \sigma_s^2(1 - e^{-\eta^2 h}) I\big),\qquad h = \lambda_s - \lambda_t,\
            \hat\epsilon = \frac{x_t - \alpha_t\hat x_0}{\sigma_t}.

        Derivation: with :math:`x = \alpha\hat x_0 + \sigma e` and the score :math:`-e/\sigma` of
        :math:`\mathcal N(\alpha\hat x_0, \sigma^2)`, the reverse family of THEORY.md §3 reduces (using
        :math:`g^2 = -\sigma^2\lambda'`) to :math:`de = -\tfrac{\eta^2}2 e\,d\rho + \eta\,dW_\rho` in
        :math:`\rho = \lambda` run forward from :math:`\lambda_t` to :math:`\lambda_s`: an
        Ornstein–Uhlenbeck process with unit stationary variance. At :math:`\eta = 1` this is DDPM's
        posterior step (:meth:`ancestral_kernel`). It stays finite where the drift is not: at
        :math:`\alpha_t = 0` (:math:`\lambda_t = -\infty`) the OU process has run for infinite time,
        :math:`x_t` carries no information, and the step is :math:`\mathcal N(\alpha_s\hat x_0, \sigma_s^2 I)`
        with :math:`\hat x_0 = D(x_t, t) = E[x_0]` — exact for an exact model, whatever the step.
        Returns ``(kernel, denoised)``.
        """
        denoised, alpha_s, sigma_s, eps, _ = self._posterior_parts(x, t, s)
        p = self.process
        h = p.log_snr(p.check_time(s, x, "s")) - p.log_snr(p.check_time(t, x, "t"))
        decay = expand_like(torch.exp(-0.5 * self.noise**2 * h), x)
        var = expand_like(-torch.expm1(-self.noise**2 * h), x) * sigma_s**2
        # decay * eps: eps is finite, and decay = 0 exactly where h = inf (alpha_t = 0)
        return GaussianKernel(alpha_s * denoised + sigma_s * decay * eps, torch.sqrt(var)), denoised

    def ancestral_step(self, x, t, s, eta, generator):
        r"""DDPM and DDIM in one rule: with :math:`\hat x_0 = D(x_t, t)`,
        :math:`\hat\epsilon = (x_t - \alpha_t\hat x_0)/\sigma_t`,

        .. math::

            x_s = \alpha_s\hat x_0 + \sqrt{\sigma_s^2 - v}\,\hat\epsilon + \sqrt{v}\,z,\qquad
            v = \min\big(\eta^2\,\sigma_s^2(1 - e^{\lambda_t-\lambda_s}),\ \sigma_s^2\big).

        :math:`\eta = 1` samples the posterior :math:`q(x_s\mid x_t, x_0=\hat x_0)` (Ho et al., "Denoising
        Diffusion Probabilistic Models", NeurIPS 2020, Eq. (7)); :math:`\eta = 0` is DDIM (Song, Meng & Ermon,
        ICLR 2021, Eq. (12)), the first-order exponential integrator of the probability-flow ODE (Lu et al.,
        DPM-Solver, NeurIPS 2022, §3.4). As the step shrinks :math:`v \approx \eta^2 g(t)^2|dt|`, so
        :math:`\eta` is the reverse family's noise level; the clip at :math:`\sigma_s^2` only matters for
        :math:`\eta > 1` on coarse grids. Returns ``(x_s, denoised)``.
        """
        if eta == 0.0:
            denoised, alpha_s, sigma_s, eps, _ = self._posterior_parts(x, t, s)
            return alpha_s * denoised + sigma_s * eps, denoised
        kernel, denoised = self.ancestral_kernel(x, t, s, eta)
        return kernel.draw(generator), denoised

    def ancestral_kernel(self, x, t, s, eta):
        r"""The law of :meth:`ancestral_step` for :math:`\eta > 0`: the Gaussian kernel
        :math:`\mathcal N(\alpha_s\hat x_0 + \sqrt{\sigma_s^2 - v}\,\hat\epsilon,\ v I)` over :math:`x_s`
        (THEORY.md §12), with :math:`v` as in :meth:`ancestral_step`, and the denoised estimate
        :math:`\hat x_0`. At :math:`\eta = 1` it is :math:`q(x_s\mid x_t, x_0 = \hat x_0)`.
        :meth:`ancestral_step` draws from it. Returns ``(kernel, denoised)``; ``ValueError`` at ``eta == 0``
        (DDIM is deterministic)."""
        if not eta > 0.0:
            raise ValueError(f"eta must be > 0 for a kernel (eta = 0 is the deterministic DDIM step), got {eta}")
        denoised, alpha_s, sigma_s, eps, one_minus_r = self._posterior_parts(x, t, s)
        return self._fresh_noise_kernel(denoised, alpha_s, sigma_s, eps,
                                        torch.clamp(eta**2 * one_minus_r, max=1.0)), denoised

    def coefficient_preserving_kernel(self, x, t, s, fraction):
        r"""The coefficient-preserving step (Wang & Yu, "Coefficients-Preserving Sampling for Reinforcement
        Learning with Flow Matching", arXiv:2509.05952, 2025): with :math:`\rho` = ``fraction`` in ``[0, 1]``,

        .. math::

            x_s \sim \mathcal N\big(\alpha_s\hat x_0 + \sigma_s\sqrt{1-\rho}\,\hat\epsilon,\ \rho\,\sigma_s^2 I\big),

        so that the coefficients of :math:`\hat x_0` and of the (predicted plus fresh) noise are exactly
        :math:`\alpha_s` and :math:`\sigma_s`, whatever the step. :meth:`ancestral_kernel` is the same step
        with :math:`\rho = \eta^2(1 - e^{\lambda_t - \lambda_s})` (DDIM); the paper's
        :math:`\rho = \sin^2(\eta\pi/2)` does not shrink with the step. Returns ``(kernel, denoised)``."""
        denoised, alpha_s, sigma_s, eps, _ = self._posterior_parts(x, t, s)
        fraction = torch.as_tensor(fraction, dtype=x.dtype, device=x.device)
        return self._fresh_noise_kernel(denoised, alpha_s, sigma_s, eps, fraction), denoised

    @staticmethod
    def _fresh_noise_kernel(denoised, alpha_s, sigma_s, eps, fraction):
        r""":math:`\mathcal N(\alpha_s\hat x_0 + \sqrt{\sigma_s^2 - v}\,\hat\epsilon, v)` with
        :math:`v = \rho\,\sigma_s^2`: a fraction of the noise at ``s`` drawn afresh."""
        var = sigma_s**2 * fraction
        loc = alpha_s * denoised + torch.sqrt(sigma_s**2 - var) * eps
        return GaussianKernel(loc, torch.sqrt(var))

    def _posterior_parts(self, x, t, s):
        r""":math:`\hat x_0`, :math:`\alpha_s`, :math:`\sigma_s`, :math:`\hat\epsilon` and
        :math:`1 - e^{\lambda_t - \lambda_s}` of the step from ``t`` to ``s`` (one model evaluation)."""
        p = self.process
        t, s = p.check_time(t, x, "t"), p.check_time(s, x, "s")
        denoised = self.model.denoise(x, t)
        alpha_t, sigma_t = expand_like(p.alpha(t), x), expand_like(p.sigma(t), x)
        alpha_s, sigma_s = expand_like(p.alpha(s), x), expand_like(p.sigma(s), x)
        eps = (x - alpha_t * denoised) / sigma_t
        # 1 - r with r = exp(lambda_t - lambda_s) < 1, in expm1 form so that small steps keep their digits.
        one_minus_r = expand_like(-torch.expm1(p.log_snr(t) - p.log_snr(s)), x)
        return denoised, alpha_s, sigma_s, eps, one_minus_r


def _g2_over_sigma(process, t, sigma, sigma_dot):
    r""":math:`g(t)^2/\sigma_t`, finite where :math:`\sigma_t = 0` as :math:`2(\sigma_t' - f\sigma_t)`
    (from :math:`g^2 = d\sigma^2/dt - 2f\sigma^2`; ``LinearBlend(t_min=0)`` at t = 0 gives 2)."""
    live = sigma > 0
    safe = torch.where(live, sigma, torch.ones_like(sigma))
    at_zero = 2.0 * (sigma_dot - process.drift_coef(t) * sigma)
    return torch.where(live, process.diffusion(t) ** 2 / safe, at_zero)


@build_reverse.register
def _gaussian_reverse(process: GaussianProcess, model, noise: float) -> GaussianReverse:
    return GaussianReverse(process, model, noise)
