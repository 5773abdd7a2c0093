r"""The law of a tau-leaping step on an ordinal chain: a clamped sum of independent Poisson jumps.

Tau-leaping (Campbell et al., "A Continuous Time Framework for Discrete Denoising Models", NeurIPS 2022,
§4.1) freezes the reverse rates :math:`\hat R_t(x \to y)` over a step of length :math:`\tau = t - s`,
draws :math:`N_y \sim \mathrm{Poisson}(m_y)`, :math:`m_y = \hat R_t(x\to y)\,\tau`, independently for every
target :math:`y \ne x`, and moves to

.. math::

    x_s = \mathrm{clamp}\big(x + D,\ 0,\ S - 1\big), \qquad D = \sum_{y \ne x} N_y\,(y - x).

:math:`D = U - V` with :math:`U = \sum_{j \ge 1} j\,N_{x+j}` (jumps up) and :math:`V = \sum_{j\ge 1} j\,N_{x-j}`
(jumps down) independent compound Poisson variables on :math:`\{0, 1, \dots\}`, so (Panjer's recursion,
Panjer, "Recursive Evaluation of a Family of Compound Distributions", ASTIN Bulletin 12, 1981, for the
Poisson case)

.. math::

    P(U = 0) = e^{-\sum_j \mu_j},\qquad P(U = u) = \frac1u \sum_{j=1}^{\min(u, S-1)} j\,\mu_j\,P(U = u - j),

with :math:`\mu_j = m_{x+j}` (likewise :math:`V` with :math:`\nu_j = m_{x-j}`), and the clamped state is the
categorical

.. math::

    P(x_s = k) = \begin{cases}
        \sum_v P(V = v)\,P(U \le v - x) & k = 0,\\
        \sum_v P(V = v)\,P(U = k - x + v) & 0 < k < S - 1,\\
        \sum_v P(V = v)\,P(U \ge S - 1 - x + v) & k = S - 1.
    \end{cases}

Every term is a sum of non-negative numbers (no cancellation), so small probabilities keep their relative
accuracy. The recursions run until the probabilities of :math:`U` and :math:`V` have fallen below
:data:`TAIL` past twice their mean (the mass left out is of that order); the work is
:math:`O(K\,S)` per element for a truncation at :math:`K`, with :math:`K` about the largest plausible
:math:`U` or :math:`V` (at most :math:`(S - 1)` times the largest plausible number of jumps).
"""

from __future__ import annotations

import torch

__all__ = ["clamped_jump_probs", "draw_clamped_jumps"]

#: size below which the recursion's last terms end it (the mass left out is of this order)
TAIL = 1e-20
#: the most expected jumps per element the recursion accepts (e^{-600} is still a float64)
MAX_MEAN_JUMPS = 600.0
#: elements x states x truncation handled at once when assembling the categorical
_CHUNK = 1 << 22


def draw_clamped_jumps(x: torch.Tensor, means: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """One tau-leaping draw: ``N ~ Poisson(means)`` per target, :math:`x + \\sum_y N_y (y - x)` clamped to
    ``0 .. S-1``, in ``x``'s dtype. ``means`` is ``(*x.shape, S)`` with zero at ``y = x``."""
    jumps = torch.poisson(means, generator=generator)
    states = torch.arange(means.shape[-1], dtype=means.dtype, device=means.device)
    moved = x.to(means.dtype) + (jumps * (states - x.to(means.dtype)[..., None])).sum(-1)
    return moved.clamp(0, means.shape[-1] - 1).to(x.dtype)


def _compound_pmf(jump_means: torch.Tensor) -> torch.Tensor:
    """Panjer's recursion for :math:`\\sum_j j\\,N_j`, :math:`N_j \\sim \\mathrm{Poisson}(\\mu_j)`, per row of
    ``jump_means`` (``(R, S)``, column ``j`` is :math:`\\mu_j`, column 0 unused): ``(R, K + 1)`` probabilities
    of ``0 .. K``. It stops once past twice the largest mean, :math:`2\\max E[U] + S`, with the last ``S - 1``
    probabilities of every row below :data:`TAIL`: from there on each term is at most half the largest of the
    ``S - 1`` before it, so the mass left out is below :math:`2 (S - 1)` ``TAIL``."""
    rows, width = jump_means.shape
    steps = torch.arange(width, dtype=jump_means.dtype, device=jump_means.device)
    weighted = (steps * jump_means)[:, 1:].flip(1)
    past = 2.0 * float((steps * jump_means).sum(1).max()) + width if rows else 0.0
    pad = width - 1
    buf = torch.zeros(rows, pad + 64, dtype=jump_means.dtype, device=jump_means.device)
    buf[:, pad] = torch.exp(-jump_means[:, 1:].sum(1))
    u = 0
    while rows and (u < past or bool((buf[:, u + 1:u + pad + 1] >= TAIL).any())):
        u += 1
        if pad + u >= buf.shape[1]:
            buf = torch.cat([buf, torch.zeros_like(buf)], 1)
        buf[:, pad + u] = (weighted * buf[:, u:u + pad]).sum(1) / u
    return buf[:, pad:pad + u + 1]


def clamped_jump_probs(x: torch.Tensor, means: torch.Tensor) -> torch.Tensor:
    r"""The law of :func:`draw_clamped_jumps`: ``(*x.shape, S)`` probabilities of :math:`x_s = 0 .. S-1`
    (float64, normalised), computed as in the module docstring.

    Args:
        x: integer-valued states in ``0 .. S-1``.
        means: ``(*x.shape, S)`` expected jump counts :math:`m_y \ge 0` (the entry at ``y = x`` is ignored).

    Raises ``ValueError`` when an element expects more than :data:`MAX_MEAN_JUMPS` jumps (a step far too long
    for tau-leaping; the recursion would underflow).
    """
    size = means.shape[-1]
    m = means.reshape(-1, size).double()
    xi = x.reshape(-1).long()
    offsets = torch.arange(size, device=m.device) - xi[:, None]                      # y - x, (E, S)
    up = torch.zeros_like(m).scatter_add_(1, offsets.clamp_min(0), torch.where(offsets > 0, m, 0.0))
    down = torch.zeros_like(m).scatter_add_(1, (-offsets).clamp_min(0), torch.where(offsets < 0, m, 0.0))
    up[:, 0], down[:, 0] = 0.0, 0.0
    worst = float(torch.maximum(up.sum(1), down.sum(1)).max()) if m.shape[0] else 0.0
    if worst > MAX_MEAN_JUMPS:
        raise ValueError(f"the tau-leaping kernel needs at most {MAX_MEAN_JUMPS:g} expected jumps per element "
                         f"over the step, got {worst:.3g}: take shorter steps")
    out = torch.empty_like(m)
    rows = max(1, _CHUNK // (64 * size))                  # elements per recursion, then per assembly below
    for lo in range(0, m.shape[0], rows):
        part = slice(lo, lo + rows)
        n = up[part].shape[0]
        pmf = _compound_pmf(torch.cat([up[part], down[part]]))
        step = max(1, _CHUNK // (size * pmf.shape[1]))
        for sub in range(0, n, step):
            sl = slice(sub, sub + step)
            out[lo + sub:lo + sub + pmf[sl].shape[0]] = _clamp_law(xi[part][sl], pmf[:n][sl], pmf[n:][sl], size)
    out = out / out.sum(1, keepdim=True)
    return out.reshape(means.shape)


def _clamp_law(xi, p_up, p_down, size):
    """The categorical of ``clamp(x + U - V)`` from the pmfs of U and V (rows: elements)."""
    k = p_up.shape[1]
    v = torch.arange(k, device=p_up.device)
    cdf = torch.cumsum(p_up, 1)                                                       # P(U <= n)
    sf = torch.cumsum(p_up.flip(1), 1).flip(1)                                         # P(U >= n)
    zero, one = (torch.full((p_up.shape[0], 1), c, dtype=p_up.dtype, device=p_up.device) for c in (0.0, 1.0))
    # each row padded with its value below 0 and above the truncation: index n + 1
    pmf = torch.cat([zero, p_up, zero], 1)
    cdf = torch.cat([zero, cdf, cdf[:, -1:]], 1)
    sf = torch.cat([one, sf, zero], 1)
    targets = torch.arange(size, device=p_up.device)[None, :, None] - xi[:, None, None] + v   # k - x + v
    law = torch.gather(pmf, 1, _at(targets, k)).reshape(-1, size, k)
    law[:, 0] = torch.gather(cdf, 1, _at(targets[:, 0], k))                            # P(U <= v - x)
    law[:, -1] = torch.gather(sf, 1, _at(targets[:, -1], k))                           # P(U >= S-1-x+v)
    return (law * p_down[:, None, :]).sum(-1)


def _at(n: torch.Tensor, k: int) -> torch.Tensor:
    """Index of value ``n`` in a row ``[below, values(0 .. k-1), above]``, flattened to ``(rows, -1)``."""
    return (n.clamp(-1, k) + 1).reshape(n.shape[0], -1)
