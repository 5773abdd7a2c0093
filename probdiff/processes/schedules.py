r"""Noise schedules of Markov chains as objects: a rate multiplier :math:`\beta(t)` and its integral.

A chain with generator :math:`\beta(t) R` moves along :math:`B(t) = \int_0^t \beta`; for the interpolating
chains (:class:`~probdiff.InterpolatingChain`: uniform noise, masking) the probability that a token is still
untouched at ``t`` is :math:`\alpha_t = e^{-r B(t)}`, so a schedule may be declared by :math:`\alpha_t` as in
masked diffusion (with :math:`r = 1`, :math:`B = -\log\alpha_t`, :math:`\beta = -\alpha_t'/\alpha_t`):

=========================  ====================================================  ==============================
:class:`ConstantRate`      :math:`\beta = c`, :math:`B = c\,t`                    Campbell et al. 2022
:class:`LinearRate`        :math:`\beta = b_0 + (b_1 - b_0)t`                     a linear rate, as the VP SDE's
:class:`Linear`            :math:`\alpha_t = 1 - t`                               Shi et al. 2024 (MD4), Table 1
:class:`LogLinear`         :math:`\alpha_t = 1 - (1-\epsilon)t`                   Sahoo et al. 2024 (MDLM), §3.5
:class:`Polynomial`        :math:`\alpha_t = 1 - t^w`                             MD4, Table 1
:class:`Cosine`            :math:`\alpha_t = 1 - \cos(\tfrac\pi2(1 - t))`         MD4, Table 1
:class:`DeclaredRate`      any :math:`(\beta, B)` given as callables
=========================  ====================================================  ==============================

The :math:`\alpha`-declared schedules live on :math:`t \in [0, 1]` and reach :math:`\alpha_1 = 0` (except
:class:`LogLinear`), i.e. :math:`B(1) = \infty`: the reference is reached exactly. :meth:`ChainSchedule.time_of`
inverts :math:`B` (closed forms on the built-ins, bisection in general); the grid uniform in the schedule,
:class:`probdiff.grids.ScheduleUniform`, uses it.

References: Shi et al., "Simplified and Generalized Masked Diffusion for Discrete Data" (NeurIPS 2024), §2 and
Table 1; Sahoo et al., "Simple and Effective Masked Diffusion Language Models" (NeurIPS 2024), §3.5.
"""

from __future__ import annotations

import abc
import math
from typing import Callable

import torch

from .._util import as_tensor, check_finite, check_positive

__all__ = ["ChainSchedule", "AlphaSchedule", "ConstantRate", "LinearRate", "Linear", "LogLinear", "Polynomial",
           "Cosine", "DeclaredRate"]


class ChainSchedule(abc.ABC):
    r"""A rate multiplier :math:`\beta(t) \ge 0` and :math:`B(t) = \int_0^t\beta` (increasing).

    Attributes:
        t_end: the end of the schedule's domain (``None``: unbounded); a chain's ``t_max`` may not exceed it
            and defaults to it.
    """

    t_end: float | None = None

    @abc.abstractmethod
    def rate(self, t) -> torch.Tensor:
        """:math:`\\beta(t)`."""

    @abc.abstractmethod
    def integrated(self, t) -> torch.Tensor:
        """:math:`B(t) = \\int_0^t \\beta(u)\\,du`."""

    def time_of(self, b, lo: float = 0.0, hi: float = 1.0) -> torch.Tensor:
        """The time ``t`` in ``[lo, hi]`` with :math:`B(t) = b` (generic: 60 bisection steps in float64)."""
        b = as_tensor(b).to(torch.float64)
        lo_t, hi_t = torch.full_like(b, lo), torch.full_like(b, hi)
        for _ in range(60):
            mid = 0.5 * (lo_t + hi_t)
            below = self.integrated(mid) < b
            lo_t, hi_t = torch.where(below, mid, lo_t), torch.where(below, hi_t, mid)
        return 0.5 * (lo_t + hi_t)

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({fields})"


class ConstantRate(ChainSchedule):
    """:math:`\\beta = c`, :math:`B = c\\,t` (the default of the chains: ``c = 1``)."""

    def __init__(self, rate: float = 1.0):
        check_positive("rate", rate)
        self.value = float(rate)

    def rate(self, t):
        return torch.full_like(as_tensor(t), self.value)

    def integrated(self, t):
        return self.value * as_tensor(t)

    def time_of(self, b, lo=0.0, hi=1.0):
        return as_tensor(b).to(torch.float64) / self.value


class LinearRate(ChainSchedule):
    """:math:`\\beta = b_0 + (b_1 - b_0)\\,t`, :math:`B = b_0 t + (b_1 - b_0)t^2/2` (``b0, b1 >= 0``, not both 0)."""

    def __init__(self, b0: float = 0.1, b1: float = 20.0):
        check_positive("b0", b0, allow_zero=True)
        check_positive("b1", b1, allow_zero=True)
        if b0 == 0 and b1 == 0:
            raise ValueError("b0 and b1 must not both be 0")
        self.b0, self.b1 = float(b0), float(b1)

    def rate(self, t):
        return self.b0 + (self.b1 - self.b0) * as_tensor(t)

    def integrated(self, t):
        t = as_tensor(t)
        return self.b0 * t + 0.5 * (self.b1 - self.b0) * t**2

    def time_of(self, b, lo=0.0, hi=1.0):
        b = as_tensor(b).to(torch.float64)
        a = 0.5 * (self.b1 - self.b0)
        if a == 0:
            return b / self.b0
        return 2 * b / (self.b0 + torch.sqrt(self.b0**2 + 4 * a * b))      # the stable root of a t^2 + b0 t - b


class AlphaSchedule(ChainSchedule):
    r"""A schedule declared by :math:`\alpha_t` (decreasing from 1): :math:`B = -\log\alpha_t`,
    :math:`\beta = -\alpha_t'/\alpha_t`. Subclasses give :meth:`alpha`, :meth:`alpha_derivative` and
    :meth:`time_of_alpha`. Defined on :math:`t \in [0, 1]`."""

    t_end = 1.0

    @abc.abstractmethod
    def alpha(self, t) -> torch.Tensor:
        """:math:`\\alpha_t`."""

    @abc.abstractmethod
    def alpha_derivative(self, t) -> torch.Tensor:
        """:math:`\\alpha_t'` (``<= 0``)."""

    @abc.abstractmethod
    def time_of_alpha(self, alpha) -> torch.Tensor:
        """The inverse of :math:`\\alpha`."""

    def rate(self, t):
        return -self.alpha_derivative(t) / self.alpha(t)

    def integrated(self, t):
        return -torch.log(self.alpha(t))

    def time_of(self, b, lo=0.0, hi=1.0):
        return self.time_of_alpha(torch.exp(-as_tensor(b).to(torch.float64)))


class Linear(AlphaSchedule):
    """:math:`\\alpha_t = 1 - t` (MD4's linear schedule)."""

    def alpha(self, t):
        return 1 - as_tensor(t)

    def alpha_derivative(self, t):
        return -torch.ones_like(as_tensor(t))

    def time_of_alpha(self, alpha):
        return 1 - as_tensor(alpha)


class LogLinear(AlphaSchedule):
    """:math:`\\alpha_t = 1 - (1 - \\epsilon)t`, i.e. :math:`B = -\\log(1 - (1-\\epsilon)t)` (MDLM's
    log-linear noise; :math:`\\alpha_1 = \\epsilon`)."""

    def __init__(self, eps: float = 1e-3):
        check_finite("eps", eps)
        if not 0 <= eps < 1:
            raise ValueError(f"eps must lie in [0, 1), got {eps}")
        self.eps = float(eps)

    def alpha(self, t):
        return 1 - (1 - self.eps) * as_tensor(t)

    def alpha_derivative(self, t):
        return torch.full_like(as_tensor(t), -(1 - self.eps))

    def time_of_alpha(self, alpha):
        return (1 - as_tensor(alpha)) / (1 - self.eps)


class Polynomial(AlphaSchedule):
    """:math:`\\alpha_t = 1 - t^w` (MD4's polynomial schedule; ``w = 1`` is :class:`Linear`)."""

    def __init__(self, exponent: float = 2.0):
        check_positive("exponent", exponent)
        self.exponent = float(exponent)

    def alpha(self, t):
        return 1 - as_tensor(t) ** self.exponent

    def alpha_derivative(self, t):
        t = as_tensor(t)
        return -self.exponent * t ** (self.exponent - 1)

    def time_of_alpha(self, alpha):
        return (1 - as_tensor(alpha)).clamp_min(0) ** (1 / self.exponent)


class Cosine(AlphaSchedule):
    """:math:`\\alpha_t = 1 - \\cos(\\tfrac\\pi2(1 - t)) = 1 - \\sin(\\tfrac\\pi2 t)` (MD4's cosine schedule)."""

    def alpha(self, t):
        return 1 - torch.sin(0.5 * math.pi * as_tensor(t))

    def alpha_derivative(self, t):
        return -0.5 * math.pi * torch.cos(0.5 * math.pi * as_tensor(t))

    def time_of_alpha(self, alpha):
        return torch.asin((1 - as_tensor(alpha)).clamp(-1, 1)) / (0.5 * math.pi)


class DeclaredRate(ChainSchedule):
    """Any schedule given by callables ``rate(t)`` (:math:`\\beta`) and ``integrated(t)`` (:math:`B`)."""

    def __init__(self, rate: Callable, integrated: Callable):
        if not (callable(rate) and callable(integrated)):
            raise ValueError("rate and integrated must be callables of t")
        self._rate, self._integrated = rate, integrated

    def rate(self, t):
        t = as_tensor(t)
        return as_tensor(self._rate(t), like=t)

    def integrated(self, t):
        t = as_tensor(t)
        return as_tensor(self._integrated(t), like=t)
