r"""EDM, EDM2 and k-diffusion denoisers as probdiff models; neither EDM's nor k-diffusion's code is needed.

Karras et al., "Elucidating the Design Space of Diffusion-Based Generative Models" (NeurIPS 2022) write every
model as a denoiser :math:`D(x; \sigma)` of :math:`x = y + \sigma n`; that is a :class:`~probdiff.DenoiserModel`
of the process :class:`~probdiff.EDM` (:math:`\alpha_t = 1`, :math:`\sigma_t = t`), with no change of variable:

.. list-table::
   :header-rows: 1

   * - EDM / k-diffusion
     - probdiff
   * - noise level :math:`\sigma`
     - time ``t`` of ``pd.EDM(sigma_min, sigma_max)``
   * - ``net(x, sigma)`` = :math:`D(x;\sigma)`
     - ``DenoiserModel`` (:func:`wrap`)
   * - Karras' sigmas, Eq. (5), :math:`t_i` for :math:`i<N`
     - ``pd.grids.Karras(N - 1, rho)``
   * - Algorithm 1 (Heun)
     - ``pd.solvers.Heun()`` on the probability flow, then ``model.denoise(x, t_min)`` (the final Euler step to :math:`\sigma = 0` lands on :math:`D(x; \sigma_{min})`)
   * - VP epsilon-network (k-diffusion's ``DiscreteEpsDDPMDenoiser``)
     - :func:`wrap_vp_epsilon`
"""

from __future__ import annotations

import torch

from .._util import expand_like
from ..models.gaussian import DenoiserModel
from ..processes.edm import EDM

__all__ = ["wrap", "wrap_vp_epsilon", "VPEpsilonDenoiser"]


def wrap(net, sigma_min: float = 0.002, sigma_max: float = 80.0, **net_kwargs):
    r"""``(process, model)`` for a denoiser called as ``net(x, sigma, **net_kwargs)`` (EDM's ``EDMPrecond``,
    EDM2, a k-diffusion ``Denoiser``): ``pd.EDM(sigma_min, sigma_max)`` and a
    :class:`~probdiff.DenoiserModel` whose time is :math:`\sigma` itself (``sigma`` of shape ``(batch,)``).

    Args:
        net: the denoiser :math:`D(x; \sigma)`.
        sigma_min, sigma_max: the noise range (EDM's defaults 0.002 and 80).
        net_kwargs: passed to every call (e.g. ``class_labels``).
    """
    process = EDM(sigma_min, sigma_max)
    call = net if not net_kwargs else (lambda x, sigma: net(x, sigma, **net_kwargs))
    return process, DenoiserModel(call, process)


class VPEpsilonDenoiser:
    r"""The denoiser of a VP epsilon-network trained on a table :math:`\bar\alpha_k`, in EDM's variables
    (k-diffusion's ``DiscreteEpsDDPMDenoiser``; Karras et al. 2022, Table 1, "VP" column with discrete
    :math:`\sigma_k`).

    With :math:`\sigma_k = \sqrt{(1-\bar\alpha_k)/\bar\alpha_k}`, :math:`x_{VP} = x/\sqrt{1+\sigma^2}` and the
    fractional timestep :math:`k(\sigma)` interpolated *linearly in* :math:`\log\sigma` between the table's
    :math:`\log\sigma_k` (k-diffusion's ``sigma_to_t``; rounded with ``quantize``),

    .. math::

        D(x; \sigma) = x - \sigma\,\epsilon_\theta\big(x/\sqrt{1+\sigma^2},\ k(\sigma)\big).

    Args:
        net: ``net(x, timestep)`` returning epsilon (e.g. ``lambda x, k: unet(x, k).sample``).
        alphas_cumprod: the training table.
        quantize: round the timestep to the nearest training step.
    """

    def __init__(self, net, alphas_cumprod, *, quantize: bool = False):
        abar = torch.as_tensor(alphas_cumprod).detach().to("cpu", torch.float64).flatten()
        if abar.numel() < 2 or not bool(((abar > 0) & (abar < 1)).all()) or not bool((abar[1:] < abar[:-1]).all()):
            raise ValueError("alphas_cumprod must be strictly decreasing inside (0, 1), with at least 2 entries")
        self.net, self.quantize = net, bool(quantize)
        self.log_sigmas = 0.5 * (torch.log1p(-abar) - torch.log(abar))    # increasing in k

    @property
    def sigmas(self) -> torch.Tensor:
        r"""The table's noise levels :math:`\sigma_k`, float64, increasing."""
        return torch.exp(self.log_sigmas)

    def timestep(self, sigma: torch.Tensor) -> torch.Tensor:
        r"""The fractional timestep :math:`k(\sigma)` (linear in :math:`\log\sigma` between steps, clamped)."""
        table = self.log_sigmas.to(sigma.device)
        log_sigma = torch.log(sigma.to(torch.float64)).clamp(float(table[0]), float(table[-1]))
        low = torch.clamp(torch.searchsorted(table, log_sigma.contiguous(), right=True) - 1, 0, table.numel() - 2)
        w = (log_sigma - table[low]) / (table[low + 1] - table[low])
        k = low.to(torch.float64) + w
        return (k.round() if self.quantize else k).to(sigma.dtype)

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        s = expand_like(sigma, x)
        eps = self.net(x / torch.sqrt(1.0 + s * s), self.timestep(sigma))
        return x - s * eps


def wrap_vp_epsilon(net, alphas_cumprod, *, quantize: bool = False):
    r"""``(process, model)`` for a VP epsilon-network in EDM's variables, as k-diffusion wraps it: the
    process is ``pd.EDM(sigma_0, sigma_{N-1})`` over the table's noise range and the model a
    :class:`~probdiff.DenoiserModel` of :class:`VPEpsilonDenoiser`.

    The EDM state is :math:`x = x_{VP}/\sqrt{\bar\alpha}` at :math:`\sigma = \sqrt{(1-\bar\alpha)/\bar\alpha}`;
    at the training steps this model is exactly the VP model of the same network
    (:func:`probdiff.integrations.diffusers.wrap`) after that change of variables.
    """
    den = VPEpsilonDenoiser(net, alphas_cumprod, quantize=quantize)
    sigmas = den.sigmas
    process = EDM(float(sigmas[0]), float(sigmas[-1]))
    return process, DenoiserModel(den, process)
