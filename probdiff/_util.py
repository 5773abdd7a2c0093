"""Utilities shared by every layer: argument checks, broadcasting of per-sample coefficients, deprecations.

Every check raises :class:`ValueError` naming the argument and what is allowed, in the style of
``torch.distributions``' ``validate_args``. This module imports nothing from probdiff (bottom layer).
"""

from __future__ import annotations

import functools
import math
import warnings
from numbers import Real

import torch

__all__ = [
    "as_tensor",
    "expand_like",
    "check_finite",
    "check_positive",
    "check_positive_int",
    "check_batch",
    "check_event_shape",
    "deprecated_alias",
]


def expand_like(c: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """A per-sample coefficient ``c`` of shape ``(batch,)`` reshaped to broadcast against ``x`` of shape
    ``(batch, *event)`` (trailing singleton dimensions; no copy).

    Example:
        >>> import torch
        >>> from probdiff import expand_like
        >>> expand_like(torch.tensor([1.0, 2.0]), torch.ones(2, 3, 4)).shape
        torch.Size([2, 1, 1])
    """
    return c.reshape(c.shape + (1,) * (x.dim() - c.dim()))


def as_tensor(value, *, like: torch.Tensor | None = None) -> torch.Tensor:
    """A floating tensor from a number or tensor, on ``like``'s device and dtype when given."""
    if like is not None:
        dtype = like.dtype if like.is_floating_point() else torch.get_default_dtype()
        return torch.as_tensor(value, dtype=dtype, device=like.device)
    if isinstance(value, torch.Tensor):
        return value if value.is_floating_point() else value.to(torch.get_default_dtype())
    return torch.as_tensor(value, dtype=torch.get_default_dtype())


def check_finite(name: str, value: torch.Tensor) -> None:
    """Raise if ``value`` holds NaN or infinity."""
    if isinstance(value, torch.Tensor):
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise ValueError(f"{name} must be finite (no NaN or inf), got a tensor with non-finite entries")
    elif isinstance(value, Real) and not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")


def check_positive_int(name: str, value) -> int:
    """Raise unless ``value`` is an integer ``>= 1`` (``bool`` refused, ``3.0`` accepted); return it as ``int``."""
    if isinstance(value, bool) or int(value) != value or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def check_positive(name: str, value, *, allow_zero: bool = False) -> None:
    """Raise unless ``value`` is a finite number ``> 0`` (or ``>= 0`` with ``allow_zero``)."""
    check_finite(name, value)
    bad = (value < 0) if allow_zero else (value <= 0)
    if bool(torch.as_tensor(bad).any()):
        rel = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be {rel}, got {value}")


def check_batch(name: str, x: torch.Tensor, batch: int) -> None:
    """Raise unless ``x`` is a tensor with leading dimension ``batch``."""
    if x.dim() == 0 or x.shape[0] != batch:
        raise ValueError(f"{name} must have leading (batch) dimension {batch}, got shape {tuple(x.shape)}")


def check_event_shape(name: str, x: torch.Tensor, expected: torch.Size) -> None:
    """Raise unless ``x.shape[1:] == expected``."""
    if tuple(x.shape[1:]) != tuple(expected):
        raise ValueError(
            f"{name} must have event shape {tuple(expected)} (shape (batch, *event)), got shape {tuple(x.shape)}"
        )


def deprecated_alias(old: str, new, *, note: str = ""):
    """A class (or function) ``new`` under its old public name ``old``, warning once per use.

    Classes become a subclass whose construction emits :class:`DeprecationWarning` (``isinstance`` checks
    against ``new`` keep working); functions a wrapper that warns on every call. Used for public names that
    moved in the layered layout; they are kept for one release.
    """
    message = f"{old} is deprecated; use {new.__module__}.{new.__qualname__} instead{note}"
    if isinstance(new, type):
        def __init__(self, *args, **kwargs):
            warnings.warn(message, DeprecationWarning, stacklevel=2)
            new.__init__(self, *args, **kwargs)

        return type(old.rpartition(".")[2], (new,), {"__init__": __init__, "__doc__": f"Deprecated: {message}.",
                                                     "__module__": new.__module__})

    @functools.wraps(new)
    def wrapper(*args, **kwargs):
        warnings.warn(message, DeprecationWarning, stacklevel=2)
        return new(*args, **kwargs)

    wrapper.__doc__ = f"Deprecated: {message}."
    return wrapper
