"""The solver contract: one small, stateless object per integration rule (DESIGN.md principle 4).

A solver advances a sample from time ``t`` to the earlier time ``s < t`` of a grid; everything that
changes along the way (multistep history) travels in ``state``, which the solver creates with
:meth:`Solver.init` and :func:`probdiff.sample` passes back. Solvers hold configuration only.
"""

from __future__ import annotations

import abc
from typing import Any, NamedTuple

import torch

from ..reverse.base import ReverseProcess
from ..reverse.chain import ChainReverse
from ..reverse.gaussian import GaussianReverse

__all__ = ["Solver", "Step", "ODESolver", "SDESolver", "CTMCSolver"]


class Step(NamedTuple):
    """Result of one solver step from ``t`` to ``s``.

    Attributes:
        x: the state at ``s``.
        denoised: the model's estimate of the data, E[x_0 | x_t], used for the step (``None`` if the
            solver used none); :class:`probdiff.Solution` collects it as the denoising trajectory.
        state: the solver state to pass to the next step.
        nfe: model evaluations spent on this step.
    """

    x: torch.Tensor
    denoised: torch.Tensor | None
    state: Any
    nfe: int


class Solver(abc.ABC):
    """Abstract solver. Subclasses set :attr:`order` and implement :meth:`step`.

    Attributes:
        order: convergence order of the global error in the step size (deterministic solvers), or the
            strong order (stochastic ones), as stated in the subclass docstring and tested.
    """

    order: int = 1

    def check(self, reverse: ReverseProcess) -> None:
        """Raise ``ValueError`` unless this solver can integrate ``reverse``; :func:`probdiff.sample` calls it
        once before the first step. The capability classes (:class:`ODESolver`, :class:`SDESolver`,
        :class:`CTMCSolver`) check the family and noise level; a solver with a further requirement (a
        particular process) extends it."""

    def init(self, reverse, x: torch.Tensor, ts: torch.Tensor) -> Any:
        """Initial solver state for sampling ``x`` along the grid ``ts`` (default: none)."""
        return None

    @abc.abstractmethod
    def step(self, reverse, x: torch.Tensor, t: torch.Tensor, s: torch.Tensor, state: Any,
             generator: torch.Generator | None) -> Step:
        """Advance ``x`` from time ``t`` to the earlier time ``s``."""

    def kernel(self, reverse, x: torch.Tensor, t, s):
        """The step from ``t`` to ``s < t`` as a distribution over ``x_s`` given ``x_t = x`` (THEORY.md §12):
        a :class:`~probdiff.reverse.kernels.StepKernel` (a Pyro distribution with ``batch_shape == (batch,)``
        and ``event_shape == x.shape[1:]``) whose ``draw`` is exactly what :meth:`step` returns.

        Raises ``ValueError`` for a step that is deterministic (ODE solvers, ``noise == 0``, DDIM) or whose
        law has no closed form (multistep integrators, torchsde, tau-leaping on a general chain).
        """
        return self.kernel_and_denoised(reverse, x, t, s)[0]

    def kernel_and_denoised(self, reverse, x: torch.Tensor, t, s):
        """:meth:`kernel` and the denoised estimate of the same model evaluation: ``(kernel, denoised)``."""
        raise ValueError(f"{type(self).__name__} takes no step with a closed-form law (deterministic or "
                         "multistep); kernels exist for EulerMaruyama and Ancestral at noise > 0, "
                         "CoefficientPreserving, BinomialBridge, and TauLeaping on Blackout")

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({fields})"


# ==================================================================== capabilities
def _require(solver, reverse, kind: type, what: str) -> None:
    if not isinstance(reverse, kind):
        raise ValueError(f"{type(solver).__name__} integrates the reverse process of a {what} "
                         f"(pd.reverse(model, ...)), got {type(reverse).__name__} of {type(reverse.process).__name__}")


class ODESolver(Solver):
    """Capability: integrates the probability-flow ODE of a Gaussian process (``reverse.noise == 0``).

    A deterministic solver cannot honour a Brownian term; it refuses a reverse process with ``noise > 0``
    rather than silently dropping it.
    """

    def check(self, reverse) -> None:
        _require(self, reverse, GaussianReverse, "GaussianProcess")
        if reverse.noise != 0.0:
            raise ValueError(f"{type(self).__name__} integrates the probability-flow ODE: reverse.noise must be 0 "
                             f"(use pd.probability_flow(model)), got noise={reverse.noise:g}; for noise > 0 use "
                             "EulerMaruyama, Ancestral or TorchSDE")


class SDESolver(Solver):
    """Capability: integrates the reverse-time SDE of a Gaussian process at any noise level."""

    def check(self, reverse) -> None:
        _require(self, reverse, GaussianReverse, "GaussianProcess")


class CTMCSolver(Solver):
    """Capability: simulates the reverse-time Markov chain of a :class:`~probdiff.MarkovChain`."""

    def check(self, reverse) -> None:
        _require(self, reverse, ChainReverse, "MarkovChain")
