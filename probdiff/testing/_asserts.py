"""The individual checks as functions: ``assert_*(process, x0=None, s=None, t=None, **options)``.

Each checks one :class:`~probdiff.testing.Identity` for ``process`` at the given inputs — data ``x0`` of
shape ``(batch, *event)`` and times ``s < t`` of shape ``(batch,)`` (or scalars) — drawing whatever is
not given from a seeded :class:`~probdiff.testing.CheckConfig` (``**options`` override its fields, e.g.
``seed=3, rtol=1e-6``). Checks of a single time use every time in ``s`` and ``t``. Each raises an
``AssertionError`` (:class:`~probdiff.testing.IdentityError`) naming the identity and the worst input,
and returns a short note (or None) when the identity holds.
"""

from __future__ import annotations

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

__all__ = ["assert_shapes", "assert_rejects_bad_input", "assert_chapman_kolmogorov", "assert_bayes",
           "assert_score", "assert_coefficients", "assert_generator", "assert_prior", "assert_closed_forms",
           "assert_simulation", "assert_reverse_marginals"]


def assert_shapes(process, x0=None, s=None, t=None, **options):
    """Shape law: every distribution has ``batch_shape == (batch,)`` and ``event_shape == x0.shape[1:]``
    (the prior ``batch_shape == ()``), samples shaped and typed like the data, finite ``log_prob`` of shape
    ``(batch,)``, and a scalar ``t`` means the same as that ``t`` for every sample (DESIGN.md, "Shapes")."""
    return SHAPES.check(process, x0, s, t, **options)


def assert_rejects_bad_input(process, x0=None, s=None, t=None, **options):
    """Bad input raises ``ValueError``: ``t`` outside ``[t_min, t_max]``, NaN time or data, a ``t`` of the
    wrong shape, ``s >= t``, mismatched batches (skipped when the process has ``validate_args=False``)."""
    return BAD_INPUT.check(process, x0, s, t, **options)


def assert_chapman_kolmogorov(process, x0=None, s=None, t=None, **options):
    r"""Chapman–Kolmogorov: :math:`q(x_t|x_0) = \int q(x_t|x_s)\,q(x_s|x_0)\,dx_s` (Gaussian processes: exact
    moments; Markov chains: exact matrix products; any other process: Monte-Carlo moments)."""
    return CHAPMAN_KOLMOGOROV.check(process, x0, s, t, **options)


def assert_bayes(process, x0=None, s=None, t=None, **options):
    r"""Bayes identity, pointwise at :math:`x_s \sim q(x_s|x_0)`, :math:`x_t \sim q(x_t|x_s)`:
    :math:`\log q(x_s|x_t,x_0) + \log q(x_t|x_0) = \log q(x_t|x_s) + \log q(x_s|x_0)`."""
    return BAYES.check(process, x0, s, t, **options)


def assert_score(process, x0=None, s=None, t=None, **options):
    r"""Score target: :math:`-(x_t - \alpha_t x_0)/\sigma_t^2 = \nabla_{x_t}\log q(x_t|x_0)` by autograd of
    ``marginal(x0, t).log_prob``, and the exact model of a one-point data set has that score (Gaussian
    processes)."""
    return SCORE.check(process, x0, s, t, **options)


def assert_coefficients(process, x0=None, s=None, t=None, **options):
    r"""(alpha, sigma) ↔ (f, g): :math:`f = (\log\alpha)'`, :math:`g^2 = (\sigma^2)' - 2f\sigma^2`, and
    ``d_log_snr``, ``alpha_dot``, ``sigma_dot``, against Ridders' finite differences of the declared
    schedule (independent of the process' autograd path; Gaussian processes)."""
    return COEFFICIENTS.check(process, x0, s, t, **options)


def assert_generator(process, x0=None, s=None, t=None, **options):
    """Generator law of a Markov chain: valid rates, stochastic transition matrices equal to the matrix
    exponential, semigroup property."""
    return GENERATOR.check(process, x0, s, t, **options)


def assert_prior(process, x0=None, s=None, t=None, **options):
    r"""The prior matches the marginal at ``t_max``: :math:`KL(q(x_{t_{max}}|x_0)\,\|\,\text{prior})` per
    event element at most ``prior_kl`` (default 0.01 nats) for unit-scale ``x0`` (entries in [-1, 1]), and
    ``sample_prior`` draws from ``prior`` (mean log-density within ``z`` standard errors)."""
    return PRIOR.check(process, x0, s, t, **options)


def assert_closed_forms(process, x0=None, s=None, t=None, **options):
    """Every quantity a subclass overrides (a closed form) equals the family's generic derivation (e.g.
    ``drift_coef`` = autograd of ``log_alpha``; Blackout's binomials = the generic chain)."""
    return CLOSED_FORMS.check(process, x0, s, t, **options)


def assert_simulation(process, x0=None, s=None, t=None, **options):
    """Forward simulation matches the marginals: ``torchsde.sdeint(process.sde(), ...)`` for Gaussian
    processes, exact jump simulation for Markov chains; seeded, ``z`` standard errors plus the
    discretisation error estimated by step halving plus ``mc_bias``."""
    return SIMULATION.check(process, x0, s, t, **options)


def assert_reverse_marginals(process, mixture=None, **options):
    r"""The reverse family preserves the marginals: for each noise level in ``noises`` the reverse process
    (:func:`probdiff.reverse`) driven by the exact model of ``mixture`` (default: a 2-D two-component
    :class:`~probdiff.oracles.GaussianMixture` of unit scale), started from :math:`p_{t_{max}}` and
    integrated by stochastic Heun steps (with a step-halving error estimate), has the moments of :math:`p_t`
    at mid-time and at ``t_min``."""
    extra = {} if mixture is None else {"mixture": mixture}
    return REVERSE_MARGINALS.check(process, extra=extra, **options)
