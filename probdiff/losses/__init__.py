"""Training losses derived from the process: denoising score matching for Gaussian processes, Blackout's
Poisson loss, the categorical cross-entropy and the continuous-time ELBO for chains."""

from ..timevars import LogitTime
from .chain_elbo import ChainELBOLoss
from .chain import BlackoutLikelihood, BlackoutLoss, BlackoutOriginal, BlackoutWeight, CategoricalCrossEntropy
from .gaussian import (
    DenoisingScoreMatching,
    ELBOWeighting,
    ImportanceSampled,
    LikelihoodWeighting,
    Natural,
    Weighting,
)

__all__ = ["Weighting", "Natural", "ELBOWeighting", "LikelihoodWeighting", "ImportanceSampled",
           "DenoisingScoreMatching", "BlackoutWeight", "BlackoutLikelihood", "BlackoutOriginal", "BlackoutLoss",
           "CategoricalCrossEntropy", "ChainELBOLoss", "LogitTime"]
