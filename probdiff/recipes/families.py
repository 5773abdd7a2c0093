"""What each process family defaults to: processes by name, the noise floor, time embedding, data
transform, model, sampler and grids (see :mod:`probdiff.recipes`)."""

from __future__ import annotations

import abc
import functools
import math
from dataclasses import dataclass
from typing import Callable

import torch

from ..grids import Grid, Karras, LogitObservation, LogSNR, ScheduleUniform, Uniform
from ..solvers import (Ancestral, BinomialBridge, Deblend, DPMSolver2M, Euler, EulerMaruyama, Heun, Solver, TauLeaping,
                       TorchDiffEq, TorchSDE)
from ..data import Counts, Dequantize
from ..nn import FourierLogSNR, FourierTime
from ..processes import (AbsorbingChain, Blackout, CosineVP, ForwardProcess, GaussianProcess, InterpolatingChain,
                         LinearBlend,
                         MarkovChain, SubVPSDE, UniformChain, VESDE, VPSDE)

__all__ = [
    "OptionError", "NOISE_FLOOR", "noise_floor_t_min", "PROCESSES", "process", "lookup",
    "Defaults", "GaussianDefaults", "ChainDefaults", "BlackoutDefaults", "defaults",
    "SOLVERS", "solver", "GRIDS", "grid",
]


class OptionError(ValueError):
    """A recipe option that does not apply (``option`` names it; the command line spells it ``--option``)."""

    def __init__(self, option: str, text: str):
        super().__init__(f"{option}: {text}")
        self.option, self.text = option, text


# ==================================================================== processes and the noise floor
#: Noise floor of Gaussian processes, in bin widths of the data — ``t_min`` is where
#: :math:`\sigma_t/\alpha_t` reaches this fraction of ``2/K`` (data on [-1, 1]). The model's density at
#: ``t_min`` is the data's blurred by this noise, which costs up to 0.07 bits per dimension at 0.05 bins
#: (0.57 at 0.4 bins, for a level that is certain given the rest of the image). With the lattice head
#: (``model="lattice"``), which resolves the bin edges exactly, 0.05 bins gave better held-out bits/dim on
#: the digits than 0.1 and 0.4 (validation split, benchmarks/digits.py); an epsilon MLP gained nothing
#: below 0.4 bins.
NOISE_FLOOR = 0.05


def noise_floor_t_min(process: GaussianProcess, levels: int, floor: float = NOISE_FLOOR) -> float:
    r"""The time at which :math:`\sigma_t/\alpha_t = \text{floor}\cdot 2/K` for K-level data on [-1, 1].

    That is the log-SNR :math:`\lambda = -2\log(2\,\text{floor}/K)`, mapped to time by the process' own
    inverse (``process.time_of_log_snr``); never earlier than ``process.t_min``.
    """
    lam = -2.0 * math.log(floor * 2.0 / levels)  # log-SNR where sigma/alpha is the floor
    t = float(process.time_of_log_snr(torch.tensor(lam, dtype=torch.float64)))
    return max(t, process.t_min)


def _gaussian(cls, **kwargs) -> Callable:
    """Builder of a Gaussian process whose ``t_min`` defaults to the noise floor of K-level data."""

    def make(levels: int, t_min: float | None = None) -> GaussianProcess:
        if t_min is None:
            t_min = noise_floor_t_min(cls(**kwargs), levels)
        return cls(t_min=t_min, **kwargs)

    return make


def _chain(cls, extra_states: int = 0, **kwargs) -> Callable:
    def make(levels: int, t_min: float | None = None) -> MarkovChain:
        return cls(levels + extra_states, **({} if t_min is None else {"t_min": t_min}), **kwargs)

    return make


def _blackout(levels: int, t_min: float | None = None) -> Blackout:
    if t_min is not None:
        raise OptionError("t_min", "does not apply to Blackout (it starts at t = 0)")
    return Blackout(max_count=levels - 1)


#: Process constructors ``f(levels, t_min=None)`` by name — the number of data levels K fixes the state
#: space of chains and the noise floor of Gaussian processes.
PROCESSES: dict[str, Callable[..., ForwardProcess]] = {
    "vp": _gaussian(VPSDE),
    "subvp": _gaussian(SubVPSDE),
    "ve": _gaussian(VESDE, sigma_min=1e-3, sigma_max=10.0),
    "cosine": _gaussian(CosineVP),
    "blend": _gaussian(LinearBlend),
    "blackout": _blackout,
    "uniform": _chain(UniformChain),
    "absorbing": _chain(AbsorbingChain, extra_states=1),  # one extra state: the mask
}


def process(name: str, levels: int, t_min: float | None = None) -> ForwardProcess:
    """The process called ``name`` (a key of :data:`PROCESSES`) for data with ``levels`` levels.

    Gaussian processes start at ``t_min`` (default: :func:`noise_floor_t_min`); chains get ``levels``
    states (the absorbing chain one more, its mask) and start at their own ``t_min`` unless given.
    """
    return lookup("process", name, PROCESSES)(levels, t_min)


def lookup(option: str, name: str, table: dict):
    """``table[name]``, or an :class:`OptionError` naming ``option`` and the names it takes."""
    if name not in table:
        raise OptionError(option, f"{name!r} is not one of {', '.join(sorted(table))}")
    return table[name]


# ==================================================================== what depends on the family
@dataclass(frozen=True)
class Defaults(abc.ABC):
    """How a process family is trained and evaluated unless told otherwise (abstract; see :func:`defaults`).

    Attributes:
        model: default model parameterisation (a key of :data:`~probdiff.recipes.models.MODELS`).
        solver: default sampler (a key of :data:`SOLVERS`).
        grid: default time grid of sampling (a key of :data:`GRIDS`).
        elbo_grid: grid of the discrete-time ELBO (``None``: the continuous-time bound).
    """

    model: str
    solver: str
    grid: str
    elbo_grid: str | None = None

    @abc.abstractmethod
    def time_embedding(self, process: ForwardProcess) -> torch.nn.Module:
        """The network's embedding of time for ``process``."""

    @abc.abstractmethod
    def transform(self, levels: int):
        """What the network sees of K-level data: :class:`~probdiff.data.Dequantize` or :class:`~probdiff.data.Counts`."""

    def output_states(self, process: ForwardProcess) -> int | None:
        """Outputs per data dimension of the network (``None``: one, the shape of ``x``)."""
        return None


@dataclass(frozen=True)
class GaussianDefaults(Defaults):
    """Gaussian processes: dequantised data on [-1, 1], a Fourier embedding of the log-SNR (the network sees
    the noise level, whatever the schedule), the lattice head, Heun on a Karras grid (second order, steps
    concentrated at low noise), the continuous-time ELBO."""

    model: str = "lattice"
    solver: str = "heun"
    grid: str = "karras"

    def time_embedding(self, process):
        return FourierLogSNR(process)

    def transform(self, levels):
        return Dequantize(levels)


@dataclass(frozen=True)
class ChainDefaults(Defaults):
    """Markov chains on the levels: the counts as they are, a Fourier embedding of time, a categorical model
    with one logit per state and dimension, ancestral sampling and the discrete-time ELBO on a uniform grid
    (the chain's exact discrete KLs)."""

    model: str = "categorical"
    solver: str = "ancestral"
    grid: str = "uniform"
    elbo_grid: str | None = "uniform"

    def time_embedding(self, process):
        return FourierTime(t_max=process.t_max)

    def transform(self, levels):
        return Counts()

    def output_states(self, process):
        return process.num_states


@dataclass(frozen=True)
class BlackoutDefaults(Defaults):
    """Blackout: the counts, a Fourier embedding of time, the mean-births model (:class:`~probdiff.BlackoutModel`),
    the binomial bridge on a grid uniform in the logit of the observation probability, and the
    continuous-time ELBO."""

    model: str = "blackout"
    solver: str = "binomial-bridge"
    grid: str = "logit"

    def time_embedding(self, process):
        return FourierTime(t_max=process.t_max)

    def transform(self, levels):
        return Counts()


@functools.singledispatch
def defaults(process: ForwardProcess) -> Defaults:
    """The recipe of ``process``' family (dispatch on the process class; register a family's own)."""
    raise ValueError(f"no recipe for {type(process).__name__}; register one with "
                     f"@probdiff.recipes.defaults.register({type(process).__name__})")


defaults.register(GaussianProcess, lambda p: GaussianDefaults())
defaults.register(MarkovChain, lambda p: ChainDefaults())
defaults.register(Blackout, lambda p: BlackoutDefaults())
# uniform noise and masking: steps uniform in the schedule (each corrupts the same expected number of tokens)
defaults.register(InterpolatingChain, lambda p: ChainDefaults(grid="schedule", elbo_grid="schedule"))


# ==================================================================== samplers and grids
#: Solvers by name — ``(constructor, default noise level of the reverse process)`` — 0 for ODE solvers
#: (the probability flow), 1 for stochastic ones (the reverse SDE or chain).
SOLVERS: dict[str, tuple[Callable, float]] = {
    "euler": (Euler, 0.0),
    "heun": (Heun, 0.0),
    "dpm2m": (DPMSolver2M, 0.0),
    "deblend": (Deblend, 0.0),
    "dopri5": (lambda: TorchDiffEq("dopri5"), 0.0),
    "euler-maruyama": (EulerMaruyama, 1.0),
    "torchsde": (TorchSDE, 1.0),
    "ancestral": (Ancestral, 1.0),
    "ddim": (lambda: Ancestral(eta=0.0), 0.0),
    "tau-leaping": (TauLeaping, 1.0),
    "binomial-bridge": (BinomialBridge, 1.0),
}


def solver(name: str) -> tuple[Solver, float]:
    """The sampler called ``name`` and the noise level of the reverse process it integrates by default."""
    make, noise = lookup("solver", name, SOLVERS)
    return make(), noise


#: Time grids ``f(steps)`` by name.
GRIDS: dict[str, Callable[[int], Grid]] = {
    "uniform": Uniform,
    "karras": Karras,
    "logsnr": LogSNR,
    "logit": LogitObservation,
    "schedule": ScheduleUniform,
}


def grid(name: str, steps: int) -> Grid:
    """The time grid called ``name`` with ``steps`` steps."""
    return lookup("grid", name, GRIDS)(steps)
