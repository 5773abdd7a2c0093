"""The hypothesis profile that keeps property tests deterministic in CI.

``derandomize=True`` makes hypothesis draw the same examples on every run (a red CI run can be
reproduced locally), and ``deadline=None`` because the first call of a process may build tables
(:class:`~probdiff.LinearSDE` solves an ODE) and would trip a per-example deadline.
"""

from __future__ import annotations

from hypothesis import settings

__all__ = ["PROFILE", "PROFILE_SETTINGS", "register_profile"]

#: Name of the deterministic profile registered by :func:`register_profile`.
PROFILE = "probdiff-ci"

#: Settings of :data:`PROFILE`.
PROFILE_SETTINGS = {"derandomize": True, "deadline": None, "max_examples": 40, "print_blob": True}


def register_profile(name: str = PROFILE, *, load: bool = True, **overrides) -> str:
    """Register (and by default load) the deterministic hypothesis profile.

    Args:
        name: profile name (default :data:`PROFILE`).
        load: also make it the active profile.
        **overrides: settings replacing those of :data:`PROFILE_SETTINGS`, e.g. ``max_examples=200``.

    Returns:
        The profile name, for ``hypothesis.settings.load_profile``.

    Example (a ``conftest.py``)::

        import probdiff.testing
        probdiff.testing.register_profile()
    """
    settings.register_profile(name, **{**PROFILE_SETTINGS, **overrides})
    if load:
        settings.load_profile(name)
    return name
