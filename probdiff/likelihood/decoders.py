r"""Decoders :math:`p(x_0 \mid z_{t_{min}})` closing the ELBO of a Gaussian process at the data end.

The variational bound of a diffusion model ends with a reconstruction term
:math:`E_{q(z|x_0)}[\log p(x_0 \mid z)]`, :math:`z = \alpha x_0 + \sigma\epsilon` at :math:`t_{min}`
(Kingma et al., "Variational Diffusion Models", NeurIPS 2021, Eq. (11) and App. C):

* :class:`GaussianDecoder` for continuous data: :math:`p(x_0|z) = \mathcal N(z/\alpha, \sigma^2/\alpha^2 I)`,
  whose expectation is closed form, :math:`-\tfrac D2\log(2\pi e\,\sigma^2/\alpha^2)`. It is the exact
  posterior when the data density is flat on the scale :math:`\sigma/\alpha` at :math:`t_{min}`, so
  with an exact denoiser the ELBO equals :math:`\log p_0(x_0)` up to that (tiny) scale.
* :class:`DiscretizedGaussian` for ``K``-level data: the same Gaussian integrated over the bins of a
  :class:`~probdiff.Quantization` (outer bins open), a proper distribution over the levels,
  so the ELBO is a bound on a log-*probability*: lossless bits/dim without dequantisation
  (Ho et al., "Denoising Diffusion Probabilistic Models", NeurIPS 2020, Eq. (13)).

Each decoder gives :meth:`Decoder.distribution` (a Pyro distribution over ``x_0``, also used by
:mod:`probdiff.ppl`) and :meth:`Decoder.expected_log_prob` (the ELBO term).
"""

from __future__ import annotations

import abc
import math

import pyro.distributions as dist
import torch
from torch.distributions import constraints

from .._util import expand_like
from ..lattice import Quantization
from ..models.base import bind
from ..processes.gaussian import GaussianProcess
from .exact import log_likelihood

__all__ = ["Decoder", "GaussianDecoder", "DiscretizedGaussian", "DiscretizedNormal", "decoder_bound"]


def _loc_scale(process: GaussianProcess, z: torch.Tensor):
    """Mean :math:`z/\\alpha` and scale :math:`\\sigma/\\alpha` of the decoder at :math:`t_{min}`."""
    t = process.check_time(process.t_min, z)
    alpha, sigma = expand_like(process.alpha(t), z), expand_like(process.sigma(t), z)
    return z / alpha, (sigma / alpha).expand_as(z)


class Decoder(abc.ABC):
    """A likelihood :math:`p(x_0 \\mid z_{t_{min}})`; configuration only."""

    @abc.abstractmethod
    def distribution(self, process: GaussianProcess, z: torch.Tensor):
        """Pyro distribution over ``x_0`` given ``z`` at ``t_min``, ``batch_shape == (batch,)``."""

    def check(self, x0: torch.Tensor) -> None:
        """Raise ValueError if ``x0`` is not data this decoder can score."""

    def expected_log_prob(self, process: GaussianProcess, x0: torch.Tensor, *, num_samples: int = 1,
                          generator: torch.Generator | None = None) -> torch.Tensor:
        """:math:`E_{q(z|x_0)}[\\log p(x_0|z)]`, shape ``(batch,)``; Monte Carlo unless overridden."""
        self.check(x0)
        t = process.check_time(process.t_min, x0)
        x_rep = x0.unsqueeze(0).expand(num_samples, *x0.shape).reshape(-1, *x0.shape[1:])
        eps = torch.randn(x_rep.shape, generator=generator, dtype=x0.dtype, device=x0.device)
        z = expand_like(process.alpha(t[:1]), x_rep) * x_rep + expand_like(process.sigma(t[:1]), x_rep) * eps
        return self.distribution(process, z).log_prob(x_rep).reshape(num_samples, x0.shape[0]).mean(0)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class GaussianDecoder(Decoder):
    r""":math:`p(x_0|z) = \mathcal N(x_0; z/\alpha_{t_{min}}, (\sigma_{t_{min}}/\alpha_{t_{min}})^2 I)`,
    for continuous data."""

    def distribution(self, process, z):
        loc, scale = _loc_scale(process, z)
        return dist.Normal(loc, scale).to_event(z.dim() - 1)

    def expected_log_prob(self, process, x0, *, num_samples=1, generator=None):
        r"""Closed form :math:`-\tfrac D2\,(\log 2\pi + 1 - \lambda_{t_{min}})` (no sampling)."""
        dim = x0[0].numel()
        lam = process.log_snr(process.check_time(process.t_min, x0))
        return -0.5 * dim * (math.log(2 * math.pi) + 1.0 - lam)


class DiscretizedNormal(dist.TorchDistribution):
    r"""A Normal(loc, scale) rounded to the bins of a :class:`~probdiff.Quantization`.

    Values are bin centres; :math:`P(n) = \Phi(b_n) - \Phi(a_n)` with standardised edges, computed in
    log space from whichever tail is smaller, so it stays accurate (and finite) far from the mean.
    Elementwise: ``batch_shape == loc.shape``, ``event_shape == ()`` (use ``.to_event``).
    """

    arg_constraints = {"loc": constraints.real, "scale": constraints.positive}
    support = constraints.real
    has_rsample = False

    def __init__(self, loc: torch.Tensor, scale: torch.Tensor, quantization: Quantization, validate_args=None):
        self.loc, self.scale = torch.broadcast_tensors(torch.as_tensor(loc), torch.as_tensor(scale))
        self.quantization = quantization
        super().__init__(self.loc.shape, validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        batch_shape = torch.Size(batch_shape)
        return DiscretizedNormal(self.loc.expand(batch_shape), self.scale.expand(batch_shape), self.quantization)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        q = self.quantization
        n = q.index(value)
        lower, upper = q.edges(n, dtype=self.loc.dtype)
        a = (lower - self.loc) / self.scale
        b = (upper - self.loc) / self.scale
        # log(Phi(b) - Phi(a)); in the upper tail use the mirror image Phi(-a) - Phi(-b)
        flip = a > 0
        a, b = torch.where(flip, -b, a), torch.where(flip, -a, b)
        log_b, log_a = torch.special.log_ndtr(b), torch.special.log_ndtr(a)
        return log_b + torch.log1p(-torch.exp(log_a - log_b))

    def sample(self, sample_shape=torch.Size()):
        q = self.quantization
        with torch.no_grad():
            y = torch.normal(self.loc.expand(self._extended_shape(sample_shape)),
                             self.scale.expand(self._extended_shape(sample_shape)))
            n = ((y - q.lo) / q.width).floor().clamp(0, q.levels - 1)
            return q.lo + q.width * (n + 0.5)


class DiscretizedGaussian(Decoder):
    """The Gaussian decoder integrated over the bins of ``quantization``, for ``K``-level data.

    Args:
        quantization: a :class:`~probdiff.Quantization` (levels and data range). Data
            ``x_0`` must be its bin centres (``quantization.centers(n)``).
    """

    def __init__(self, quantization: Quantization):
        if not isinstance(quantization, Quantization):
            raise ValueError(f"quantization must be a Quantization(levels, data_range), got {quantization!r}")
        self.quantization = quantization

    def check(self, x0):
        self.quantization.index(x0)

    def distribution(self, process, z):
        loc, scale = _loc_scale(process, z)
        return DiscretizedNormal(loc, scale, self.quantization).to_event(z.dim() - 1)

    def __repr__(self) -> str:
        return f"DiscretizedGaussian({self.quantization!r})"


def decoder_bound(process_or_model, model=None, x: torch.Tensor | None = None, *, decoder: Decoder | None = None,
                  num_samples: int = 1, generator: torch.Generator | None = None, **options) -> torch.Tensor:
    r"""A lower bound on :math:`\log p_0(x)` that completes :func:`probdiff.log_likelihood`'s
    :math:`\log p_{t_{min}}` with a decoder, nats, shape ``(batch,)``:

    .. math::

        \log p_0(x) \;\ge\; E_{z\sim q(z_{t_{min}}\mid x)}\big[\log p_{t_{min}}(z) + \log p(x\mid z)
            - \log q(z\mid x)\big]

    (Jensen on :math:`p_0(x) = \int p_{t_{min}}(z)\,p(x\mid z)\,dz` with the forward marginal as proposal;
    Song, Durkan, Murray & Ermon, "Maximum Likelihood Training of Score-Based Diffusion Models", NeurIPS 2021,
    §4.2, the dequantised form in Zheng et al., ICML 2023, §4.1). With the :class:`GaussianDecoder`,
    :math:`p(x|z) = \alpha^{D} q(z|x)`, so the bound is :math:`E_z[\log p_{t_{min}}(z)] + D\log\alpha_{t_{min}}`:
    the flow's density of a *noised* copy of ``x``, mapped back by the scaling. Where the data end is
    noiseless (``stats.is_log_p0``: ``LinearBlend(t_min=0)``) :math:`z = x` and the result is
    :func:`probdiff.log_likelihood` itself, :math:`\log p_0`. With :class:`DiscretizedGaussian` and ``x`` on bin
    centres it bounds a log-probability (lossless bits/dim with :func:`probdiff.bits_per_dim` without
    ``levels``).

    Args:
        process_or_model, model, x: as :func:`probdiff.log_likelihood` (short form ``decoder_bound(model, x)``).
        decoder: :class:`GaussianDecoder` (default) or :class:`DiscretizedGaussian`.
        num_samples: draws of :math:`z` per data point (Monte-Carlo average).
        generator: source of :math:`z` (and of Hutchinson probes, if ``trace`` is one).
        options: passed to :func:`probdiff.log_likelihood` (``trace``, ``rtol``, ...; not ``return_stats``).
    """
    if x is None:
        model, x = None, model
    process, model = bind(process_or_model, model, entry="decoder_bound")
    decoder = GaussianDecoder() if decoder is None else decoder
    if not isinstance(decoder, Decoder):
        raise ValueError(f"decoder must be a Decoder (GaussianDecoder() or DiscretizedGaussian(...)), got {decoder!r}")
    if "return_stats" in options:
        raise ValueError("decoder_bound returns the bound only; call probdiff.log_likelihood for its statistics")
    k = int(num_samples)
    if k < 1:
        raise ValueError(f"num_samples must be a positive integer, got {num_samples!r}")
    decoder.check(x)
    t = torch.tensor(process.t_min, dtype=torch.float64)
    if bool(process.sigma(t) == 0) and bool(process.alpha(t) == 1):
        return log_likelihood(process, model, x, generator=generator, **options)
    reps = x.unsqueeze(0).expand(k, *x.shape).reshape(-1, *x.shape[1:])
    q = process.marginal(reps, process.t_min)
    eps = torch.randn(reps.shape, generator=generator, dtype=x.dtype, device=x.device)
    z = q.mean + q.stddev * eps
    terms = (log_likelihood(process, model, z, generator=generator, **options)
             + decoder.distribution(process, z).log_prob(reps) - q.log_prob(z))
    return terms.reshape(k, x.shape[0]).mean(0)
