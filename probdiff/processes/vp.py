r"""Variance-preserving Gaussian processes: linear-beta VP and sub-VP (Song et al. 2021), cosine VP
(Nichol & Dhariwal 2021). Closed forms for every derived quantity, tested against the generic path of
:class:`~probdiff.GaussianProcess`.
"""

from __future__ import annotations

import math

import torch

from .._util import as_tensor, check_positive, check_real
from .gaussian import GaussianProcess, d_log_snr_via_diffusion

__all__ = ["VPSDE", "SubVPSDE", "CosineVP"]


# ==================================================================== variance preserving family
class _BetaLinear(GaussianProcess):
    r"""Shared closed forms of processes with :math:`\beta(t) = \beta_0 + t(\beta_1 - \beta_0)` and
    :math:`\log\alpha_t = -\tfrac{t^2}{4}(\beta_1 - \beta_0) - \tfrac{t}{2}\beta_0`, :math:`f = -\beta/2`."""

    def __init__(self, beta_min: float, beta_max: float, t_min: float, t_max: float, validate_args):
        beta_min = check_real("beta_min", beta_min, low=0.0, low_open=True)
        beta_max = check_real("beta_max", beta_max, low=0.0, low_open=True)
        if beta_max < beta_min:
            raise ValueError(f"beta_max must be >= beta_min, got beta_min={beta_min}, beta_max={beta_max}")
        check_positive("t_min", t_min)
        self.beta_min = float(beta_min)
        self.beta_max = float(beta_max)
        super().__init__(t_min, t_max, validate_args=validate_args)

    def beta(self, t) -> torch.Tensor:
        """:math:`\\beta(t) = \\beta_0 + t(\\beta_1 - \\beta_0)`."""
        return self.beta_min + as_tensor(t) * (self.beta_max - self.beta_min)

    def log_alpha(self, t) -> torch.Tensor:
        t = as_tensor(t)
        return -0.25 * t**2 * (self.beta_max - self.beta_min) - 0.5 * t * self.beta_min

    def drift_coef(self, t) -> torch.Tensor:
        return -0.5 * self.beta(t)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(beta_min={self.beta_min:g}, beta_max={self.beta_max:g}, "
                f"t_min={self.t_min:g}, t_max={self.t_max:g})")


class VPSDE(_BetaLinear):
    r"""Variance-preserving SDE (DDPM in continuous time), Song et al. 2021, Eq. (11).

    :math:`dx = -\tfrac12\beta(t)x\,dt + \sqrt{\beta(t)}\,dW`, so :math:`\sigma_t^2 = 1 - \alpha_t^2`,
    computed as ``-expm1(2 log alpha)`` to stay accurate at small t.

    Args:
        beta_min, beta_max: :math:`\beta(0)` and :math:`\beta(1)`, positive, ``beta_min <= beta_max``.
        t_min: data time (> 0 so that :math:`\sigma_{t_{min}} > 0`; default 1e-5 as in score_sde).
        t_max: reference time.
    """

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0, *, t_min: float = 1e-5, t_max: float = 1.0,
                 validate_args: bool | None = None):
        super().__init__(beta_min, beta_max, t_min, t_max, validate_args)

    def log_sigma(self, t) -> torch.Tensor:
        return 0.5 * torch.log(-torch.expm1(2.0 * self.log_alpha(t)))

    def diffusion(self, t) -> torch.Tensor:
        return torch.sqrt(self.beta(t))

    d_log_snr = d_log_snr_via_diffusion

    def time_of_log_snr(self, log_snr) -> torch.Tensor:
        # alpha^2 = sigmoid(lambda), and log alpha = -t^2 (b1 - b0)/4 - t b0/2 is a quadratic in t:
        # (b1 - b0)/4 t^2 + b0/2 t + c = 0 with c = log alpha = 0.5 log sigmoid(lambda) = -0.5 softplus(-lambda).
        lam = torch.as_tensor(log_snr, dtype=torch.float64)
        a = 0.25 * (self.beta_max - self.beta_min)
        b = 0.5 * self.beta_min
        c = 0.5 * torch.nn.functional.softplus(-lam)                # = -log alpha >= 0
        if a == 0.0:
            return (c / b).clamp(self.t_min, self.t_max)
        # stable root of a t^2 + b t - c = 0 (t >= 0): t = 2c / (b + sqrt(b^2 + 4ac))
        return (2.0 * c / (b + torch.sqrt(b * b + 4.0 * a * c))).clamp(self.t_min, self.t_max)


class SubVPSDE(_BetaLinear):
    r"""Sub-VP SDE, Song et al. 2021, Eq. (12): same :math:`\alpha_t` as VP, :math:`\sigma_t = 1 - \alpha_t^2`,
    :math:`g(t)^2 = \beta(t)(1 - \alpha_t^4)`."""

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0, *, t_min: float = 1e-5, t_max: float = 1.0,
                 validate_args: bool | None = None):
        super().__init__(beta_min, beta_max, t_min, t_max, validate_args)

    def log_sigma(self, t) -> torch.Tensor:
        return torch.log(-torch.expm1(2.0 * self.log_alpha(t)))

    def diffusion(self, t) -> torch.Tensor:
        t = as_tensor(t)
        return torch.sqrt(self.beta(t) * -torch.expm1(4.0 * self.log_alpha(t)))

    d_log_snr = d_log_snr_via_diffusion


class CosineVP(GaussianProcess):
    r"""Cosine variance-preserving schedule, Nichol & Dhariwal, "Improved DDPM" (ICML 2021), Eq. (17).

    :math:`\alpha_t = \cos(\tfrac{\pi}{2}\tfrac{t+c}{1+c}) / \cos(\tfrac{\pi}{2}\tfrac{c}{1+c})`,
    :math:`\sigma_t = \sqrt{1-\alpha_t^2}`, :math:`f(t) = -\tfrac{\pi}{2(1+c)}\tan(\tfrac{\pi}{2}\tfrac{t+c}{1+c})`,
    :math:`g^2 = -2f`. :math:`\alpha_1 = 0`, so ``t_max`` defaults to 0.999 (finite log-SNR).
    """

    def __init__(self, offset: float = 0.008, *, t_min: float = 1e-5, t_max: float = 0.999,
                 validate_args: bool | None = None):
        check_positive("offset", offset, allow_zero=True)
        check_positive("t_min", t_min)
        if not t_max < 1.0:
            raise ValueError(f"t_max must be < 1 (alpha_1 = 0), got {t_max}")
        self.offset = float(offset)
        self._log_norm = math.log(math.cos(0.5 * math.pi * offset / (1 + offset)))
        self._tan_offset = math.tan(0.5 * math.pi * offset / (1 + offset))
        super().__init__(t_min, t_max, validate_args=validate_args)

    def _angle(self, t) -> torch.Tensor:
        return 0.5 * math.pi * (as_tensor(t) + self.offset) / (1 + self.offset)

    def _co_angle(self, t) -> torch.Tensor:
        r""":math:`\pi/2` minus the angle, from ``1 - t`` (exact in floating point for t >= 1/2)."""
        return 0.5 * math.pi * (1.0 - as_tensor(t)) / (1 + self.offset)

    def log_alpha(self, t) -> torch.Tensor:
        # Two forms, each free of cancellation where it is used (matters in float32):
        # t < 1/2: cos(a0 + d)/cos(a0) = 1 - 2 sin^2(d/2) - tan(a0) sin(d), through log1p (alpha ~ 1);
        # t >= 1/2: cos(angle) = sin(co-angle), which stays relatively accurate as alpha -> 0.
        t = as_tensor(t)
        d = 0.5 * math.pi * t / (1 + self.offset)
        near_zero = torch.log1p(-2.0 * torch.sin(0.5 * d) ** 2 - self._tan_offset * torch.sin(d))
        near_one = torch.log(torch.sin(self._co_angle(t))) - self._log_norm
        return torch.where(t < 0.5, near_zero, near_one)

    def log_sigma(self, t) -> torch.Tensor:
        return 0.5 * torch.log(-torch.expm1(2.0 * self.log_alpha(t)))

    def drift_coef(self, t) -> torch.Tensor:
        t = as_tensor(t)
        slope = torch.where(t < 0.5, torch.tan(self._angle(t)), 1.0 / torch.tan(self._co_angle(t)))
        return -0.5 * math.pi / (1 + self.offset) * slope

    def diffusion(self, t) -> torch.Tensor:
        return torch.sqrt(-2.0 * self.drift_coef(t))

    d_log_snr = d_log_snr_via_diffusion
