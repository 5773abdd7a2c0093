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
(THEORY.md §4); they differ only in variance: both are :class:`ELBOWeighting` with :math:`t` drawn
uniformly in a :class:`~probdiff.TimeVariable` (:class:`~probdiff.PhysicalTime`, resp.
:class:`~probdiff.LogSNRTime`). Which space a model predicts in is a question about the model: its
:meth:`~probdiff.GaussianModel.prediction`, :meth:`~probdiff.GaussianModel.target` and
:meth:`~probdiff.GaussianModel.error_scale`, so a new model class plugs in by defining those three.
"""

from __future__ import annotations

import abc
import torch

from .._util import expand_like
from ..lattice import Quantization, truncated_moments
from ..models.base import bind
from ..models.gaussian import GaussianModel
from ..processes.gaussian import GaussianProcess
from ..timevars import LogSNRTime, PhysicalTime, TimeVariable

__all__ = ["Weighting", "Natural", "ELBOWeighting", "LikelihoodWeighting", "ImportanceSampled", "DenoisingScoreMatching"]


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


class ELBOWeighting(Weighting):
    r"""The integrand of the continuous-time ELBO with :math:`t` drawn uniformly in a time variable:
    :math:`w = \tfrac12\,w_u(t)\,e^{\lambda_t}/c_P^2` with :math:`w_u = -\lambda_t'/\pi(t)` the time variable's
    weight (:meth:`~probdiff.TimeVariable.weight`); the expected loss is the diffusion term of the negative
    ELBO in nats, for any time variable.

    Args:
        time: the :class:`~probdiff.TimeVariable` in which :math:`t` is uniform.
    """

    def __init__(self, time: TimeVariable):
        if not isinstance(time, TimeVariable):
            raise ValueError(f"time must be a TimeVariable (PhysicalTime() or LogSNRTime()), got {time!r}")
        self.time = time

    def sample_time(self, process, n, *, generator=None, device=None, dtype=None):
        t, _ = self.time.sample(process, n, generator=generator, device=device)
        return t.to(dtype or torch.get_default_dtype())

    def weight(self, process, t, scale):
        # g^2 (alpha / sigma^2)^2 = -lambda' e^lambda: no sigma^4 to underflow.
        return (0.5 * self.time.weight(process, t)).to(t.dtype) * torch.exp(process.log_snr(t)) / scale**2

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.time!r})"


class LikelihoodWeighting(ELBOWeighting):
    r"""Song et al. (2021)'s likelihood weighting :math:`\lambda(t) = g(t)^2` of the score loss, :math:`t` uniform.

    The weight on the natural-space error is :math:`(t_{max}-t_{min})\,\tfrac{g^2}{2}\,(\alpha_t/\sigma_t^2)^2 /
    c_P^2`; the expected loss is the diffusion term of the negative continuous-time ELBO, in nats.
    """

    def __init__(self):
        super().__init__(PhysicalTime())

    def __repr__(self) -> str:
        return "LikelihoodWeighting()"


class ImportanceSampled(ELBOWeighting):
    r"""The ELBO integrand with :math:`t` drawn uniformly in log-SNR, :math:`\pi(t) \propto -\lambda_t'`.

    :math:`t = \lambda^{-1}(u)` by :meth:`~probdiff.GaussianProcess.time_of_log_snr`. The weight is
    :math:`\tfrac{\lambda_{t_{min}}-\lambda_{t_{max}}}{2}\,(\alpha_t/\sigma_t)^2 / c_P^2`, which for an epsilon
    model is a constant: the variance-reduced estimator of Song et al. (2021), §5.
    """

    def __init__(self):
        super().__init__(LogSNRTime())

    def __repr__(self) -> str:
        return "ImportanceSampled()"


# ==================================================================== the loss
class DenoisingScoreMatching:
    r"""Denoising score matching (Vincent 2011, "A Connection Between Score Matching and Denoising
    Autoencoders") for any Gaussian process and model parameterisation.

    ``loss(model, x0, generator=None)`` draws :math:`t \sim \pi`, :math:`\epsilon \sim N(0, I)`, forms
    :math:`x_t = \alpha_t x_0 + \sigma_t\epsilon` and returns the per-sample loss
    :math:`w(t)\|P_\theta(x_t,t) - P^\star\|^2` of shape ``(batch,)`` (average it for training).

    **Dequantised data** (``quantization=``): when :math:`x_0 = e_n + w u` is the uniform dequantisation of
    level :math:`n` on a lattice (:class:`probdiff.Quantization`), the clean target :math:`x_0`
    is replaced by its conditional mean given :math:`x_t` and the level,
    :math:`\bar x_0 = E[x_0 \mid x_t, n]` — per coordinate the mean of :math:`N(x_t/\alpha_t,
    \sigma_t^2/\alpha_t^2)` truncated to bin :math:`n` (:func:`probdiff.lattice.bin_posterior`) — and
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
        bind(self.process, model, entry="DenoisingScoreMatching")
        self.process.check_data("x0", x0)
        t = self.weighting.sample_time(self.process, x0.shape[0], generator=generator, device=x0.device,
                                       dtype=x0.dtype)
        eps = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
        return self.evaluate(model, x0, t, eps)

    def evaluate(self, model, x0: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """The per-sample loss at given times ``t`` ``(batch,)`` and noise ``eps`` (shaped like ``x0``)."""
        p = self.process
        alpha, sigma = expand_like(p.alpha(t), x0), expand_like(p.sigma(t), x0)
        xt = alpha * x0 + sigma * eps
        if self.quantization is not None:
            x0, eps = self._within_bin_mean(x0, xt, alpha, sigma)
        err = model.prediction(xt, t) - model.target(x0, eps, t)
        return self.weighting.weight(p, t, model.error_scale(t)) * err.pow(2).flatten(1).sum(1)

    def _within_bin_mean(self, x0, xt, alpha, sigma):
        r""":math:`(\bar x_0, \bar\epsilon)`: the truncated-normal mean of ``x0`` in its own bin given ``xt``."""
        q = self.quantization
        n = torch.clamp(torch.floor((x0.double() - q.lo) / q.width), 0, q.levels - 1)
        lo = q.lo + q.width * n
        m, s = xt.double() / alpha.double(), sigma.double() / alpha.double()
        x_bar = truncated_moments(lo, lo + q.width, m, s)[1].to(x0.dtype)
        return x_bar, (xt - alpha * x_bar) / sigma

    def __repr__(self) -> str:
        extra = "" if self.quantization is None else f", quantization={self.quantization!r}"
        return f"DenoisingScoreMatching({self.process!r}, weighting={self.weighting!r}{extra})"
