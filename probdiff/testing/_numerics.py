"""Numerical helpers of the checks, independent of the code they check.

* :func:`derivative` — Ridders' extrapolated finite differences (Ridders, "Accurate computation of
  F'(x) and F'(x)F''(x)", Adv. Eng. Software 4, 1982; Press et al., *Numerical Recipes*, §5.7) with an
  error estimate, central in the interior and one-sided at the ends of the time domain, so that
  derivatives are checked without the process' own autograd path.
* :func:`simulation_grid` — time nodes dense where the process changes fast (uniform in log-SNR,
  merged with uniform in t).
* :func:`sample_with` — draws from a distribution reproducibly from a ``torch.Generator``.
"""

from __future__ import annotations

from typing import Callable

import torch

__all__ = ["derivative", "simulation_grid", "sample_with", "seed_from"]


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
    """Increasing float64 nodes from ``t0`` to ``t1``: half uniform in t, half uniform in the log-SNR
    (found by bisection, ``log_snr`` decreasing), plus the times in ``include``.

    Uniform log-SNR steps keep ``|f| dt`` and ``g^2 dt / sigma^2`` small where the schedule is stiff
    (near t_min for VP, near 1 for the linear blend), so Euler–Maruyama needs few steps.
    """
    half = max(steps // 2, 1)
    nodes = [torch.linspace(t0, t1, half + 1, dtype=torch.float64)]
    ends = torch.tensor([t0, t1], dtype=torch.float64)
    lam = process.log_snr(ends)
    if bool(torch.isfinite(lam).all()) and float(lam[0]) > float(lam[1]):
        targets = torch.linspace(float(lam[0]), float(lam[1]), half + 1, dtype=torch.float64)[1:-1]
        a = torch.full_like(targets, t0)
        b = torch.full_like(targets, t1)
        for _ in range(60):
            mid = 0.5 * (a + b)
            above = process.log_snr(mid) > targets  # lambda decreasing: the target lies later
            a, b = torch.where(above, mid, a), torch.where(above, b, mid)
        nodes.append(0.5 * (a + b))
    nodes.append(torch.as_tensor(list(include), dtype=torch.float64).reshape(-1))
    ts = torch.unique(torch.cat(nodes).clamp(t0, t1))
    keep = torch.cat([torch.tensor([True]), ts[1:] - ts[:-1] > 1e-12 * max(1.0, abs(t1))])
    return ts[keep]


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
