"""Time grids: every grid answers ``grid.times(process)``, strictly decreasing from t_max to t_min."""

from .base import Explicit, Grid, Uniform
from .gaussian import Karras, LogSNR, ScoreOptimal
from .endpoint import EndpointOptimal
from .discrete import LogitObservation  # noqa: F401  (issue 5: Blackout observation grid)

__all__ = ["Grid", "Uniform", "Explicit", "Karras", "LogSNR", "ScoreOptimal", "EndpointOptimal"]
