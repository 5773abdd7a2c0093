r"""The probability-flow ODE in a Gaussian frame, integrated by variable-step Adams steps, one step size per sample.

For data distributed as :math:`\mathcal N(0, c\,I)` the probability-flow ODE of any Gaussian process
:math:`x_t = \alpha_t x_0 + \sigma_t\epsilon` has the solution :math:`x(t) = r_t\,y` with a constant
:math:`y` and

.. math::

    r_t = \sqrt{\alpha_t^2 c + \sigma_t^2},\qquad \nabla\!\cdot h = d\,r_t'/r_t .

:class:`GaussianFrameAdams` integrates the ODE of :math:`y = x/r_t` and of
:math:`\Delta_y = \Delta - d\log(r_t/r_{t_{min}})` (whose right-hand sides vanish for that Gaussian and stay
small for data of about that scale), in the variable

.. math::

    \rho = \alpha_t/r_t = (c + \sigma_t^2/\alpha_t^2)^{-1/2} \in \big(0, c^{-1/2}\big],

a function of the log-SNR alone (so every process with the same log-SNR range gives the same ODE and the
same work), which runs over a bounded interval from the data (:math:`\rho \approx c^{-1/2}`) to the noise
(:math:`\rho \approx 0`) and in which the frame is smooth at both ends: near the noise
:math:`y \approx \epsilon + \rho\,\mu` is linear, and near the data :math:`y` depends on
:math:`\sigma^2/\alpha^2 = \rho^{-2} - c` smoothly. The right-hand sides are

.. math::

    \frac{dy}{d\rho} = \Big(\frac{h(r y, t)}{r} - \frac{r'}{r}\,y\Big)\frac{dt}{d\rho},\qquad
    \frac{d\Delta_y}{d\rho} = \Big(\nabla\!\cdot h - d\,\frac{r'}{r}\Big)\frac{dt}{d\rho},\qquad
    \frac{d\rho}{dt} = \frac{\sigma(\alpha'\sigma - \alpha\sigma')}{r^3}.

Steps are Adams–Bashforth–Moulton in PEC form with variable steps (Hairer, Nørsett & Wanner, *Solving
Ordinary Differential Equations I*, §III.5): the predictor integrates the polynomial through the last
``order`` derivatives, one evaluation is made at the predicted state, and the corrector integrates the
polynomial through that derivative and the last ``order`` ones (order ``order + 1``; the evaluation at the
predicted state is kept, as in UniPC's and DPM-Solver++'s multistep samplers: one evaluation per step). The
difference of corrector and predictor estimates the predictor's local error (Milne's device) and steers the
step per sample as in :func:`~probdiff.likelihood.adaptive.solve_per_sample`; a rejected step costs one
evaluation. The log-density components, a quadrature that does not feed back into the state, are corrected
with ``log_det_extra`` more past derivatives (order ``order + 1 + log_det_extra``) at no cost in evaluations,
once the stencil no longer needs the first derivative (at :math:`t_{min}`, where :math:`\sigma` is smallest,
the divergence carries the most rounding: with sub-VP's :math:`\sigma = 10^{-6}` using it doubled the error).
The start is self-starting: order 1 at a step of ``first_step`` of the span, one order more per accepted step.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from numpy.polynomial.legendre import leggauss

from .._util import check_positive, check_positive_int
from .adaptive import StepUnderflow

__all__ = ["GaussianFrameAdams"]

#: A row ends with one step when the rest of its span is at most this multiple of its proposed step (rather
#: than a full step and a sliver: on average a fraction of an evaluation less per row).
_LAST_STRETCH = 1.15


def _gauss_legendre(n: int):
    """Nodes on [0, 1] and weights of the ``n``-point Gauss–Legendre rule (NumPy's ``leggauss``), float64."""
    nodes, weights = leggauss(n)
    return torch.as_tensor((nodes + 1) / 2), torch.as_tensor(weights / 2)


def _integrals(u0: torch.Tensor, h: torch.Tensor, nodes: torch.Tensor, rule) -> torch.Tensor:
    r""":math:`\int_{u_0}^{u_0+h} \ell_j(u)\,du` for the Lagrange basis :math:`\ell_j` on ``nodes`` ``(n, m)`` -> ``(n, m)``."""
    pts = u0[:, None] + h[:, None] * rule[0][None]                      # (n, Q)
    m = nodes.shape[1]
    basis = []
    for j in range(m):
        v = torch.ones_like(pts)
        for i in range(m):
            if i != j:
                v = v * (pts - nodes[:, i:i + 1]) / (nodes[:, j:j + 1] - nodes[:, i:i + 1])
        basis.append(v)
    return ((h[:, None] * rule[1][None])[..., None] * torch.stack(basis, -1)).sum(1)


@dataclass(frozen=True)
class GaussianFrameAdams:
    r"""Solver of :func:`probdiff.log_likelihood` (``solver=GaussianFrameAdams()``): the flow in the frame
    :math:`y = x/\sqrt{\alpha_t^2 c + \sigma_t^2}` and the variable :math:`\rho = (c + \sigma_t^2/\alpha_t^2)^{-1/2}`,
    by per-sample variable-step Adams PEC steps (module docstring). Configuration only.

    Args:
        data_variance: :math:`c`, the per-coordinate variance of the Gaussian whose flow the frame makes
            constant (1 for data scaled to unit variance; on the mixture oracles 0.5 and 2 took within 7% of
            the evaluations of 1 at equal error).
        order: the predictor's order (the corrector's is one more).
        rtol, atol: per-sample tolerances of the error norm (RMS over the frame's state and the
            log-density integrals). The default, ``2e-4``, gives the error of the default Dormand–Prince
            solver at ``1e-5`` or less in 7 of the 8 Gaussian-mixture cases of benchmarks/likelihood.py.
        first_step: the first step as a fraction of the span of :math:`\rho`.
        log_det_extra: extra past derivatives in the log-density quadrature.
        safety, grow, shrink: the step controller's safety factor and bounds on the step's change.
        max_steps: per call, before :class:`~probdiff.likelihood.adaptive.StepUnderflow`.
    """

    data_variance: float = 1.0
    order: int = 4
    rtol: float = 2e-4
    atol: float = 2e-4
    first_step: float = 1.5e-3
    log_det_extra: int = 2
    safety: float = 0.8
    grow: float = 2.0
    shrink: float = 0.3
    max_steps: int = 100_000

    def __post_init__(self):
        for name in ("data_variance", "rtol", "atol", "first_step", "safety", "grow", "shrink"):
            check_positive(name, getattr(self, name))
        check_positive_int("order", self.order)
        check_positive_int("max_steps", self.max_steps)
        if not (isinstance(self.log_det_extra, int) and self.log_det_extra >= 0):
            raise ValueError(f"log_det_extra must be a non-negative int, got {self.log_det_extra!r}")
        if not (self.first_step <= 1 and self.shrink < 1 < self.grow and self.safety <= 1):
            raise ValueError("GaussianFrameAdams needs first_step <= 1, shrink < 1 < grow and safety <= 1, got "
                             f"first_step={self.first_step}, shrink={self.shrink}, grow={self.grow}, "
                             f"safety={self.safety}")

    # ---------------------------------------------------------------- the frame
    def frame(self, process, t: torch.Tensor):
        r"""``(r, r'/r, rho, d rho/dt)`` at the times ``t`` (float64)."""
        t = torch.as_tensor(t, dtype=torch.float64)
        a, s = process.alpha(t), process.sigma(t)
        da, ds = process.alpha_dot(t), process.sigma_dot(t)
        r = torch.sqrt(a * a * self.data_variance + s * s)
        dlog_r = (a * da * self.data_variance + s * ds) / (r * r)
        return r, dlog_r, a / r, s * (da * s - a * ds) / r ** 3

    def time_of(self, process, rho: torch.Tensor) -> torch.Tensor:
        r"""The time with :math:`\rho_t` = ``rho``: log-SNR :math:`= 2\log\rho - \log(1 - c\rho^2)`."""
        rho = torch.as_tensor(rho, dtype=torch.float64)
        return process.time_of_log_snr(2 * torch.log(rho) - torch.log1p(-self.data_variance * rho * rho))

    # ---------------------------------------------------------------- the integration
    def integrate(self, process, rhs, x: torch.Tensor, delta: torch.Tensor, t0: float, t1: float):
        r"""Carry ``(x, delta)`` from ``t0`` to ``t1 > t0`` along ``dx/dt, d delta/dt = rhs(t, x, rows)``.

        ``x`` is ``(B, d)``, ``delta`` ``(B, P)``; ``rhs`` gets each row's time ``(n,)``, the states of rows
        ``rows`` ``(n, d)`` and ``rows``, and returns ``(field (n, d), divergence (n, P))``. Needs
        :math:`\sigma_{t_0} > 0` (at :math:`\sigma = 0`, :math:`dt/d\rho` is infinite). Returns
        ``(x(t1), delta(t1), nfe per row)``.
        """
        b, d = x.shape
        ends = torch.tensor([t0, t1], dtype=torch.float64, device=x.device)
        r_e, _, rho_e, _ = self.frame(process, ends)
        if not bool(process.sigma(ends[:1]) > 0):
            raise ValueError(f"GaussianFrameAdams needs sigma > 0 at the start of the flow, got sigma(t={t0}) = 0; "
                             "use the default solver (solver=None) for this process")
        u0, u1 = -float(rho_e[0]), -float(rho_e[1])

        def field(u, z, rows):                            # the right-hand side in the frame, variable u = -rho
            t = self.time_of(process, -u).clamp(t0, t1)
            t = torch.where(u <= u0, torch.full_like(t, t0), torch.where(u >= u1, torch.full_like(t, t1), t))
            r, dlog_r, _, drho = self.frame(process, t)
            y = z[:, :d]
            f, div = rhs(t, y * r.to(y)[:, None], rows)
            dt_du = (-1.0 / drho).to(z)[:, None]
            return torch.cat([f / r.to(y)[:, None] - y * dlog_r.to(y)[:, None], div - d * dlog_r.to(y)[:, None]],
                             1) * dt_du

        z0 = torch.cat([x / r_e[0].to(x), delta], 1)
        z, nfe = self._adams(field, z0, u0, u1, log_det_from=d)
        return z[:, :d] * r_e[1].to(x), z[:, d:] + d * torch.log(r_e[1] / r_e[0]).to(x), nfe

    def _adams(self, rhs, z0: torch.Tensor, u0: float, u1: float, log_det_from: int):
        """Per-sample variable-step Adams PEC on ``z`` ``(B, m)`` from ``u0`` to ``u1 > u0``."""
        b, m = z0.shape
        k, extra = self.order, self.log_det_extra
        rule = tuple(v.to(z0.device) for v in _gauss_legendre((k + extra + 3) // 2 + 1))
        nfe = torch.zeros(b, dtype=torch.int64, device=z0.device)
        z = z0.clone()
        if b == 0 or u0 == u1:
            return z, nfe
        u = torch.full((b,), u0, dtype=torch.float64, device=z0.device)
        hist_u = torch.zeros(b, k + extra, dtype=torch.float64, device=z0.device)   # newest first
        hist_f = torch.zeros(b, k + extra, m, dtype=z0.dtype, device=z0.device)
        count = torch.ones(b, dtype=torch.int64, device=z0.device)                  # derivatives held
        everyone = torch.arange(b, device=z0.device)
        nfe += 1
        hist_u[:, 0], hist_f[:, 0] = u, rhs(u, z, everyone)
        h = torch.full((b,), self.first_step * (u1 - u0), dtype=torch.float64, device=z0.device)
        active, span = everyone, u1 - u0
        for _ in range(self.max_steps):
            if active.numel() == 0:
                return z, nfe
            ua, za, hu, hf = u[active], z[active], hist_u[active], hist_f[active]
            rem = u1 - ua
            last = h[active] * _LAST_STRETCH >= rem * (1 - 1e-12)
            ha = torch.where(last, rem, torch.minimum(h[active], rem))
            un = ua + ha
            p = count[active].clamp(max=k)
            pred, corr = torch.empty_like(za), torch.empty_like(za)
            for q in range(1, k + 1):                     # predictor: the last q derivatives
                s = p == q
                if bool(s.any()):
                    w = _integrals(ua[s], ha[s], hu[s][:, :q], rule).to(za)
                    pred[s] = za[s] + torch.einsum("bj,bjm->bm", w, hf[s][:, :q])
            nfe[active] += 1
            fn = rhs(un, pred, active)
            for q in range(1, k + 1):                     # corrector: the new derivative and the last q
                s = p == q
                if bool(s.any()):
                    nodes = torch.cat([un[s][:, None], hu[s][:, :q]], 1)
                    w = _integrals(ua[s], ha[s], nodes, rule).to(za)
                    corr[s] = za[s] + torch.einsum("bj,bjm->bm", w, torch.cat([fn[s][:, None], hf[s][:, :q]], 1))
                    # the log-density quadrature with `extra` more derivatives, never back to the first one: at
                    # t_min, where sigma is smallest, the divergence carries the most rounding (sub-VP: 1e-6)
                    more = s & (count[active] > q + extra) & (p == k)
                    if extra and bool(more.any()):
                        nodes = torch.cat([un[more][:, None], hu[more][:, :q + extra]], 1)
                        fs = torch.cat([fn[more][:, None, log_det_from:], hf[more][:, :q + extra, log_det_from:]], 1)
                        w = _integrals(ua[more], ha[more], nodes, rule).to(za)
                        corr[more, log_det_from:] = za[more, log_det_from:] + torch.einsum("bj,bjm->bm", w, fs)
            scale = self.atol + self.rtol * torch.maximum(za.abs(), corr.abs())
            err = ((corr - pred) / scale).pow(2).mean(1).sqrt()
            ok = err <= 1
            factor = self.safety * err.clamp_min(1e-10) ** (-1.0 / (p.to(err) + 1))
            factor = torch.where(ok, factor.clamp(self.shrink, self.grow), factor.clamp(self.shrink, 1.0))
            h[active] = ha * factor.to(h)
            acc = active[ok]
            z[acc] = corr[ok]
            u[acc] = torch.where(last[ok], torch.full_like(un[ok], u1), un[ok])
            hist_u[acc] = torch.cat([u[acc][:, None], hist_u[acc][:, :-1]], 1)
            hist_f[acc] = torch.cat([fn[ok][:, None], hist_f[acc][:, :-1]], 1)
            count[acc] += 1
            if not bool(torch.isfinite(err).all()):
                raise StepUnderflow("the field is not finite along the flow")
            if not bool(torch.all(h[active] > 1e-14 * span)):
                raise StepUnderflow(f"step size underflow at rho = {(-u[active]).tolist()[:4]}")
            active = active[~(ok & last)]
        raise StepUnderflow(f"no convergence within max_steps={self.max_steps}")

    def __repr__(self) -> str:
        return (f"GaussianFrameAdams(data_variance={self.data_variance:g}, order={self.order}, rtol={self.rtol:g}, "
                f"atol={self.atol:g})")

