r"""Dequantisation bounds on the probability of discrete data, each with what it bounds (THEORY.md §4).

A density :math:`p` on :math:`\mathbb R^D` assigns to ``K``-level data :math:`n` (bins of width :math:`w`,
:class:`~probdiff.Quantization`) the probability :math:`P(n) = \int_{\mathrm{bin}(n)} p(x)\,dx`. For any
density :math:`q(x \mid n)` supported in the bin (the *dequantiser*),

.. math::

    \log P(n) = \log E_{x \sim q}\Big[\frac{p(x)}{q(x \mid n)}\Big]
      \;\ge\; E_{x_{1..K} \sim q}\Big[\log \frac1K \sum_{k=1}^K \frac{p(x_k)}{q(x_k \mid n)}\Big]
      \;\ge\; E_{x \sim q}\big[\log p(x)\big] + \mathcal H\big(q(\cdot \mid n)\big),

(Jensen; the middle bound is Burda, Grosse & Salakhutdinov's importance-weighted bound, "Importance
Weighted Autoencoders", ICLR 2016, Thm. 1: it increases with :math:`K` and tends to :math:`\log P(n)`).
The last form makes the **entropy term** explicit: with :math:`x = lo + w(n + u)` and :math:`q_u` the
dequantiser's density of :math:`u \in [0, 1)^D`, :math:`\mathcal H(q(\cdot\mid n)) = D\log w + \mathcal H(q_u)`.

* :class:`UniformDequantizer` (Theis, van den Oord & Bethge, ICLR 2016, §3.1): :math:`\mathcal H(q_u) = 0`,
  and :math:`D\log w` is the constant :math:`\log_2 K - \log_2(hi - lo)` per dimension that
  :func:`probdiff.bits_per_dim` adds.
* :class:`TruncatedNormalDequantizer` (the training-free dequantisation of Zheng et al., "Improved
  Techniques for Maximum Likelihood Estimation for Diffusion ODEs", ICML 2023, §4.2): :math:`u - 1/2` is a
  normal truncated to :math:`[-1/2, 1/2]`. Its entropy is *not* zero, and leaving it out (reporting
  :math:`E_q[\log p] + D\log w` as a bound) overstates the likelihood — the "+0.92 bits/dim" kind of error.

:func:`dequantized_log_prob` returns the importance-weighted bound in nats (a log-*probability*, to be
turned into bits/dim with :func:`probdiff.bits_per_dim` *without* ``levels``); ``num_samples = 1`` is the
variational bound with its entropy term, which for the uniform dequantiser equals the usual
``bits_per_dim(E[log p], levels=..., data_range=...)``.
"""

from __future__ import annotations

import abc
import math

import torch

from .._util import check_positive, check_positive_int
from ..lattice import Quantization

__all__ = ["Dequantizer", "UniformDequantizer", "TruncatedNormalDequantizer", "dequantized_log_prob", "dequantized_bound"]


class Dequantizer(abc.ABC):
    r"""A density :math:`q_u` on the unit bin :math:`[0, 1)^D`; configuration only."""

    @abc.abstractmethod
    def sample(self, shape, *, generator=None, dtype=torch.float64, device=None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(u, log_q)``: offsets in ``[0, 1)`` of ``shape = (batch, *event)`` and :math:`\\log q_u(u)` per
        batch row (summed over the event)."""

    @abc.abstractmethod
    def entropy(self, dim: int) -> float:
        r""":math:`\mathcal H(q_u)` of ``dim`` coordinates, nats (zero for the uniform)."""


class UniformDequantizer(Dequantizer):
    r""":math:`u \sim \mathcal U[0, 1)^D`: :math:`\log q_u = 0`, entropy zero."""

    def sample(self, shape, *, generator=None, dtype=torch.float64, device=None):
        u = torch.rand(shape, generator=generator, dtype=dtype, device=device)
        return u, torch.zeros(shape[0], dtype=dtype, device=device)

    def entropy(self, dim):
        return 0.0

    def __repr__(self) -> str:
        return "UniformDequantizer()"


class TruncatedNormalDequantizer(Dequantizer):
    r""":math:`u - \tfrac12 \sim \mathcal N(0, s^2)` truncated to :math:`[-\tfrac12, \tfrac12]` per coordinate.

    With :math:`\beta = 1/(2s)` and :math:`Z = \Phi(\beta) - \Phi(-\beta)` the per-coordinate entropy is
    :math:`\log(\sqrt{2\pi e}\,s\,Z) - \beta\varphi(\beta)/Z` (Johnson, Kotz & Balakrishnan, *Continuous
    Univariate Distributions*, vol. 1, §13.10). Zheng et al. (ICML 2023, §4.2) match ``s`` to the
    noise of the diffusion at :math:`t_{min}` (:math:`s = \sigma_{t_{min}}/(\alpha_{t_{min}} w)`), which needs
    no training; any ``s`` gives a valid bound once the entropy is counted.

    Args:
        scale: ``s`` in bin widths.
    """

    def __init__(self, scale: float = 0.25):
        check_positive("scale", scale)
        self.scale = float(scale)

    def _z(self) -> tuple[float, float]:
        beta = 0.5 / self.scale
        return beta, math.erf(beta / math.sqrt(2.0))

    def sample(self, shape, *, generator=None, dtype=torch.float64, device=None):
        beta, z = self._z()
        uni = torch.rand(shape, generator=generator, dtype=torch.float64, device=device)
        std = torch.special.ndtri(torch.special.ndtr(torch.tensor(-beta, dtype=torch.float64)) + uni * z)
        std = std.clamp(-beta, beta)
        log_q = (-0.5 * std**2 - 0.5 * math.log(2 * math.pi) - math.log(self.scale) - math.log(z))
        u = (0.5 + self.scale * std).clamp(0.0, 1.0 - 1e-12)
        return u.to(dtype), log_q.reshape(shape[0], -1).sum(1).to(dtype)

    def entropy(self, dim):
        beta, z = self._z()
        phi = math.exp(-0.5 * beta**2) / math.sqrt(2 * math.pi)
        return dim * (math.log(math.sqrt(2 * math.pi * math.e) * self.scale * z) - beta * phi / z)

    def __repr__(self) -> str:
        return f"TruncatedNormalDequantizer(scale={self.scale:g})"


def dequantized_log_prob(log_density, n: torch.Tensor, quantization: Quantization, *,
                         dequantizer: Dequantizer | None = None, num_samples: int = 1,
                         generator: torch.Generator | None = None, dtype=torch.float64) -> torch.Tensor:
    r"""A stochastic lower bound on :math:`\log P(n)`, nats, shape ``(batch,)`` (see the module docstring).

    .. math::

        \log\frac1K\sum_{k=1}^K \exp\big(\log p(x_k) - \log q_u(u_k) + D\log w\big),
        \qquad x_k = lo + w(n + u_k),\ u_k \sim q_u,

    whose expectation is :math:`\le \log P(n)`, increases with ``K = num_samples`` and tends to
    :math:`\log P(n)`. With ``K = 1`` it is the variational bound :math:`\log p(x) + \mathcal H(q)` in
    expectation, entropy term included.

    Args:
        log_density: callable ``x -> log p(x)`` of shape ``(m,)`` for ``x`` of shape ``(m, *event)``, e.g.
            ``lambda x: pd.log_likelihood(model, x)``; called once on all ``K`` draws of the batch.
        n: integer levels ``(batch, *event)``.
        quantization: the lattice (:class:`~probdiff.Quantization`).
        dequantizer: :class:`UniformDequantizer` (default) or :class:`TruncatedNormalDequantizer`.
        num_samples: ``K``.
        generator: source of the dequantisation noise.
        dtype: floating dtype of the dequantised data.
    """
    return dequantized_bound(lambda x: (log_density(x), None), n, quantization, dequantizer=dequantizer,
                             num_samples=num_samples, generator=generator, dtype=dtype)[0]


def dequantized_bound(log_density, n: torch.Tensor, quantization: Quantization, *,
                      dequantizer: Dequantizer | None = None, num_samples: int = 1,
                      generator: torch.Generator | None = None, dtype=torch.float64):
    r""":func:`dequantized_log_prob` with its standard error from an estimated log-density: ``(bound, se)``.

    ``log_density(x)`` returns ``(log_p, se)``: the estimates of :math:`\log p(x_k)` and their standard errors
    (``stats.se`` of :func:`probdiff.log_likelihood`; ``None`` for exact values). The bound
    :math:`\log\frac1K\sum_k e^{a_k}` has gradient :math:`\mathrm{softmax}(a)` in the :math:`a_k`, so with
    independent estimates its standard error is, to first order (the delta method),

    .. math:: \mathrm{SE} = \Big(\sum_k \mathrm{softmax}(a)_k^2\,\mathrm{se}_k^2\Big)^{1/2},

    ``se`` itself for ``K = 1``. With a noisy estimate and ``K > 1`` the log-mean-exp is also biased upwards by
    up to :math:`\mathrm{se}^2/2` (Jensen's inequality for :math:`e^x`): use an SE well below one nat there.
    Returns two ``(batch,)`` tensors; ``se`` is zeros for exact values.
    """
    if not isinstance(quantization, Quantization):
        raise ValueError(f"quantization must be a Quantization, got {quantization!r}")
    dequantizer = UniformDequantizer() if dequantizer is None else dequantizer
    if not isinstance(dequantizer, Dequantizer):
        raise ValueError(f"dequantizer must be a Dequantizer, got {dequantizer!r}")
    k = check_positive_int("num_samples", num_samples)
    n = quantization.check_index(n)
    b, dim = n.shape[0], n[0].numel()
    reps = n.unsqueeze(0).expand(k, *n.shape).reshape(k * b, *n.shape[1:])
    u, log_q = dequantizer.sample(reps.shape, generator=generator, dtype=dtype, device=n.device)
    x = quantization.lo + quantization.width * (reps.to(dtype) + u)
    log_p, se = log_density(x)
    log_p = torch.as_tensor(log_p).reshape(k, b).to(dtype)
    weights = log_p - log_q.reshape(k, b) + dim * math.log(quantization.width)   # q(x|n) = q_u(u) / w^D
    bound = torch.logsumexp(weights, 0) - math.log(k)
    if se is None:
        return bound, torch.zeros_like(bound)
    share = torch.softmax(weights, 0)
    return bound, (share**2 * torch.as_tensor(se).reshape(k, b).to(dtype) ** 2).sum(0).sqrt()
