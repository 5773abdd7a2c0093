"""Time grids: every grid answers ``grid.times(process)``, strictly decreasing from ``t_max`` to ``t_min``.

Placement rules (:mod:`probdiff.placement`) and grids fitted to a model or a solver (:mod:`probdiff.tuning`),
in one namespace.
"""

from ..placement import Explicit, Grid, Karras, LogitObservation, LogSNR, ScheduleUniform, Uniform
from ..tuning import EndpointOptimal, ScoreOptimal
from ..tuning_local import LocalErrorOptimal
from ..tuning_multistep import MultistepOptimal

__all__ = ["Grid", "Uniform", "Explicit", "Karras", "LogSNR", "LogitObservation", "ScoreOptimal",
           "EndpointOptimal", "MultistepOptimal", "LocalErrorOptimal", "ScheduleUniform"]
