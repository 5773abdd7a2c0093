"""Utilities shared by every layer: argument checks, broadcasting of per-sample coefficients, deprecations.

Every check raises :class:`ValueError` naming the argument and what is allowed, in the style of
``torch.distributions``' ``validate_args``. This module imports nothing from probdiff (bottom layer).
"""

from __future__ import annotations

import functools
import math
import os
import warnings
from numbers import Real

import torch
from pyro.distributions import Independent

__all__ = [
    "as_tensor",
    "expand_like",
    "logit_half_range",
    "check_finite",
    "check_positive",
    "check_positive_int",
    "check_batch",
    "check_event_shape",
    "check_memory",
    "check_real",
    "check_bool",
    "check_probs",
    "check_prob_shape",
    "check_network_output",
    "check_tensor",
    "to_event",
    "EmptySafeIndependent",
    "available_memory",
    "deprecated_alias",
    "sum_event",
    "observed_mask",
    "hold_observed",
    "sum_free",
    "check_out",
    "write_out",
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


def sum_event(v: torch.Tensor) -> torch.Tensor:
    """The sum of ``v`` (shape ``(batch, *event)``) over its event dimensions, shape ``(batch,)``; an empty
    batch gives an empty result and a scalar event returns ``v`` (``reshape(batch, -1)`` fails on both)."""
    return v.reshape(v.shape[0], math.prod(v.shape[1:])).sum(1)


def observed_mask(observed, x: torch.Tensor) -> torch.Tensor | None:
    """``observed`` (``None``, or a boolean tensor of ``x``'s shape ``(batch, *event)`` or of its event shape,
    shared by the batch) as a mask of ``x``'s shape on ``x``'s device; ``ValueError`` naming it otherwise."""
    if observed is None:
        return None
    allowed = f"None or a boolean tensor of shape {tuple(x.shape)} or {tuple(x.shape[1:])}"
    if not isinstance(observed, torch.Tensor) or observed.dtype != torch.bool:
        got = observed.dtype if isinstance(observed, torch.Tensor) else type(observed).__name__
        raise ValueError(f"observed must be {allowed} (True: held at the data value), got {got}")
    if observed.shape not in (x.shape, x.shape[1:]):
        raise ValueError(f"observed must be {allowed}, got shape {tuple(observed.shape)}")
    return observed.to(x.device).expand(x.shape)


def sum_free(per: torch.Tensor, observed: torch.Tensor | None) -> torch.Tensor:
    """:func:`sum_event` of ``per`` (shape ``(batch, *event)``) over the dimensions not ``observed`` (a mask from
    :func:`observed_mask`, or ``None``: all of them)."""
    return sum_event(per if observed is None else per.masked_fill(observed, 0.0))


def hold_observed(observed: torch.Tensor | None, x0: torch.Tensor, xt: torch.Tensor) -> torch.Tensor:
    """``xt`` with the ``observed`` dimensions (a mask from :func:`observed_mask`, or ``None``) at ``x0``."""
    return xt if observed is None else torch.where(observed, x0.to(xt.dtype), xt)


def check_out(out, shape, dtype: torch.dtype, device, source: torch.Tensor) -> None:
    """``out``, a preallocated result (``None``, or a contiguous tensor of the result's ``shape``, ``dtype`` and
    ``device`` that does not share memory with ``source``, the input it is computed from, with no gradient
    needed by either); ``ValueError`` naming it otherwise."""
    if out is None:
        return
    want = f"None or a contiguous tensor of shape {tuple(shape)}, dtype {dtype}, on {torch.device(device)}"
    if not isinstance(out, torch.Tensor):
        raise ValueError(f"out must be {want}, got {type(out).__name__}")
    if out.shape != tuple(shape) or out.dtype != dtype or out.device != torch.device(device) \
            or not out.is_contiguous():
        raise ValueError(f"out must be {want}, got shape {tuple(out.shape)}, dtype {out.dtype}, on {out.device}"
                         f"{'' if out.is_contiguous() else ', not contiguous'}")
    if out.requires_grad or (torch.is_grad_enabled() and source.requires_grad):
        raise ValueError("out must be None where a gradient is needed (it is written in place, outside autograd)")
    if out.numel() and source.numel() and out.untyped_storage().data_ptr() == source.untyped_storage().data_ptr():
        raise ValueError("out must not share memory with x0_probs (the result is computed from it)")


def write_out(out: torch.Tensor | None, result: torch.Tensor) -> torch.Tensor:
    """``result``, copied into ``out`` when one is given (checked by :func:`check_out`)."""
    return result if out is None else out.copy_(result)


def as_tensor(value, *, like: torch.Tensor | None = None, name: str = "t") -> torch.Tensor:
    """A floating tensor from a number or tensor, on ``like``'s device and dtype when given.

    Raises:
        TypeError: ``value`` is not a real number, a sequence of them, or a real tensor (``name`` says which
            argument it was; most callers convert a time).
    """
    if isinstance(value, torch.Tensor):
        if value.is_complex():
            raise TypeError(f"{name} must be real, got a tensor of dtype {value.dtype}")
    elif isinstance(value, (str, bytes, complex)) or value is None:
        raise TypeError(f"{name} must be a real number or a real tensor, got {type(value).__name__} {value!r}")
    if like is not None:
        if not isinstance(like, torch.Tensor):
            raise TypeError(f"x must be a torch.Tensor of shape (batch, *event), got {type(like).__name__}")
        dtype = like.dtype if like.is_floating_point() else torch.get_default_dtype()
        return torch.as_tensor(value, dtype=dtype, device=like.device)
    if isinstance(value, torch.Tensor):
        return value if value.is_floating_point() else value.to(torch.get_default_dtype())
    return torch.as_tensor(value, dtype=torch.get_default_dtype())


def logit_half_range(t_max: float) -> float:
    r""":math:`L/2 = t_{max} + \log(1 - e^{-t_{max}}) = \mathrm{logit}(1 - e^{-t_{max}})`: the logit variable
    :math:`v = \log(e^t - 1)` runs over :math:`[-L/2, L/2]` for :math:`t \in [t_{lo}, t_{max}]`,
    :math:`t_{lo} = -\log(1 - e^{-t_{max}})` (Santos et al. 2023's observation interval of length :math:`L`)."""
    t_max = float(t_max)
    return t_max + math.log1p(-math.exp(-t_max))


def check_finite(name: str, value: torch.Tensor) -> None:
    """Raise if ``value`` holds NaN or infinity."""
    if isinstance(value, torch.Tensor):
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise ValueError(f"{name} must be finite (no NaN or inf), got a tensor with non-finite entries")
    elif isinstance(value, Real) and not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")


def check_positive_int(name: str, value) -> int:
    """Raise unless ``value`` is an integer ``>= 1`` (``bool`` refused, ``3.0`` accepted); return it as ``int``.

    ``TypeError`` for something that is not a real number (a string, a tensor), ``ValueError`` otherwise."""
    if not isinstance(value, Real):
        raise TypeError(f"{name} must be a positive integer, got {type(value).__name__} {value!r}")
    if isinstance(value, bool) or not math.isfinite(value) or int(value) != value or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def check_positive(name: str, value, *, allow_zero: bool = False) -> None:
    """Raise unless ``value`` is a finite number ``> 0`` (or ``>= 0`` with ``allow_zero``): a real number or a
    real tensor (``TypeError`` for anything else, e.g. a string)."""
    if isinstance(value, bool) or not isinstance(value, (Real, torch.Tensor)):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__} {value!r}")
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


def available_memory() -> int | None:
    """Bytes of memory available to a new allocation on this machine (``MemAvailable``), or None if unknown."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def check_memory(what: str, nbytes: float, *, device=None) -> None:
    """Raise before allocating when ``nbytes`` exceed the memory available (host memory for the CPU, the
    device's free memory for CUDA); ``what`` says which arguments set the size."""
    device = torch.device("cpu") if device is None else torch.device(device)
    if device.type == "cuda" and torch.cuda.is_available():
        free = torch.cuda.mem_get_info(device)[0]
    elif device.type == "cpu":
        free = available_memory()
    else:
        free = None
    if free is not None and nbytes > free:
        raise ValueError(f"{what} needs about {nbytes / 2**30:.3g} GiB but only {free / 2**30:.3g} GiB of "
                         f"{device.type} memory is available; choose smaller sizes")


def check_real(name: str, value, *, low: float | None = None, high: float | None = None,
               low_open: bool = False) -> float:
    """A Python real number (``int`` or ``float``, not ``bool``, not a tensor or a string), finite and within
    ``[low, high]`` (``(low, high]`` with ``low_open``), returned as ``float``.

    Raises:
        TypeError: not a real number (the message names ``name``).
        ValueError: not finite, or out of range.
    """
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"{name} must be a real number (int or float), got {type(value).__name__} {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    if low is not None and (value <= low if low_open else value < low):
        raise ValueError(f"{name} must be {'>' if low_open else '>='} {low}, got {value}")
    if high is not None and value > high:
        raise ValueError(f"{name} must be <= {high}, got {value}")
    return value


def check_bool(name: str, value, *, allow_none: bool = False):
    """Raise :class:`TypeError` unless ``value`` is ``True`` or ``False`` (or ``None`` with ``allow_none``)."""
    if not (isinstance(value, bool) or (allow_none and value is None)):
        raise TypeError(f"{name} must be True or False{' or None' if allow_none else ''}, got {value!r}")
    return value


def check_tensor(name: str, x, *, floating: bool | None = None) -> torch.Tensor:
    """Raise unless ``x`` is a real tensor (``TypeError``: not a tensor, complex, or — with ``floating`` —
    not floating point, or with ``floating=False`` floating point)."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.is_complex():
        raise TypeError(f"{name} must be real, got dtype {x.dtype}")
    if floating is True and not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    if floating is False and x.is_floating_point():
        raise TypeError(f"{name} must be an integer tensor, got dtype {x.dtype}")
    return x


def check_probs(name: str, p: torch.Tensor, num_states: int, *, rtol: float = 1e-3, shape=None,
                sums: torch.Tensor | None = None) -> None:
    """Raise unless ``p`` holds probability vectors over ``num_states`` states in its last dimension: finite,
    in ``[0, 1]``, each summing to 1 (to ``rtol``), and of ``shape`` when given.

    ``sums``: the row sums of ``p``, if the caller computes them anyway (they are then not recomputed, and one
    minimum replaces the minimum and maximum: entries ``>= 0`` in rows summing to at most ``1 + rtol`` are
    at most ``1 + rtol``). Two reads of ``p`` without them, one with."""
    check_prob_shape(name, p, num_states, shape=shape)
    if p.numel() == 0:
        return
    # reductions only (no boolean tensor of p's size): a NaN or infinity shows in the minimum, the maximum or
    # the row sums
    p = p.detach()                                       # a check, not part of any graph
    if sums is None:
        lo, hi = (float(v) for v in torch.aminmax(p))
        total = p.sum(-1)
    else:                                                # +inf shows in a row sum, NaN in the minimum too
        lo, hi, total = float(torch.amin(p)), None, sums.detach()
    if not (math.isfinite(lo) and math.isfinite(hi or 0.0) and bool(torch.isfinite(total).all())):
        raise ValueError(f"{name} must be finite (no NaN or inf), got a tensor with non-finite entries")
    bad_sum = float((total - 1).abs().max()) > rtol
    if hi is None and bad_sum:
        hi = float(p.amax())                             # (with sums: only on the way to an error)
    if lo < 0 or (hi is not None and hi > 1 + rtol):
        raise ValueError(f"{name} must hold probabilities in [0, 1], got values in [{lo}, {float(p.amax())}]")
    if bad_sum:
        raise ValueError(f"{name} must sum to 1 over its last dimension (probabilities), got sums in "
                         f"[{float(total.min())}, {float(total.max())}]")


def check_prob_shape(name: str, p, num_states: int, *, shape=None) -> None:
    """The shape part of :func:`check_probs`: a floating tensor with ``num_states`` entries in its last
    dimension (and of ``shape`` when given); O(1)."""
    check_tensor(name, p, floating=True)
    if p.dim() == 0 or p.shape[-1] != num_states:
        raise ValueError(f"{name} must have a last dimension of {num_states} states, got shape {tuple(p.shape)}")
    if shape is not None and tuple(p.shape) != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {tuple(p.shape)}")


def check_network_output(out, shape, *, what: str = "net(x, t)", floating: bool = True,
                         logits: bool = False) -> torch.Tensor:
    """Check what a network returned: a real tensor of ``shape``, floating point (when ``floating``) and
    finite (``-inf`` allowed for ``logits``: probability zero). The message says that the network produced
    it, so that a user does not look for the bug in the inputs."""
    if not isinstance(out, torch.Tensor):
        raise TypeError(f"the network returned {type(out).__name__}, not a tensor: {what} must return a "
                        f"tensor of shape {tuple(shape)}")
    if out.is_complex() or (floating and not out.is_floating_point()):
        raise TypeError(f"the network returned dtype {out.dtype}: {what} must return a real floating-point tensor")
    if tuple(out.shape) != tuple(shape):
        raise ValueError(f"the network returned shape {tuple(out.shape)}: {what} must return a tensor of shape "
                         f"{tuple(shape)}")
    finite = torch.isfinite(out) | torch.isneginf(out) if logits and out.is_floating_point() else torch.isfinite(out)
    if out.is_floating_point() and out.numel() and not bool(finite.all()):
        raise ValueError(f"the network returned non-finite values (NaN or inf): {what} must be finite; check "
                         "the network's weights and inputs")
    return out


class EmptySafeIndependent(Independent):
    """Pyro's ``Independent`` whose ``log_prob`` sums the event dimensions by index rather than by a reshape
    with ``-1`` (which torch cannot do for a tensor of zero elements, i.e. an empty batch)."""

    def log_prob(self, value):
        lp = self.base_dist.log_prob(value)
        return lp.sum(tuple(range(-self.reinterpreted_batch_ndims, 0)))


def to_event(base, ndims: int):
    """``base.to_event(ndims)`` that also scores an empty batch (see :class:`EmptySafeIndependent`)."""
    return EmptySafeIndependent(base, int(ndims)) if ndims else base


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
