r"""Linear Gaussian forward processes (THEORY.md §1).

A :class:`GaussianProcess` is declared by its scale :math:`\alpha_t` and noise level
:math:`\sigma_t` (or their logarithms); everything else is derived:

.. math::

    q(x_t \mid x_0) = \mathcal N(\alpha_t x_0, \sigma_t^2 I), \qquad
    \lambda_t = \log(\alpha_t^2/\sigma_t^2), \qquad
    f(t) = \tfrac{d}{dt}\log\alpha_t, \qquad g(t)^2 = -\sigma_t^2\,\tfrac{d}{dt}\lambda_t .

Derivatives come from forward-mode autograd, the inverse of the log-SNR from bisection, unless a class
defines a closed form (the built-in processes do, and the tests check every closed form against the
generic path). A closed form is bound to the schedule it was derived for: a subclass that redeclares
``alpha``/``log_alpha`` or ``sigma``/``log_sigma`` gets the generic path back for every inherited closed
form that depends on them (:data:`~probdiff.processes.gaussian.DERIVED`), never its parent's formula. :class:`~probdiff.LinearSDE`
goes the other way: declared by :math:`(f, g)`, it solves for :math:`(\alpha, \sigma)` with
torchdiffeq. References: Song et al., "Score-Based Generative Modeling through Stochastic
Differential Equations" (ICLR 2021), §3 and App. B; Kingma et al., "Variational Diffusion Models"
(NeurIPS 2021), §3.
"""

from __future__ import annotations

import math
from typing import Callable

import pyro.distributions as dist
import torch
from torch import nn

from .._util import as_tensor, check_positive, check_positive_int, check_real, expand_like, to_event
from .base import ForwardProcess

__all__ = ["GaussianProcess", "ForwardSDE", "PointMassNormal", "VESDE", "LinearBlend", "as_gaussian", "time_derivative",
           "d_log_snr_via_diffusion", "DECLARED", "DERIVED"]

#: The declared schedule — each method and the half of the schedule it declares.
DECLARED = {"alpha": "alpha", "log_alpha": "alpha", "sigma": "sigma", "log_sigma": "sigma"}

#: Every method with a generic path on :class:`GaussianProcess` that a class may replace by a closed form,
#: and the halves of the declared schedule that closed form depends on.
DERIVED = {
    "alpha": {"alpha"}, "log_alpha": {"alpha"}, "sigma": {"sigma"}, "log_sigma": {"sigma"},
    "log_snr": {"alpha", "sigma"}, "d_log_snr": {"alpha", "sigma"}, "drift_coef": {"alpha"},
    "diffusion": {"alpha", "sigma"}, "alpha_dot": {"alpha"}, "sigma_dot": {"alpha", "sigma"},
    "time_of_log_snr": {"alpha", "sigma"},
}


def as_gaussian(process, name: str = "process", needed_for: str = "") -> "GaussianProcess":
    """``process`` itself if it is a :class:`GaussianProcess`; ``ValueError`` naming ``name`` otherwise."""
    if not isinstance(process, GaussianProcess):
        why = f" ({needed_for})" if needed_for else ""
        raise ValueError(f"{name} must be a GaussianProcess{why}, got {type(process).__name__}")
    return process


def time_derivative(fn: Callable[[torch.Tensor], torch.Tensor], t: torch.Tensor) -> torch.Tensor:
    """Elementwise d fn(t) / dt by forward-mode autograd (works inside ``torch.no_grad``)."""
    t = as_tensor(t).clone(memory_format=torch.contiguous_format)  # jvp rejects expanded (stride-0) inputs
    return torch.func.jvp(fn, (t,), (torch.ones_like(t),))[1]


def _bisect(process: "GaussianProcess", lam: torch.Tensor) -> torch.Tensor:
    r"""Solve :math:`\lambda_t = \lambda` for t in [t_min, t_max] by bisection (λ decreasing in t)."""
    lo = torch.full_like(lam, process.t_min)
    hi = torch.full_like(lam, process.t_max)
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        above = process.log_snr(mid) > lam        # still too little noise: the root lies later
        lo, hi = torch.where(above, mid, lo), torch.where(above, hi, mid)
        if bool(((hi - lo) <= 4 * torch.finfo(lam.dtype).eps * hi.abs().clamp_min(1.0)).all()):
            break
    return 0.5 * (lo + hi)


def d_log_snr_via_diffusion(process: "GaussianProcess", t) -> torch.Tensor:
    r""":math:`\lambda' = -g^2/\sigma^2`, for classes whose ``diffusion`` is a closed form."""
    t = as_tensor(t)
    return -process.diffusion(t) ** 2 / process.sigma(t) ** 2


class GaussianProcess(ForwardProcess):
    r"""A forward process with Gaussian marginals :math:`\mathcal N(\alpha_t x_0, \sigma_t^2 I)`.

    Declare it by overriding ``alpha`` and ``sigma`` (or, for accuracy near the ends of time,
    ``log_alpha`` and ``log_sigma``). Derived quantities, all functions of a time tensor:

    * ``log_snr(t)`` :math:`= \lambda_t = 2(\log\alpha_t - \log\sigma_t)`
    * ``drift_coef(t)`` :math:`= f(t) = \tfrac{d}{dt}\log\alpha_t`
    * ``diffusion(t)`` :math:`= g(t) = \sigma_t\sqrt{-\lambda_t'}`
    * ``alpha_dot``, ``sigma_dot``: :math:`\alpha_t' = f\alpha_t`, :math:`\sigma_t' = \sigma_t(f - \lambda_t'/2)`

    Closed forms: a class may define any method of :data:`~probdiff.processes.gaussian.DERIVED` in closed form. When a subclass
    redeclares half of the schedule (``alpha``/``log_alpha`` or ``sigma``/``log_sigma``), every closed
    form it inherits that depends on that half is replaced by the generic path at class creation
    (``__init_subclass__``), so a subclass never runs its parent's formula for another schedule.

    Transition and posterior use the stable forms (with :math:`r = e^{\lambda_t - \lambda_s} < 1`)

    .. math::

        q(x_t|x_s) = \mathcal N\big(\tfrac{\alpha_t}{\alpha_s} x_s,\; \sigma_t^2(1 - r) I\big),\qquad
        q(x_s|x_t,x_0) = \mathcal N\big(\tfrac{r\alpha_s}{\alpha_t} x_t + \alpha_s(1-r)x_0,\;
        \sigma_s^2(1 - r) I\big).
    """

    #: Halves of the schedule (``"alpha"``, ``"sigma"``) that the class or one of its bases declares.
    _declared: frozenset = frozenset()

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        own = {DECLARED[name] for name in DECLARED if name in cls.__dict__}
        for name, depends in DERIVED.items():
            if name not in cls.__dict__ and own & depends:
                setattr(cls, name, GaussianProcess.__dict__[name])    # back to the generic path
        cls._declared = frozenset(cls._declared | own)

    def __init__(self, t_min: float, t_max: float, *, validate_args: bool | None = None):
        for half in ("alpha", "sigma"):
            if half not in self._declared:
                raise TypeError(f"{type(self).__name__} must declare {half}(t) or log_{half}(t)")
        super().__init__(t_min, t_max, validate_args=validate_args)

    # ---------------------------------------------------------------- declared schedule
    def alpha(self, t) -> torch.Tensor:
        """Signal scale :math:`\\alpha_t`."""
        return torch.exp(self.log_alpha(t))

    def sigma(self, t) -> torch.Tensor:
        """Noise level :math:`\\sigma_t`."""
        return torch.exp(self.log_sigma(t))

    def log_alpha(self, t) -> torch.Tensor:
        """:math:`\\log\\alpha_t` (override for accuracy where :math:`\\alpha_t\\to 0`)."""
        return torch.log(self.alpha(as_tensor(t)))

    def log_sigma(self, t) -> torch.Tensor:
        """:math:`\\log\\sigma_t` (override for accuracy where :math:`\\sigma_t\\to 0`)."""
        return torch.log(self.sigma(as_tensor(t)))

    # ---------------------------------------------------------------- derived schedule
    def log_snr(self, t) -> torch.Tensor:
        """Log signal-to-noise ratio :math:`\\lambda_t = \\log(\\alpha_t^2/\\sigma_t^2)`, decreasing in t."""
        t = as_tensor(t)
        return 2.0 * (self.log_alpha(t) - self.log_sigma(t))

    def d_log_snr(self, t) -> torch.Tensor:
        """:math:`\\lambda_t' = d\\lambda_t/dt` (negative), by forward-mode autograd of ``log_snr``.

        Classes with a closed-form ``diffusion`` use :math:`\\lambda' = -g^2/\\sigma^2` instead.
        """
        return time_derivative(self.log_snr, as_tensor(t))

    def time_of_log_snr(self, log_snr) -> torch.Tensor:
        """The time t with :math:`\\lambda_t` = ``log_snr`` (float64), clipped to ``[t_min, t_max]``.

        Generic path: bisection to float64 resolution (:math:`\\lambda` is strictly decreasing). The
        built-in processes define closed forms; the grids, the time variables and the likelihood use this
        one inverse.
        """
        return _bisect(self, torch.as_tensor(log_snr, dtype=torch.float64)).clamp(self.t_min, self.t_max)

    def drift_coef(self, t) -> torch.Tensor:
        """Drift coefficient :math:`f(t) = d\\log\\alpha_t/dt` of the SDE :math:`dx = f x\\,dt + g\\,dW`."""
        return time_derivative(self.log_alpha, as_tensor(t))

    def diffusion(self, t) -> torch.Tensor:
        """Diffusion coefficient :math:`g(t) = \\sigma_t\\sqrt{-\\lambda_t'}`."""
        t = as_tensor(t)
        return self.sigma(t) * torch.sqrt(-self.d_log_snr(t))

    def alpha_dot(self, t) -> torch.Tensor:
        """:math:`d\\alpha_t/dt = f(t)\\,\\alpha_t`."""
        t = as_tensor(t)
        return self.drift_coef(t) * self.alpha(t)

    def sigma_dot(self, t) -> torch.Tensor:
        """:math:`d\\sigma_t/dt = \\sigma_t\\,(f(t) - \\lambda_t'/2) = \\sigma_t f(t) + g(t)^2/(2\\sigma_t)`."""
        t = as_tensor(t)
        sigma = self.sigma(t)
        return sigma * self.drift_coef(t) + 0.5 * self.diffusion(t) ** 2 / sigma

    # ---------------------------------------------------------------- distributions
    def _normal(self, loc: torch.Tensor, scale: torch.Tensor, event_dims: int):
        kwargs = {} if self._validate else {"validate_args": False}
        # scale 0: a time without noise (LinearBlend(t_min=0) at t = 0, a posterior onto it) is a point mass
        family = PointMassNormal if bool((scale == 0).any()) else dist.Normal
        return to_event(family(loc, scale, **kwargs), event_dims)

    def marginal(self, x0: torch.Tensor, t):
        """q(x_t | x_0) = N(alpha_t x_0, sigma_t^2 I) with batch shape ``(batch,)``."""
        self.check_data("x0", x0)
        t = self.check_time(t, x0)
        loc = expand_like(self.alpha(t), x0) * x0
        scale = expand_like(self.sigma(t), x0).expand_as(loc)
        return self._normal(loc, scale, x0.dim() - 1)

    def transition(self, xs: torch.Tensor, s, t):
        """q(x_t | x_s) = N((alpha_t/alpha_s) x_s, sigma_t^2 (1 - e^{lambda_t - lambda_s}) I)."""
        self.check_data("xs", xs)
        s, t = self.check_times(s, t, xs)
        one_minus_r = -torch.expm1(self.log_snr(t) - self.log_snr(s))
        a = torch.exp(self.log_alpha(t) - self.log_alpha(s))
        loc = expand_like(a, xs) * xs
        scale = expand_like(self.sigma(t) * torch.sqrt(one_minus_r), xs).expand_as(loc)
        return self._normal(loc, scale, xs.dim() - 1)

    def posterior(self, x0: torch.Tensor, xt: torch.Tensor, s, t):
        """q(x_s | x_t, x_0), Gaussian with the mean and variance in the class docstring."""
        self.check_data("x0", x0)
        self.check_data("xt", xt, like=x0)
        s, t = self.check_times(s, t, x0)
        delta = self.log_snr(t) - self.log_snr(s)
        one_minus_r = -torch.expm1(delta)
        # r alpha_s / alpha_t = alpha_t sigma_s^2 / (alpha_s sigma_t^2): this form stays 0 (not NaN) where
        # alpha_t = 0 (linear blend with t_max = 1), where lambda_t = log alpha_t = -inf.
        coef_t = torch.exp(self.log_alpha(t) - self.log_alpha(s) + 2.0 * (self.log_sigma(s) - self.log_sigma(t)))
        coef_0 = self.alpha(s) * one_minus_r
        loc = expand_like(coef_t, xt) * xt + expand_like(coef_0, x0) * x0
        scale = expand_like(self.sigma(s) * torch.sqrt(one_minus_r), x0).expand_as(loc)
        return self._normal(loc, scale, x0.dim() - 1)

    def prior(self, event_shape, *, device=None, dtype=None):
        """The reference N(0, sigma_{t_max}^2 I) with ``batch_shape == ()``."""
        event_shape = torch.Size(event_shape)
        dtype = dtype or torch.get_default_dtype()
        scale = self.sigma(torch.tensor(self.t_max, dtype=dtype, device=device))
        loc = torch.zeros(event_shape, dtype=dtype, device=device)
        return self._normal(loc, scale.expand(event_shape), len(event_shape))

    def sample_prior(self, num_samples: int, event_shape, *, generator=None, device=None, dtype=None):
        """Direct draw ``sigma_{t_max} * N(0, I)`` of shape ``(num_samples, *event_shape)``."""
        check_positive_int("num_samples", num_samples)
        dtype = dtype or torch.get_default_dtype()
        z = torch.randn((int(num_samples), *event_shape), generator=generator, device=device, dtype=dtype)
        return self.sigma(torch.tensor(self.t_max, dtype=dtype, device=device)) * z

    # ---------------------------------------------------------------- simulation
    def sde(self) -> "ForwardSDE":
        """A torchsde module simulating ``dx = f(t) x dt + g(t) dW`` on flattened 2-D state."""
        return ForwardSDE(self)


class PointMassNormal(dist.Normal):
    r"""A Normal whose scale may be 0, where it is the point mass :math:`\delta_{loc}`.

    Where ``scale > 0`` everything is the Normal's; where ``scale == 0`` a draw is ``loc`` and ``log_prob``
    is 0 at ``loc`` and :math:`-\infty` elsewhere (the density with respect to the point's counting measure,
    the convention under which Bayes' rule and Chapman–Kolmogorov still hold term by term). Returned by the
    queries of a :class:`GaussianProcess` at a noiseless time, e.g. ``LinearBlend(t_min=0)``'s
    :math:`q(x_0 \mid x_0)` and its posteriors onto :math:`t = 0`.
    """

    arg_constraints = {"loc": dist.constraints.real, "scale": dist.constraints.nonnegative}

    def log_prob(self, value):
        point = self.scale == 0
        safe = torch.where(point, torch.ones_like(self.scale), self.scale)
        normal = dist.Normal(self.loc, safe, validate_args=False).log_prob(value)
        at_point = torch.where(value == self.loc, torch.zeros_like(normal), torch.full_like(normal, -math.inf))
        return torch.where(point, at_point, normal)

    def entropy(self):
        return torch.where(self.scale == 0, torch.full_like(self.scale, -math.inf),
                           dist.Normal(self.loc, torch.where(self.scale == 0, torch.ones_like(self.scale), self.scale),
                                       validate_args=False).entropy())


class ForwardSDE(nn.Module):
    """torchsde view of a Gaussian process' forward SDE (Itô, diagonal noise, state ``(batch, D)``).

    Use as ``torchsde.sdeint(process.sde(), x0.flatten(1), ts)`` with increasing ``ts``.
    """

    noise_type = "diagonal"
    sde_type = "ito"

    def __init__(self, process: GaussianProcess):
        super().__init__()
        self.process = process

    def f(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.process.drift_coef(as_tensor(t, like=y)) * y

    def g(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.process.diffusion(as_tensor(t, like=y)).expand_as(y)


# ==================================================================== variance exploding, linear blend
class VESDE(GaussianProcess):
    r"""Variance-exploding SDE (NCSN / SMLD in continuous time), Song et al. 2021, Eq. (9).

    :math:`\alpha_t = 1`, :math:`\sigma_t = \sigma_{min}(\sigma_{max}/\sigma_{min})^t`,
    :math:`g(t) = \sigma_t\sqrt{2\log(\sigma_{max}/\sigma_{min})}`. The marginal at t = 0 has
    :math:`\sigma_0 = \sigma_{min}` (the convention of score_sde's likelihood code).
    """

    def __init__(self, sigma_min: float = 0.01, sigma_max: float = 50.0, *, t_min: float = 0.0, t_max: float = 1.0,
                 validate_args: bool | None = None):
        sigma_min = check_real("sigma_min", sigma_min, low=0.0, low_open=True)
        sigma_max = check_real("sigma_max", sigma_max, low=0.0, low_open=True)
        check_real("t_min", t_min, low=0.0)  # sigma_t = sigma_min (sigma_max/sigma_min)^t starts at t = 0
        if not sigma_max > sigma_min:
            raise ValueError(f"sigma_max must be > sigma_min, got sigma_min={sigma_min}, sigma_max={sigma_max}")
        self.sigma_min = float(sigma_min)
        self.sigma_max = float(sigma_max)
        self._log_ratio = math.log(sigma_max / sigma_min)
        super().__init__(t_min, t_max, validate_args=validate_args)

    def log_alpha(self, t) -> torch.Tensor:
        return torch.zeros_like(as_tensor(t))

    def log_sigma(self, t) -> torch.Tensor:
        return math.log(self.sigma_min) + as_tensor(t) * self._log_ratio

    def drift_coef(self, t) -> torch.Tensor:
        return torch.zeros_like(as_tensor(t))

    def diffusion(self, t) -> torch.Tensor:
        return self.sigma(t) * math.sqrt(2.0 * self._log_ratio)

    d_log_snr = d_log_snr_via_diffusion

    def time_of_log_snr(self, log_snr) -> torch.Tensor:
        # lambda = -2 log sigma_t = -2 (log sigma_min + t log(sigma_max / sigma_min))
        lam = torch.as_tensor(log_snr, dtype=torch.float64)
        return ((-0.5 * lam - math.log(self.sigma_min)) / self._log_ratio).clamp(self.t_min, self.t_max)

    def __repr__(self) -> str:
        return f"VESDE(sigma_min={self.sigma_min:g}, sigma_max={self.sigma_max:g}, t_min={self.t_min:g}, t_max={self.t_max:g})"


class LinearBlend(GaussianProcess):
    r"""Linear blend :math:`x_t = (1-t)x_0 + t x_1`, :math:`x_1\sim\mathcal N(0, I)`.

    The process of Iterative alpha-(de)Blending (Heitz et al., SIGGRAPH 2023; their
    :math:`\alpha = 1 - t`) and of rectified flow (Liu et al., ICLR 2023): :math:`\alpha_t = 1-t`,
    :math:`\sigma_t = t`, :math:`f = -1/(1-t)`, :math:`g^2 = 2t/(1-t)`. Both ends are singular
    (:math:`\sigma_0 = 0`, :math:`\alpha_1 = 0`), so the default domain is ``[1e-3, 0.999]``;
    ``t_max=1.0`` is allowed (the prior is then exactly N(0, I) but :math:`\lambda_{t_{max}} = -\infty`),
    and so is ``t_min=0.0``: the probability-flow drift and :func:`probdiff.log_likelihood` take their
    limits at :math:`\sigma = 0` (:meth:`GaussianReverse.drift_and_denoised
    <probdiff.reverse.GaussianReverse.drift_and_denoised>`), so that on ``[0, 1]`` the likelihood is
    :math:`\log p_0` itself. Quantities that need a finite log-SNR at both ends (log-SNR time, the
    continuous ELBO's default weighting) still need ``0 < t_min`` and ``t_max < 1``.
    """

    def __init__(self, *, t_min: float = 1e-3, t_max: float = 0.999, validate_args: bool | None = None):
        check_positive("t_min", t_min, allow_zero=True)
        if t_max > 1.0:
            raise ValueError(f"t_max must be <= 1, got {t_max}")
        super().__init__(t_min, t_max, validate_args=validate_args)

    def alpha(self, t) -> torch.Tensor:
        return 1.0 - as_tensor(t)

    def sigma(self, t) -> torch.Tensor:
        return as_tensor(t).clone()

    def log_alpha(self, t) -> torch.Tensor:
        return torch.log1p(-as_tensor(t))

    def log_sigma(self, t) -> torch.Tensor:
        return torch.log(as_tensor(t))

    def drift_coef(self, t) -> torch.Tensor:
        return -1.0 / (1.0 - as_tensor(t))

    def diffusion(self, t) -> torch.Tensor:
        t = as_tensor(t)
        return torch.sqrt(2.0 * t / (1.0 - t))

    def d_log_snr(self, t) -> torch.Tensor:
        r""":math:`\lambda_t' = -2/(t(1-t))`: :math:`-\infty` (not :math:`-g^2/\sigma^2 = 0/0`) at both ends."""
        t = as_tensor(t)
        return -2.0 / (t * (1.0 - t))

    def time_of_log_snr(self, log_snr) -> torch.Tensor:
        # lambda = 2 log((1 - t) / t)  <=>  t = sigmoid(-lambda / 2)
        lam = torch.as_tensor(log_snr, dtype=torch.float64)
        return torch.sigmoid(-0.5 * lam).clamp(self.t_min, self.t_max)

    def alpha_dot(self, t) -> torch.Tensor:
        return torch.full_like(as_tensor(t), -1.0)

    def sigma_dot(self, t) -> torch.Tensor:
        return torch.ones_like(as_tensor(t))
