"""Time grids: every grid answers ``grid.times(process)``, strictly decreasing from t_max to t_min."""

from .base import Grid, Uniform

__all__ = ["Grid", "Uniform"]
