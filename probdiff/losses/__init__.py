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
