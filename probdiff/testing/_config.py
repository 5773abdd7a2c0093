"""Options of :func:`~probdiff.testing.check_process` and of every ``assert_*`` check."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

__all__ = ["CheckConfig"]


# ==================================================================== configuration
@dataclass(frozen=True)
class CheckConfig:
    """Options of :func:`check_process` and of every ``assert_*`` check.

    Attributes:
        seed: seed of the ``torch.Generator`` drawing inputs and Monte-Carlo samples; the same seed
            gives the same verdict.
        dtype: floating dtype of the inputs (float64 by default: identities are then checked to
            ~1e-8 relative; float32 works with the looser default tolerances of that dtype).
        device: device of the inputs (default: torch's default device).
        event_shape: event shape of the drawn data.
        batch: number of (time, data) inputs per deterministic identity.
        rtol, atol: tolerance of deterministic identities, ``|lhs - rhs| <= atol + rtol * scale`` with
            ``scale`` the magnitude of the terms (None: 1e-8 / 1e-12 in float64, 1e-3 / 1e-5 otherwise).
        fd_rtol: relative tolerance of finite-difference derivatives, added to the extrapolation's
            own error estimate.
        num_samples: Monte-Carlo sample size (forward simulation, reverse family, generic checks).
        z: Monte-Carlo tolerance in standard errors (5 standard errors: a correct process fails with
            probability below 1e-5 per compared statistic).
        mc_bias: relative allowance of the scale of the compared statistic, added to the Monte-Carlo
            tolerance and to the discretisation error that step halving estimates (a floor for what the
            estimate misses).
        steps: number of time steps of the forward simulation (the reverse family uses half as many);
            each simulation also runs on the grid with half as many steps, and the grid is refined up to
            three times while the step-halving error estimate exceeds half the Monte-Carlo tolerance.
        noises: noise levels of the reverse family checked for marginal preservation.
        prior_kl: tolerance of the prior check, KL(q(x_{t_max}|x_0) || prior) in nats per event
            element, for data of unit scale (entries in [-1, 1]).
    """

    seed: int = 0
    dtype: torch.dtype = torch.float64
    device: torch.device | str | None = None
    event_shape: tuple = (3,)
    batch: int = 64
    rtol: float | None = None
    atol: float | None = None
    fd_rtol: float = 1e-6
    num_samples: int = 2000
    z: float = 5.0
    mc_bias: float = 0.02
    steps: int = 100
    noises: tuple = (0.0, 1.0)
    prior_kl: float = 1e-2

    def __post_init__(self):
        if not (isinstance(self.dtype, torch.dtype) and self.dtype.is_floating_point):
            raise ValueError(f"dtype must be a floating torch.dtype, got {self.dtype!r}")
        for name in ("batch", "num_samples", "steps"):
            value = getattr(self, name)
            if isinstance(value, bool) or int(value) != value or value < 2:
                raise ValueError(f"{name} must be an integer >= 2, got {value!r}")
        for name in ("fd_rtol", "z", "mc_bias", "prior_kl"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)!r}")
        if any(n < 0 for n in self.noises):
            raise ValueError(f"noises must be >= 0, got {self.noises}")

    @property
    def tol(self) -> tuple[float, float]:
        """``(rtol, atol)`` of deterministic identities for this dtype."""
        f64 = self.dtype == torch.float64
        rtol = self.rtol if self.rtol is not None else (1e-8 if f64 else 1e-3)
        atol = self.atol if self.atol is not None else (1e-12 if f64 else 1e-5)
        return rtol, atol

    @property
    def close_gap(self) -> float:
        """Smallest relative gap ``(t - s)/(t_max - t_min)`` of drawn time pairs (resolvable in dtype)."""
        return max(1e-6, 1e3 * torch.finfo(self.dtype).eps)

    def replace(self, **options) -> "CheckConfig":
        unknown = set(options) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            allowed = ", ".join(f.name for f in dataclasses.fields(self))
            raise ValueError(f"unknown check options {sorted(unknown)}; allowed: {allowed}")
        return dataclasses.replace(self, **options)
