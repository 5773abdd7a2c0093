r"""Model parameterisations for Gaussian processes (THEORY.md §1).

A network ``net(x, t)`` (``x`` of shape ``(batch, *event)``, ``t`` of shape ``(batch,)``) predicts
*one* quantity; the process converts it into all the others:

.. math::

    D(x,t) = E[x_0\mid x_t = x],\quad
    \epsilon = \frac{x - \alpha_t D}{\sigma_t},\quad
    s = \nabla_x\log p_t(x) = \frac{\alpha_t D - x}{\sigma_t^2} = -\frac{\epsilon}{\sigma_t},\quad
    v = \alpha_t' D + \sigma_t'\epsilon .

The last two relations (:math:`x = \alpha_t D + \sigma_t\epsilon`, :math:`v = \alpha_t' D + \sigma_t'\epsilon`)
are a 2×2 linear system that :class:`VelocityModel` inverts. References: Ho et al. 2020 (epsilon),
Karras et al. 2022 "Elucidating the Design Space" (denoiser), Song et al. 2021 (score, Tweedie),
Salimans & Ho 2022 / Liu et al. 2023 (velocity).

Every model here is a :class:`GaussianModel`; the exact oracles of :mod:`probdiff.oracles` follow the
same interface.
"""

from __future__ import annotations

import abc

import torch

from .._util import expand_like
from ..processes.gaussian import GaussianProcess
from .base import Model

__all__ = ["GaussianModel", "DenoiserModel", "EpsilonModel", "ScoreModel", "VelocityModel", "noiseless"]


def noiseless(process: GaussianProcess, t, dtype) -> torch.Tensor:
    r"""Where a Gaussian process is taken as noiseless, a mask shaped like ``t``: :math:`\sigma_t <
    \sqrt{\varepsilon}` of ``dtype`` (1.5e-8 in float64, 3.5e-4 in float32), a noise level no built-in default
    reaches. Below it :math:`\hat\epsilon = (x - \alpha_t D)/\sigma_t` is rounding (the error of
    :math:`x - \alpha_t D`, :math:`\varepsilon|x|`, over :math:`\sigma_t` exceeds the value itself,
    :math:`O(\sigma_t)` for a smooth data density; ``inf`` at a solver's stage 5e-324 from
    ``LinearBlend(t_min=0)``'s end), so the drift takes its :math:`\sigma \to 0` limit there."""
    return process.sigma(t) < torch.finfo(dtype).eps ** 0.5


class GaussianModel(Model, abc.ABC):
    """Abstract model of a Gaussian process: every parameterisation derived from :meth:`denoise`.

    Subclasses override :meth:`denoise` and, where it is their native output or numerically
    better, the other conversions.

    Args:
        net: callable ``net(x, t)`` returning a tensor shaped like ``x`` (may be ``None`` for oracles).
        process: the :class:`~probdiff.GaussianProcess` the model belongs to.
    """

    process_type = GaussianProcess

    # ---------------------------------------------------------------- helpers
    def _prepare(self, x: torch.Tensor, t) -> torch.Tensor:
        """Validated time of shape ``(batch,)`` on ``x``'s device and dtype."""
        self._check_batch(x)
        self.process.check_state("x", x)
        return self.process.check_time(t, x)

    def _net(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        out = self.net(x, t)
        if not self.process.validate_args and out.shape != x.shape:
            raise ValueError(f"net(x, t) must return a tensor of shape {tuple(x.shape)}, got {tuple(out.shape)}")
        return self._checked(out, x.shape)

    def _coefs(self, x: torch.Tensor, t: torch.Tensor):
        p = self.process
        return expand_like(p.alpha(t), x), expand_like(p.sigma(t), x)

    def _signal(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        r""":math:`\alpha_t` like ``x``, refusing 0: where :math:`x_t = \sigma_t\epsilon` carries no trace of
        :math:`x_0` a noise or score prediction cannot give the denoiser (``LinearBlend(t_max=1.0)`` at 1)."""
        alpha = expand_like(self.process.alpha(t), x)
        if bool((alpha == 0).any()):
            raise ValueError(f"{type(self).__name__} has no denoiser where alpha_t = 0 (t = "
                             f"{float(t.max()):g} of {self.process!r}): x_t is pure noise there; use a DenoiserModel "
                             "or VelocityModel, or t_max < 1")
        return alpha

    # ---------------------------------------------------------------- the space the model is trained in
    def prediction(self, x: torch.Tensor, t) -> torch.Tensor:
        """The model's native output at ``(x_t, t)`` (default: the denoiser), regressed by
        :class:`~probdiff.losses.DenoisingScoreMatching`."""
        return self.denoise(x, t)

    def target(self, x0: torch.Tensor, eps: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The regression target of :meth:`prediction` for :math:`x_t = \\alpha_t x_0 + \\sigma_t\\epsilon`
        (default: :math:`x_0`)."""
        return x0

    def error_scale(self, t: torch.Tensor) -> torch.Tensor:
        """:math:`c_P(t)` with prediction error :math:`= c_P\\,(D_\\theta - x_0)`, shape ``(batch,)``
        (default: 1)."""
        return torch.ones_like(t)

    # ---------------------------------------------------------------- parameterisations
    @abc.abstractmethod
    def denoise(self, x: torch.Tensor, t) -> torch.Tensor:
        """Posterior mean :math:`D(x, t) = E[x_0 | x_t = x]`."""

    def epsilon(self, x: torch.Tensor, t) -> torch.Tensor:
        """Predicted noise :math:`(x - \\alpha_t D)/\\sigma_t`."""
        t = self._prepare(x, t)
        alpha, sigma = self._coefs(x, t)
        return (x - alpha * self.denoise(x, t)) / sigma

    def score(self, x: torch.Tensor, t) -> torch.Tensor:
        """Score :math:`\\nabla_x \\log p_t(x) = (\\alpha_t D - x)/\\sigma_t^2`."""
        t = self._prepare(x, t)
        alpha, sigma = self._coefs(x, t)
        return (alpha * self.denoise(x, t) - x) / sigma**2

    def velocity(self, x: torch.Tensor, t) -> torch.Tensor:
        r"""Velocity :math:`E[dx_t/dt | x_t = x] = \alpha_t' D + \sigma_t' \epsilon`."""
        t = self._prepare(x, t)
        d, eps = self.denoise_and_epsilon(x, t)
        p = self.process
        return expand_like(p.alpha_dot(t), x) * d + expand_like(p.sigma_dot(t), x) * eps

    def denoise_and_epsilon(self, x: torch.Tensor, t) -> tuple[torch.Tensor, torch.Tensor]:
        r""":math:`D(x, t)` and :math:`\hat\epsilon` from one network evaluation (the drift of the reverse
        process is :math:`\alpha_t' D + \sigma_t'\hat\epsilon` plus a noise term).

        Default: :math:`\hat\epsilon = (x - \alpha_t D)/\sigma_t`, and its limit 0 where the process is
        noiseless (:func:`noiseless`: :math:`\sigma_t = 0`, e.g. ``LinearBlend(t_min=0)`` at 0, or below the
        dtype's resolution of that quotient), written with a safe divisor so that gradients stay finite. A
        model whose output determines :math:`\hat\epsilon` there (:class:`VelocityModel`) overrides it.
        """
        t = self._prepare(x, t)
        alpha, sigma = self._coefs(x, t)
        d = self.denoise(x, t)
        live = expand_like(~noiseless(self.process, t, x.dtype), x)
        safe = torch.where(sigma > 0, sigma, torch.ones_like(sigma))
        return d, torch.where(live, (x - alpha * d) / safe, torch.zeros_like(x))


class DenoiserModel(GaussianModel):
    """The network predicts the clean data :math:`D(x, t)` (Karras et al. 2022)."""

    def denoise(self, x, t):
        t = self._prepare(x, t)
        return self._net(x, t)


class EpsilonModel(GaussianModel):
    """The network predicts the noise :math:`\\epsilon` (Ho et al. 2020)."""

    def prediction(self, x, t):
        return self.epsilon(x, t)

    def target(self, x0, eps, t):
        return eps

    def error_scale(self, t):
        return -self.process.alpha(t) / self.process.sigma(t)

    def epsilon(self, x, t):
        t = self._prepare(x, t)
        return self._net(x, t)

    def denoise(self, x, t):
        t = self._prepare(x, t)
        alpha, sigma = self._signal(x, t), expand_like(self.process.sigma(t), x)
        return (x - sigma * self._net(x, t)) / alpha

    def score(self, x, t):
        t = self._prepare(x, t)
        return -self._net(x, t) / expand_like(self.process.sigma(t), x)


class ScoreModel(GaussianModel):
    """The network predicts the score :math:`\\nabla_x\\log p_t` (Song et al. 2021)."""

    def prediction(self, x, t):
        return self.score(x, t)

    def target(self, x0, eps, t):
        return -eps / expand_like(self.process.sigma(t), eps)

    def error_scale(self, t):
        return self.process.alpha(t) / self.process.sigma(t) ** 2

    def score(self, x, t):
        t = self._prepare(x, t)
        return self._net(x, t)

    def denoise(self, x, t):
        t = self._prepare(x, t)
        alpha, sigma = self._signal(x, t), expand_like(self.process.sigma(t), x)
        return (x + sigma**2 * self._net(x, t)) / alpha

    def epsilon(self, x, t):
        t = self._prepare(x, t)
        return -expand_like(self.process.sigma(t), x) * self._net(x, t)


class VelocityModel(GaussianModel):
    r"""The network predicts the velocity :math:`v = \alpha_t' D + \sigma_t'\epsilon`.

    For :class:`~probdiff.LinearBlend` this is :math:`E[x_1 - x_0 | x_t]` (rectified flow) and the
    negated deblending direction of IADB. Inverting the system
    :math:`x = \alpha D + \sigma\epsilon,\ v = \alpha' D + \sigma'\epsilon` gives
    :math:`D = (\sigma' x - \sigma v)/(\alpha\sigma' - \sigma\alpha')`.
    """

    def velocity(self, x, t):
        t = self._prepare(x, t)
        return self._net(x, t)

    def prediction(self, x, t):
        return self.velocity(x, t)

    def target(self, x0, eps, t):
        p = self.process
        return expand_like(p.alpha_dot(t), x0) * x0 + expand_like(p.sigma_dot(t), eps) * eps

    def error_scale(self, t):
        return 0.5 * self.process.alpha(t) * self.process.d_log_snr(t)

    def denoise(self, x, t):
        t = self._prepare(x, t)
        p = self.process
        alpha, sigma = self._coefs(x, t)
        a_dot, s_dot = expand_like(p.alpha_dot(t), x), expand_like(p.sigma_dot(t), x)
        return (s_dot * x - sigma * self._net(x, t)) / (alpha * s_dot - sigma * a_dot)

    def epsilon(self, x, t):
        t = self._prepare(x, t)
        p = self.process
        alpha, sigma = self._coefs(x, t)
        a_dot, s_dot = expand_like(p.alpha_dot(t), x), expand_like(p.sigma_dot(t), x)
        return (alpha * self._net(x, t) - a_dot * x) / (alpha * s_dot - sigma * a_dot)

    def denoise_and_epsilon(self, x, t):
        r"""Both from one network evaluation by inverting the 2×2 system: finite wherever
        :math:`\alpha\sigma' - \sigma\alpha' \ne 0` — for :class:`~probdiff.LinearBlend` everywhere on [0, 1]
        (it is 1), so the drift is the network's own velocity at both ends."""
        t = self._prepare(x, t)
        p = self.process
        alpha, sigma = self._coefs(x, t)
        a_dot, s_dot = expand_like(p.alpha_dot(t), x), expand_like(p.sigma_dot(t), x)
        v, det = self._net(x, t), alpha * s_dot - sigma * a_dot
        return (s_dot * x - sigma * v) / det, (alpha * v - a_dot * x) / det
