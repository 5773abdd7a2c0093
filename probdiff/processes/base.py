"""The abstract forward process: a distribution-valued function of time.

A :class:`ForwardProcess` is declared once; reverse processes, training targets, samplers and
likelihoods are derived from its four queries (DESIGN.md, "Public API"):

* ``marginal(x0, t)``        = q(x_t | x_0)
* ``transition(xs, s, t)``   = q(x_t | x_s),  s < t
* ``posterior(x0, xt, s, t)``= q(x_s | x_t, x_0),  s < t
* ``prior(event_shape)``     = the reference distribution at ``t_max``

Every query returns a Pyro ``TorchDistribution`` whose ``batch_shape`` is ``(batch,)`` and whose
``event_shape`` is ``x.shape[1:]``. Data sit at ``t_min``; the reference at ``t_max``.
"""

from __future__ import annotations

import abc

import torch

from .._util import as_tensor, check_batch, check_bool, check_finite, check_positive_int, check_real

__all__ = ["ForwardProcess"]


class ForwardProcess(abc.ABC):
    """Abstract base of every forward (noising) process.

    Subclasses implement :meth:`marginal`, :meth:`transition`, :meth:`posterior` and :meth:`prior`
    and set :attr:`t_min` and :attr:`t_max`. Argument validation follows ``torch.distributions``:
    on by default, switched per instance with ``validate_args=False`` or globally with
    :meth:`set_default_validate_args`; when off, no check runs (no overhead).

    Contract for subclasses:

    * ``t`` is a Python number, a 0-d tensor or a ``(batch,)`` tensor; :meth:`check_time` turns it into a
      ``(batch,)`` tensor on the data's device and dtype and validates it.
    * ``posterior`` must satisfy Bayes' rule
      ``q(x_s|x_t,x_0) q(x_t|x_0) = q(x_t|x_s) q(x_s|x_0)``, and ``transition`` Chapman–Kolmogorov
      with ``marginal``. :mod:`probdiff.testing` checks both for any subclass.
    """

    _validate_default: bool = True

    def __init__(self, t_min: float, t_max: float, *, validate_args: bool | None = None):
        check_bool("validate_args", validate_args, allow_none=True)
        t_min, t_max = check_real("t_min", t_min), check_real("t_max", t_max)
        if not t_min < t_max:
            raise ValueError(f"t_min must be < t_max, got t_min={t_min}, t_max={t_max}")
        self._t_min = float(t_min)
        self._t_max = float(t_max)
        self._validate = self._validate_default if validate_args is None else bool(validate_args)

    # ---------------------------------------------------------------- configuration
    @staticmethod
    def set_default_validate_args(value: bool) -> None:
        """Switch argument validation on or off for processes created afterwards."""
        if not isinstance(value, bool):
            raise ValueError(f"value must be True or False, got {value!r}")
        ForwardProcess._validate_default = value

    @property
    def validate_args(self) -> bool:
        """Whether this instance validates its arguments."""
        return self._validate

    @property
    def t_min(self) -> float:
        """Time at which the data sit."""
        return self._t_min

    @property
    def t_max(self) -> float:
        """Time at which the reference (noise, or the empty image) sits."""
        return self._t_max

    # ---------------------------------------------------------------- the four queries
    @abc.abstractmethod
    def marginal(self, x0: torch.Tensor, t):
        """q(x_t | x_0) for data ``x0`` of shape ``(batch, *event)``."""

    @abc.abstractmethod
    def transition(self, xs: torch.Tensor, s, t):
        """q(x_t | x_s) for ``s < t``."""

    @abc.abstractmethod
    def posterior(self, x0: torch.Tensor, xt: torch.Tensor, s, t):
        """q(x_s | x_t, x_0) for ``s < t``."""

    @abc.abstractmethod
    def prior(self, event_shape, *, device=None, dtype=None):
        """The reference distribution at ``t_max`` with ``batch_shape == ()``."""

    def sample_prior(self, num_samples: int, event_shape, *, generator: torch.Generator | None = None,
                     device=None, dtype=None) -> torch.Tensor:
        """``num_samples`` draws from :meth:`prior`, reproducible from ``generator``.

        Generic path: seed a forked RNG from ``generator`` and draw from the prior distribution.
        Families with a cheaper direct draw override it.
        """
        check_positive_int("num_samples", num_samples)
        prior = self.prior(event_shape, device=device, dtype=dtype)
        if generator is None:
            return prior.sample((int(num_samples),))
        seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device))
        devices = [device] if device is not None and torch.device(device).type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            return prior.sample((int(num_samples),))

    # ---------------------------------------------------------------- validation (public)
    def check_time(self, t, x: torch.Tensor | None = None, name: str = "t") -> torch.Tensor:
        """``t`` as a tensor of shape ``(batch,)`` (or ``()`` without ``x``), validated.

        Raises:
            ValueError: ``t`` is not finite, lies outside ``[t_min, t_max]`` (up to rounding of the
                data's dtype), or has a batch size different from ``x``'s.
        """
        t = as_tensor(t, like=x)
        if x is not None:
            if t.dim() == 0:
                t = t.expand(x.shape[0])
            elif self._validate and (t.dim() != 1 or t.shape[0] != x.shape[0]):
                raise ValueError(
                    f"{name} must be a scalar or have shape (batch,) = ({x.shape[0]},), got shape {tuple(t.shape)}"
                )
        if self._validate:
            self._check_time(t, name)
        return t

    def _check_time(self, t: torch.Tensor, name: str = "t") -> None:
        tol = 4 * torch.finfo(t.dtype).eps * max(1.0, abs(self._t_min), abs(self._t_max))
        inside = (t >= self._t_min - tol) & (t <= self._t_max + tol)    # False for NaN
        if bool(inside.all()):                                            # one host sync on the common path
            return
        check_finite(name, t)
        raise ValueError(
            f"{name} must lie in [t_min, t_max] = [{self._t_min}, {self._t_max}], "
            f"got values in [{float(t.min())}, {float(t.max())}]"
        )

    def check_times(self, s, t, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Validated ``(s, t)`` of shape ``(batch,)`` with ``s < t``."""
        s = self.check_time(s, x, "s")
        t = self.check_time(t, x, "t")
        if self._validate and bool((s >= t).any()):
            raise ValueError("s must be < t (s is the earlier, less noisy time)")
        return s, t

    def check_state(self, name: str, x) -> None:
        """Validate a state of the process (e.g. a sampler's ``x_init``): :meth:`check_data`, and a floating
        dtype for a continuous state (an integer tensor is refused with ``TypeError``). Chains override it with
        :meth:`MarkovChain.check_states <probdiff.MarkovChain.check_states>`."""
        self.check_data(name, x)
        if self._validate and not x.is_floating_point():
            raise TypeError(f"{name} must be a floating-point tensor (a continuous state), got dtype {x.dtype}")

    def check_interval(self, s, t) -> tuple[torch.Tensor, torch.Tensor]:
        """Validated times ``s <= t`` (numbers or broadcastable tensors) inside ``[t_min, t_max]``, for
        queries without data such as a chain's ``transition_matrix(s, t)``; ``ValueError`` otherwise."""
        s, t = as_tensor(s), as_tensor(t)
        if self._validate:
            self._check_time(s, "s")
            self._check_time(t, "t")
            try:
                torch.broadcast_shapes(s.shape, t.shape)
            except RuntimeError:
                raise ValueError(f"s and t must broadcast, got shapes {tuple(s.shape)} and {tuple(t.shape)}") from None
            if bool((s > t).any()):
                raise ValueError("s must be <= t (s is the earlier time), got s > t")
        return s, t

    def check_data(self, name: str, x: torch.Tensor, like: torch.Tensor | None = None) -> None:
        """Validate a data tensor: a real (not complex, not bool) tensor, at least 2-D ``(batch, *event)``,
        finite, matching ``like``. ``TypeError`` for a wrong type, ``ValueError`` otherwise."""
        if not self._validate:
            return
        if not isinstance(x, torch.Tensor):
            raise ValueError(f"{name} must be a torch.Tensor of shape (batch, *event), got {type(x).__name__}")
        if x.is_complex() or x.dtype == torch.bool:
            raise TypeError(f"{name} must be a real tensor, got dtype {x.dtype}")
        if x.dim() < 2:
            raise ValueError(f"{name} must have shape (batch, *event) with at least one event dimension, "
                             f"got shape {tuple(x.shape)}")
        check_finite(name, x)
        if like is not None:
            if x.shape != like.shape:
                raise ValueError(f"{name} must have the same shape as x0, {tuple(like.shape)}, got {tuple(x.shape)}")
            check_batch(name, x, like.shape[0])

    def __repr__(self) -> str:
        return f"{type(self).__name__}(t_min={self._t_min:g}, t_max={self._t_max:g})"
