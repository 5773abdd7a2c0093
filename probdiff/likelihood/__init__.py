"""Likelihoods: exact log p(x) by the probability-flow ODE, ELBOs, bits/dim (THEORY.md §4)."""

from ..lattice import Quantization
from ..timevars import LogSNRTime, PhysicalTime, TimeSampler, TimeVariable, UniformLogSNR, UniformTime
from .blackout_counts import CountsControlVariate, DefensiveCounts
from .blackout_times import FittedBlackoutTime
from .bpd import BitsPerDim, bits_per_dim, bits_per_dim_summary, dequantize
from .chain import blackout_elbo, chain_elbo, chain_elbo_integrand, prior_kl
from .ddpm import VLBTerms, ddpm_vlb
from .dequantization import (Dequantizer, TruncatedNormalDequantizer, UniformDequantizer, dequantized_bound,
                             dequantized_log_prob)
from .decoders import Decoder, DiscretizedGaussian, DiscretizedNormal, GaussianDecoder, decoder_bound
from .elbo import elbo, family_elbo
from .exact import LikelihoodStats, log_likelihood
from .frame_adams import GaussianFrameAdams
from .gaussian import gaussian_elbo
from .traces import ExactTrace, Hutchinson, ProbeKind, Trace, probe_forms, probe_vjps
from .variance import GaussianControlVariate, HutchPlusPlus

__all__ = ["elbo", "family_elbo", "ddpm_vlb", "VLBTerms", "gaussian_elbo", "chain_elbo", "blackout_elbo", "FittedBlackoutTime", "DefensiveCounts", "CountsControlVariate",
           "prior_kl",
           "chain_elbo_integrand", "log_likelihood", "LikelihoodStats", "Trace", "ExactTrace", "Hutchinson", "ProbeKind",
           "probe_forms", "TimeVariable",
           "PhysicalTime", "LogSNRTime", "Decoder", "GaussianDecoder", "DiscretizedGaussian", "DiscretizedNormal",
           "Quantization", "bits_per_dim", "dequantize", "TimeSampler", "UniformLogSNR", "UniformTime",
           "HutchPlusPlus", "GaussianControlVariate", "probe_vjps", "BitsPerDim", "bits_per_dim_summary",
           "Dequantizer", "UniformDequantizer", "TruncatedNormalDequantizer", "dequantized_log_prob", "decoder_bound",
           "dequantized_bound", "GaussianFrameAdams"]
