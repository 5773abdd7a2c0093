r"""Reverse time: one family of processes at any noise level (THEORY.md §3).

For a Gaussian process with score model :math:`s(x, t)` and every :math:`\eta \ge 0`, the reverse-time SDE

.. math::

    dx = \big[f(t)\,x - \tfrac{1+\eta^2}{2}\,g(t)^2\,s(x,t)\big]\,dt + \eta\,g(t)\,d\bar W,

integrated from ``t_max`` down to ``t_min``, has the marginals :math:`p_t` of the forward process.
:math:`\eta = 0` is the probability-flow ODE, :math:`\eta = 1` Anderson's reverse SDE. Reference:
McAllester, "On the Mathematics of Diffusion Models" (2023), §§5–7; Song et al. 2021, Eqs. (6), (13);
Karras et al. 2022, Eq. (6).

:func:`reverse` dispatches on the process family through a registry, so other families (Markov
chains) register their own reverse processes (:data:`REVERSE`).
"""

from __future__ import annotations

import torch

from ._registry import Registry
from ._validation import check_finite
from .processes.base import ForwardProcess
from .processes.gaussian import GaussianProcess, _expand

__all__ = ["ReverseProcess", "GaussianReverse", "reverse", "probability_flow", "REVERSE"]

#: Registry of reverse-process builders ``builder(process, model, noise) -> ReverseProcess``.
REVERSE = Registry("reverse process")


class ReverseProcess:
    """Base of reverse-time processes: holds the forward ``process``, the ``model`` and the ``noise`` level.

    Concrete families add their dynamics (drift and diffusion for Gaussian processes, reverse rates for
    Markov chains). Samplers (:func:`probdiff.sample`) take a ``ReverseProcess``.
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

    def __repr__(self) -> str:
        return f"{type(self).__name__}(process={self.process!r}, model={self.model!r}, noise={self.noise:g})"


class GaussianReverse(ReverseProcess):
    r"""The reverse-time family of a Gaussian process at noise level :math:`\eta` (``noise``).

    ``drift(x, t)`` :math:`= f(t)x - \tfrac{1+\eta^2}{2}g(t)^2 s(x,t)` is the drift in forward time
    ``t`` (so the integration runs with ``dt < 0``); ``diffusion(t)`` :math:`= \eta\,g(t)`.
    """

    def drift(self, x: torch.Tensor, t) -> torch.Tensor:
        p = self.process
        t = p._time(t, x)
        f, g = _expand(p.drift_coef(t), x), _expand(p.diffusion(t), x)
        return f * x - 0.5 * (1.0 + self.noise**2) * g**2 * self.model.score(x, t)

    def diffusion(self, t) -> torch.Tensor:
        return self.noise * self.process.diffusion(t)


@REVERSE.register(GaussianProcess)
def _gaussian_reverse(process, model, noise):
    return GaussianReverse(process, model, noise)


def reverse(process: ForwardProcess, model, noise: float = 1.0) -> ReverseProcess:
    """The reverse-time process of ``process`` driven by ``model`` at noise level ``noise`` (≥ 0)."""
    return REVERSE.lookup(process)(process, model, noise)


def probability_flow(process: ForwardProcess, model) -> ReverseProcess:
    """The probability-flow ODE: :func:`reverse` with ``noise=0``."""
    return reverse(process, model, noise=0.0)
