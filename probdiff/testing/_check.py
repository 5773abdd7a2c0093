"""Run every identity that applies to a process: :func:`check_process` and its :class:`Report`.

The per-family implementations it dispatches to live in ``_generic``, ``_gaussian`` and ``_chains``, which
the package's ``__init__`` imports (so they are registered whenever :mod:`probdiff.testing` is).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Iterable

from ..processes.base import ForwardProcess
from ._config import CheckConfig
from ._core import IDENTITIES, Identity, IdentityError
from ._inputs import Inputs, draw_inputs, make_generator

__all__ = ["CheckResult", "Report", "check_process"]


def _raised(ident: Identity, process, exc: Exception) -> IdentityError:
    """An exception raised by the process (or a distribution it built, e.g. a Pyro validation error on
    negative probabilities) while ``ident`` was checked, as a failure of that identity."""
    return IdentityError(ident, process, f"  the check raised {type(exc).__name__}: {exc}")


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
            run everything and return the report (``report.failures``, ``report.raise_if_failed()``) and
            never raise for anything the process does: an exception raised inside a check (an invalid
            closed form whose distribution fails validation, a NaN that a library rejects) is that check's
            failure, an :class:`IdentityError` saying what was raised.

    Returns:
        A :class:`Report` (printable as a table).

    Raises:
        IdentityError: an identity is violated, or the process raised while it was checked (an
            ``AssertionError`` naming it and the worst input; the original exception is its ``__cause__``).
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
    try:
        inputs, drawn_error = draw_inputs(process, config), None
    except Exception as exc:  # noqa: BLE001 - the process cannot even produce inputs: every check fails
        inputs, drawn_error = None, exc
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
            if drawn_error is not None:
                raise drawn_error
            note = impl(process, Inputs(inputs.x0, inputs.s, inputs.t, gen), config)
        except Exception as exc:  # noqa: BLE001 - a process that raises inside a check fails the check
            err = exc if isinstance(exc, IdentityError) else _raised(ident, process, exc)
            report.results.append(CheckResult(ident, False, str(err), time.perf_counter() - start, err))
            if raise_on_failure:
                raise err from (None if err is exc else exc)
            continue
        report.results.append(CheckResult(ident, True, note or "", time.perf_counter() - start))
    return report
