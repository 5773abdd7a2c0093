r"""The process of EDM and k-diffusion: :math:`\alpha_t = 1`, :math:`\sigma_t = t` (Karras et al. 2022).

Karras, Aittala, Aila & Laine, "Elucidating the Design Space of Diffusion-Based Generative Models"
(NeurIPS 2022), §2 and Table 1: with :math:`s(t) = 1` and :math:`\sigma(t) = t` the probability-flow ODE is
:math:`dx/dt = (x - D(x; t))/t`, which is what their Algorithm 1 integrates.
"""

from __future__ import annotations

import torch

from .._util import as_tensor, check_positive
from .gaussian import GaussianProcess, d_log_snr_via_diffusion

__all__ = ["EDM"]


class EDM(GaussianProcess):
    r"""Variance-exploding process with the noise level as time: :math:`\alpha_t = 1`, :math:`\sigma_t = t`.

    :math:`f = 0`, :math:`g(t) = \sqrt{2t}` (:math:`g^2 = d\sigma^2/dt`), :math:`\lambda_t = -2\log t`.
    Time runs over ``[sigma_min, sigma_max]`` (EDM's defaults 0.002 and 80): the data sit at ``sigma_min``.
    A denoiser ``net(x, sigma)`` (EDM, EDM2, k-diffusion) is a :class:`~probdiff.DenoiserModel` of this
    process as it is (:func:`probdiff.integrations.edm.wrap`), and ``pd.grids.Karras(steps)`` gives EDM's
    time steps :math:`t_{i<N}` (Eq. (5)). EDM's Algorithm 1 ends with an Euler step from
    :math:`\sigma_{min}` to 0, which lands on :math:`D(x; \sigma_{min})`: the model's ``denoise`` at
    ``t_min`` after sampling.
    """

    def __init__(self, sigma_min: float = 0.002, sigma_max: float = 80.0, *, validate_args: bool | None = None):
        check_positive("sigma_min", sigma_min)
        check_positive("sigma_max", sigma_max)
        if not sigma_max > sigma_min:
            raise ValueError(f"sigma_max must be > sigma_min, got sigma_min={sigma_min}, sigma_max={sigma_max}")
        self.sigma_min, self.sigma_max = float(sigma_min), float(sigma_max)
        super().__init__(self.sigma_min, self.sigma_max, validate_args=validate_args)

    def alpha(self, t) -> torch.Tensor:
        return torch.ones_like(as_tensor(t))

    def sigma(self, t) -> torch.Tensor:
        return as_tensor(t).clone()

    def log_alpha(self, t) -> torch.Tensor:
        return torch.zeros_like(as_tensor(t))

    def log_sigma(self, t) -> torch.Tensor:
        return torch.log(as_tensor(t))

    def drift_coef(self, t) -> torch.Tensor:
        return torch.zeros_like(as_tensor(t))

    def diffusion(self, t) -> torch.Tensor:
        return torch.sqrt(2.0 * as_tensor(t))

    d_log_snr = d_log_snr_via_diffusion

    def alpha_dot(self, t) -> torch.Tensor:
        return torch.zeros_like(as_tensor(t))

    def sigma_dot(self, t) -> torch.Tensor:
        return torch.ones_like(as_tensor(t))

    def time_of_log_snr(self, log_snr) -> torch.Tensor:
        # lambda = -2 log t  <=>  t = exp(-lambda / 2)
        lam = torch.as_tensor(log_snr, dtype=torch.float64)
        return torch.exp(-0.5 * lam).clamp(self.t_min, self.t_max)

    def __repr__(self) -> str:
        return f"EDM(sigma_min={self.sigma_min:g}, sigma_max={self.sigma_max:g})"
