r"""Evidence lower bounds of Gaussian processes, continuous and discrete time (THEORY.md §4).

With the denoiser :math:`D` of the model and the log-SNR :math:`\lambda_t`, the reverse step of the model is
the forward posterior at the predicted data, :math:`p(x_s|x_t) = q(x_s \mid x_t, x_0 = D(x_t, t))`, and

.. math::

    \log p(x_0) \ge -\mathrm{KL}\big(q(x_{t_{max}}|x_0)\,\|\,p_{ref}\big)
        - \sum_{i} E_{q(x_{t_i}|x_0)} \mathrm{KL}\big(q(x_{t_{i+1}}|x_{t_i}, x_0)\,\|\,p(x_{t_{i+1}}|x_{t_i})\big)
        + E_{q(z|x_0)}\log p(x_0 \mid z_{t_{min}})

on a grid :math:`t_{max} = t_0 > \dots > t_N = t_{min}` (Sohl-Dickstein et al. 2015; Ho et al. 2020, Eq. (5)).
Both posteriors have the variance :math:`\sigma_s^2(1 - e^{\lambda_t - \lambda_s})` and means
:math:`\alpha_s(1 - e^{\lambda_t - \lambda_s})` times :math:`x_0` resp. :math:`D` apart, so each KL is
:math:`\tfrac12(e^{\lambda_s} - e^{\lambda_t})\,\|x_0 - D(x_t, t)\|^2`; as the grid refines the sum tends to

.. math::

    \mathcal L_\infty = \int_{t_{min}}^{t_{max}} -\tfrac12\lambda_t' e^{\lambda_t}\,
        E_\epsilon\|x_0 - D(\alpha_t x_0 + \sigma_t\epsilon, t)\|^2\,dt
      = \int_{\lambda_{t_{max}}}^{\lambda_{t_{min}}} \tfrac12 e^{\lambda}\,E_\epsilon\|x_0 - D\|^2\,d\lambda

(Kingma et al., "Variational Diffusion Models", NeurIPS 2021, Eq. (17), with :math:`SNR' = \lambda' e^\lambda`).
The continuous bound estimates the second form by sampling :math:`\lambda` uniformly
(:class:`~probdiff.LogSNRTime`): the integrand :math:`\tfrac12 e^\lambda\,\mathrm{mmse}(\lambda)` is bounded (it
tends to :math:`D/2` at high SNR for data with a density), whereas uniform :math:`t` (:class:`~probdiff.PhysicalTime`)
weights it by :math:`-\lambda'`, which blows up at the ends of time. With the exact denoiser the
reverse path measure equals the forward one, and the bound is McAllester's likelihood formula:
equality up to the prior's mismatch with :math:`p_{t_{max}}` and the decoder at :math:`t_{min}`
(McAllester, "On the Mathematics of Diffusion Models", 2023).
"""

from __future__ import annotations

import math

import torch
from torch.distributions import kl_divergence

from .._util import check_positive_int, expand_like
from ..placement import Grid
from ..processes.gaussian import GaussianProcess
from ..timevars import LogSNRTime, PhysicalTime, TimeVariable
from .decoders import Decoder, GaussianDecoder
from .elbo import family_elbo

__all__ = ["gaussian_elbo"]

_MAX_ELEMENTS = 2**22  # model inputs evaluated at once (memory budget); the result does not depend on it


# ==================================================================== the bounds
def _check(process, model, x, num_samples, decoder):
    process.check_data("x", x)
    check_positive_int("num_samples", num_samples)
    if not isinstance(decoder, Decoder):
        raise ValueError(f"decoder must be a Decoder (GaussianDecoder() or DiscretizedGaussian(...)), got {decoder!r}")
    decoder.check(x)


def _prior_kl(process, x):
    """KL(q(x_{t_max} | x_0) || p_ref), shape ``(batch,)``, closed form."""
    prior = process.prior(x.shape[1:], device=x.device, dtype=x.dtype)
    return kl_divergence(process.marginal(x, process.t_max), prior)


def _chunks(num: int, per_item: int):
    step = max(1, _MAX_ELEMENTS // max(1, per_item))
    return [(i, min(num, i + step)) for i in range(0, num, step)]


def _control(lam: torch.Tensor) -> torch.Tensor:
    r"""Control-variate coefficient :math:`c(\lambda) = \mathrm{sigmoid}(\lambda)^2`."""
    return torch.sigmoid(lam) ** 2


def _control_integral(lam_lo: float, lam_hi: float) -> float:
    r""":math:`\int_{lam\_lo}^{lam\_hi} \mathrm{sigmoid}(\lambda)^2 d\lambda`, from
    :math:`\tfrac{d}{d\lambda}[\mathrm{softplus} - \mathrm{sigmoid}] = \mathrm{sigmoid}^2`."""
    return float(_antiderivative(torch.tensor(lam_hi, dtype=torch.float64))
                 - _antiderivative(torch.tensor(lam_lo, dtype=torch.float64)))


def _antiderivative(lam: torch.Tensor) -> torch.Tensor:
    r""":math:`F(\lambda) = \mathrm{softplus}(\lambda) - \mathrm{sigmoid}(\lambda)`, 0 at :math:`-\infty`."""
    return torch.nn.functional.softplus(lam) - torch.sigmoid(lam)


def _gaussian_decoder_minus_control(process, dim: int) -> float:
    r"""The Gaussian decoder's term minus the control variate's exact integral, in one finite form.

    :math:`-\tfrac D2(\log 2\pi + 1 - \lambda_{min}) - \tfrac D2[F(\lambda_{min}) - F(\lambda_{max})]
    = -\tfrac D2[\log 2\pi + G(\lambda_{min}) - F(\lambda_{max})]` with
    :math:`G(\lambda) = F(\lambda) - \lambda + 1 = \mathrm{softplus}(-\lambda) + \mathrm{sigmoid}(-\lambda)`.
    Each term alone is infinite where :math:`\sigma_{t_{min}} = 0` (:math:`\lambda_{min} = +\infty`: the
    decoder is a point mass, the control's integral diverges); their sum tends to
    :math:`-\tfrac D2[\log 2\pi - F(\lambda_{max})]`, so ``LinearBlend(t_min=0)`` gets a finite bound.
    """
    ends = process.log_snr(torch.tensor([process.t_max, process.t_min], dtype=torch.float64))
    g = torch.nn.functional.softplus(-ends[1]) + torch.sigmoid(-ends[1])
    return float(-0.5 * dim * (math.log(2 * math.pi) + g - _antiderivative(ends[0])))


def _open_interval(process, t: torch.Tensor, dtype) -> torch.Tensor:
    """Draws moved off an end of time where the weight is infinite (``LinearBlend`` on [0, 1] with
    :class:`~probdiff.PhysicalTime`), by the data dtype's resolution: a set of probability about
    ``eps`` of a bounded integrand, so no visible bias, and no ``inf * 0``."""
    eps = torch.finfo(dtype).eps * (process.t_max - process.t_min)
    return t.clamp(process.t_min + eps, process.t_max - eps)


def _diffusion_loss(process, model, x, t, weight, generator, exact: bool = True):
    r"""Monte-Carlo :math:`\mathcal L_\infty` per data point, with a control variate.

    Per draw: :math:`w\,\tfrac12\big(e^{\lambda}\|x_0 - D(x_t, t)\|^2 - c(\lambda)\|\epsilon\|^2\big)`,
    plus the exact expectation of the subtracted term, :math:`\tfrac D2\int c(\lambda)\,d\lambda`.
    The control variate is the loss of a standard-normal data law's denoiser at high SNR, where
    :math:`e^\lambda\|x_0 - D\|^2 \approx \|\epsilon\|^2` for any data with a density; it removes the
    :math:`\chi^2_D` noise that otherwise dominates the estimate (its expectation is exact, so the
    estimator stays unbiased for every model). ``t``, ``weight``: float64 ``(K, B)``. ``exact=False``
    leaves the subtracted term's integral out (the caller adds it, combined with the decoder's term).
    """
    k, b = t.shape
    total = torch.zeros(b, dtype=x.dtype, device=x.device)
    for lo, hi in _chunks(k, x.numel()):
        tt = t[lo:hi].reshape(-1)
        lam = process.log_snr(tt)
        w = (0.5 * weight[lo:hi].reshape(-1)).to(x.dtype)
        snr, ctrl = torch.exp(lam).to(x.dtype), _control(lam).to(x.dtype)
        tt = tt.to(x.dtype)
        x0 = x.unsqueeze(0).expand(hi - lo, *x.shape).reshape(-1, *x.shape[1:])
        eps = torch.randn(x0.shape, generator=generator, dtype=x.dtype, device=x.device)
        xt = expand_like(process.alpha(tt), x0) * x0 + expand_like(process.sigma(tt), x0) * eps
        err = (x0 - model.denoise(xt, tt)).reshape(x0.shape[0], -1).pow(2).sum(1)
        noise = eps.reshape(x0.shape[0], -1).pow(2).sum(1)
        total = total + (w * (snr * err - ctrl * noise)).reshape(hi - lo, b).sum(0)
    if not exact:
        return total / k
    ends = process.log_snr(torch.tensor([process.t_max, process.t_min], dtype=torch.float64))
    return total / k + 0.5 * x[0].numel() * _control_integral(float(ends[0]), float(ends[1]))


def _grid_loss(process, model, x, ts, num_samples, generator):
    r""":math:`\sum_i E\,\mathrm{KL}(q(x_{t_{i+1}}|x_{t_i},x_0)\,\|\,q(x_{t_{i+1}}|x_{t_i},D))`, all steps batched."""
    n, b = ts.shape[0] - 1, x.shape[0]
    t_all = ts[:-1].reshape(n, 1, 1).expand(n, num_samples, b).reshape(-1, b)
    s_all = ts[1:].reshape(n, 1, 1).expand(n, num_samples, b).reshape(-1, b)
    total = torch.zeros(b, dtype=x.dtype, device=x.device)
    for lo, hi in _chunks(t_all.shape[0], x.numel()):
        t, s = t_all[lo:hi].reshape(-1).to(x.dtype), s_all[lo:hi].reshape(-1).to(x.dtype)
        x0 = x.unsqueeze(0).expand(hi - lo, *x.shape).reshape(-1, *x.shape[1:])
        xt = _draw(process, x0, t, generator)
        d = model.denoise(xt, t)
        kl = kl_divergence(process.posterior(x0, xt, s, t), process.posterior(d, xt, s, t))
        total = total + kl.reshape(hi - lo, b).sum(0)
    return total / num_samples


def _draw(process, x0, t, generator):
    """:math:`x_t = \\alpha_t x_0 + \\sigma_t\\epsilon` (reparameterised, from ``generator``)."""
    eps = torch.randn(x0.shape, generator=generator, dtype=x0.dtype, device=x0.device)
    return expand_like(process.alpha(t), x0) * x0 + expand_like(process.sigma(t), x0) * eps


@family_elbo.register
def gaussian_elbo(process: GaussianProcess, model, x: torch.Tensor, *, grid: Grid | None = None,
                  num_samples: int = 1, generator: torch.Generator | None = None,
                  decoder: Decoder = GaussianDecoder(), sampler: TimeVariable | None = None) -> torch.Tensor:
    r"""Per-sample lower bound on :math:`\log p(x_0)` in nats, shape ``(batch,)`` (see the module docstring).

    Unbiased Monte-Carlo estimate, differentiable in the model's parameters (train on its negation).

    Args:
        process: a :class:`~probdiff.GaussianProcess`.
        model: a Gaussian model (``denoise``), any parameterisation, or an oracle.
        x: data :math:`x_0`, ``(batch, *event)``; bin centres of the decoder's quantisation for
            :class:`~probdiff.likelihood.decoders.DiscretizedGaussian`.
        grid: ``None`` for the continuous-time bound, or a :class:`~probdiff.grids.Grid` for the
            discrete-time bound on ``grid.times(process)``.
        num_samples: Monte-Carlo draws per data point (of :math:`t` and :math:`\epsilon` in continuous
            time; of :math:`x_{t_i}` per grid step in discrete time).
        generator: source of randomness.
        decoder: :class:`~probdiff.likelihood.decoders.GaussianDecoder` (continuous data, default) or
            :class:`~probdiff.likelihood.decoders.DiscretizedGaussian` (``K``-level data: a bound on a
            log-probability, lossless bits/dim with :func:`probdiff.bits_per_dim` without ``levels``).
        sampler: the :class:`~probdiff.TimeVariable` in which :math:`t` is drawn uniformly for the continuous
            bound: :class:`~probdiff.LogSNRTime` or :class:`~probdiff.PhysicalTime`. Default ``None``:
            :class:`~probdiff.LogSNRTime` where the log-SNR is finite at both ends, else
            :class:`~probdiff.PhysicalTime` (``LinearBlend(t_min=0, t_max=1)``, whose log-SNR runs over the
            whole real line).

    *Exact endpoints.* ``LinearBlend(t_min=0, t_max=1)`` has :math:`\sigma_{t_{min}} = 0` and
    :math:`\alpha_{t_{max}} = 0`. The prior KL is then 0, and the Gaussian decoder's term and the control
    variate's integral, each infinite, are added in one finite form
    (:func:`_gaussian_decoder_minus_control`); the integrand is bounded in :math:`t` at both ends, and draws
    of :math:`t` are kept a dtype's resolution inside the interval. The bound is then on :math:`\log p_0`
    itself. A noiseless data end needs the Gaussian decoder and the continuous bound: the discrete-time
    bound's last step and a discretised decoder would be point masses there (``ValueError``).
    """
    _check(process, model, x, num_samples, decoder)
    num_samples = int(num_samples)
    noiseless = not bool(process.sigma(torch.tensor(process.t_min, dtype=torch.float64)) > 0)
    if noiseless and (grid is not None or not isinstance(decoder, GaussianDecoder)):
        raise ValueError(f"{process!r} has no noise at t_min (sigma = 0): its ELBO needs grid=None (the continuous "
                         f"bound) and the GaussianDecoder, got grid={grid!r}, decoder={decoder!r}; the discrete-time "
                         "bound's last step would be a point mass")
    kl_prior = _prior_kl(process, x)
    if grid is None:
        ends = process.log_snr(torch.tensor([process.t_min, process.t_max], dtype=torch.float64))
        finite_ends = bool(torch.isfinite(ends).all())
        if sampler is None:
            sampler = LogSNRTime() if finite_ends else PhysicalTime()
        if not isinstance(sampler, TimeVariable):
            raise ValueError(f"sampler must be a TimeVariable (LogSNRTime() or PhysicalTime()), got {sampler!r}")
        t, _ = sampler.sample(process, (num_samples, x.shape[0]), generator=generator, device=x.device,
                              stratified=True)
        if not finite_ends:
            t = _open_interval(process, t, x.dtype)
        weight = sampler.weight(process, t)
        if isinstance(decoder, GaussianDecoder):
            loss = _diffusion_loss(process, model, x, t, weight, generator, exact=False)
            return _gaussian_decoder_minus_control(process, x[0].numel()) - kl_prior - loss
        loss = _diffusion_loss(process, model, x, t, weight, generator)
    else:
        if not isinstance(grid, Grid):
            raise ValueError(f"grid must be None (continuous time) or a Grid, got {grid!r}")
        ts = grid.times(process).to(x.device)
        loss = _grid_loss(process, model, x, ts, num_samples, generator)
    recon = decoder.expected_log_prob(process, x, num_samples=num_samples, generator=generator)
    return recon - kl_prior - loss
