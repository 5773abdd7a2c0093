r"""Exact log-likelihood by the probability-flow ODE (THEORY.md §4).

With the probability-flow drift :math:`h(x, t) = f(t)x - \tfrac12 g(t)^2 s(x, t)`
(:func:`probdiff.probability_flow`), the instantaneous change of variables (Chen et al., "Neural Ordinary
Differential Equations", NeurIPS 2018, Thm. 1; Song et al., "Score-Based Generative Modeling through
SDEs", ICLR 2021, App. D.2, Eq. (39)) gives

.. math::

    \log p_{t_{min}}(x) = \log p_{ref}\big(x(t_{max})\big) + \int_{t_{min}}^{t_{max}} \nabla\!\cdot h(x(t), t)\,dt,
    \qquad \frac{dx}{dt} = h(x, t),\quad x(t_{min}) = x,

integrated *forward* in time on the augmented state :math:`(x, \Delta)` with torchdiffeq. The divergence
is computed exactly (:class:`~probdiff.ExactTrace`) or estimated with Hutchinson's trick (:class:`~probdiff.Hutchinson`;
Grathwohl et al., "FFJORD", ICLR 2019, §3.1) with one fixed probe per sample along the trajectory. The
integration variable is any :class:`~probdiff.TimeVariable`, which changes the
cost, not the answer; the default is the process' own time, which needed fewer evaluations than log-SNR
time on every oracle measured (benchmarks/likelihood.py).

Error control is per sample: the solver's error norm is the largest over the batch of each sample's RMS
error over its own state :math:`(x_i, \Delta_i)`, so each sample meets ``rtol``/``atol`` as if it were
solved alone and the answer does not depend on the rest of the batch (a batch-wide RMS norm, as in
torchdiffeq's default or scipy's ``solve_ivp``, lets the error of one sample hide behind the others).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torchdiffeq import odeint

from .._util import check_positive
from ..models.base import bind
from ..processes.gaussian import as_gaussian
from ..reverse.base import build_reverse
from ..solvers.adapters import TorchDiffEq, check_odeint_options
from ..timevars import PhysicalTime, TimeVariable
from .traces import ExactTrace, Trace

__all__ = ["LikelihoodStats", "log_likelihood"]


# ==================================================================== the likelihood
def _per_sample_norm(x: torch.Tensor):
    """Error norm of the augmented state: max over samples of the RMS over ``(x_i, Delta_i)``."""
    b, d = x.shape[0], x[0].numel()

    def norm(state):
        y, delta = state
        return ((y.reshape(b, d).pow(2).sum(1) + delta.pow(2)) / (d + 1)).sqrt().max()

    return norm


@dataclass
class LikelihoodStats:
    """Diagnostics of :func:`log_likelihood`.

    Attributes:
        nfe: evaluations of the augmented ODE's right-hand side (each one drift and one divergence).
        endpoint: :math:`x(t_{max})`, the ODE's end, ``(batch, *event)``.
        delta_log_prob: :math:`\\int_{t_{min}}^{t_{max}} \\nabla\\cdot h\\,dt`, ``(batch,)``.
        prior_log_prob: :math:`\\log p_{ref}(x(t_{max}))`, ``(batch,)``.
    """

    nfe: int
    endpoint: torch.Tensor
    delta_log_prob: torch.Tensor
    prior_log_prob: torch.Tensor


def log_likelihood(process_or_model, model=None, x: torch.Tensor | None = None, *, trace: Trace = ExactTrace(),
                   time: TimeVariable = PhysicalTime(), rtol: float = 1e-5, atol: float = 1e-5, method: str = "dopri5",
                   options: dict | None = None, generator: torch.Generator | None = None, return_stats: bool = False):
    r"""Log-density :math:`\log p_{t_{min}}(x)` of the model's probability flow, in nats, shape ``(batch,)``.

    Integrates :math:`(x, \Delta)` forward from :math:`t_{min}` to :math:`t_{max}` in the variable ``time``
    (:math:`dx/du = h\,dt/du`, :math:`d\Delta/du = \nabla\!\cdot h\,dt/du`) with torchdiffeq and returns
    :math:`\log p_{ref}(x(t_{max})) + \Delta`. This is the density of the *model's* flow, whose reference is
    ``process.prior`` — not the true :math:`p_{t_{max}}`; with an exact model the two differ by
    :math:`\log p_{t_{max}} - \log p_{ref}` at the endpoint (see :class:`LikelihoodStats`).

    Runs under ``torch.no_grad()`` callers (gradients are switched on internally for the divergence); the
    result is detached (train with :func:`probdiff.elbo`).

    Short form ``log_likelihood(model, x, ...)`` (the model carries its process); long form
    ``log_likelihood(process, model, x, ...)``, where ``process`` must be the model's (``ValueError``
    naming both otherwise).

    Args:
        process: a :class:`~probdiff.GaussianProcess` (omit it in the short form).
        model: a Gaussian model (any parameterisation, or an oracle).
        x: data at ``t_min``, ``(batch, *event)``, float32 or float64.
        trace: :class:`ExactTrace` or :class:`Hutchinson`.
        time: integration variable, :class:`~probdiff.PhysicalTime` (default) or :class:`~probdiff.LogSNRTime`.
        rtol, atol: tolerances of the adaptive solver, per sample (see the module docstring).
        method: a torchdiffeq method of :attr:`probdiff.solvers.TorchDiffEq.ORDERS` (``"dopri5"``,
            ``"dopri8"``, ``"bosh3"``, ...); ``options`` go to torchdiffeq unchanged.
        generator: source of the Hutchinson probes.
        return_stats: also return :class:`LikelihoodStats`.

    Returns:
        ``log_prob`` of shape ``(batch,)``, or ``(log_prob, stats)`` with ``return_stats=True``.
    """
    if x is None:                         # log_likelihood(model, x, ...)
        model, x = None, model
    process, model = bind(process_or_model, model, entry="log_likelihood")
    as_gaussian(process, needed_for="a process with a probability-flow ODE")
    if not isinstance(trace, Trace):
        raise ValueError(f"trace must be a Trace (ExactTrace() or Hutchinson(...)), got {trace!r}")
    if not isinstance(time, TimeVariable):
        raise ValueError(f"time must be a TimeVariable (LogSNRTime() or PhysicalTime()), got {time!r}")
    if method not in TorchDiffEq.ORDERS:
        raise ValueError(f"method must be one of {sorted(TorchDiffEq.ORDERS)}, got {method!r}")
    check_positive("rtol", rtol)
    check_positive("atol", atol)
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise ValueError(f"x must be a floating tensor of shape (batch, *event), got {type(x).__name__}")
    process.check_data("x", x)
    options = check_odeint_options(method, options)
    x = x.detach()
    if x.shape[0] == 0:  # an empty batch is valid input and gives an empty result
        empty = x.new_zeros(0)
        return (empty, LikelihoodStats(nfe=0, endpoint=x, delta_log_prob=empty, prior_log_prob=empty)) \
            if return_stats else empty

    flow = build_reverse(process, model, 0.0)
    probes = trace.prepare(x, generator)
    u0, u1 = time.bounds(process)
    nfe = 0

    def rhs(u, state):
        nonlocal nfe
        nfe += 1
        y = state[0]
        t = time.time(process, u)
        scale = time.dt_du(process, t).to(y.dtype)
        t = t.to(y.dtype)
        field, div = trace(lambda z: flow.drift(z, t), y, probes)
        return field * scale, div * scale

    options.setdefault("norm", _per_sample_norm(x))   # fixed-step solvers ignore it

    state0 = (x, torch.zeros(x.shape[0], dtype=x.dtype, device=x.device))
    span = torch.tensor([u0, u1], dtype=torch.float64, device=x.device)
    with torch.no_grad():
        try:
            xs, deltas = odeint(rhs, state0, span, rtol=rtol, atol=atol, method=method, options=options)
        except AssertionError as exc:  # torchdiffeq asserts when its step underflows
            raise ValueError(f"x: the probability-flow ODE could not be integrated from this x ({exc}); x has "
                             f"values in [{float(x.min()):.3g}, {float(x.max()):.3g}]; check x, or loosen "
                             "rtol/atol") from None
        end, delta = xs[-1], deltas[-1]
        prior = process.prior(x.shape[1:], device=x.device, dtype=x.dtype)
        prior_lp = prior.log_prob(end)
    log_prob = prior_lp + delta
    if return_stats:
        return log_prob, LikelihoodStats(nfe=nfe, endpoint=end, delta_log_prob=delta, prior_log_prob=prior_lp)
    return log_prob
