r"""Deterministic solvers of the probability-flow ODE of a Gaussian process.

Every solver here integrates

.. math::

    \frac{dx}{dt} = \alpha_t' D(x,t) + \sigma_t'\,\hat\epsilon(x,t),\qquad
    \hat\epsilon = \frac{x - \alpha_t D}{\sigma_t},

which is the drift :math:`f x - \tfrac12 g^2 s` of ``pd.probability_flow(process, model)`` written
through the denoiser (:meth:`~probdiff.reverse.GaussianReverse.drift_and_denoised`, the one drift of the
library). They are :class:`~probdiff.solvers.ODESolver`\ s: :func:`probdiff.sample` requires
``reverse.noise == 0`` and raises ``ValueError`` otherwise: a deterministic solver cannot honour a
Brownian term, and dropping it silently would sample the wrong law. Each step returns the model's
:math:`D(x_t, t)` as ``denoised`` (the denoising trajectory of Chen et al. 2023).
"""

from __future__ import annotations

import torch

from .._util import expand_like
from ..processes.gaussian import LinearBlend
from .base import ODESolver, Step

__all__ = ["Euler", "Heun", "DPMSolver2M", "Deblend", "UniPC"]


class Euler(ODESolver):
    r"""Explicit Euler on the probability-flow ODE: :math:`x_s = x_t + (s - t)\,v(x_t, t)`.

    Order 1 (global error :math:`O(h)`). One model evaluation per step.
    """

    order = 1

    def step(self, reverse, x, t, s, state, generator) -> Step:
        v, denoised = reverse.drift_and_denoised(x, t)
        return Step(x + (s - t) * v, denoised, state, 1)


class Heun(ODESolver):
    r"""Heun's second-order method (Karras et al., "Elucidating the Design Space of Diffusion-Based
    Generative Models", NeurIPS 2022, Algorithm 1) on the probability-flow ODE.

    :math:`\tilde x = x_t + h\,v(x_t,t)`, :math:`x_s = x_t + \tfrac h2\,[v(x_t,t) + v(\tilde x,s)]`,
    :math:`h = s - t`. Order 2; two model evaluations per step. Where :math:`\sigma_s = 0` (a process
    whose data time has no noise) the correction cannot be evaluated and that step is Euler, as in
    EDM; the built-in processes all have :math:`\sigma_{t_{min}} > 0`, so every step is Heun.
    """

    order = 2

    def step(self, reverse, x, t, s, state, generator) -> Step:
        h = s - t
        v, denoised = reverse.drift_and_denoised(x, t)
        x_euler = x + h * v
        if not bool(reverse.process.sigma(s) > 0):
            return Step(x_euler, denoised, state, 1)
        v_end, _ = reverse.drift_and_denoised(x_euler, s)
        return Step(x + (0.5 * h) * (v + v_end), denoised, state, 2)


class DPMSolver2M(ODESolver):
    r"""DPM-Solver++(2M): the second-order multistep exponential integrator in data-prediction form
    (Lu et al., "DPM-Solver++: Fast Solver for Guided Sampling of Diffusion Probabilistic Models",
    2022, Algorithm 2), for any Gaussian process.

    With :math:`\ell_t = \tfrac12\lambda_t = \log(\alpha_t/\sigma_t)` and :math:`h = \ell_s - \ell_t`,
    the ODE's linear part is integrated exactly and :math:`D` is extrapolated linearly in :math:`\ell`:

    .. math::

        x_s = \frac{\sigma_s}{\sigma_t}\,x_t + \alpha_s\,(1 - e^{-h})\,\hat D,\qquad
        \hat D = \Big(1 + \frac1{2r}\Big)D_t - \frac1{2r}D_{t_\mathrm{prev}},\quad
        r = \frac{\ell_t - \ell_{t_\mathrm{prev}}}{h}.

    The first step has no history and uses :math:`\hat D = D_t` (DDIM). Order 2; one model
    evaluation per step; the history :math:`(D_t, \ell_t)` travels in ``state``.
    """

    order = 2

    def step(self, reverse, x, t, s, state, generator) -> Step:
        p = reverse.process
        t, s = p.check_time(t, x, "t"), p.check_time(s, x, "s")
        ell_t = 0.5 * p.log_snr(t)
        denoised = reverse.model.denoise(x, t)
        return Step(_update_2m(p, x, t, s, ell_t, denoised, state), denoised, (denoised, ell_t), 1)


def _update_2m(p, x, t, s, ell_t, denoised, previous):
    r"""The DPM-Solver++(2M) update from ``t`` to ``s``: :math:`x_s = \frac{\sigma_s}{\sigma_t}x_t +
    \alpha_s(1 - e^{-h})\hat D`, with :math:`\hat D` extrapolated from ``previous = (D_prev, ell_prev)``,
    or :math:`\hat D = D_t` when ``previous`` is None (see :class:`DPMSolver2M`)."""
    h = 0.5 * p.log_snr(s) - ell_t
    d_hat = denoised
    # h = inf (sigma_s = 0, a process with a noiseless data end): the extrapolation in ell diverges, so that
    # step is first order, as k-diffusion's DPM-Solver++(2M) does when the next sigma is 0
    if previous is not None and bool(torch.isfinite(h).all()):
        d_prev, ell_prev = previous
        d_hat = denoised + expand_like(0.5 * h / (ell_t - ell_prev), x) * (denoised - d_prev)
    return _exponential_step(p, x, t, s, ell_t, d_hat)


def _exponential_step(p, x, t, s, ell_t, d_hat):
    r"""The exponential-integrator step in data prediction with the denoiser held at ``d_hat`` on the step:
    :math:`x_s = \frac{\sigma_s}{\sigma_t}x_t + \alpha_s(1 - e^{-h})\hat D`, :math:`h = \ell_s - \ell_t`."""
    h = 0.5 * p.log_snr(s) - ell_t
    ratio = expand_like(torch.exp(p.log_sigma(s) - p.log_sigma(t)), x)
    return ratio * x + expand_like(p.alpha(s) * -torch.expm1(-h), x) * d_hat


class Deblend(ODESolver):
    r"""Iterative alpha-deblending (Heitz, Belcour & Chambon, "Iterative alpha-(de)Blending: a Minimalist
    Deterministic Diffusion Model", SIGGRAPH 2023, Algorithm 2) for :class:`~probdiff.LinearBlend`.

    IADB blends :math:`x_\alpha = (1-\alpha)x_\mathrm{noise} + \alpha x_\mathrm{data}` and steps
    :math:`x_{\alpha'} = x_\alpha + (\alpha' - \alpha)\,\bar D(x_\alpha, \alpha)` with
    :math:`\bar D \approx E[x_\mathrm{data} - x_\mathrm{noise}\mid x_\alpha]`. In probdiff time
    :math:`t = 1 - \alpha` and :math:`\bar D = -v`, the velocity of :class:`~probdiff.VelocityModel`, so the
    step is :math:`x_s = x_t + (s - t)\,v(x_t, t)`: Euler on the linear blend's probability-flow ODE,
    calling the model's ``velocity`` directly (one network call for a velocity model; an IADB network
    ``net(x, alpha)`` plugs in as ``VelocityModel(lambda x, t: -net(x, 1 - t), process)``). Order 1.
    The data estimate is :math:`D = x_t - t\,v` (from :math:`x_t = (1-t)x_0 + t x_1`, :math:`v = x_1 - x_0`).
    """

    order = 1

    def check(self, reverse) -> None:
        super().check(reverse)
        if not isinstance(reverse.process, LinearBlend):
            raise ValueError(f"Deblend needs a LinearBlend process (IADB's x = (1 - alpha) noise + alpha data), got "
                             f"{type(reverse.process).__name__}; use Euler for other Gaussian processes")

    def step(self, reverse, x, t, s, state, generator) -> Step:
        t_b = reverse.process.check_time(t, x)
        v = reverse.model.velocity(x, t_b)
        return Step(x + (s - t) * v, x - expand_like(t_b, x) * v, state, 1)


class UniPC(ODESolver):
    r"""UniPC with the B(h) = e^{-h} - 1 ("bh2") variant, data prediction (Zhao, Bai, Rao, Zhou & Lu,
    "UniPC: A Unified Predictor-Corrector Framework for Fast Sampling of Diffusion Models", NeurIPS 2023,
    Algorithms 1–2), for any Gaussian process.

    In :math:`\ell = \tfrac12\lambda` the predictor UniP-2 is DPM-Solver++(2M) (:class:`DPMSolver2M`). The
    model evaluation at the predicted point, needed by the next step anyway, also corrects it (UniC): for
    the step from :math:`\ell_0` to :math:`\ell_t`, :math:`h = \ell_t - \ell_0`,

    .. math::

        x_t^c = \frac{\sigma_t}{\sigma_0}x_0 + \alpha_t(1 - e^{-h})D_0
        - \alpha_t B(h)\Big(\rho_1\frac{D_{-1} - D_0}{r} + \rho_2(D_t - D_0)\Big),\qquad
        r = \frac{\ell_{-1} - \ell_0}{h},

    where :math:`(\rho_1, \rho_2)` solve :math:`\begin{pmatrix}1&1\\ r&1\end{pmatrix}\rho =
    \big(\tfrac{\varphi_2(-h)}{B(h)}, \tfrac{2\varphi_3(-h)}{B(h)}\big)` with
    :math:`\varphi_1(z) = e^z - 1`, :math:`\varphi_{k+1}(z) = \varphi_k(z)/z - 1/k!` (first-order corrector:
    :math:`\rho = \tfrac12`). The corrected point replaces the predicted one; the last step is not
    corrected (it would cost one more evaluation), and with ``lower_order_final`` its predictor is first
    order, as in the reference implementation for few steps. Order 3 (order-2 predictor raised by one by
    the corrector); one model evaluation per step. ``Solution.xs`` records the predicted points.

    Args:
        lower_order_final: use a first-order predictor on the step that reaches ``t_min``.
    """

    order = 3

    def __init__(self, lower_order_final: bool = True):
        if lower_order_final not in (True, False):
            raise ValueError(f"lower_order_final must be True or False, got {lower_order_final!r}")
        self.lower_order_final = bool(lower_order_final)

    def step(self, reverse, x, t, s, state, generator) -> Step:
        p = reverse.process
        t_b, s_b = p.check_time(t, x, "t"), p.check_time(s, x, "s")
        ell_t = 0.5 * p.log_snr(t_b)
        denoised = reverse.model.denoise(x, t_b)
        history = state or ()                       # ((ell, D, x_start), ...) most recent first
        if history:
            x = self._correct(p, t_b, ell_t, denoised, history)
        last = self.lower_order_final and bool((s_b <= p.t_min).all())
        previous = (history[0][1], history[0][0]) if history and not last else None
        x_s = _update_2m(p, x, t_b, s_b, ell_t, denoised, previous)     # the predictor is DPM-Solver++(2M)
        return Step(x_s, denoised, ((ell_t, denoised, x, t_b),) + history[:1], 1)

    @staticmethod
    def _correct(p, t_b, ell_t, d_t, history):
        """UniC: the corrected end point of the previous step, from its start (x_0, t_0) and D at both ends."""
        ell_0, d_0, x_0, t_0 = history[0]
        h = ell_t - ell_0
        hh = -h
        phi_1 = torch.expm1(hh)                      # B(h) of bh2 equals phi_1
        phi_2 = phi_1 / hh - 1.0
        if len(history) > 1 and bool(torch.isfinite(history[1][0]).all()):
            ell_m1, d_m1 = history[1][0], history[1][1]
            r = (ell_m1 - ell_0) / h
            phi_3 = phi_2 / hh - 0.5
            b1, b2 = phi_2 / phi_1, 2.0 * phi_3 / phi_1
            rho_1, rho_2 = (b1 - b2) / (1.0 - r), (b2 - r * b1) / (1.0 - r)
            corr = expand_like(rho_1 / r, x_0) * (d_m1 - d_0) + expand_like(rho_2, x_0) * (d_t - d_0)
        elif len(history) > 1:       # ell_{-1} = -inf (alpha = 0 there): the limit r -> -inf of the above
            corr = expand_like(phi_2 / phi_1, x_0) * (d_t - d_0)
        else:
            corr = 0.5 * (d_t - d_0)
        alpha_t = expand_like(p.alpha(t_b), x_0)
        ratio = expand_like(torch.exp(p.log_sigma(t_b) - p.log_sigma(t_0)), x_0)
        return ratio * x_0 - alpha_t * expand_like(phi_1, x_0) * d_0 - alpha_t * expand_like(phi_1, x_0) * corr
