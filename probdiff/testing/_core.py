"""The machinery of :func:`check_process`: identities, their per-family implementations, inputs, reports.

An :class:`Identity` is one mathematical claim about a forward process ("Bayes' rule holds for the
posterior"). How it is checked depends on the process family, so each identity owns a
:class:`~probdiff._registry.Registry` from process classes to implementations; the most specific
registration along the process' MRO wins (a Markov chain checks Chapman–Kolmogorov by exact matrix
products, a Gaussian process by moments, any other :class:`~probdiff.ForwardProcess` by Monte Carlo).
A new family plugs in with ``@IDENTITY.register(MyFamily)``; no ``isinstance`` chains.

Every failure is an :class:`IdentityError` (an ``AssertionError``) whose message names the identity,
the process, and the worst offending input: times, sample, observed and expected values, tolerance.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable

import torch

from ..processes.base import ForwardProcess

__all__ = ["CheckConfig", "Identity", "IdentityError", "Inputs", "Report", "CheckResult", "DATA",
           "IDENTITIES", "check_process", "draw_inputs", "fail_worst"]


# ==================================================================== configuration
@dataclass(frozen=True)
class CheckConfig:
    """Options of :func:`check_process` and of every ``assert_*`` check.

    Attributes:
        seed: seed of the ``torch.Generator`` drawing inputs and Monte-Carlo samples; the same seed
            gives the same verdict.
        dtype: floating dtype of the inputs (float64 by default: identities are then checked to
            ~1e-8 relative; float32 works with the looser default tolerances of that dtype).
        device: device of the inputs (default: torch's default device).
        event_shape: event shape of the drawn data.
        batch: number of (time, data) inputs per deterministic identity.
        rtol, atol: tolerance of deterministic identities, ``|lhs - rhs| <= atol + rtol * scale`` with
            ``scale`` the magnitude of the terms (None: 1e-8 / 1e-12 in float64, 1e-3 / 1e-5 otherwise).
        fd_rtol: relative tolerance of finite-difference derivatives, added to the extrapolation's
            own error estimate.
        num_samples: Monte-Carlo sample size (forward simulation, reverse family, generic checks).
        z: Monte-Carlo tolerance in standard errors (5 standard errors: a correct process fails with
            probability below 1e-5 per compared statistic).
        mc_bias: relative allowance for time-discretisation bias in simulations (of the scale of the
            compared statistic).
        steps: number of time steps of simulations.
        noises: noise levels of the reverse family checked for marginal preservation.
        prior_kl: tolerance of the prior check, KL(q(x_{t_max}|x_0) || prior) in nats per event
            element, for data of unit scale (entries in [-1, 1]).
    """

    seed: int = 0
    dtype: torch.dtype = torch.float64
    device: torch.device | str | None = None
    event_shape: tuple = (3,)
    batch: int = 64
    rtol: float | None = None
    atol: float | None = None
    fd_rtol: float = 1e-6
    num_samples: int = 2000
    z: float = 5.0
    mc_bias: float = 0.02
    steps: int = 100
    noises: tuple = (0.0, 1.0)
    prior_kl: float = 1e-2

    def __post_init__(self):
        if not (isinstance(self.dtype, torch.dtype) and self.dtype.is_floating_point):
            raise ValueError(f"dtype must be a floating torch.dtype, got {self.dtype!r}")
        for name in ("batch", "num_samples", "steps"):
            value = getattr(self, name)
            if isinstance(value, bool) or int(value) != value or value < 2:
                raise ValueError(f"{name} must be an integer >= 2, got {value!r}")
        for name in ("fd_rtol", "z", "mc_bias", "prior_kl"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)!r}")
        if any(n < 0 for n in self.noises):
            raise ValueError(f"noises must be >= 0, got {self.noises}")

    @property
    def tol(self) -> tuple[float, float]:
        """``(rtol, atol)`` of deterministic identities for this dtype."""
        f64 = self.dtype == torch.float64
        rtol = self.rtol if self.rtol is not None else (1e-8 if f64 else 1e-3)
        atol = self.atol if self.atol is not None else (1e-12 if f64 else 1e-5)
        return rtol, atol

    @property
    def close_gap(self) -> float:
        """Smallest relative gap ``(t - s)/(t_max - t_min)`` of drawn time pairs (resolvable in dtype)."""
        return max(1e-6, 1e3 * torch.finfo(self.dtype).eps)

    def replace(self, **options) -> "CheckConfig":
        unknown = set(options) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            allowed = ", ".join(f.name for f in dataclasses.fields(self))
            raise ValueError(f"unknown check options {sorted(unknown)}; allowed: {allowed}")
        return dataclasses.replace(self, **options)


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
    """Raise :class:`IdentityError` at the worst input if ``|observed - expected| > tol`` anywhere.

    Args:
        what: the quantity compared, e.g. ``"log q(x_s|x_t,x_0) + log q(x_t|x_0)"``.
        observed, expected, tol: tensors of a common leading (batch) shape; extra dimensions are
            compared elementwise and reduced to the worst entry per sample.
        context: per-sample inputs to report (tensors with the same leading dimension, or plain values).
    """
    observed, expected = torch.broadcast_tensors(observed.detach(), expected.detach())
    tol = torch.as_tensor(tol, dtype=observed.dtype, device=observed.device).expand_as(observed)
    diff = (observed - expected).abs()
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


# ==================================================================== report
@dataclass
class CheckResult:
    """Outcome of one identity: ``passed`` is True, False, or None when it does not apply."""

    identity: Identity
    passed: bool | None
    message: str = ""
    seconds: float = 0.0
    error: IdentityError | None = None


@dataclass
class Report:
    """What :func:`check_process` found, one :class:`CheckResult` per identity."""

    process: object
    results: list = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(r.passed is not False for r in self.results)

    @property
    def failures(self) -> list:
        return [r for r in self.results if r.passed is False]

    def raise_if_failed(self) -> None:
        """Raise the first failure's :class:`IdentityError`; the others are listed in its notes."""
        if self.failures:
            first = self.failures[0].error
            for other in self.failures[1:]:
                first.add_note(other.message)
            raise first

    def __str__(self) -> str:
        lines = [f"check_process({self.process!r}):"]
        width = max((len(r.identity.name) for r in self.results), default=0)
        for r in self.results:
            status = {True: "passed", False: "FAILED", None: "n/a"}[r.passed]
            note = f"  ({r.message.splitlines()[0]})" if r.message and r.passed is not False else ""
            lines.append(f"  {status:7s} {r.identity.name:<{width}s} {r.seconds:6.2f} s{note}")
        return "\n".join(lines)


def check_process(process: ForwardProcess, *, checks: Iterable[Identity] | None = None,
                  skip: Iterable[Identity] = (), config: CheckConfig | None = None,
                  raise_on_failure: bool = True, **options) -> Report:
    """Check every identity that applies to ``process`` (see :data:`IDENTITIES`).

    Args:
        process: any :class:`~probdiff.ForwardProcess`.
        checks: the identities to check (default: all that apply to the process' family).
        skip: identities to leave out (e.g. ``[REVERSE_MARGINALS]`` to skip the Monte-Carlo ones).
        config: a :class:`CheckConfig`; ``**options`` override its fields (``seed=1, dtype=torch.float32``).
        raise_on_failure: raise the first failure's :class:`IdentityError` at once (default); with False,
            run everything and return the report (``report.failures``, ``report.raise_if_failed()``).

    Returns:
        A :class:`Report` (printable as a table).

    Raises:
        IdentityError: an identity is violated (an ``AssertionError`` naming it and the worst input).
        ValueError: an identity in ``checks`` does not apply to the process' family, or bad options.
    """
    if not isinstance(process, ForwardProcess):
        raise ValueError(f"process must be a ForwardProcess, got {type(process).__name__}")
    config = (config or CheckConfig()).replace(**options)
    skip = set(skip)
    if checks is None:
        selected = [i for i in IDENTITIES if i not in skip]
    else:
        selected = [i for i in checks if i not in skip]
        for ident in selected:
            if not isinstance(ident, Identity):
                raise ValueError(f"checks must be Identity objects (e.g. probdiff.testing.BAYES), got {ident!r}")
            if not ident.applies_to(process):
                raise ValueError(f"{ident.name} has no implementation for {type(process).__name__}")
    inputs = draw_inputs(process, config)
    report = Report(process)
    for ident in selected:
        impl = ident.implementation(process)
        if impl is None:
            report.results.append(CheckResult(ident, None, f"no implementation for {type(process).__name__}"))
            continue
        start = time.perf_counter()
        # each identity gets its own generator (seed, index), so selecting checks changes no verdict
        gen = make_generator(config.seed * 1000 + IDENTITIES.index(ident) if ident in IDENTITIES else config.seed,
                             config.device)
        try:
            note = impl(process, Inputs(inputs.x0, inputs.s, inputs.t, gen), config)
        except IdentityError as err:
            report.results.append(CheckResult(ident, False, str(err), time.perf_counter() - start, err))
            if raise_on_failure:
                raise
            continue
        report.results.append(CheckResult(ident, True, note or "", time.perf_counter() - start))
    return report
