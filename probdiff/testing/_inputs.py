"""Seeded inputs of the checks: unit-scale data per process family (:data:`DATA`) and times that cover
the whole domain with extra weight at both ends (:func:`draw_times`, :func:`draw_time_pairs`)."""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch

from ..processes.base import ForwardProcess
from ._config import CheckConfig

__all__ = ["DATA", "Inputs", "draw_times", "draw_time_pairs", "make_generator", "draw_inputs"]


# ==================================================================== inputs
@functools.singledispatch
def DATA(process: ForwardProcess, shape, generator, dtype, device) -> torch.Tensor:
    """Unit-scale test data ``x0`` of ``shape`` for ``process`` (dispatch on the family; register a family's
    own with ``@DATA.register``). Default: entries uniform on [-1, 1], data of unit scale (the convention of
    images in [-1, 1])."""
    return 2.0 * torch.rand(shape, generator=generator, dtype=dtype, device=device) - 1.0


@dataclass
class Inputs:
    """Inputs of a check: data ``x0`` of shape ``(batch, *event)`` and time pairs ``s < t`` of shape
    ``(batch,)``. Checks of a single time use every time in ``s`` and ``t``."""

    x0: torch.Tensor
    s: torch.Tensor | None
    t: torch.Tensor | None
    generator: torch.Generator

    def times(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(x0', times)``: every given time, with ``x0`` repeated to match."""
        ts = [v for v in (self.s, self.t) if v is not None]
        return self.x0.repeat(len(ts), *([1] * (self.x0.dim() - 1))), torch.cat(ts)


def _unit_times(n: int, close: float, generator, dtype, device) -> torch.Tensor:
    """``n`` points of [0, 1]: both ends, points ``close`` and 1e-3 from each end, log-uniform clusters
    near the ends and uniform points in between (deterministic given ``generator``)."""
    fixed = torch.tensor([0.0, 1.0, close, 1.0 - close, 1e-3, 1.0 - 1e-3, 0.5], dtype=torch.float64)
    m = max(n - fixed.numel(), 0)
    u = torch.rand(m, generator=generator, dtype=torch.float64, device=generator.device).cpu()
    kind = torch.arange(m) % 3
    near = torch.exp(math.log(close) * torch.rand(m, generator=generator, dtype=torch.float64,
                                                  device=generator.device).cpu())
    pts = torch.where(kind == 0, near, torch.where(kind == 1, 1.0 - near, u))
    return torch.cat([fixed, pts])[:n].to(dtype=dtype, device=device)


def draw_times(process: ForwardProcess, n: int, generator: torch.Generator, *, dtype=torch.float64,
               device=None, close: float = 1e-6) -> torch.Tensor:
    """``n`` times of ``[t_min, t_max]`` including both ends and values within ``close`` (relative)
    of them."""
    u = _unit_times(n, close, generator, torch.float64, None)
    return (process.t_min + (process.t_max - process.t_min) * u).to(dtype=dtype, device=device)


def draw_time_pairs(process: ForwardProcess, n: int, generator: torch.Generator, *, dtype=torch.float64,
                    device=None, close: float = 1e-6) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` pairs ``s < t`` of ``[t_min, t_max]``: the full range, pairs at both ends, pairs closer than
    ``close`` (relative), and random pairs."""
    a = _unit_times(n, close, generator, torch.float64, None)
    b = _unit_times(n + 3, close, generator, torch.float64, None)[3:][torch.randperm(n, generator=generator,
                                                                                      device=generator.device).cpu()]
    lo, hi = torch.minimum(a, b), torch.maximum(a, b)
    # a third of the pairs are close: t = s + gap with gap log-uniform in [close, 1e-2]
    k = torch.arange(n)
    gap = torch.exp(math.log(close) + (math.log(1e-2) - math.log(close)) * torch.rand(
        n, generator=generator, dtype=torch.float64, device=generator.device).cpu())
    close_pair = (k % 3 == 1)
    lo = torch.where(close_pair, torch.clamp(lo, max=1.0 - gap), lo)
    hi = torch.where(close_pair, lo + gap, hi)
    # equal draws become the widest pair; always include (0, 1) and pairs touching each end
    same = hi - lo < close
    lo, hi = torch.where(same, torch.zeros_like(lo), lo), torch.where(same, torch.ones_like(hi), hi)
    lo[0], hi[0] = 0.0, 1.0
    if n > 2:
        lo[1], hi[1] = 0.0, close
        lo[2], hi[2] = 1.0 - close, 1.0
    span = process.t_max - process.t_min
    s = (process.t_min + span * lo).to(dtype=dtype, device=device)
    t = (process.t_min + span * hi).to(dtype=dtype, device=device)
    return s, t


def make_generator(seed: int, device=None) -> torch.Generator:
    g = torch.Generator(device=device if device is not None else "cpu")
    g.manual_seed(int(seed))
    return g


def draw_inputs(process: ForwardProcess, config: CheckConfig) -> Inputs:
    """Seeded inputs of ``config.batch`` samples for ``process`` (data from the :data:`DATA` registry)."""
    gen = make_generator(config.seed, config.device)
    s, t = draw_time_pairs(process, config.batch, gen, dtype=config.dtype, device=config.device,
                           close=config.close_gap)
    x0 = DATA(process, (config.batch, *config.event_shape), gen, config.dtype, config.device)
    return Inputs(x0=x0, s=s, t=t, generator=gen)
