r"""Exponential multistep solvers with given per-step coefficients (data prediction, any Gaussian process).

With :math:`\ell_t = \tfrac12\lambda_t = \log(\alpha_t/\sigma_t)` the probability-flow ODE in data-prediction
form, :math:`x_s = \frac{\sigma_s}{\sigma_t}x_t + \sigma_s\int_{\ell_t}^{\ell_s} e^{\ell} D(x_\ell, \ell)\,d\ell`,
has its linear part integrated exactly; a multistep method replaces :math:`D` on the step by a combination of
the model's past outputs. Step :math:`i` (from :math:`t_i` to :math:`t_{i+1}`, :math:`h_i = \ell_{t_{i+1}} -
\ell_{t_i}`) of :class:`ExponentialMultistep` is

.. math::

    x_{t_{i+1}} = \frac{\sigma_{t_{i+1}}}{\sigma_{t_i}}\,x_{t_i} + \alpha_{t_{i+1}}\,(1 - e^{-h_i})\,\hat D_i,
    \qquad \hat D_i = D_i + \sum_{j=1}^{k} c_{ij}\,(D_{i-j} - D_i),

with :math:`D_i = D(x_{t_i}, t_i)` and the terms with :math:`j > i` left out (no history yet). The weights of
:math:`D_i, D_{i-1}, \dots` sum to one for every choice of :math:`c`, so the step is exact for a constant
denoiser (consistent, at least order 1). The coefficients pick the method: :math:`c = 0` is DDIM;
:math:`c_{i1} = -h_i / (2(\ell_{t_i} - \ell_{t_{i-1}}))` is DPM-Solver++(2M) (Lu et al. 2022, Algorithm 2;
:meth:`ExponentialMultistep.dpm_solver_2m`); :meth:`ExponentialMultistep.adams` integrates the polynomial
through the last ``order`` outputs exactly against :math:`e^\ell` (exponential Adams–Bashforth, Hochbruck &
Ostermann, "Exponential integrators", Acta Numerica 2010, §2.5), order ``order``. Coefficients fitted to a
model on pilot trajectories, together with the times, come from :class:`probdiff.grids.MultistepOptimal`
(solving for a solver's coefficients and times on a model: Frankel et al., "S4S: Solving for a Diffusion Model
Solver", ICML 2025).
"""

from __future__ import annotations

import math

import torch

from .._util import check_finite
from .base import ODESolver, Step
from .ode import _exponential_step

__all__ = ["ExponentialMultistep"]


def _ell(process, times) -> torch.Tensor:
    return 0.5 * process.log_snr(torch.as_tensor(times, dtype=torch.float64))


class ExponentialMultistep(ODESolver):
    r"""The exponential multistep step with coefficients :math:`c_{ij}` given per step (module docstring).

    One model evaluation per step; the step index and the model's past outputs travel in ``state``. The
    coefficients belong to a grid with ``coefficients.shape[0]`` steps: :func:`probdiff.sample` refuses a
    grid with another number of steps.

    Args:
        coefficients: ``(steps, history)`` tensor; column ``j - 1`` multiplies :math:`D_{i-j} - D_i`. Row
            ``i`` uses its first ``min(i, history)`` entries.
        order: the convergence order the coefficients give (1 for arbitrary ones; the constructors set it).
    """

    def __init__(self, coefficients, *, order: int = 1):
        c = torch.as_tensor(coefficients, dtype=torch.float64)
        if c.dim() != 2 or c.shape[0] < 1:
            raise ValueError(f"coefficients must have shape (steps, history) with steps >= 1, got {tuple(c.shape)}")
        check_finite("coefficients", c)
        if isinstance(order, bool) or not isinstance(order, int) or order < 1:
            raise ValueError(f"order must be a positive integer, got {order!r}")
        self.coefficients, self.order = c, order

    @property
    def steps(self) -> int:
        return int(self.coefficients.shape[0])

    # ---------------------------------------------------------------- published coefficient rules
    @classmethod
    def dpm_solver_2m(cls, process, times, *, history: int = 1) -> "ExponentialMultistep":
        r"""DPM-Solver++(2M) on ``times`` (decreasing): :math:`c_{i1} = -h_i / (2(\ell_{t_i} - \ell_{t_{i-1}}))`,
        zero-padded to ``history`` columns."""
        ell = _ell(process, times)
        c = torch.zeros(ell.shape[0] - 1, max(1, int(history)), dtype=torch.float64)
        c[1:, 0] = -0.5 * (ell[2:] - ell[1:-1]) / (ell[1:-1] - ell[:-2])
        # a noiseless end (ell = +inf at sigma = 0, -inf at alpha = 0: LinearBlend on [0, 1]): the step into it
        # is first order (c = 0), as DPMSolver2M's; a step after t_max with ell = -inf already gets c = -0
        c[~torch.isfinite(c)] = 0.0
        return cls(c, order=2)

    @classmethod
    def adams(cls, process, times, order: int, *, history: int | None = None) -> "ExponentialMultistep":
        r"""Exponential Adams–Bashforth of order ``order`` on ``times``: :math:`\hat D_i` is the average of the
        polynomial :math:`P` through :math:`(\ell_{t_{i-j}}, D_{i-j})_{j < \mathrm{order}}` under the weight
        :math:`e^{\ell}` on the step, :math:`\hat D_i = \int_0^{h} e^{u-h}P(\ell_{t_i} + u)\,du / M_0` with the
        moments :math:`M_n = \int_0^h e^{u-h}u^n du = h^n - nM_{n-1}`, :math:`M_0 = 1 - e^{-h}`. The first steps
        use the history they have (order 1, then 2, ...)."""
        if isinstance(order, bool) or not isinstance(order, int) or not 1 <= order <= 4:
            raise ValueError(f"order must be an integer in [1, 4], got {order!r}")
        ell = _ell(process, times)
        width = max(1, order - 1 if history is None else int(history))
        c = torch.zeros(ell.shape[0] - 1, width, dtype=torch.float64)
        for i in range(ell.shape[0] - 1):
            k = min(order, i + 1)                                      # points available: D_i, ..., D_{i-k+1}
            while k > 1 and not bool(torch.isfinite(ell[i - k + 1])):   # no node at ell = -inf (alpha = 0)
                k -= 1
            h = float(ell[i + 1] - ell[i])
            if k == 1 or not math.isfinite(h):                         # first order into a noiseless end
                continue
            moments = [1.0 - math.exp(-h)]
            for n in range(1, k):
                moments.append(h**n - n * moments[-1])
            nodes = torch.stack([ell[i - j] - ell[i] for j in range(k)])  # u_j = ell_{i-j} - ell_i, u_0 = 0
            vander = nodes[:, None] ** torch.arange(k, dtype=torch.float64)  # V[j, n] = u_j^n
            m = torch.tensor(moments, dtype=torch.float64) / moments[0]
            weights = torch.linalg.solve(vander.T, m)                  # sum_j w_j u_j^n = M_n / M_0
            c[i, : k - 1] = weights[1:]
        return cls(c, order=order)

    # ---------------------------------------------------------------- the step
    def init(self, reverse, x, ts):
        if ts.shape[0] - 1 != self.steps:
            raise ValueError(f"these coefficients are for a grid of {self.steps} steps, got a grid of "
                             f"{ts.shape[0] - 1}; build the solver for this grid")
        return 0, ()

    def step(self, reverse, x, t, s, state, generator) -> Step:
        p = reverse.process
        t_b, s_b = p.check_time(t, x, "t"), p.check_time(s, x, "s")
        i, history = state or (0, ())
        denoised = reverse.model.denoise(x, t_b)
        c = self.coefficients[i].to(device=x.device, dtype=x.dtype)
        d_hat = denoised
        for j, past in enumerate(history[: c.shape[0]]):
            d_hat = d_hat + c[j] * (past - denoised)
        x_s = _exponential_step(p, x, t_b, s_b, 0.5 * p.log_snr(t_b), d_hat)
        return Step(x_s, denoised, (i + 1, ((denoised,) + history)[: c.shape[0]]), 1)

    def __repr__(self) -> str:
        return f"ExponentialMultistep(steps={self.steps}, history={self.coefficients.shape[1]}, order={self.order})"
