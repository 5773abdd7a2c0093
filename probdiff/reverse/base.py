r"""Reverse time: one family of processes at any noise level (THEORY.md §3).

For a Gaussian process with score model :math:`s(x, t)` and every :math:`\eta \ge 0`, the reverse-time SDE

.. math::

    dx = \big[f(t)\,x - \tfrac{1+\eta^2}{2}\,g(t)^2\,s(x,t)\big]\,dt + \eta\,g(t)\,d\bar W,

integrated from ``t_max`` down to ``t_min``, has the marginals :math:`p_t` of the forward process.
:math:`\eta = 0` is the probability-flow ODE, :math:`\eta = 1` Anderson's reverse SDE. Reference:
McAllester, "On the Mathematics of Diffusion Models" (2023), §§5–7; Song et al. 2021, Eqs. (6), (13);
Karras et al. 2022, Eq. (6).

:func:`reverse` dispatches on the process family with :func:`build_reverse`, a ``functools.singledispatch``
function: Gaussian processes and Markov chains register theirs in this package; a new family registers its
own with ``@probdiff.reverse.register(MyFamily)``.
"""

from __future__ import annotations

import functools

import torch

from .._util import check_finite
from ..models.base import Model, bind
from ..processes.base import ForwardProcess

__all__ = ["ReverseProcess", "reverse", "probability_flow", "build_reverse"]


class ReverseProcess:
    """Base of reverse-time processes: holds the forward ``process``, the ``model`` and the ``noise`` level.

    Concrete families add their dynamics (drift and diffusion for Gaussian processes, reverse rates for
    Markov chains) and their exact step on a grid (:meth:`ancestral_step`). Samplers
    (:func:`probdiff.sample`) take a ``ReverseProcess``.
    """

    def __init__(self, process: ForwardProcess, model, noise: float = 1.0):
        if not isinstance(process, ForwardProcess):
            raise ValueError(f"process must be a ForwardProcess, got {type(process).__name__}")
        check_finite("noise", noise)
        if noise < 0:
            raise ValueError(f"noise must be >= 0, got {noise}")
        self.process = process
        self.model = model
        self.noise = float(noise)

    @property
    def t_min(self) -> float:
        return self.process.t_min

    @property
    def t_max(self) -> float:
        return self.process.t_max

    def prior(self, event_shape, *, device=None, dtype=None):
        """Where sampling starts: the forward process' reference at ``t_max``."""
        return self.process.prior(event_shape, device=device, dtype=dtype)

    def ancestral_step(self, x: torch.Tensor, t, s, eta: float, generator: torch.Generator | None):
        """One exact posterior step from ``t`` to ``s < t`` with the model's data estimate:
        ``(x_s, denoised)``. Families define it; the base has none."""
        raise ValueError(f"{type(self).__name__} has no ancestral step (the family of "
                         f"{type(self.process).__name__} defines none)")

    def ancestral_kernel(self, x: torch.Tensor, t, s, eta: float):
        """The law of :meth:`ancestral_step` as a :class:`~probdiff.reverse.kernels.StepKernel` over ``x_s``,
        with the model's data estimate: ``(kernel, denoised)``. Families with a stochastic exact step define
        it (``ancestral_step`` draws from it); a deterministic step (``eta == 0``) has none."""
        raise ValueError(f"{type(self).__name__} has no ancestral kernel (the family of "
                         f"{type(self.process).__name__} defines none)")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(process={self.process!r}, model={self.model!r}, noise={self.noise:g})"


@functools.singledispatch
def build_reverse(process: ForwardProcess, model, noise: float) -> ReverseProcess:
    """The reverse process of ``process``'s family; register a family with ``@build_reverse.register``."""
    known = ", ".join(sorted(c.__name__ for c in build_reverse.registry if c is not object)) or "none"
    raise ValueError(f"no reverse process is registered for {type(process).__name__}; registered: {known}")


def reverse(process_or_model, model: Model | None = None, noise: float = 1.0) -> ReverseProcess:
    """The reverse-time process driven by ``model`` at noise level ``noise`` (≥ 0).

    Short form ``reverse(model, noise=...)`` (the model carries its process); long form
    ``reverse(process, model, noise)``, where ``process`` must be the model's (``ValueError`` naming both
    otherwise).
    """
    if isinstance(process_or_model, Model) and model is not None and not isinstance(model, Model):
        model, noise = None, model                    # reverse(model, 0.5)
    process, model = bind(process_or_model, model, entry="reverse")
    return build_reverse(process, model, noise)


#: Register the reverse process of a new family: ``@probdiff.reverse.register(MyFamily)`` on
#: ``builder(process, model, noise) -> ReverseProcess``.
reverse.register = build_reverse.register


def probability_flow(process_or_model, model: Model | None = None) -> ReverseProcess:
    """The probability-flow ODE: :func:`reverse` with ``noise=0`` (short form ``probability_flow(model)``)."""
    process, model = bind(process_or_model, model, entry="probability_flow")
    return build_reverse(process, model, 0.0)
