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

__all__ = ["Solver", "Step", "ODESolver", "SDESolver", "CTMCSolver", "HasKernel", "require_kernel"]


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


class HasKernel(abc.ABC):
    """Capability: the solver's step has a closed-form law given the current state, its **kernel**
    (THEORY.md §12). Mixed into the solvers that have one: :class:`~probdiff.solvers.EulerMaruyama`,
    :class:`~probdiff.solvers.Ancestral`, :class:`~probdiff.solvers.CoefficientPreserving`,
    :class:`~probdiff.solvers.TauLeaping`, :class:`~probdiff.solvers.BinomialBridge`,
    :class:`~probdiff.solvers.MaskedAncestral`, and :class:`~probdiff.solvers.TorchSDE` for the methods whose
    one step is Gaussian (``euler``, ``milstein``, ``euler_heun``).

    Solvers without it have none: deterministic integrators (every :class:`ODESolver`), and stochastic ones
    whose step is a nonlinear function of the noise or depends on more than the current state (torchsde's
    ``srk``, ``midpoint``, ``heun``, ``reversible_heun``). :func:`probdiff.sample` with ``log_prob=True`` and
    :func:`probdiff.path_log_prob` refuse those by name (:func:`require_kernel`). A solver with the capability
    can still refuse a configuration whose step is deterministic (``noise == 0``, DDIM) with ``ValueError``.
    """

    def kernel(self, reverse, x: torch.Tensor, t, s):
        """The step from ``t`` to ``s < t`` as a distribution over ``x_s`` given ``x_t = x``:
        a :class:`~probdiff.reverse.kernels.StepKernel` (a Pyro distribution with ``batch_shape == (batch,)``
        and ``event_shape == x.shape[1:]``) whose ``draw`` is what :meth:`Solver.step` returns.

        Raises ``ValueError`` for a configuration whose step is deterministic (``noise == 0``, DDIM).
        """
        return self.kernel_and_denoised(reverse, x, t, s)[0]

    @abc.abstractmethod
    def kernel_and_denoised(self, reverse, x: torch.Tensor, t, s):
        """:meth:`kernel` and the denoised estimate of the same model evaluation: ``(kernel, denoised)``."""


def require_kernel(solver) -> None:
    """Raise ``ValueError`` naming ``solver`` unless it has the :class:`HasKernel` capability."""
    if not isinstance(solver, HasKernel):
        raise ValueError(f"{solver!r} takes no step with a closed-form law (deterministic, or a nonlinear "
                         "function of its noise), so it has no kernel and no path log-probability; solvers with "
                         "one are the pd.solvers.HasKernel ones: EulerMaruyama, Ancestral, CoefficientPreserving, "
                         "TauLeaping, BinomialBridge, MaskedAncestral, TorchSDE('euler' | 'milstein' | 'euler_heun')")
