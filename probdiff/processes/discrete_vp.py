r"""Finite beta tables (DDPM, improved DDPM, diffusers) as a continuous Gaussian process (THEORY.md §9).

A table :math:`\beta_0, \dots, \beta_{N-1}` (0-based, as diffusers' timesteps and improved-diffusion's ``t``)
gives :math:`\bar\alpha_k = \prod_{j\le k}(1-\beta_j)`, and training step :math:`k` has
:math:`x_k = \sqrt{\bar\alpha_k}\,x_0 + \sqrt{1-\bar\alpha_k}\,\epsilon`. :class:`DiscreteVP` places step
:math:`k` at time :math:`t_k = (k+1)/N` (so DDPM's 1-based step :math:`k+1` sits at :math:`(k+1)/N`, the
``t`` of score_sde's continuous VP, whose :math:`\beta(t) \approx N\beta_{tN}`), agrees with the table
*exactly* at these N times and interpolates the log-SNR :math:`\lambda` in between (monotone cubic, C1). Below the
first step the data are reached with :math:`\sigma_t^2` linear in :math:`t`,
:math:`\sigma_t^2 = (t/t_0)(1-\bar\alpha_0)`, the small-time behaviour of the VP SDE
(:math:`\sigma_t^2\approx\beta(0)\,t`); :math:`\alpha_t = 1` at :math:`t = 0`. References: Ho, Jain & Abbeel,
"Denoising Diffusion Probabilistic Models" (NeurIPS 2020), Eq. (4); Nichol & Dhariwal, "Improved Denoising
Diffusion Probabilistic Models" (ICML 2021), Eq. (17); Song et al., "Score-Based Generative Modeling through
SDEs" (ICLR 2021), App. B.
"""

from __future__ import annotations

import math

import torch

from .._util import as_tensor, check_positive, check_positive_int
from .gaussian import GaussianProcess

__all__ = ["DiscreteVP", "linear_betas", "cosine_betas"]


def linear_betas(num_steps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02) -> torch.Tensor:
    r"""DDPM's linear table :math:`\beta_k = \beta_{start} + \tfrac{k}{N-1}(\beta_{end} - \beta_{start})`
    (Ho et al. 2020, §4), float64."""
    n = check_positive_int("num_steps", num_steps)
    return torch.linspace(float(beta_start), float(beta_end), n, dtype=torch.float64)


def cosine_betas(num_steps: int = 1000, offset: float = 0.008, max_beta: float = 0.999) -> torch.Tensor:
    r"""Improved DDPM's cosine table (Nichol & Dhariwal 2021, Eq. (17)), float64:
    :math:`\beta_k = \min\big(1 - \bar\alpha((k+1)/N)/\bar\alpha(k/N),\ \beta_{max}\big)` with
    :math:`\bar\alpha(u) = \cos^2\big(\tfrac{\pi}{2}\tfrac{u + s}{1 + s}\big)`."""
    n = check_positive_int("num_steps", num_steps)
    u = torch.arange(n + 1, dtype=torch.float64) / n
    abar = torch.cos(0.5 * math.pi * (u + offset) / (1 + offset)) ** 2
    return torch.clamp(1.0 - abar[1:] / abar[:-1], max=float(max_beta))


def _monotone_slopes(lam: torch.Tensor, first: float) -> torch.Tensor:
    r"""Knot slopes :math:`d\lambda/du` (unit spacing) of a monotone cubic Hermite interpolant (Fritsch &
    Carlson, "Monotone Piecewise Cubic Interpolation", SIAM J. Numer. Anal. 17(2), 1980; the harmonic mean
    of the neighbouring secants at interior knots, as in PCHIP). At knot 0 the slope is ``first``, that of
    the segment below step 0 (so the schedule is C1 there), limited to 3 times the secant (monotonicity);
    at the last knot it is the last secant."""
    d = lam[1:] - lam[:-1]                                   # all negative
    m = torch.empty_like(lam)
    m[1:-1] = 2.0 / (1.0 / d[:-1] + 1.0 / d[1:])
    m[0] = max(first, 3.0 * float(d[0]))
    m[-1] = d[-1]
    return m


class DiscreteVP(GaussianProcess):
    r"""The variance-preserving process of a finite table :math:`\bar\alpha_0 > \dots > \bar\alpha_{N-1}`.

    Step :math:`k` (0-based) sits at :math:`t_k = (k+1)/N`; ``t_max = 1`` is the last step. With
    :math:`\lambda_k = \log\bar\alpha_k - \log(1-\bar\alpha_k)`,

    .. math::

        \lambda(t) = H_k(u - k),\quad u = tN - 1 \in [k, k+1] \qquad (t \ge t_0),

    where :math:`H_k` is the monotone cubic Hermite interpolant of the knots :math:`\lambda_k` (Fritsch &
    Carlson's slopes, so :math:`\lambda` is decreasing and :math:`C^1`: adaptive ODE solvers see no kinks),
    :math:`\sigma_t^2 = (t/t_0)(1-\bar\alpha_0)` for :math:`t \le t_0`, and always
    :math:`\alpha_t^2 = \mathrm{sigmoid}(\lambda_t)`, :math:`\sigma_t^2 = \mathrm{sigmoid}(-\lambda_t)`. So
    ``marginal(x0, time_of_step(k))`` is the table's :math:`q(x_k\mid x_0)` to rounding, and everything else
    (reverse processes, solvers, likelihoods) follows as for any Gaussian process.

    Args:
        alphas_cumprod: the table :math:`\bar\alpha_k`, strictly decreasing in (0, 1), at least 2 entries.
        t_min: data time, in ``(0, t_0)`` (default ``0.01 / N``: 1e-5 for N = 1000, score_sde's choice).

    Use :meth:`from_betas`, :meth:`linear` and :meth:`cosine` for the usual tables,
    :meth:`time_of_step`/:meth:`step_of_time` to convert, and ``pd.grids.Explicit(process.native_grid())``
    to sample on the training steps.
    """

    def __init__(self, alphas_cumprod=None, *, betas=None, t_min: float | None = None,
                 validate_args: bool | None = None):
        if (alphas_cumprod is None) == (betas is None):
            raise ValueError("give exactly one of alphas_cumprod and betas")
        if betas is not None:
            # log abar_k = sum_{j<=k} log(1 - beta_j); 1 - abar_k by expm1 keeps its digits where it is small
            betas = torch.as_tensor(betas).detach().to("cpu", torch.float64).flatten()
            if not bool(((betas > 0) & (betas < 1)).all()):
                raise ValueError("betas must lie strictly inside (0, 1)")
            log_abar = torch.cumsum(torch.log1p(-betas), 0)
            log_1m_abar = torch.log(-torch.expm1(log_abar))
        else:
            abar = torch.as_tensor(alphas_cumprod).detach().to("cpu", torch.float64).flatten()
            log_abar, log_1m_abar = torch.log(abar), torch.log1p(-abar)
        n = log_abar.numel()
        if n < 2:
            raise ValueError(f"alphas_cumprod must have at least 2 entries, got {n}")
        if not bool(torch.isfinite(log_abar).all() & torch.isfinite(log_1m_abar).all()):
            raise ValueError("alphas_cumprod must lie strictly inside (0, 1) (no 0, 1 or NaN entries)")
        lam = log_abar - log_1m_abar
        if not bool((lam[1:] < lam[:-1]).all()):
            raise ValueError("alphas_cumprod must be strictly decreasing (every beta in (0, 1))")
        self.num_steps = n
        self._lam = lam
        self._log_abar, self._log_1m_abar = log_abar, log_1m_abar
        self._t0 = 1.0 / n
        self._c = math.exp(float(log_1m_abar[0])) * n       # sigma_t^2 = c t below the first step
        self._slopes = _monotone_slopes(lam, -1.0 / math.exp(float(log_abar[0])))
        t_min = 0.01 / n if t_min is None else t_min
        check_positive("t_min", t_min)
        if not t_min < self._t0:
            raise ValueError(f"t_min must be < {self._t0:g} (the time of step 0, 1/N), got {t_min}")
        super().__init__(t_min, 1.0, validate_args=validate_args)

    # ---------------------------------------------------------------- constructors
    @classmethod
    def from_betas(cls, betas, **kwargs) -> "DiscreteVP":
        r"""From :math:`\beta_k` in (0, 1): :math:`\bar\alpha_k = \prod_{j\le k}(1-\beta_j)` (same as
        ``DiscreteVP(betas=betas)``)."""
        return cls(betas=betas, **kwargs)

    @classmethod
    def linear(cls, num_steps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02, **kwargs) -> "DiscreteVP":
        """DDPM's linear table (:func:`linear_betas`; Ho et al. 2020 use N = 1000, 1e-4 to 0.02)."""
        return cls.from_betas(linear_betas(num_steps, beta_start, beta_end), **kwargs)

    @classmethod
    def cosine(cls, num_steps: int = 1000, offset: float = 0.008, max_beta: float = 0.999, **kwargs) -> "DiscreteVP":
        """Improved DDPM's cosine table (:func:`cosine_betas`)."""
        return cls.from_betas(cosine_betas(num_steps, offset, max_beta), **kwargs)

    # ---------------------------------------------------------------- the table
    @property
    def alphas_cumprod(self) -> torch.Tensor:
        r"""The table :math:`\bar\alpha_k`, float64, shape ``(N,)``."""
        return torch.exp(self._log_abar)

    @property
    def log_alphas_cumprod(self) -> tuple[torch.Tensor, torch.Tensor]:
        r"""``(log abar_k, log(1 - abar_k))``, float64, each ``(N,)``, without cancellation."""
        return self._log_abar, self._log_1m_abar

    @property
    def betas(self) -> torch.Tensor:
        r""":math:`\beta_k = 1 - \bar\alpha_k/\bar\alpha_{k-1}` (:math:`\bar\alpha_{-1} = 1`), float64."""
        prev = torch.cat([torch.zeros(1, dtype=torch.float64), self._log_abar[:-1]])
        return -torch.expm1(self._log_abar - prev)

    def time_of_step(self, k) -> torch.Tensor:
        """The time :math:`t_k = (k+1)/N` of training step ``k`` (0-based; fractional steps allowed), float64."""
        return (torch.as_tensor(k, dtype=torch.float64) + 1.0) / self.num_steps

    def step_of_time(self, t) -> torch.Tensor:
        """The (fractional, 0-based) training step :math:`tN - 1` at time ``t``: the inverse of
        :meth:`time_of_step` (values in ``[-1, N-1]``; below 0 between the data and the first step), in
        ``t``'s dtype. A time within the rounding of ``t``'s dtype of a training step gives that step exactly
        (``t_k`` in float32 is not exactly (k+1)/N, and a network should see the integer it was trained on)."""
        t = as_tensor(t)
        u = t.to(torch.float64) * self.num_steps - 1.0
        k = torch.round(u)
        close = (u - k).abs() <= 4.0 * torch.finfo(t.dtype).eps * self.num_steps
        return torch.where(close, k, u).to(t.dtype)

    def native_grid(self, steps=None) -> torch.Tensor:
        """The times of the training steps ``steps`` (default all N, e.g. a scheduler's ``timesteps``), from
        the latest down, followed by ``t_min``: a float64 tensor for ``pd.grids.Explicit``. ``steps`` must
        include the last step N-1 (grids start at ``t_max``). The last interval, from the earliest step to
        ``t_min``, reaches the data (DDPM's final step; DDIM's with ``set_alpha_to_one``)."""
        ks = torch.arange(self.num_steps - 1, -1, -1) if steps is None else torch.as_tensor(steps).flatten()
        ks = torch.sort(ks.to(torch.float64), descending=True).values
        if ks.numel() == 0 or float(ks[-1]) < 0 or float(ks[0]) > self.num_steps - 1:
            raise ValueError(f"steps must be training steps in [0, {self.num_steps - 1}], got {ks.tolist()}")
        if ks.numel() != 1 and not bool((ks[1:] < ks[:-1]).all()):
            raise ValueError("steps must be distinct")
        if float(ks[0]) != self.num_steps - 1:
            raise ValueError(f"steps must include the last training step {self.num_steps - 1} (a grid starts at "
                             f"t_max; diffusers' timestep_spacing='trailing' does), got {ks.tolist()[:3]}...")
        return torch.cat([self.time_of_step(ks), torch.tensor([self.t_min], dtype=torch.float64)])

    # ---------------------------------------------------------------- schedule (closed forms)
    def _hermite(self, t: torch.Tensor):
        """``(lambda, dlambda/dt)`` of the cubic Hermite interpolant at ``t`` (clamped to ``[t_0, 1]``)."""
        n = self.num_steps
        u = torch.clamp(t, min=self._t0) * n - 1.0
        k = torch.clamp(torch.floor(u), 0, n - 2)
        w, idx = u - k, k.long()
        lam = self._lam.to(device=t.device, dtype=t.dtype)
        m = self._slopes.to(device=t.device, dtype=t.dtype)
        l0, l1, m0, m1 = lam[idx], lam[idx + 1], m[idx], m[idx + 1]
        w2, w3 = w * w, w * w * w
        value = (2 * w3 - 3 * w2 + 1) * l0 + (w3 - 2 * w2 + w) * m0 + (3 * w2 - 2 * w3) * l1 + (w3 - w2) * m1
        slope = (6 * w2 - 6 * w) * (l0 - l1) + (3 * w2 - 4 * w + 1) * m0 + (3 * w2 - 2 * w) * m1
        return value, slope * n

    def log_snr(self, t) -> torch.Tensor:
        t = as_tensor(t)
        inner, _ = self._hermite(t)
        # below step 0: sigma^2 = c t (t clamped so that the branch where() drops stays finite for autograd)
        s2 = self._c * torch.clamp(t, max=self._t0)
        return torch.where(t <= self._t0, torch.log1p(-s2) - torch.log(s2), inner)

    def d_log_snr(self, t) -> torch.Tensor:
        t = as_tensor(t)
        _, inner = self._hermite(t)
        t1 = torch.clamp(t, max=self._t0)
        return torch.where(t <= self._t0, -self._c / (1.0 - self._c * t1) - 1.0 / t1, inner)

    def log_alpha(self, t) -> torch.Tensor:
        return -0.5 * torch.nn.functional.softplus(-self.log_snr(t))

    def log_sigma(self, t) -> torch.Tensor:
        return -0.5 * torch.nn.functional.softplus(self.log_snr(t))

    def drift_coef(self, t) -> torch.Tensor:
        # log alpha = -softplus(-lambda)/2  =>  f = sigmoid(-lambda) lambda' / 2 = sigma^2 lambda' / 2
        t = as_tensor(t)
        return 0.5 * torch.sigmoid(-self.log_snr(t)) * self.d_log_snr(t)

    def diffusion(self, t) -> torch.Tensor:
        t = as_tensor(t)
        return torch.sqrt(-torch.sigmoid(-self.log_snr(t)) * self.d_log_snr(t))

    def __repr__(self) -> str:
        abar = self.alphas_cumprod
        return (f"DiscreteVP(N={self.num_steps}, alphas_cumprod=[{float(abar[0]):.6g}, ..., {float(abar[-1]):.6g}], "
                f"t_min={self.t_min:g})")
