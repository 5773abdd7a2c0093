"""The identities :func:`~probdiff.testing.check_process` checks, in the order it checks them.

Each is an :class:`~probdiff.testing.Identity`; its implementations for each process family are
registered beside it (``_generic.py`` for any :class:`~probdiff.ForwardProcess`, ``_gaussian.py``,
``_chains.py``). A failure names the identity by its ``name``.
"""

from __future__ import annotations

from ._core import identity

__all__ = ["SHAPES", "BAD_INPUT", "GENERATOR", "CHAPMAN_KOLMOGOROV", "BAYES", "SCORE", "COEFFICIENTS", "PRIOR",
           "CLOSED_FORMS", "SIMULATION", "REVERSE_MARGINALS"]

SHAPES = identity(
    "shape law",
    "marginal, transition, posterior return batch_shape (batch,), event_shape x.shape[1:]; prior batch_shape (); "
    "samples shaped like x, finite log_prob of shape (batch,); a scalar t equals the same t per sample",
)
BAD_INPUT = identity(
    "bad input rejected",
    "t outside [t_min, t_max], NaN t or data, a mis-shaped t, s >= t raise ValueError",
)
GENERATOR = identity(
    "generator law",
    "rate(t) has non-negative off-diagonal entries and rows summing to zero; transition_matrix(s, t) is "
    "stochastic, equals expm(int_s^t R) and P(s,t) P(t,u) = P(s,u)",
)
CHAPMAN_KOLMOGOROV = identity(
    "Chapman-Kolmogorov",
    "q(x_t | x_0) = integral of q(x_t | x_s) q(x_s | x_0) dx_s for s < t",
)
BAYES = identity(
    "Bayes identity",
    "log q(x_s|x_t,x_0) + log q(x_t|x_0) = log q(x_t|x_s) + log q(x_s|x_0) pointwise",
)
SCORE = identity(
    "score target",
    "score target -(x_t - alpha_t x_0)/sigma_t^2 = grad_{x_t} log q(x_t|x_0) (autograd) = exact model's score",
)
COEFFICIENTS = identity(
    "(alpha, sigma) <-> (f, g)",
    "f = d log alpha/dt, g^2 = d sigma^2/dt - 2 f sigma^2 = -sigma^2 d lambda/dt, alpha' = f alpha, "
    "sigma' = sigma (f - lambda'/2) (finite differences)",
)
PRIOR = identity(
    "prior matches marginal at t_max",
    "KL(q(x_{t_max}|x_0) || prior) <= prior_kl nats per element for unit-scale x_0; sample_prior draws from prior",
)
CLOSED_FORMS = identity(
    "closed forms = generic path",
    "every derived quantity and query equals the family's generic derivation from the declared schedule "
    "(compared unconditionally: a closed form, defined or inherited, must agree)",
)
SIMULATION = identity(
    "forward simulation matches marginals",
    "simulating the forward dynamics from x_{t_min} ~ q(.|x_0) gives the moments of q(x_t|x_0)",
    slow=True,
)
REVERSE_MARGINALS = identity(
    "reverse family preserves marginals",
    "for every noise level eta, the reverse process driven by an exact oracle, started from p_{t_max}, "
    "has the marginals p_t of the forward process",
    slow=True,
)
