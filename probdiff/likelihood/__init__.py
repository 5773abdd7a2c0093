"""Likelihoods: exact log p(x) by the probability-flow ODE, ELBOs, bits/dim (THEORY.md §4)."""

from .elbo import ELBO, elbo
from . import discrete as _discrete  # noqa: F401  (issue 5: registers the chain ELBOs)
from .bpd import Quantization, bits_per_dim, dequantize
from .decoders import Decoder, DiscretizedGaussian, GaussianDecoder
from .exact import ExactTrace, Hutchinson, LikelihoodStats, ProbeKind, Trace, log_likelihood
from .gaussian_elbo import TimeSampler, UniformLogSNR, UniformTime
from .timechange import LogSNRTime, PhysicalTime, TimeVariable

__all__ = ["ELBO", "elbo", "log_likelihood", "Trace", "ExactTrace", "Hutchinson", "ProbeKind", "LikelihoodStats",
           "TimeVariable", "PhysicalTime", "LogSNRTime", "TimeSampler", "UniformLogSNR", "UniformTime",
           "Decoder", "GaussianDecoder", "DiscretizedGaussian", "Quantization", "bits_per_dim", "dequantize"]
