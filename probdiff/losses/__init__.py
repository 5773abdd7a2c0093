"""Training losses derived from the process."""

from .gaussian import (
    PARAMETERISATIONS,
    DenoisingScoreMatching,
    ImportanceSampled,
    LikelihoodWeighting,
    Natural,
    Parameterisation,
    Weighting,
)
from .discrete import BlackoutLikelihood, BlackoutLoss, BlackoutOriginal, CategoricalCrossEntropy, LogitTime  # noqa: F401,E501  (issue 5)
