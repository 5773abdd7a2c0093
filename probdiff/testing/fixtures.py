"""The fixture list of built-in processes: :data:`BUILT_IN`, what every generic test runs over.

Like Pyro's list of distribution fixtures, each :class:`Fixture` is a named, small, fast-to-build
instance of one built-in process with the parameters the test-suite uses; a generic test is written
once and parametrised over the list::

    import pytest
    from probdiff import testing as pt

    @pytest.mark.parametrize("fixture", pt.BUILT_IN, ids=lambda f: f.id)
    def test_my_property(fixture):
        process = fixture.make()
        ...

A new built-in process joins :data:`BUILT_IN` and is then checked by every generic test.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch

from ..processes.base import ForwardProcess
from ..processes.blackout import Blackout
from ..processes.chain import MarkovChain
from ..processes.discrete_vp import DiscreteVP
from ..processes.edm import EDM
from ..processes.uniform_masking import AbsorbingChain, UniformChain
from ..processes.gaussian import VESDE, LinearBlend
from ..processes.linear_sde import LinearSDE
from ..processes.vp import VPSDE, CosineVP, SubVPSDE

__all__ = ["Fixture", "BUILT_IN"]


@dataclass(frozen=True)
class Fixture:
    """A named recipe for one process: ``make()`` builds a fresh instance.

    Attributes:
        id: a short unique name, used as the pytest id (``"VPSDE"``, ``"LinearSDE-VE"``).
        make: a callable of no arguments returning the process.
    """

    id: str
    make: Callable[[], ForwardProcess]

    def __call__(self) -> ForwardProcess:
        """The same as :meth:`make`."""
        return self.make()

    def __repr__(self) -> str:
        return f"Fixture({self.id!r})"


# ==================================================================== LinearSDE coefficients
# module-level functions (not lambdas) so that the processes print and pickle
def _vp_f(t):
    """f = -beta(t)/2 of the VP SDE with beta(t) = 0.1 + 19.9 t."""
    return -0.5 * (0.1 + 19.9 * torch.as_tensor(t))


def _vp_g(t):
    """g = sqrt(beta(t)) of the VP SDE with beta(t) = 0.1 + 19.9 t."""
    return torch.sqrt(0.1 + 19.9 * torch.as_tensor(t))


_VE_RATE = math.log(5000.0)  # sigma_t = 0.01 * 5000^t: sigma from 0.01 to 50


def _ve_f(t):
    """f = 0 (variance exploding)."""
    return torch.zeros_like(torch.as_tensor(t))


def _ve_g(t):
    """g = d sigma^2/dt ^ (1/2) for sigma_t = 0.01 * 5000^t."""
    return 0.01 * torch.exp(_VE_RATE * torch.as_tensor(t)) * math.sqrt(2 * _VE_RATE)


def _time_dependent_generator() -> torch.Tensor:
    return torch.tensor([[-1.0, 0.7, 0.3], [0.2, -0.5, 0.3], [1.0, 1.0, -2.0]], dtype=torch.float64)


def _beta(t):
    """beta(t) = 0.5 + t."""
    return 0.5 + torch.as_tensor(t)


def _integrated_beta(t):
    """B(t) = 0.5 t + t^2/2, the integral of beta."""
    t = torch.as_tensor(t)
    return 0.5 * t + 0.5 * t**2


# ==================================================================== the list
#: The built-in processes with the parameters the test-suite uses, Gaussian processes first.
BUILT_IN: tuple[Fixture, ...] = (
    Fixture("VPSDE", VPSDE),
    Fixture("SubVPSDE", SubVPSDE),
    Fixture("VESDE", VESDE),
    Fixture("CosineVP", CosineVP),
    Fixture("LinearBlend", LinearBlend),
    Fixture("LinearSDE-VP", lambda: LinearSDE(_vp_f, _vp_g, table_size=257)),
    Fixture("LinearSDE-VE", lambda: LinearSDE(_ve_f, _ve_g, t_min=0.0, sigma_init=0.01, table_size=257)),
    Fixture("DiscreteVP", lambda: DiscreteVP.linear(1000)),
    Fixture("EDM", EDM),
    Fixture("UniformChain", lambda: UniformChain(4)),
    Fixture("AbsorbingChain", lambda: AbsorbingChain(4)),
    Fixture("Blackout", lambda: Blackout(max_count=6)),
    Fixture("MarkovChain-time-dependent", lambda: MarkovChain(
        _time_dependent_generator(), beta=_beta, integrated_beta=_integrated_beta, t_max=5.0)),
)
