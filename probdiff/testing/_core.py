"""Identities and their failures: the machinery every check of :func:`~probdiff.testing.check_process` uses.

An :class:`Identity` is one mathematical claim about a forward process ("Bayes' rule holds for the
posterior"). How it is checked depends on the process family, so each identity owns a
``functools.singledispatch`` function from process classes to implementations; the most specific
registration along the process' MRO wins (a Markov chain checks Chapman–Kolmogorov by exact matrix
products, a Gaussian process by moments, any other :class:`~probdiff.ForwardProcess` by Monte Carlo).
A new family plugs in with ``@IDENTITY.register(MyFamily)``; no ``isinstance`` chains.

Every failure is an :class:`IdentityError` (an ``AssertionError``) whose message names the identity,
the process, and the worst offending input: times, sample, observed and expected values, tolerance.
"""

from __future__ import annotations

import functools
import math
from typing import Callable

import torch

from ..processes.base import ForwardProcess
from ._config import CheckConfig
from ._inputs import Inputs, draw_inputs, draw_time_pairs

__all__ = ["Identity", "IdentityError", "IDENTITIES", "identity", "fail_worst"]


# ==================================================================== failures
class IdentityError(AssertionError):
    """A process violates an identity. ``identity`` and ``process`` say which."""

    def __init__(self, identity: "Identity", process, detail: str):
        self.identity, self.process, self.detail = identity, process, detail
        super().__init__(f"{identity.name} violated by {process!r}\n  identity: {identity.statement}\n{detail}")


def _fmt(v) -> str:
    if isinstance(v, torch.Tensor):
        v = v.detach().cpu()
        if v.numel() == 1:
            return f"{float(v):.10g}"
        flat = v.flatten()
        body = ", ".join(f"{float(a):.6g}" for a in flat[:8])
        more = f", ... ({v.numel()} values)" if v.numel() > 8 else ""
        return f"[{body}{more}]" if v.dim() == 1 else f"shape {tuple(v.shape)} [{body}{more}]"
    if isinstance(v, float):
        return f"{v:.10g}"
    return str(v)


def fail_worst(identity: "Identity", process, what: str, observed: torch.Tensor, expected: torch.Tensor,
               tol: torch.Tensor, context: dict) -> None:
    """Raise :class:`IdentityError` at the worst input if ``|observed - expected| > tol`` anywhere (equal
    values always agree, equal infinities included; a NaN never does).

    Args:
        what: the quantity compared, e.g. ``"log q(x_s|x_t,x_0) + log q(x_t|x_0)"``.
        observed, expected, tol: tensors of a common leading (batch) shape; extra dimensions are
            compared elementwise and reduced to the worst entry per sample.
        context: per-sample inputs to report (tensors with the same leading dimension, or plain values).
    """
    observed, expected = torch.broadcast_tensors(observed.detach(), expected.detach())
    tol = torch.as_tensor(tol, dtype=observed.dtype, device=observed.device).expand_as(observed)
    # equal values agree, infinities of the same sign included (a coefficient's limit at a singular end)
    diff = torch.where(observed == expected, torch.zeros_like(observed), (observed - expected).abs())
    bad = ~(diff <= tol)  # NaN counts as a violation
    if not bool(bad.any()):
        return
    ratio = torch.where(torch.isnan(diff), torch.full_like(diff, math.inf), diff / tol)
    flat = ratio.reshape(ratio.shape[0], -1) if ratio.dim() > 0 else ratio.reshape(1, 1)
    per_sample, where = flat.max(dim=1)
    i = int(per_sample.argmax())
    j = int(where[i])
    pick = (lambda v: v.reshape(v.shape[0], -1)[i, j]) if observed.dim() > 0 else (lambda v: v)
    lines = [f"  compared: {what}", f"  worst input (sample {i} of {flat.shape[0]}"
             + (f", element {j}" if flat.shape[1] > 1 else "") + "):"]
    for key, value in context.items():
        shown = value[i] if isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape[0] == flat.shape[0] else value
        lines.append(f"    {key} = {_fmt(shown)}")
    lines.append(f"  observed {_fmt(pick(observed))}, expected {_fmt(pick(expected))}, "
                 f"|difference| {_fmt(pick(diff))} > tolerance {_fmt(pick(tol))}")
    lines.append(f"  ({int(bad.reshape(flat.shape[0], -1).any(1).sum())} of {flat.shape[0]} inputs violate it)")
    raise IdentityError(identity, process, "\n".join(lines))


# ==================================================================== identities
class Identity:
    """One identity a forward process must satisfy, with per-family implementations.

    Args:
        name: short name used in reports and failure messages.
        statement: the identity in mathematical notation.
        slow: whether it is Monte-Carlo heavy (still run by default; listed for users who skip them).

    An implementation is ``impl(process, inputs: Inputs, config: CheckConfig) -> str | None`` (an
    optional note for the report), registered with ``@identity.register(ProcessFamily)``; it raises
    :class:`IdentityError` (via :func:`fail_worst` or :meth:`fail`) when the identity is violated.
    """

    def __init__(self, name: str, statement: str, *, slow: bool = False):
        self.name, self.statement, self.slow = name, statement, slow
        self._impls = functools.singledispatch(lambda process, *args, **kwargs: None)

    def register(self, family: type) -> Callable[[Callable], Callable]:
        """Decorator registering the implementation of this identity for ``family`` (and subclasses)."""
        return self._impls.register(family)

    def implementation(self, process) -> Callable | None:
        """The implementation for ``process``'s family (most specific class wins), or None if the identity
        does not apply."""
        impl = self._impls.dispatch(type(process))
        return None if impl is self._impls.registry[object] else impl

    def applies_to(self, process) -> bool:
        return self.implementation(process) is not None

    def fail(self, process, detail: str):
        """Raise :class:`IdentityError` for ``process`` with a free-form ``detail``."""
        raise IdentityError(self, process, detail)

    def check(self, process, x0: torch.Tensor | None = None, s=None, t=None, *, generator=None,
              config: CheckConfig | None = None, extra: dict | None = None, **options) -> str | None:
        """Check the identity for ``process``; inputs not given are drawn from ``config``.

        ``extra`` holds family-specific keyword arguments of the implementation (e.g. ``mixture``);
        ``**options`` override fields of ``config``.

        Raises:
            IdentityError: the identity is violated (an ``AssertionError``).
            ValueError: no implementation is registered for the process' family.
        """
        if not isinstance(process, ForwardProcess):
            raise ValueError(f"process must be a ForwardProcess, got {type(process).__name__}")
        config = (config or CheckConfig()).replace(**options)
        impl = self.implementation(process)
        if impl is None:
            known = ", ".join(sorted(c.__name__ for c in self._impls.registry if c is not object)) or "none"
            raise ValueError(f"no '{self.name}' check is registered for {type(process).__name__}; registered: {known}")
        drawn = draw_inputs(process, config)
        if x0 is not None:
            config = config.replace(dtype=x0.dtype if x0.is_floating_point() else config.dtype,
                                    device=x0.device, event_shape=tuple(x0.shape[1:]))
        if s is not None or t is not None:
            if x0 is None:
                raise ValueError("give x0 together with s or t")
            s = None if s is None else process.check_time(s, x0, "s")
            t = None if t is None else process.check_time(t, x0, "t")
            if s is not None and t is not None and bool((s >= t).any()):
                raise ValueError("s must be < t")
            inputs = Inputs(x0=x0, s=s, t=t, generator=generator or drawn.generator)
        else:
            inputs = Inputs(x0=drawn.x0 if x0 is None else x0, s=drawn.s, t=drawn.t,
                            generator=generator or drawn.generator)
            if x0 is not None:
                inputs.s, inputs.t = (v[: x0.shape[0]] for v in draw_time_pairs(
                    process, x0.shape[0], inputs.generator, dtype=config.dtype, device=x0.device,
                    close=config.close_gap))
        return impl(process, inputs, config, **(extra or {}))

    def __repr__(self) -> str:
        return f"Identity({self.name!r})"


#: Every identity, in the order :func:`check_process` runs them (cheap and fundamental first, so that
#: the first failure names the most specific broken identity).
IDENTITIES: list[Identity] = []


def identity(name: str, statement: str, *, slow: bool = False) -> Identity:
    """Create an :class:`Identity` and append it to :data:`IDENTITIES`."""
    ident = Identity(name, statement, slow=slow)
    IDENTITIES.append(ident)
    return ident
