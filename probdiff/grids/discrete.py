r"""The Blackout observation grid (Santos et al., "Blackout Diffusion", ICML 2023, §4 and App. B).

The original code observes the process at times where the survival probability :math:`p_t = e^{-t}` is
uniform in logit between :math:`e^{-t_{max}}` and :math:`1 - e^{-t_{max}}` (1000 points). Here those
``steps`` points run from ``t_max`` down, and ``t_min`` is appended as the last time so the grid ends at
the data: ``steps + 1`` times in all.
"""

from __future__ import annotations

import math

import torch

from .base import Grid

__all__ = ["LogitObservation"]


class LogitObservation(Grid):
    r"""Times with :math:`\mathrm{logit}(e^{-t})` equally spaced from :math:`\mathrm{logit}(e^{-t_{max}})`
    to :math:`\mathrm{logit}(1 - e^{-t_{max}})`, then ``t_min``.

    With :math:`u = \mathrm{logit}(p)` the time is :math:`t = \log(1 + e^{-u})` (a softplus), exact at
    both ends. Needs ``steps >= 2`` and ``t_min < -log(1 - e^{-t_max})`` (≈ :math:`e^{-t_{max}}`).
    """

    def __init__(self, steps: int = 1000):
        super().__init__(steps)
        if self.steps < 2:
            raise ValueError(f"steps must be >= 2 for the logit observation grid, got {steps}")

    def times(self, process) -> torch.Tensor:
        t_max = float(process.t_max)
        hi = t_max + math.log1p(-math.exp(-t_max))    # logit(1 - e^{-T}) = -logit(e^{-T})
        u = torch.linspace(-hi, hi, self.steps, dtype=torch.float64)
        ts = torch.nn.functional.softplus(-u)         # t = log(1 + e^{-u}) = -log sigmoid(u)
        t_low = float(ts[-1])
        if not process.t_min < t_low:
            raise ValueError(f"process.t_min must be < {t_low:.3g} (the last observation time) for this grid, "
                             f"got {process.t_min}")
        return self._finish(torch.cat([ts, torch.tensor([float(process.t_min)], dtype=torch.float64)]), process)
