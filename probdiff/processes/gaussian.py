r"""Linear Gaussian forward processes (THEORY.md §1).

A :class:`GaussianProcess` is declared by its scale :math:`\alpha_t` and noise level
:math:`\sigma_t` (or their logarithms); everything else is derived:

.. math::

    q(x_t \mid x_0) = \mathcal N(\alpha_t x_0, \sigma_t^2 I), \qquad
    \lambda_t = \log(\alpha_t^2/\sigma_t^2), \qquad
    f(t) = \tfrac{d}{dt}\log\alpha_t, \qquad g(t)^2 = -\sigma_t^2\,\tfrac{d}{dt}\lambda_t .

Derivatives come from forward-mode autograd unless a subclass registers a closed form (the built-in
processes do, and the tests check the closed forms against the generic path). :class:`LinearSDE`
goes the other way: declared by :math:`(f, g)`, it solves for :math:`(\alpha, \sigma)` with
torchdiffeq. References: Song et al., "Score-Based Generative Modeling through Stochastic
Differential Equations" (ICLR 2021), §3 and App. B; Kingma et al., "Variational Diffusion Models"
(NeurIPS 2021), §3.
"""

from __future__ import annotations

import math
from typing import Callable

from numpy.polynomial.legendre import leggauss as _leggauss
import pyro.distributions as dist
import torch
from torch import nn

from .._validation import as_tensor, check_positive, check_positive_int
from .base import ForwardProcess, _expand  # noqa: F401  (_expand: re-exported for the Gaussian modules)

__all__ = ["GaussianProcess", "VPSDE", "SubVPSDE", "VESDE", "CosineVP", "LinearBlend", "LinearSDE"]


# Gauss–Legendre nodes and weights mapped to [0, 1] (8 points, exact for polynomials of degree 15).
_GL_NODES, _GL_WEIGHTS = _leggauss(8)
_GAUSS_LEGENDRE_8 = (((_GL_NODES + 1.0) / 2.0).tolist(), (_GL_WEIGHTS / 2.0).tolist())


def _time_derivative(fn: Callable[[torch.Tensor], torch.Tensor], t: torch.Tensor) -> torch.Tensor:
    """Elementwise d fn(t) / dt by forward-mode autograd (works inside ``torch.no_grad``)."""
    t = as_tensor(t).clone(memory_format=torch.contiguous_format)  # jvp rejects expanded (stride-0) inputs
    return torch.func.jvp(fn, (t,), (torch.ones_like(t),))[1]


class GaussianProcess(ForwardProcess):
    r"""A forward process with Gaussian marginals :math:`\mathcal N(\alpha_t x_0, \sigma_t^2 I)`.

    Declare it by overriding ``alpha`` and ``sigma`` (or, for accuracy near the ends of time,
    ``log_alpha`` and ``log_sigma``). Derived quantities, all functions of a time tensor:

    * ``log_snr(t)`` :math:`= \lambda_t = 2(\log\alpha_t - \log\sigma_t)`
    * ``drift_coef(t)`` :math:`= f(t) = \tfrac{d}{dt}\log\alpha_t`
    * ``diffusion(t)`` :math:`= g(t) = \sigma_t\sqrt{-\lambda_t'}`
    * ``alpha_dot``, ``sigma_dot``: :math:`\alpha_t' = f\alpha_t`, :math:`\sigma_t' = \sigma_t(f - \lambda_t'/2)`

    Transition and posterior use the stable forms (with :math:`r = e^{\lambda_t - \lambda_s} < 1`)

    .. math::

        q(x_t|x_s) = \mathcal N\big(\tfrac{\alpha_t}{\alpha_s} x_s,\; \sigma_t^2(1 - r) I\big),\qquad
        q(x_s|x_t,x_0) = \mathcal N\big(\tfrac{r\alpha_s}{\alpha_t} x_t + \alpha_s(1-r)x_0,\;
        \sigma_s^2(1 - r) I\big).
    """

    def __init__(self, t_min: float, t_max: float, *, validate_args: bool | None = None):
        cls = type(self)
        if cls.alpha is GaussianProcess.alpha and cls.log_alpha is GaussianProcess.log_alpha:
            raise TypeError(f"{cls.__name__} must declare alpha(t) or log_alpha(t)")
        if cls.sigma is GaussianProcess.sigma and cls.log_sigma is GaussianProcess.log_sigma:
            raise TypeError(f"{cls.__name__} must declare sigma(t) or log_sigma(t)")
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
        """:math:`\\lambda_t' = d\\lambda_t/dt` (negative).

        From a registered closed-form ``diffusion`` when the subclass has one
        (:math:`\\lambda' = -g^2/\\sigma^2`), else by forward-mode autograd of ``log_snr``.
        """
        t = as_tensor(t)
        if type(self).diffusion is not GaussianProcess.diffusion:
            return -self.diffusion(t) ** 2 / self.sigma(t) ** 2
        return _time_derivative(self.log_snr, t)

    def drift_coef(self, t) -> torch.Tensor:
        """Drift coefficient :math:`f(t) = d\\log\\alpha_t/dt` of the SDE :math:`dx = f x\\,dt + g\\,dW`."""
        return _time_derivative(self.log_alpha, as_tensor(t))

    def diffusion(self, t) -> torch.Tensor:
        """Diffusion coefficient :math:`g(t) = \\sigma_t\\sqrt{-\\lambda_t'}`."""
        t = as_tensor(t)
        return self.sigma(t) * torch.sqrt(-self.d_log_snr(t))

    def alpha_dot(self, t) -> torch.Tensor:
        """:math:`d\\alpha_t/dt = f(t)\\,\\alpha_t`."""
        t = as_tensor(t)
        return self.drift_coef(t) * self.alpha(t)

    def sigma_dot(self, t) -> torch.Tensor:
        """:math:`d\\sigma_t/dt = \\sigma_t\\,(f(t) - \\lambda_t'/2)`."""
        t = as_tensor(t)
        return self.sigma(t) * (self.drift_coef(t) - 0.5 * self.d_log_snr(t))

    # ---------------------------------------------------------------- distributions
    def _normal(self, loc: torch.Tensor, scale: torch.Tensor, event_dims: int):
        kwargs = {} if self._validate else {"validate_args": False}
        return dist.Normal(loc, scale, **kwargs).to_event(event_dims)

    def marginal(self, x0: torch.Tensor, t):
        """q(x_t | x_0) = N(alpha_t x_0, sigma_t^2 I) with batch shape ``(batch,)``."""
        self._check_data("x0", x0)
        t = self._time(t, x0)
        loc = _expand(self.alpha(t), x0) * x0
        scale = _expand(self.sigma(t), x0).expand_as(loc)
        return self._normal(loc, scale, x0.dim() - 1)

    def transition(self, xs: torch.Tensor, s, t):
        """q(x_t | x_s) = N((alpha_t/alpha_s) x_s, sigma_t^2 (1 - e^{lambda_t - lambda_s}) I)."""
        self._check_data("xs", xs)
        s, t = self._times(s, t, xs)
        one_minus_r = -torch.expm1(self.log_snr(t) - self.log_snr(s))
        a = torch.exp(self.log_alpha(t) - self.log_alpha(s))
        loc = _expand(a, xs) * xs
        scale = _expand(self.sigma(t) * torch.sqrt(one_minus_r), xs).expand_as(loc)
        return self._normal(loc, scale, xs.dim() - 1)

    def posterior(self, x0: torch.Tensor, xt: torch.Tensor, s, t):
        """q(x_s | x_t, x_0), Gaussian with the mean and variance in the class docstring."""
        self._check_data("x0", x0)
        self._check_data("xt", xt, like=x0)
        s, t = self._times(s, t, x0)
        delta = self.log_snr(t) - self.log_snr(s)
        one_minus_r = -torch.expm1(delta)
        # r alpha_s / alpha_t = alpha_t sigma_s^2 / (alpha_s sigma_t^2): this form stays 0 (not NaN) where
        # alpha_t = 0 (linear blend with t_max = 1), where lambda_t = log alpha_t = -inf.
        coef_t = torch.exp(self.log_alpha(t) - self.log_alpha(s) + 2.0 * (self.log_sigma(s) - self.log_sigma(t)))
        coef_0 = self.alpha(s) * one_minus_r
        loc = _expand(coef_t, xt) * xt + _expand(coef_0, x0) * x0
        scale = _expand(self.sigma(s) * torch.sqrt(one_minus_r), x0).expand_as(loc)
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


# ==================================================================== variance preserving family
class _BetaLinear(GaussianProcess):
    r"""Shared closed forms of processes with :math:`\beta(t) = \beta_0 + t(\beta_1 - \beta_0)` and
    :math:`\log\alpha_t = -\tfrac{t^2}{4}(\beta_1 - \beta_0) - \tfrac{t}{2}\beta_0`, :math:`f = -\beta/2`."""

    def __init__(self, beta_min: float, beta_max: float, t_min: float, t_max: float, validate_args):
        check_positive("beta_min", beta_min)
        check_positive("beta_max", beta_max)
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


class VESDE(GaussianProcess):
    r"""Variance-exploding SDE (NCSN / SMLD in continuous time), Song et al. 2021, Eq. (9).

    :math:`\alpha_t = 1`, :math:`\sigma_t = \sigma_{min}(\sigma_{max}/\sigma_{min})^t`,
    :math:`g(t) = \sigma_t\sqrt{2\log(\sigma_{max}/\sigma_{min})}`. The marginal at t = 0 has
    :math:`\sigma_0 = \sigma_{min}` (the convention of score_sde's likelihood code).
    """

    def __init__(self, sigma_min: float = 0.01, sigma_max: float = 50.0, *, t_min: float = 0.0, t_max: float = 1.0,
                 validate_args: bool | None = None):
        check_positive("sigma_min", sigma_min)
        check_positive("sigma_max", sigma_max)
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

    def __repr__(self) -> str:
        return f"VESDE(sigma_min={self.sigma_min:g}, sigma_max={self.sigma_max:g}, t_min={self.t_min:g}, t_max={self.t_max:g})"


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


class LinearBlend(GaussianProcess):
    r"""Linear blend :math:`x_t = (1-t)x_0 + t x_1`, :math:`x_1\sim\mathcal N(0, I)`.

    The process of Iterative alpha-(de)Blending (Heitz et al., SIGGRAPH 2023; their
    :math:`\alpha = 1 - t`) and of rectified flow (Liu et al., ICLR 2023): :math:`\alpha_t = 1-t`,
    :math:`\sigma_t = t`, :math:`f = -1/(1-t)`, :math:`g^2 = 2t/(1-t)`. Both ends are singular
    (:math:`\sigma_0 = 0`, :math:`\alpha_1 = 0`), so the default domain is ``[1e-3, 0.999]``;
    ``t_max=1.0`` is allowed (the prior is then exactly N(0, I) but :math:`\lambda_{t_{max}} = -\infty`).
    """

    def __init__(self, *, t_min: float = 1e-3, t_max: float = 0.999, validate_args: bool | None = None):
        check_positive("t_min", t_min)
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

    def alpha_dot(self, t) -> torch.Tensor:
        return torch.full_like(as_tensor(t), -1.0)

    def sigma_dot(self, t) -> torch.Tensor:
        return torch.ones_like(as_tensor(t))


# ==================================================================== declared by (f, g)
class LinearSDE(GaussianProcess):
    r"""A linear SDE :math:`dx = f(t)x\,dt + g(t)\,dW` declared by its coefficients alone.

    The schedule is solved, not declared: with :math:`r_t = \sigma_t^2/\alpha_t^2`,

    .. math::

        \frac{d}{dt}\log\alpha_t = f(t), \qquad \frac{d}{dt} r_t = g(t)^2 e^{-2\log\alpha_t},
        \qquad \log\alpha_0 = 0,\; r_0 = \sigma_{init}^2,

    integrated once with torchdiffeq (dopri5, float64, rtol 1e-12) onto a table of ``table_size``
    nodes on ``[0, t_max]``. A query adds to the value at the node left of t the integral of the rate
    (:math:`f`, resp. :math:`g^2 e^{-2\log\alpha}`) over the rest of the cell by Gauss–Legendre
    quadrature: accurate relative to :math:`\alpha` and to :math:`r` even where :math:`r \to 0` or the
    coefficients blow up near an end. Queries are then cheap and differentiable; ``log_snr = -log r``.

    Args:
        f: callable ``f(t)`` mapping a time tensor to a tensor of the same shape.
        g: callable ``g(t)`` likewise; must be positive on ``(0, t_max]``.
        t_min, t_max: time domain, ``0 <= t_min < t_max`` (``t_min > 0`` when ``sigma_init == 0``).
        sigma_init: noise level at t = 0 (e.g. ``sigma_min`` to reproduce :class:`VESDE`).
        table_size: number of interpolation nodes.
    """

    def __init__(self, f: Callable, g: Callable, *, t_min: float = 1e-5, t_max: float = 1.0,
                 sigma_init: float = 0.0, table_size: int = 4097, validate_args: bool | None = None):
        if not callable(f) or not callable(g):
            raise ValueError("f and g must be callables of a time tensor")
        check_positive("sigma_init", sigma_init, allow_zero=True)
        if t_min < 0:
            raise ValueError(f"t_min must be >= 0 (the schedule starts at t = 0), got {t_min}")
        if sigma_init == 0 and t_min <= 0:
            raise ValueError("t_min must be > 0 when sigma_init == 0 (sigma_0 = 0 has no density)")
        if int(table_size) < 3:
            raise ValueError(f"table_size must be an integer >= 3, got {table_size}")
        self._f, self._g = f, g
        self.sigma_init = float(sigma_init)
        self._table_size = int(table_size)
        self._tables: dict = {}
        super().__init__(t_min, t_max, validate_args=validate_args)

    # ---------------------------------------------------------------- the solved table
    def _coef(self, fn: Callable, name: str, t: torch.Tensor) -> torch.Tensor:
        out = as_tensor(fn(t), like=t)
        out = out.expand_as(t) if out.shape != t.shape else out
        if not bool(torch.isfinite(out).all()):
            raise ValueError(f"{name}(t) must be finite on [0, t_max]")
        return out

    def _rates(self, t: torch.Tensor, log_alpha: torch.Tensor):
        return self._coef(self._f, "f", t), self._coef(self._g, "g", t) ** 2 * torch.exp(-2.0 * log_alpha)

    def _solve(self):
        from torchdiffeq import odeint

        nodes = torch.linspace(0.0, self.t_max, self._table_size, dtype=torch.float64)

        def rhs(t, y):
            df, dr = self._rates(t, y[0])
            return torch.stack([df, dr])

        y0 = torch.tensor([0.0, self.sigma_init**2], dtype=torch.float64)
        try:
            ys = odeint(rhs, y0, nodes, method="dopri5", rtol=1e-12, atol=1e-30, options={"max_num_steps": 1000})
        except AssertionError as err:  # torchdiffeq's step-size underflow or step budget: a coefficient blows up
            raise ValueError(f"f and g must be integrable on [0, t_max] = [0, {self.t_max}] "
                             f"(the ODE solver failed: {err})") from err
        log_alpha, r = ys[:, 0], ys[:, 1]
        d_log_alpha, d_r = self._rates(nodes, log_alpha)
        if not bool((r[1:] > 0).all()) or not bool((d_r[1:] >= 0).all()):
            raise ValueError("g must be positive on (0, t_max]: the noise-to-signal ratio must increase")
        return nodes, log_alpha, r, d_log_alpha, d_r

    def _table(self, device):
        key = str(device)
        if key not in self._tables:
            if "cpu" not in self._tables:
                self._tables["cpu"] = self._solve()
            self._tables[key] = tuple(v.to(device) for v in self._tables["cpu"])
        return self._tables[key]

    def _from_node(self, t64: torch.Tensor, column: int, rate: Callable) -> torch.Tensor:
        r"""Table value at the node :math:`n_i` left of ``t64`` plus :math:`\int_{n_i}^t` ``rate`` by 8-point
        Gauss–Legendre (float64).

        Why quadrature rather than interpolation: cubic interpolation has an :math:`O(h^4)` absolute error
        that swamps r where r -> 0 (:math:`r \sim t^2` near t = 0 when g(0) = 0, as for sub-VP) and
        that grows like :math:`(1-t)^{-4}` near a singular end (linear blend, cosine). The quadrature of
        a sign-definite rate over one cell is accurate relative to the integral in both cases.
        """
        table = self._table(t64.device)
        nodes = table[0]
        idx = torch.clamp((t64 / (nodes[1] - nodes[0])).floor().long(), 0, nodes.shape[0] - 2)
        gl_x, gl_w = (torch.as_tensor(v, dtype=torch.float64, device=t64.device) for v in _GAUSS_LEGENDRE_8)
        width = t64 - nodes[idx]
        u = nodes[idx][..., None] + width[..., None] * gl_x
        return table[column][idx] + width * (rate(u) * gl_w).sum(-1)

    def _log_alpha64(self, t64: torch.Tensor) -> torch.Tensor:
        return self._from_node(t64, 1, lambda u: self._coef(self._f, "f", u))

    def _ratio(self, t) -> torch.Tensor:
        r"""Noise-to-signal ratio :math:`r_t = \sigma_t^2/\alpha_t^2` in ``t``'s dtype."""
        t = as_tensor(t)
        rate = lambda u: self._coef(self._g, "g", u) ** 2 * torch.exp(-2.0 * self._log_alpha64(u))  # noqa: E731
        return self._from_node(t.to(torch.float64), 2, rate).to(t.dtype)

    # ---------------------------------------------------------------- schedule
    def log_alpha(self, t) -> torch.Tensor:
        t = as_tensor(t)
        return self._log_alpha64(t.to(torch.float64)).to(t.dtype)

    def log_snr(self, t) -> torch.Tensor:
        return -torch.log(self._ratio(t))

    def log_sigma(self, t) -> torch.Tensor:
        return self.log_alpha(t) + 0.5 * torch.log(self._ratio(t))

    def drift_coef(self, t) -> torch.Tensor:
        return self._coef(self._f, "f", as_tensor(t))

    def diffusion(self, t) -> torch.Tensor:
        return torch.abs(self._coef(self._g, "g", as_tensor(t)))
