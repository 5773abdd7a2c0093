"""Type-keyed registries: derive once generically, specialise by registration (DESIGN.md principle 2).

Modelled on ``torch.distributions.kl.register_kl``: a function is registered for a class, and lookup
walks the method resolution order of the argument's type, so the most specific registration wins.
"""

from __future__ import annotations

from typing import Callable

__all__ = ["Registry"]


class Registry:
    """A mapping from classes to implementations, looked up along an object's MRO.

    Args:
        name: what is registered (used in error messages), e.g. ``"reverse process"``.
    """

    def __init__(self, name: str):
        self.name = name
        self._impls: dict[type, Callable] = {}

    def register(self, cls: type) -> Callable[[Callable], Callable]:
        """Decorator registering an implementation for instances of ``cls`` (and its subclasses)."""
        if not isinstance(cls, type):
            raise ValueError(f"cls must be a class, got {cls!r}")

        def decorator(fn: Callable) -> Callable:
            self._impls[cls] = fn
            return fn

        return decorator

    def lookup(self, obj) -> Callable:
        """The implementation registered for the most specific class of ``obj``."""
        for klass in type(obj).__mro__:
            if klass in self._impls:
                return self._impls[klass]
        known = ", ".join(sorted(k.__name__ for k in self._impls)) or "none"
        raise ValueError(f"no {self.name} is registered for {type(obj).__name__}; registered: {known}")

    def __contains__(self, cls: type) -> bool:
        return cls in self._impls
