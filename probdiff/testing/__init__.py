"""Property testing of forward processes: hypothesis strategies and theory checks for any process.

Declare a process, then::

    import probdiff as pd
    pd.testing.check_process(MyProcess())          # raises AssertionError naming a broken identity

:func:`check_process` runs every :class:`Identity` of :data:`IDENTITIES` that applies to the process'
family (dispatch through registries: ``@BAYES.register(MyFamily)`` adds or replaces an implementation).
:data:`BUILT_IN` is the fixture list of built-in processes that the generic tests run over (one
:class:`Fixture` per process, with an ``id`` for pytest). Each identity is also an ``assert_*`` function
taking explicit inputs, for use inside hypothesis tests with the strategies of
:mod:`probdiff.testing.strategies`. See the docs page "Property-testing your own
process".
"""

from . import _chains, _gaussian, _generic, strategies  # the first three register the per-family checks
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
from ._check import CheckResult, Report, check_process
from ._config import CheckConfig
from ._core import IDENTITIES, Identity, IdentityError, fail_worst
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
from ._inputs import DATA, Inputs, draw_inputs, draw_time_pairs, draw_times
from ._kernels import assert_kernel
from ._profile import PROFILE, PROFILE_SETTINGS, register_profile
from .fixtures import BUILT_IN, Fixture

__all__ = [
    "check_process", "CheckConfig", "Report", "CheckResult", "Identity", "IdentityError", "Inputs", "IDENTITIES",
    "DATA", "draw_inputs", "draw_times", "draw_time_pairs", "fail_worst", "PROFILE", "PROFILE_SETTINGS",
    "register_profile", "strategies", "BUILT_IN", "Fixture",
    "SHAPES", "BAD_INPUT", "CHAPMAN_KOLMOGOROV", "BAYES", "SCORE", "COEFFICIENTS", "GENERATOR", "PRIOR",
    "CLOSED_FORMS", "SIMULATION", "REVERSE_MARGINALS",
    "assert_shapes", "assert_rejects_bad_input", "assert_chapman_kolmogorov", "assert_bayes", "assert_score",
    "assert_coefficients", "assert_generator", "assert_prior", "assert_closed_forms", "assert_simulation",
    "assert_reverse_marginals", "assert_kernel",
]
