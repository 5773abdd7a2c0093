r"""A linear Gaussian SDE declared by its coefficients :math:`(f, g)` alone (THEORY.md §1).

The schedule :math:`(\alpha_t, \sigma_t)` is solved from :math:`(f, g)` with torchdiffeq; everything else is
derived as for any :class:`~probdiff.GaussianProcess`. Reference: Song et al., "Score-Based Generative
Modeling through Stochastic Differential Equations" (ICLR 2021), §3 and App. B.
"""

from __future__ import annotations

from typing import Callable

from numpy.polynomial.legendre import leggauss as _leggauss
import torch
from torchdiffeq import odeint

from .._util import as_tensor, check_positive_int, check_real
from .gaussian import GaussianProcess, d_log_snr_via_diffusion

__all__ = ["LinearSDE"]

# Gauss–Legendre nodes and weights mapped to [0, 1] (8 points, exact for polynomials of degree 15).
_GL_NODES, _GL_WEIGHTS = _leggauss(8)
_GAUSS_LEGENDRE_8 = (((_GL_NODES + 1.0) / 2.0).tolist(), (_GL_WEIGHTS / 2.0).tolist())


class LinearSDE(GaussianProcess):
    r"""A linear SDE :math:`dx = f(t)x\,dt + g(t)\,dW` declared by its coefficients alone.

    The schedule is solved, not declared: with :math:`r_t = \sigma_t^2/\alpha_t^2`,

    .. math::

        \frac{d}{dt}\log\alpha_t = f(t), \qquad \frac{d}{dt} r_t = g(t)^2 e^{-2\log\alpha_t},
        \qquad \log\alpha_0 = 0,\; r_0 = \sigma_{init}^2,

    integrated once with torchdiffeq (dopri5, float64, rtol 1e-12; this also checks that the coefficients
    are integrable) onto a table of ``table_size`` nodes on ``[0, t_max]``, whose values are then re-summed
    cell by cell with the queries' own quadrature so that the pieces meet. A query adds to the value at the node left of t the integral of the rate
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
        sigma_init = check_real("sigma_init", sigma_init, low=0.0)
        t_min = check_real("t_min", t_min)
        if t_min < 0:
            raise ValueError(f"t_min must be >= 0 (the schedule starts at t = 0), got {t_min}")
        if sigma_init == 0 and t_min <= 0:
            raise ValueError("t_min must be > 0 when sigma_init == 0 (sigma_0 = 0 has no density)")
        if check_positive_int("table_size", table_size) < 3:
            raise ValueError(f"table_size must be an integer >= 3, got {table_size}")
        self._f, self._g = f, g
        self.sigma_init = float(sigma_init)
        self._table_size = int(table_size)
        self._tables: dict = {}
        super().__init__(t_min, t_max, validate_args=validate_args)
        # Solved now, not at the first query: a query may run under a torch.func transform (the generic
        # derivatives of a subclass), inside which torchdiffeq cannot run; and bad coefficients fail here.
        self._tables["cpu"] = self._solve()

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
        return self._resum(nodes, log_alpha, r, d_log_alpha, d_r)

    def _resum(self, nodes, log_alpha, r, d_log_alpha, d_r):
        r"""The table re-summed cell by cell with the queries' own quadrature, so that its pieces meet.

        A query is the value at the node left of t plus the quadrature over the rest of the cell; with the
        ODE solver's node values, the limit from the left at a node (previous node plus the whole cell)
        differed from the node's value by the solver's error (about 1e-12 relative), and the schedule jumped
        there. Finite differences read such a jump as a derivative of order 1e-12/h (a false alarm of the
        coefficient check at t = 0.996 of a ``linear_sdes`` draw). Here the node values are the running sums
        of the same cell quadratures (first :math:`\log\alpha`, then :math:`r`, whose rate uses the re-summed
        :math:`\log\alpha`), so the schedule is continuous to rounding; the ODE solution above stays the check
        that the coefficients are integrable.
        """
        width = nodes[1:] - nodes[:-1]
        start = nodes[:-1, None]
        gl_x, gl_w = (torch.as_tensor(v, dtype=torch.float64) for v in _GAUSS_LEGENDRE_8)

        def running_sum(first, rate):
            cells = width * (rate(start + width[:, None] * gl_x) * gl_w).sum(-1)
            return torch.cat([first.reshape(1), first + torch.cumsum(cells, 0)])

        log_alpha = running_sum(log_alpha[0], lambda u: self._coef(self._f, "f", u))
        self._tables = {"cpu": (nodes, log_alpha, r, d_log_alpha, d_r)}      # r's rate reads this log alpha
        r = running_sum(r[0], lambda u: self._coef(self._g, "g", u) ** 2 * torch.exp(-2.0 * self._log_alpha64(u)))
        self._tables = {}
        if not bool((r[1:] > 0).all()):
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
        if t64.dim() > 0 and t64.numel() > 1 and not any(t64.stride()):
            # one time expanded over a batch (check_time's scalar): one quadrature, the same values and
            # gradient (expand sums it into the one element), not one quadrature per element
            return self._from_node(t64[(0,) * t64.dim()], column, rate).expand(t64.shape).clone()
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

    d_log_snr = d_log_snr_via_diffusion
