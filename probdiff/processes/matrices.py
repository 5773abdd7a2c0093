r"""Transition-matrix numerics of Markov chains: the uniformised matrix exponential, batched storage of one
matrix per distinct time, categorical draws and the KL sum with 0 log 0 = 0 (THEORY.md §5)."""

from __future__ import annotations

import math

import torch

from .._util import check_finite

__all__ = ["sample_categorical", "uniformized_expm", "Batched", "xlogy_ratio", "with_diagonal", "check_generator",
           "poisson_kl"]


def sample_categorical(probs: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Draw one index per row of ``probs`` (last axis, need not be normalised) by inverse CDF.

    One uniform per row and a cumulative sum: no host round trip, reproducible from ``generator``.
    Returns ``torch.long`` of shape ``probs.shape[:-1]``.
    """
    cdf = torch.cumsum(probs, dim=-1)
    u = torch.rand(probs.shape[:-1], generator=generator, device=probs.device, dtype=probs.dtype)
    u = (u * cdf[..., -1])[..., None]
    idx = (cdf <= u).sum(-1)
    return idx.clamp_max(probs.shape[-1] - 1)


def uniformized_expm(gen: torch.Tensor, db: torch.Tensor, db_max: float | None = None, terms: int = 16) -> torch.Tensor:
    r""":math:`\exp(\Delta B\,R)` for a generator ``gen`` and increments ``db`` ``(U,)``, shape ``(U, S, S)``.

    Uniformization (Jensen 1953; Grassmann 1977) with scaling and squaring: with
    :math:`\lambda = \max_i |R_{ii}|` and :math:`A = I + R/\lambda` (a stochastic matrix),
    :math:`e^{yR/\lambda \cdot\lambda} = e^{-y}\sum_k \frac{y^k}{k!}A^k`, :math:`y = \lambda\Delta B/2^m \le 1/2`,
    then squared ``m`` times. Every operation adds non-negative numbers, so even tiny transition
    probabilities keep full *relative* accuracy (``torch.linalg.matrix_exp`` loses it through
    cancellation, which matters for posteriors, ratios of tiny probabilities). ``m`` also spreads the
    up to ``S - 1`` jumps a far entry needs over substeps of a few jumps each, well inside ``terms``.
    ``db_max`` (an upper bound on ``db``) fixes ``m`` without reading ``db`` back to the host.
    """
    s = gen.shape[0]
    lam = float((-torch.diagonal(gen)).max().clamp_min(torch.finfo(torch.float64).tiny))
    eye = torch.eye(s, dtype=gen.dtype, device=gen.device)
    step = eye + gen / lam
    x = lam * db.to(gen.dtype)
    top = lam * db_max if db_max is not None else (float(x.max()) if x.numel() else 0.0)
    need = max(top / 0.5, 4.0 * (s - 1) / terms, 1.0)
    m = max(0, math.ceil(math.log2(need)))
    y = (x / 2**m)[:, None, None]
    term = eye.expand(x.shape[0], s, s)
    acc = term.clone()
    for k in range(1, terms + 1):
        term = (term @ step) * (y / k)
        acc = acc + term
    acc = acc * torch.exp(-y)
    for _ in range(m):
        acc = acc @ acc
    return acc


class Batched:
    """A batch of ``(S, S)`` matrices stored once per distinct time: ``mats[inv[b]]`` belongs to sample ``b``.

    Sampling steps share one time across the batch, so one matrix serves every sample.
    """

    def __init__(self, mats: torch.Tensor, inv: torch.Tensor):
        self.mats, self.inv = mats, inv

    def full(self) -> torch.Tensor:
        """``(batch, S, S)``."""
        return self.mats[self.inv]

    def rows(self, idx: torch.Tensor) -> torch.Tensor:
        """``M_b[idx[b, ...], :]``, shape ``(batch, *event, S)``."""
        b = idx.shape[0]
        out = self.mats[self.inv[:, None], idx.reshape(b, math.prod(idx.shape[1:]))]  # no -1: b may be 0
        return out.reshape(*idx.shape, self.mats.shape[-1])

    def cols(self, idx: torch.Tensor) -> torch.Tensor:
        """``M_b[:, idx[b, ...]]`` on the last axis, shape ``(batch, *event, S)``."""
        return Batched(self.mats.transpose(-1, -2), self.inv).rows(idx)

    def left_mul(self, v: torch.Tensor) -> torch.Tensor:
        """``v[b, ..., :] @ M_b`` for ``v`` of shape ``(batch, *event, S)``."""
        mats = self.mats.to(v.dtype)
        if mats.shape[0] == 1:
            return v @ mats[0]
        b = v.shape[0]
        return torch.bmm(v.reshape(b, math.prod(v.shape[1:-1]), v.shape[-1]), mats[self.inv]).reshape(v.shape)


def xlogy_ratio(p: torch.Tensor, log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """:math:`\\sum p (\\log p - \\log q)` over the last axis with the convention 0 log 0 = 0."""
    terms = torch.where(p > 0, p * (log_p - log_q), torch.zeros_like(p))
    return terms.sum(-1)


def with_diagonal(rates: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Set the entry at the current state to minus the total outgoing rate."""
    idx = x.long()[..., None]
    off = rates.scatter(-1, idx, 0.0)
    return off.scatter(-1, idx, -off.sum(-1, keepdim=True))


def check_generator(generator) -> torch.Tensor:
    """``generator`` as a float64 CPU ``(S, S)`` rate matrix; ``ValueError`` unless it is square with
    ``S >= 2``, finite, non-negative off the diagonal and has rows summing to zero."""
    if not isinstance(generator, torch.Tensor):
        generator = torch.as_tensor(generator)
    eps = torch.finfo(generator.dtype).eps if generator.is_floating_point() else 0.0
    gen = generator.to(torch.float64).cpu()
    if gen.dim() != 2 or gen.shape[0] != gen.shape[1] or gen.shape[0] < 2:
        raise ValueError(f"generator must be a square (S, S) matrix with S >= 2, got shape {tuple(gen.shape)}")
    check_finite("generator", gen)
    off = gen - torch.diag(torch.diagonal(gen))
    if bool((off < 0).any()):
        raise ValueError("generator must have non-negative off-diagonal entries (rates), got a negative one")
    scale = max(1.0, float(gen.abs().max()))
    if bool((gen.sum(1).abs() > max(8 * eps, 1e-12) * scale * gen.shape[0]).any()):
        raise ValueError(f"generator rows must sum to 0, got row sums up to {float(gen.sum(1).abs().max()):.3g}")
    return gen


def poisson_kl(m: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    r""":math:`y - m\log y + m\log m - m` elementwise (the KL rate between Poisson clocks of rates m and y).

    Where :math:`m = 0` it is :math:`y`, with gradient 1 even where :math:`y = 0` too (``xlogy``'s gradient
    :math:`m/y` would be 0/0 there: a model rate that is exactly zero, e.g. a token no reverse jump can
    leave, must not turn a training gradient into NaN)."""
    live = m > 0
    safe_y = torch.where(live, y, torch.ones_like(y))
    return torch.where(live, y - m * torch.log(safe_y) + torch.xlogy(m, m) - m, y)
