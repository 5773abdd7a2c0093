r"""Bits per dimension and uniform dequantisation (THEORY.md §4).

``K``-level data (integers :math:`n \in \{0, \dots, K-1\}` per dimension) are mapped onto the interval
``data_range`` :math:`= [lo, hi]` cut into ``K`` bins of width :math:`w = (hi - lo)/K`; bin ``n`` is
:math:`[lo + wn,\ lo + w(n+1))` with centre :math:`lo + w(n + \tfrac12)`. One object,
:class:`Quantization`, owns this lattice; dequantisation, the discretised decoder of the ELBO and
:func:`bits_per_dim` all use it, so the three cannot disagree.

*Uniform dequantisation* (Theis, van den Oord & Bethge, "A note on the evaluation of generative models",
ICLR 2016, §3.1; Uria et al. 2013): :math:`x = lo + w(n + u)`, :math:`u \sim U[0, 1)^D`. For any density
:math:`p` on :math:`\mathbb R^D`, :math:`P(n) = \int_{\mathrm{bin}(n)} p \ge w^D \exp E_u[\log p(x)]` (Jensen),
so

.. math::

    \text{bpd} = -\frac{E_u[\log p(x)]}{D \ln 2} + \log_2 K - \log_2(hi - lo)
               = -\frac{E_u[\log p(x)] + D\log w}{D\ln 2}

is an upper bound on the lossless code length of ``n`` in bits per dimension. For 8-bit images on
``[-1, 1]`` the constant is :math:`\log_2 256 - \log_2 2 = 7`: it is *not* a free offset but the
log-Jacobian of the map from bin indices to ``data_range`` coordinates, and :func:`bits_per_dim`
adds it itself from the declared ``levels`` and ``data_range``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .._util import check_finite
from ..lattice import Quantization

__all__ = ["dequantize", "bits_per_dim", "BitsPerDim", "bits_per_dim_summary"]


def dequantize(n: torch.Tensor, levels: int, data_range, *, generator: torch.Generator | None = None,
               dtype=None) -> torch.Tensor:
    r"""Uniformly dequantised data :math:`x = lo + (hi - lo)(n + u)/K`, :math:`u \sim U[0, 1)^D`.

    Args:
        n: integer levels in ``[0, levels - 1]``, any shape (integer or integer-valued float tensor).
        levels: ``K``.
        data_range: ``(lo, hi)``.
        generator: source of ``u``.
        dtype: floating dtype of the result (default: torch's default dtype).

    Returns:
        Continuous data in ``[lo, hi)`` of ``n``'s shape. Score its log-density with
        :func:`bits_per_dim` using the *same* ``levels`` and ``data_range``.
    """
    return Quantization(levels, data_range).dequantize(n, generator=generator, dtype=dtype)


def bits_per_dim(log_prob: torch.Tensor, event_shape, levels: int | None = None, data_range=None) -> torch.Tensor:
    r"""Bits per dimension from a log-density or a log-probability, elementwise over ``log_prob``.

    Two cases, chosen by the arguments (both or neither of ``levels`` and ``data_range``):

    * ``levels`` and ``data_range`` given: ``log_prob`` is the log-*density* (nats) of continuous data
      in ``data_range`` coordinates — e.g. :func:`probdiff.log_likelihood` of :func:`dequantize`\ d data,
      averaged over the dequantisation noise for the bound to hold. Returns

      .. math:: -\frac{\log p}{D\ln 2} + \log_2 K - \log_2(hi - lo).

    * neither: ``log_prob`` is the log-*probability* (mass, nats, so ``<= 0``) of discrete data — e.g. the
      ELBO with :class:`~probdiff.likelihood.decoders.DiscretizedGaussian` decoder, or a chain's ELBO.
      Returns :math:`-\log P/(D\ln 2)` with no constant.

    A density of non-dequantised data is not a code length (it can even be negative) and has no
    argument combination here.

    Args:
        log_prob: nats, any shape (usually ``(batch,)``).
        event_shape: shape of one data point; ``D`` is its number of elements.
        levels, data_range: the quantisation of the data (see :class:`Quantization`).

    Raises:
        ValueError: only one of ``levels`` and ``data_range`` is given, bad ``event_shape``, non-finite
            ``log_prob``, or a positive log-probability in the discrete case.
    """
    try:
        shape = tuple(int(s) for s in event_shape)
    except TypeError:
        raise ValueError(f"event_shape must be a sequence of positive integers, got {event_shape!r}") from None
    if len(shape) == 0 or any(s < 1 for s in shape):
        raise ValueError(f"event_shape must be a non-empty sequence of positive integers, got {event_shape!r}")
    dim = math.prod(shape)
    log_prob = torch.as_tensor(log_prob)
    if not log_prob.is_floating_point():
        log_prob = log_prob.to(torch.get_default_dtype())
    check_finite("log_prob", log_prob)
    if (levels is None) != (data_range is None):
        raise ValueError("give both levels and data_range (log_prob is a density of dequantised data) or neither "
                         f"(log_prob is a log-probability of discrete data); got levels={levels!r}, "
                         f"data_range={data_range!r}")
    bits = -log_prob / (dim * math.log(2.0))
    if levels is None:
        if bool((log_prob > 1e-6 * (1 + dim)).any()):
            raise ValueError("log_prob must be <= 0 for a log-probability of discrete data; for the log-density "
                             "of dequantised data pass levels and data_range")
        return bits
    return bits + Quantization(levels, data_range).bits_offset()


@dataclass(frozen=True)
class BitsPerDim:
    """A data set's bits/dim with its two uncertainties (:func:`bits_per_dim_summary`).

    Attributes:
        value: the mean over the images of the per-image bits/dim.
        se_trace: standard error of ``value`` from the trace estimator alone (0 for the exact trace,
            ``NaN`` when an image's SE is unknown, e.g. one Hutchinson probe; printed as ``n/a``).
        ci95_data: half-width of the 95% confidence interval of ``value`` over the data (normal
            approximation, ``1.96 s/sqrt(n)`` with ``s`` the images' sample deviation; ``NaN`` for one image).
        num: number of images.
    """

    value: float
    se_trace: float
    ci95_data: float
    num: int

    def __str__(self) -> str:
        se = "n/a" if math.isnan(self.se_trace) else f"{self.se_trace:.4f}"
        ci = "n/a" if math.isnan(self.ci95_data) else f"{self.ci95_data:.4f}"
        return f"{self.value:.4f} bits/dim ± {se} (SE, trace) ± {ci} (95% CI, data; n = {self.num})"


def bits_per_dim_summary(log_prob: torch.Tensor, se: torch.Tensor | None, event_shape, levels: int | None = None,
                         data_range=None) -> BitsPerDim:
    r"""The mean bits/dim of a batch with ``± SE(trace)`` and ``± 95% CI(data)``.

    With per-image values :math:`b_i` (:func:`bits_per_dim`, same arguments) and per-image standard errors
    :math:`s_i` of the log-density (``stats.se`` of :func:`probdiff.log_likelihood`, nats), the images'
    trace estimates being independent,

    .. math::

        \bar b = \frac1n\sum_i b_i, \qquad
        \mathrm{SE}_{trace}(\bar b) = \frac{\sqrt{\sum_i s_i^2}}{n\,D\ln 2}, \qquad
        \mathrm{CI}_{95} = 1.96\,\frac{\mathrm{sd}(b_i)}{\sqrt n}.

    The first says how far the number may move if the probes were redrawn for the same images; the
    second how far it may move for another sample of images from the same distribution (it contains the
    trace noise as well, so it is the one to use when comparing models on a test set).

    Args:
        log_prob: ``(n,)`` log-densities or log-probabilities (nats).
        se: ``(n,)`` standard errors in nats, or ``None`` for exact values.
        event_shape, levels, data_range: as in :func:`bits_per_dim`.
    """
    bits = bits_per_dim(log_prob, event_shape, levels, data_range).reshape(-1).double()
    n, dim = bits.shape[0], math.prod(int(s) for s in event_shape)
    if n == 0:
        raise ValueError("log_prob must hold at least one value")
    if se is None:
        se_trace = 0.0
    else:
        se = torch.as_tensor(se).reshape(-1).double()
        if se.shape[0] != n:
            raise ValueError(f"se must have one value per log_prob ({n}), got {se.shape[0]}")
        se_trace = float(se.pow(2).sum().sqrt()) / (n * dim * math.log(2.0))
    ci = 1.96 * float(bits.std(unbiased=True)) / math.sqrt(n) if n > 1 else float("nan")
    return BitsPerDim(float(bits.mean()), se_trace, ci, n)
