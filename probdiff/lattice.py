r"""The lattice of ``K``-level data and the truncated-normal maths of its bins (THEORY.md §4).

``K``-level data (integers :math:`n \in \{0, \dots, K-1\}` per dimension) are mapped onto the interval
``data_range`` :math:`= [lo, hi]` cut into ``K`` bins of width :math:`w = (hi - lo)/K`; bin ``n`` is
:math:`[lo + wn,\ lo + w(n+1))` with centre :math:`lo + w(n + \tfrac12)`. One object, :class:`Quantization`,
owns this lattice; dequantisation, the discretised decoder of the ELBO, the lattice denoiser head, the
Rao–Blackwellised loss target and :func:`probdiff.bits_per_dim` all use it, so they cannot disagree.

Given :math:`x_t = \alpha_t x_0 + \sigma_t\epsilon` and the bin of one coordinate of uniformly dequantised
data, the posterior of that coordinate is the normal :math:`N(x_t/\alpha_t, \sigma_t^2/\alpha_t^2)`
truncated to the bin (:func:`truncated_normal`, :func:`bin_posterior`, :func:`truncated_moments`; Johnson,
Kotz & Balakrishnan, *Continuous Univariate Distributions*, vol. 1, §13.10). Bottom layer: imports nothing
from probdiff but the utilities.
"""

from __future__ import annotations

import math

import torch

from ._util import check_finite

__all__ = ["Quantization", "truncated_normal", "bin_posterior", "truncated_moments"]


class Quantization:
    """The lattice of ``levels`` bins of equal width covering ``data_range = (lo, hi)``.

    Args:
        levels: number of levels ``K >= 2`` (256 for 8-bit data).
        data_range: ``(lo, hi)`` with ``lo < hi``, the interval the data coordinates cover. Ho et al.'s
            convention ``x = 2n/255 - 1`` for 8-bit images puts bin *centres* at -1 and 1, i.e.
            ``data_range = (-1 - 1/255, 1 + 1/255)``; ``(-1, 1)`` puts the bin *edges* there.
    """

    def __init__(self, levels: int, data_range):
        if isinstance(levels, bool) or not isinstance(levels, (int,)) and not (
                isinstance(levels, float) and levels.is_integer()) or int(levels) < 2:
            raise ValueError(f"levels must be an integer >= 2 (the number of quantisation levels), got {levels!r}")
        try:
            lo, hi = (float(v) for v in data_range)
        except (TypeError, ValueError):
            raise ValueError(f"data_range must be a pair (lo, hi) of numbers, got {data_range!r}") from None
        check_finite("data_range", lo)
        check_finite("data_range", hi)
        if not lo < hi:
            raise ValueError(f"data_range must satisfy lo < hi, got {data_range!r}")
        self.levels = int(levels)
        self.lo, self.hi = lo, hi

    @property
    def width(self) -> float:
        """Bin width :math:`(hi - lo)/K`."""
        return (self.hi - self.lo) / self.levels

    def bits_offset(self) -> float:
        """The constant :math:`\\log_2 K - \\log_2(hi - lo) = -\\log_2 w`, added per dimension by
        :func:`bits_per_dim`."""
        return math.log2(self.levels) - math.log2(self.hi - self.lo)

    def check_index(self, n: torch.Tensor) -> torch.Tensor:
        """``n`` as a tensor of integer-valued levels in ``[0, K-1]`` (ValueError otherwise)."""
        n = torch.as_tensor(n)
        if n.is_floating_point() or n.is_complex():
            check_finite("n", n)
            if not bool((n == n.round()).all()):
                raise ValueError("n must hold integer levels, got non-integer values")
        if n.dtype == torch.bool or bool((n < 0).any()) or bool((n > self.levels - 1).any()):
            raise ValueError(f"n must hold integer levels in [0, {self.levels - 1}], got values in "
                             f"[{float(n.min())}, {float(n.max())}]")
        return n

    def centers(self, n: torch.Tensor, *, dtype=None) -> torch.Tensor:
        """Bin centres :math:`lo + w(n + 1/2)`."""
        n = self.check_index(n)
        return self.lo + self.width * (n.to(dtype or torch.get_default_dtype()) + 0.5)

    def index(self, x: torch.Tensor) -> torch.Tensor:
        """The level of each bin *centre* in ``x`` (int64); ValueError if ``x`` is not on the centres."""
        check_finite("x", x)
        pos = (x - self.lo) / self.width - 0.5
        n = pos.round()
        tol = 1e-4 if x.dtype in (torch.float16, torch.bfloat16, torch.float32) else 1e-8
        if bool(((pos - n).abs() > tol * max(1.0, self.levels)).any()):
            raise ValueError(f"x must lie on the bin centres lo + w(n + 1/2) of {self!r} (quantised data)")
        return self.check_index(n.long())

    def edges(self, n: torch.Tensor, *, dtype=None) -> tuple[torch.Tensor, torch.Tensor]:
        """Lower and upper edges of bin ``n``; the outer bins extend to ``-inf`` and ``+inf``.

        Open outer bins make the discretised decoder a proper distribution over the ``K`` levels
        (Ho et al., "Denoising Diffusion Probabilistic Models", NeurIPS 2020, Eq. (13)).
        """
        n = self.check_index(n)
        dtype = dtype or torch.get_default_dtype()
        nf = n.to(dtype)
        lower = torch.where(n == 0, torch.full_like(nf, -math.inf), self.lo + self.width * nf)
        upper = torch.where(n == self.levels - 1, torch.full_like(nf, math.inf), self.lo + self.width * (nf + 1))
        return lower, upper

    def dequantize(self, n: torch.Tensor, *, generator: torch.Generator | None = None, dtype=None) -> torch.Tensor:
        """Uniform dequantisation :math:`x = lo + w(n + u)`, :math:`u \\sim U[0,1)` i.i.d. per entry."""
        n = self.check_index(n)
        dtype = dtype or torch.get_default_dtype()
        u = torch.rand(n.shape, generator=generator, device=n.device, dtype=dtype)
        return self.lo + self.width * (n.to(dtype) + u)

    def __repr__(self) -> str:
        return f"Quantization(levels={self.levels}, data_range=({self.lo:g}, {self.hi:g}))"


_LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)


def truncated_normal(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Log-mass :math:`\log(\Phi(b) - \Phi(a))` and mean :math:`(\varphi(a)-\varphi(b))/(\Phi(b)-\Phi(a))`
    of the standard normal truncated to :math:`[a, b]`, elementwise, for :math:`a < b`.

    Stable in the tails: the interval is reflected to the side where :math:`a + b \le 0`, where
    :func:`torch.special.log_ndtr` is accurate, and the difference of the two CDFs is formed as
    :math:`\Phi(b)\,(1 - e^{\log\Phi(a) - \log\Phi(b)})` with ``expm1``. Compute in float64: a bin much
    narrower than the noise has :math:`b - a` of order :math:`w/s` (about 1e-3 at the end of a VP SDE).
    """
    flip = (a + b) > 0
    lo, hi = torch.where(flip, -b, a), torch.where(flip, -a, b)
    log_cdf_lo, log_cdf_hi = torch.special.log_ndtr(lo), torch.special.log_ndtr(hi)
    rel = -torch.expm1(log_cdf_lo - log_cdf_hi)  # (Phi(hi) - Phi(lo)) / Phi(hi), in (0, 1]
    log_mass = log_cdf_hi + torch.log(rel)
    pdf_lo = torch.exp(-0.5 * lo * lo - _LOG_SQRT_2PI - log_cdf_hi)
    pdf_hi = torch.exp(-0.5 * hi * hi - _LOG_SQRT_2PI - log_cdf_hi)
    mean = (pdf_lo - pdf_hi) / rel
    return log_mass, torch.where(flip, -mean, mean)


def bin_posterior(quantization, x: torch.Tensor, alpha: torch.Tensor, sigma: torch.Tensor, *,
                  per_bin: bool = False):
    r"""For every coordinate of ``x`` = :math:`x_t` and every bin ``k``: :math:`\log Z_k` and :math:`\mu_k`.

    Args:
        quantization: the :class:`~probdiff.Quantization` of the data.
        x: :math:`x_t`, ``(batch, *event)``.
        alpha, sigma: :math:`\alpha_t`, :math:`\sigma_t` broadcastable against ``x``.
        per_bin: ``x`` already carries a last axis of size ``K``, one copy of :math:`x_t` per bin (each
            output then depends on its own input element only: the likelihood's lattice trace takes all
            derivatives :math:`\partial/\partial x_i` in one backward pass this way).

    Returns:
        ``(log_mass, mean)``, each ``(batch, *event, K)`` in float64: the log-probability that
        :math:`N(x_t/\alpha_t, (\sigma_t/\alpha_t)^2)` gives bin ``k``, and the mean of that normal
        truncated to bin ``k`` (clamped into the bin against rounding).
    """
    q = quantization
    edges = q.lo + q.width * torch.arange(q.levels + 1, dtype=torch.float64, device=x.device)
    m = x.double() / alpha.double()
    s = sigma.double() / alpha.double()
    if not per_bin:
        m, s = m[..., None], s[..., None]
    return truncated_moments(edges[:-1], edges[1:], m, s)


def truncated_moments(lo: torch.Tensor, hi: torch.Tensor, m: torch.Tensor, s: torch.Tensor):
    r""":math:`\log P(N(m, s^2) \in [lo, hi])` and the mean of :math:`N(m, s^2)` truncated to
    :math:`[lo, hi]` (clamped into the interval against rounding), elementwise with broadcasting: what
    :func:`bin_posterior` computes for every bin, and the loss computes for the own bin of each value."""
    log_mass, offset = truncated_normal((lo - m) / s, (hi - m) / s)
    return log_mass, torch.minimum(torch.maximum(m + s * offset, lo), hi)
