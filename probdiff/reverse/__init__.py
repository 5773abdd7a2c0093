"""Reverse-time processes: one family at any noise level per process family (THEORY.md §3, §5)."""

from .base import ReverseProcess, build_reverse, probability_flow, reverse
from .chain import BlackoutReverse, ChainReverse
from .gaussian import GaussianReverse

__all__ = ["ReverseProcess", "reverse", "probability_flow", "build_reverse", "GaussianReverse", "ChainReverse",
           "BlackoutReverse"]
