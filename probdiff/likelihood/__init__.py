"""Likelihoods: exact log p(x) by the probability-flow ODE, ELBOs, bits/dim (THEORY.md §4)."""

from ..lattice import Quantization
from ..timevars import LogSNRTime, PhysicalTime, TimeSampler, TimeVariable, UniformLogSNR, UniformTime
from .bpd import bits_per_dim, dequantize
from .chain import blackout_elbo, chain_elbo, chain_elbo_integrand, prior_kl
from .decoders import Decoder, DiscretizedGaussian, DiscretizedNormal, GaussianDecoder
from .elbo import elbo, family_elbo
from .exact import LikelihoodStats, log_likelihood
from .gaussian import gaussian_elbo
from .traces import ExactTrace, Hutchinson, ProbeKind, Trace, probe_forms

__all__ = ["elbo", "family_elbo", "gaussian_elbo", "chain_elbo", "blackout_elbo", "prior_kl", "chain_elbo_integrand",
           "log_likelihood",
           "LikelihoodStats", "Trace", "ExactTrace", "Hutchinson", "ProbeKind", "probe_forms", "TimeVariable",
           "PhysicalTime", "LogSNRTime", "Decoder", "GaussianDecoder", "DiscretizedGaussian", "DiscretizedNormal",
           "Quantization", "bits_per_dim", "dequantize", "TimeSampler", "UniformLogSNR", "UniformTime"]
