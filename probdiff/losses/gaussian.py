r"""Denoising score matching for Gaussian processes, in any model parameterisation (THEORY.md §1, §4).

With :math:`x_t = \alpha_t x_0 + \sigma_t\epsilon`, every parameterisation's regression target is a
function of :math:`(x_0, \epsilon)` and its error is a multiple of the denoiser's error
:math:`e_D = D_\theta(x_t, t) - x_0`:

==============  =====================================  ====================================================
model           target                                 error :math:`= c_P(t)\, e_D`
==============  =====================================  ====================================================
denoiser        :math:`x_0`                            :math:`c = 1`
epsilon         :math:`\epsilon`                       :math:`c = -\alpha_t/\sigma_t`
score           :math:`-\epsilon/\sigma_t`             :math:`c = \alpha_t/\sigma_t^2`
velocity        :math:`\alpha_t' x_0 + \sigma_t'\epsilon`  :math:`c = \alpha_t\lambda_t'/2`
==============  =====================================  ====================================================

(velocity: :math:`\alpha' - \sigma'\alpha/\sigma = \alpha\lambda'/2` because :math:`\sigma'/\sigma = f - \lambda'/2`).
The loss is the squared error in the model's *natural* space, summed over the event dimensions,

.. math:: \ell(x_0) = w(t)\,\|P_\theta(x_t, t) - P^\star(x_0, \epsilon, t)\|^2,\qquad t \sim \pi,

and a :class:`Weighting` object chooses :math:`\pi` and :math:`w`:

* :class:`Natural` — :math:`t \sim U[t_{min}, t_{max}]`, :math:`w = 1` (Ho et al. 2020's "simple" loss for
  epsilon, Karras et al. 2022 before their :math:`\lambda(\sigma)`);
* :class:`LikelihoodWeighting` — Song, Durkan, Murray, Ermon, "Maximum Likelihood Training of Score-Based
  Diffusion Models" (NeurIPS 2021), Thm. 1: weight :math:`g(t)^2/2` on the *score* error, i.e.
  :math:`w = (t_{max}-t_{min})\,g^2/2\cdot(c_{score}/c_P)^2`, :math:`t` uniform;
* :class:`ImportanceSampled` — the same integrand with :math:`t` drawn with density
  :math:`\pi(t)\propto g^2/\sigma^2 = -\lambda_t'` (Song et al. 2021, §5; uniform in log-SNR, Kingma et
  al. 2021, "Variational Diffusion Models", Eq. 17), so that
  :math:`w = \tfrac{\lambda_{t_{min}} - \lambda_{t_{max}}}{2}\,(c_\epsilon/c_P)^2`.

Since :math:`\tfrac{g^2}{2}\|e_s\|^2 = -\tfrac{\lambda'}{2}e^{\lambda}\|e_D\|^2`, both likelihood
weightings estimate, without bias, the diffusion term of the continuous-time negative ELBO in nats
(THEORY.md §4); they differ only in variance. Which model class is which parameterisation is a
registry (:data:`PARAMETERISATIONS`), so a new model class plugs in with one registration.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Callable

import torch

from .._registry import Registry
from ..models.gaussian import DenoiserModel, EpsilonModel, GaussianModel, ScoreModel, VelocityModel
from ..processes.gaussian import GaussianProcess, _expand

__all__ = [
    "Parameterisation",
    "PARAMETERISATIONS",
    "Weighting",
    "Natural",
    "LikelihoodWeighting",
    "ImportanceSampled",
    "DenoisingScoreMatching",
]


# ==================================================================== parameterisations
@dataclass(frozen=True)
class Parameterisation:
    """How a model class is trained: its prediction, its target, and its error scale :math:`c_P(t)`.

    Attributes:
        predict: ``predict(model, x_t, t)`` -> the model's native output.
        target: ``target(process, x0, eps, t)`` -> the regression target (``t`` of shape ``(batch,)``).
        scale: ``scale(process, t)`` -> :math:`c_P(t)` of shape ``(batch,)`` with error ``= c_P e_D``.
    """

    predict: Callable
    target: Callable
    scale: Callable


#: Registry: model class -> :class:`Parameterisation` (looked up along the model's MRO).
PARAMETERISATIONS = Registry("parameterisation")


def _register(model_type, predict, target, scale) -> None:
    PARAMETERISATIONS.register(model_type)(Parameterisation(predict, target, scale))


# Any GaussianModel (the oracles included) is trained in denoiser space unless it says otherwise.
_register(GaussianModel, lambda m, x, t: m.denoise(x, t), lambda p, x0, e, t: x0,
          lambda p, t: torch.ones_like(t))
_register(DenoiserModel, lambda m, x, t: m.denoise(x, t), lambda p, x0, e, t: x0,
          lambda p, t: torch.ones_like(t))
_register(EpsilonModel, lambda m, x, t: m.epsilon(x, t), lambda p, x0, e, t: e,
          lambda p, t: -p.alpha(t) / p.sigma(t))
_register(ScoreModel, lambda m, x, t: m.score(x, t), lambda p, x0, e, t: -e / _expand(p.sigma(t), e),
          lambda p, t: p.alpha(t) / p.sigma(t) ** 2)
_register(VelocityModel, lambda m, x, t: m.velocity(x, t),
          lambda p, x0, e, t: _expand(p.alpha_dot(t), x0) * x0 + _expand(p.sigma_dot(t), e) * e,
          lambda p, t: 0.5 * p.alpha(t) * p.d_log_snr(t))


# ==================================================================== weightings
class Weighting(abc.ABC):
    """Abstract weighting: how ``t`` is drawn and the weight on the natural-space squared error."""

    @abc.abstractmethod
    def sample_time(self, process: GaussianProcess, n: int, *, generator=None, device=None,
                    dtype=None) -> torch.Tensor:
        """``n`` times in ``[t_min, t_max]`` drawn from the proposal :math:`\\pi`."""

    @abc.abstractmethod
    def weight(self, process: GaussianProcess, t: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        """Weight :math:`w(t)` of shape ``(batch,)`` given the parameterisation's :math:`c_P(t)`."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def _uniform(process, n, generator, device, dtype) -> torch.Tensor:
    u = torch.rand(n, generator=generator, device=device, dtype=dtype)
    return process.t_min + (process.t_max - process.t_min) * u


class Natural(Weighting):
    """:math:`t \\sim U[t_{min}, t_{max}]`, :math:`w = 1`: plain regression in the model's own space."""

    def sample_time(self, process, n, *, generator=None, device=None, dtype=None):
        return _uniform(process, n, generator, device, dtype)

    def weight(self, process, t, scale):
        return torch.ones_like(t)


class LikelihoodWeighting(Weighting):
    r"""Song et al. (2021)'s likelihood weighting :math:`\lambda(t) = g(t)^2` of the score loss.

    With :math:`t` uniform the weight on the natural-space error is
    :math:`(t_{max}-t_{min})\,\tfrac{g^2}{2}\,(\alpha_t/\sigma_t^2)^2 / c_P^2`; the expected loss is the
    diffusion term of the negative continuous-time ELBO, in nats.
    """

    def sample_time(self, process, n, *, generator=None, device=None, dtype=None):
        return _uniform(process, n, generator, device, dtype)

    def weight(self, process, t, scale):
        # g^2 = -lambda' sigma^2, so g^2 (alpha / sigma^2)^2 = -lambda' e^lambda: no sigma^4 to underflow.
        density = -0.5 * process.d_log_snr(t) * torch.exp(process.log_snr(t))
        return (process.t_max - process.t_min) * density / scale**2


class ImportanceSampled(Weighting):
    r"""The ELBO integrand with :math:`t` drawn uniformly in log-SNR, :math:`\pi(t) \propto -\lambda_t'`.

    :math:`t = \lambda^{-1}(u)`, :math:`u \sim U[\lambda_{t_{max}}, \lambda_{t_{min}}]`, inverted by
    :func:`probdiff.grids.gaussian.time_of_log_snr` (closed forms where registered, else bisection). The
    weight is :math:`\tfrac{\lambda_{t_{min}}-\lambda_{t_{max}}}{2}\,(\alpha_t/\sigma_t)^2 / c_P^2`, which for
    an epsilon model is a constant: the variance-reduced estimator of Song et al. (2021), §5.
    """

    @staticmethod
    def _range(process, like: torch.Tensor):
        ends = torch.tensor([process.t_min, process.t_max], dtype=torch.float64, device=like.device)
        lam = process.log_snr(ends)
        if not bool(torch.isfinite(lam).all()):
            raise ValueError(f"ImportanceSampled needs a finite log-SNR on [t_min, t_max]; {process!r} has "
                             f"log_snr(t_min), log_snr(t_max) = {lam.tolist()} (lower t_max or raise t_min)")
        return lam[0], lam[1]

    def sample_time(self, process, n, *, generator=None, device=None, dtype=None):
        from ..grids.gaussian import time_of_log_snr

        u = torch.rand(n, generator=generator, device=device, dtype=torch.float64)
        lam_hi, lam_lo = self._range(process, u)
        return time_of_log_snr(process, lam_lo + (lam_hi - lam_lo) * u).to(dtype or torch.get_default_dtype())

    def weight(self, process, t, scale):
        lam_hi, lam_lo = self._range(process, t)
        return (0.5 * (lam_hi - lam_lo)).to(t.dtype) * torch.exp(process.log_snr(t)) / scale**2


# ==================================================================== the loss
class DenoisingScoreMatching:
    r"""Denoising score matching (Vincent 2011, "A Connection Between Score Matching and Denoising
    Autoencoders") for any Gaussian process and model parameterisation.

    ``loss(model, x0, generator=None)`` draws :math:`t \sim \pi`, :math:`\epsilon \sim N(0, I)`, forms
    :math:`x_t = \alpha_t x_0 + \sigma_t\epsilon` and returns the per-sample loss
    :math:`w(t)\|P_\theta(x_t,t) - P^\star\|^2` of shape ``(batch,)`` (average it for training).

    **Dequantised data** (``quantization=``): when :math:`x_0 = e_n + w u` is the uniform dequantisation of
    level :math:`n` on a lattice (:class:`probdiff.likelihood.Quantization`), the clean target :math:`x_0`
    is replaced by its conditional mean given :math:`x_t` and the level,
    :math:`\bar x_0 = E[x_0 \mid x_t, n]` — per coordinate the mean of :math:`N(x_t/\alpha_t,
    \sigma_t^2/\alpha_t^2)` truncated to bin :math:`n` (:func:`probdiff.nn.lattice.bin_posterior`) — and
    :math:`\epsilon` by :math:`\bar\epsilon = (x_t - \alpha_t\bar x_0)/\sigma_t`. Every target is linear in
    :math:`(x_0, \epsilon)` and :math:`E[x_0\mid x_t] = E[\bar x_0\mid x_t]`, so the minimiser and the
    expected gradient are unchanged (Rao–Blackwell); what goes is the within-bin variance of the
    dequantisation noise, which dominates the ELBO integrand at noise levels below the bin width. The loss
    value then estimates the diffusion term of the negative ELBO *minus* a constant (the within-bin
    posterior variance, weighted), not the term itself.

    Args:
        process: the :class:`~probdiff.GaussianProcess`.
        weighting: a :class:`Weighting` (default :class:`Natural`).
        quantization: the lattice of uniformly dequantised training data (``None``: targets ``x0`` as given).
    """

    def __init__(self, process: GaussianProcess, weighting: Weighting | None = None, *, quantization=None):
        if not isinstance(process, GaussianProcess):
            raise ValueError(f"process must be a GaussianProcess, got {type(process).__name__}")
        weighting = Natural() if weighting is None else weighting
        if not isinstance(weighting, Weighting):
            raise ValueError(f"weighting must be a probdiff.losses Weighting (Natural(), LikelihoodWeighting(), "
                             f"ImportanceSampled()), got {type(weighting).__name__}")
        if quantization is not None:
            from ..likelihood.bpd import Quantization

            if not isinstance(quantization, Quantization):
                raise ValueError(f"quantization must be a probdiff.likelihood.Quantization or None, "
                                 f"got {type(quantization).__name__}")
        self.process = process
        self.weighting = weighting
        self.quantization = quantization

    def __call__(self, model, x0: torch.Tensor, *, generator: torch.Generator | None = None) -> torch.Tensor:
        if not isinstance(model, GaussianModel):
            raise ValueError(f"model must be a GaussianModel (DenoiserModel, EpsilonModel, ScoreModel, "
                             f"VelocityModel), got {type(model).__name__}")
        if model.process is not self.process:
            raise ValueError("model.process must be the loss' process")
        self.process._check_data("x0", x0)
        t = self.weighting.sample_time(self.process, x0.shape[0], generator=generator, device=x0.device,
                                       dtype=x0.dtype)
        eps = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
        return self.evaluate(model, x0, t, eps)

    def evaluate(self, model, x0: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """The per-sample loss at given times ``t`` ``(batch,)`` and noise ``eps`` (shaped like ``x0``)."""
        p = self.process
        par = PARAMETERISATIONS.lookup(model)
        alpha, sigma = _expand(p.alpha(t), x0), _expand(p.sigma(t), x0)
        xt = alpha * x0 + sigma * eps
        if self.quantization is not None:
            x0, eps = self._within_bin_mean(x0, xt, alpha, sigma)
        err = par.predict(model, xt, t) - par.target(p, x0, eps, t)
        return self.weighting.weight(p, t, par.scale(p, t)) * err.pow(2).flatten(1).sum(1)

    def _within_bin_mean(self, x0, xt, alpha, sigma):
        r""":math:`(\bar x_0, \bar\epsilon)`: the truncated-normal mean of ``x0`` in its own bin given ``xt``."""
        from ..nn.lattice import _truncated_moments

        q = self.quantization
        n = torch.clamp(torch.floor((x0.double() - q.lo) / q.width), 0, q.levels - 1)
        lo = q.lo + q.width * n
        m, s = xt.double() / alpha.double(), sigma.double() / alpha.double()
        x_bar = _truncated_moments(lo, lo + q.width, m, s)[1].to(x0.dtype)
        return x_bar, (xt - alpha * x_bar) / sigma

    def __repr__(self) -> str:
        extra = "" if self.quantization is None else f", quantization={self.quantization!r}"
        return f"DenoisingScoreMatching({self.process!r}, weighting={self.weighting!r}{extra})"
