"""Numerical helpers of the checks, independent of the code they check.

* :func:`derivative` — Ridders' extrapolated finite differences (Ridders, "Accurate computation of
  F'(x) and F'(x)F''(x)", Adv. Eng. Software 4, 1982; Press et al., *Numerical Recipes*, §5.7) with an
  error estimate, central in the interior and one-sided at the ends of the time domain, so that
  derivatives are checked without the process' own autograd path.
* :func:`simulation_grid` — time nodes dense where the process changes fast (uniform in a blend of
  t and the log-SNR), :func:`refine` (step halving) and :func:`halving_error` (Richardson's error
  estimate from two nested grids).
* :func:`sample_with` — draws from a distribution reproducibly from a ``torch.Generator``.
"""

from __future__ import annotations

from typing import Callable

import torch

__all__ = ["derivative", "integral_residual", "simulation_grid", "refine", "halving_error", "sample_with", "seed_from",
           "last_regular_time", "singular_times"]


def derivative(fn: Callable[[torch.Tensor], torch.Tensor], t: torch.Tensor, lo: float, hi: float
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """Derivative of an elementwise ``fn`` at ``t`` with a conservative error estimate.

    Two Ridders tableaux with different step ratios (1.4 and 1.65, see :func:`_ridders`); the error
    estimate is the larger of theirs and their disagreement, which guards against the rare accidental
    agreement of two wrong tableau entries.
    """
    a, err_a = _ridders(fn, t, lo, hi, con=1.4)
    b, err_b = _ridders(fn, t, lo, hi, con=1.65)
    return a, torch.maximum(torch.maximum(err_a, err_b), (a - b).abs())


def integral_residual(claimed: Callable[[torch.Tensor], torch.Tensor], fn: Callable[[torch.Tensor], torch.Tensor],
                      t: torch.Tensor, lo: float, hi: float, *, width: float = 0.02, nodes: int = 24
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """The derivative check by integration: ``int_a^b claimed(u) du - (fn(b) - fn(a))`` on an interval of
    ``width`` times the domain around each ``t`` (inside ``[lo, hi]``), by Gauss–Legendre quadrature, and the
    rounding scale of the comparison.

    Differencing amplifies rounding by 1/h and one-sided differences at the ends of the domain extrapolate
    poorly; integrating ``claimed`` is well conditioned (its error is that of ``fn`` at two points), so it
    confirms or clears a finite-difference disagreement. Returns ``(residual, scale, rounding)``: ``scale``
    the integral of ``|claimed|`` (for relative tolerances), ``rounding`` that of ``fn(a)`` and ``fn(b)``.
    """
    import numpy as np

    t = t.to(torch.float64)
    w = width * (hi - lo)
    a = torch.clamp(t - 0.5 * w, min=lo, max=hi - w)
    b = a + w
    x, wts = np.polynomial.legendre.leggauss(nodes)
    x, wts = torch.as_tensor(x, dtype=torch.float64), torch.as_tensor(wts, dtype=torch.float64)
    u = (0.5 * (a + b))[:, None] + (0.5 * w) * x[None]
    values = claimed(u.reshape(-1)).to(torch.float64).reshape(u.shape)
    integral = 0.5 * w * (wts[None] * values).sum(1)
    fa, fb = fn(a).to(torch.float64), fn(b).to(torch.float64)
    scale = 0.5 * w * (wts[None] * values.abs()).sum(1)
    rounding = 1e3 * torch.finfo(torch.float64).eps * (fa.abs() + fb.abs())
    return integral - (fb - fa), scale, rounding


def _ridders(fn: Callable[[torch.Tensor], torch.Tensor], t: torch.Tensor, lo: float, hi: float,
             *, levels: int = 40, con: float = 1.4, order: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    """Derivative of an elementwise function ``fn`` at ``t`` (float64) within ``[lo, hi]``.

    Ridders' method: differences at steps ``h0, h0/con, h0/con^2, ...`` are extrapolated to ``h -> 0``
    by Neville's scheme (up to ``order`` extrapolations); the estimate with the smallest error estimate is returned. Central
    differences where ``t`` has room on both sides (error series in ``h^2``), forward/backward ones
    (series in ``h``) within 1 % of the domain's ends, so ``fn`` is never evaluated outside ``[lo, hi]``.

    Returns:
        ``(value, error_estimate)``, both shaped like ``t``.
    """
    t = t.to(torch.float64)
    span = hi - lo
    left, right = t - lo, hi - t
    room = torch.minimum(left, right)
    central = room >= 1e-2 * span
    direction = torch.where(right >= left, torch.ones_like(t), -torch.ones_like(t))
    h = torch.where(central, torch.clamp(room, max=0.1 * span), torch.full_like(t, 0.1 * span))
    h = torch.minimum(h, torch.maximum(left, right))
    power = torch.where(central, torch.full_like(t, 2.0), torch.ones_like(t))
    f_t = fn(t)
    best = torch.full_like(t, float("nan"))
    err = torch.full_like(t, float("inf"))
    prev: list[torch.Tensor] = []
    for _ in range(levels):
        plus = fn(torch.where(central, t + h, t + direction * h))
        minus = torch.where(central, fn(torch.where(central, t - h, t)), f_t)
        step = torch.where(central, 2 * h, direction * h)
        row = [(plus - minus) / step]
        for j in range(1, min(len(prev), order) + 1):
            fac = con ** (power * j)
            row.append((row[j - 1] * fac - prev[j - 1]) / (fac - 1))
            e = torch.maximum((row[j] - row[j - 1]).abs(), (row[j] - prev[j - 1]).abs())
            better = e < err
            best = torch.where(better, row[j], best)
            err = torch.where(better, e, err)
        prev = row
        h = h / con
    return best, err


def simulation_grid(process, t0: float, t1: float, steps: int, *, include=()) -> torch.Tensor:
    """Increasing float64 nodes from ``t0`` to ``t1``, ``steps + 1`` of them plus the times in ``include``.

    The nodes are uniform in the blended coordinate ``u(t) = (t - t0)/(t1 - t0)/2 + (lambda_0 - lambda_t)/
    (lambda_0 - lambda_1)/2`` (``lambda`` the log-SNR, found by bisection; the t-half alone where the
    log-SNR is not finite or not decreasing). Uniform log-SNR steps keep ``|f| dt`` and ``g^2 dt / sigma^2``
    small where the schedule is stiff (near t_min for VP, near 1 for the linear blend); the uniform half
    bounds the steps where the log-SNR is flat. Blending the two coordinates instead of merging two grids
    means the grid cannot collapse: for VE, where the log-SNR is linear in t, it is the uniform grid with
    all its ``steps`` steps (a merged grid kept half of them).
    """
    steps = max(int(steps), 1)
    ends = torch.tensor([t0, t1], dtype=torch.float64)
    lam = process.log_snr(ends).to(torch.float64)
    targets = torch.linspace(0.0, 1.0, steps + 1, dtype=torch.float64)[1:-1]
    if bool(torch.isfinite(lam).all()) and float(lam[0]) > float(lam[1]):
        lam0, lam1 = float(lam[0]), float(lam[1])

        def coordinate(u):
            return 0.5 * (u - t0) / (t1 - t0) + 0.5 * (lam0 - process.log_snr(u).to(torch.float64)) / (lam0 - lam1)

        a = torch.full_like(targets, t0)
        b = torch.full_like(targets, t1)
        for _ in range(60):
            mid = 0.5 * (a + b)
            below = coordinate(mid) < targets  # u increasing in t: the target lies later
            a, b = torch.where(below, mid, a), torch.where(below, b, mid)
        inner = 0.5 * (a + b)
    else:
        inner = t0 + (t1 - t0) * targets
    nodes = [ends[:1], inner, ends[1:], torch.as_tensor(list(include), dtype=torch.float64).reshape(-1)]
    ts = torch.unique(torch.cat(nodes).clamp(t0, t1))
    keep = torch.cat([torch.tensor([True]), ts[1:] - ts[:-1] > 1e-12 * max(1.0, abs(t1))])
    return ts[keep]


def refine(ts: torch.Tensor) -> torch.Tensor:
    """``ts`` with the midpoint of every interval inserted: the nested grid of step halving."""
    mid = 0.5 * (ts[1:] + ts[:-1])
    return torch.cat([torch.stack([ts[:-1], mid], 1).reshape(-1), ts[-1:]])


def halving_error(fine: torch.Tensor, coarse: torch.Tensor, order: float) -> torch.Tensor:
    """Richardson's estimate of the discretisation error of ``fine`` (a statistic computed with steps h/2)
    from ``coarse`` (the same statistic with steps h, on the same random numbers): for a method of weak
    order ``p``, ``err(h/2) = (fine - coarse) / (2^p - 1)`` to leading order. Returned as a magnitude and
    doubled, since the leading-order term is only an estimate."""
    return 2.0 * (fine - coarse).abs() / (2.0 ** order - 1.0)


def seed_from(generator: torch.Generator) -> int:
    """A fresh integer seed drawn from ``generator``."""
    return int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device))


def sample_with(distribution, generator: torch.Generator, sample_shape=()) -> torch.Tensor:
    """``distribution.sample(sample_shape)`` made reproducible by seeding a forked RNG from ``generator``."""
    seed = seed_from(generator)
    devices = [generator.device] if generator.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        return distribution.sample(torch.Size(sample_shape))


def last_regular_time(process) -> float:
    r"""``t_max``, or where the SDE's coefficients are infinite there (:math:`\alpha_{t_{max}} = 0`:
    ``LinearBlend(t_max=1.0)``, :math:`f = -1/(1-t)`) the time 1e-3 of the span before it: the simulations
    run on the regular part of the domain; the singular end itself is the prior (checked in closed form by
    the prior check, and sampled out of exactly by the samplers' first step)."""
    t_max = torch.tensor(process.t_max, dtype=torch.float64)
    if bool(torch.isfinite(process.drift_coef(t_max)) & torch.isfinite(process.diffusion(t_max))):
        return process.t_max
    return process.t_max - 1e-3 * (process.t_max - process.t_min)


def singular_times(process, t: torch.Tensor) -> torch.Tensor:
    r"""Where a Gaussian process' schedule is singular (:math:`\alpha_t = 0` or :math:`\sigma_t = 0`), a mask."""
    return ~(torch.isfinite(process.log_alpha(t)) & torch.isfinite(process.log_sigma(t)))
