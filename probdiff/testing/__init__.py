"""Property testing of forward processes: hypothesis strategies and theory checks for any process.

Declare a process, then::

    import probdiff as pd
    pd.testing.check_process(MyProcess())          # raises AssertionError naming a broken identity

:func:`check_process` runs every :class:`Identity` of :data:`IDENTITIES` that applies to the process'
family (dispatch through registries: ``@BAYES.register(MyFamily)`` adds or replaces an implementation).
Each identity is also an ``assert_*`` function taking explicit inputs, for use inside hypothesis tests
with the strategies of :mod:`probdiff.testing.strategies`. See the docs page "Property-testing your own
process".
"""

from ._core import (
    DATA,
    IDENTITIES,
    CheckConfig,
    CheckResult,
    Identity,
    IdentityError,
    Inputs,
    Report,
    check_process,
    draw_inputs,
    draw_time_pairs,
    draw_times,
    fail_worst,
)
from ._profile import PROFILE, PROFILE_SETTINGS, register_profile
from ._identities import (
    BAD_INPUT,
    BAYES,
    CHAPMAN_KOLMOGOROV,
    CLOSED_FORMS,
    COEFFICIENTS,
    GENERATOR,
    PRIOR,
    REVERSE_MARGINALS,
    SCORE,
    SHAPES,
    SIMULATION,
)
from . import _generic  # noqa: F401  (registers the implementations for any ForwardProcess)
from . import _gaussian  # noqa: F401  (registers the Gaussian implementations)
from . import _chains  # noqa: F401  (registers the Markov-chain implementations)
from ._asserts import (
    assert_bayes,
    assert_chapman_kolmogorov,
    assert_closed_forms,
    assert_coefficients,
    assert_generator,
    assert_prior,
    assert_rejects_bad_input,
    assert_reverse_marginals,
    assert_score,
    assert_shapes,
    assert_simulation,
)
from . import strategies  # noqa: E402

__all__ = [
    "check_process", "CheckConfig", "Report", "CheckResult", "Identity", "IdentityError", "Inputs", "IDENTITIES",
    "DATA", "draw_inputs", "draw_times", "draw_time_pairs", "fail_worst", "PROFILE", "PROFILE_SETTINGS", "register_profile",
    "strategies",
    "SHAPES", "BAD_INPUT", "CHAPMAN_KOLMOGOROV", "BAYES", "SCORE", "COEFFICIENTS", "GENERATOR", "PRIOR",
    "CLOSED_FORMS", "SIMULATION", "REVERSE_MARGINALS",
    "assert_shapes", "assert_rejects_bad_input", "assert_chapman_kolmogorov", "assert_bayes", "assert_score",
    "assert_coefficients", "assert_generator", "assert_prior", "assert_closed_forms", "assert_simulation",
    "assert_reverse_marginals",
]
