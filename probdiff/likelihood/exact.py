r"""Exact log-likelihood by the probability-flow ODE (THEORY.md §4).

With the probability-flow drift :math:`h(x, t) = f(t)x - \tfrac12 g(t)^2 s(x, t)`
(:func:`probdiff.probability_flow`), the instantaneous change of variables (Chen et al., "Neural Ordinary
Differential Equations", NeurIPS 2018, Thm. 1; Song et al., "Score-Based Generative Modeling through
SDEs", ICLR 2021, App. D.2, Eq. (39)) gives

.. math::

    \log p_{t_{min}}(x) = \log p_{ref}\big(x(t_{max})\big) + \int_{t_{min}}^{t_{max}} \nabla\!\cdot h(x(t), t)\,dt,
    \qquad \frac{dx}{dt} = h(x, t),\quad x(t_{min}) = x,

integrated *forward* in time on the augmented state :math:`(x, \Delta)` with torchdiffeq. The drift is the
one drift of :meth:`GaussianReverse.drift_and_denoised <probdiff.reverse.GaussianReverse.drift_and_denoised>`,
split as :math:`h = a(t)\,x + b(t)\,D(x, t)` (:meth:`~probdiff.reverse.GaussianReverse.drift_coefficients`):
:math:`\nabla\cdot h = a\,d + b\,\nabla\cdot D`, the affine part exact and only :math:`\nabla\cdot D` computed
by the ``trace``: exactly (:class:`~probdiff.ExactTrace`) or estimated with probes fixed along the
trajectory (:class:`~probdiff.Hutchinson`, Grathwohl et al., "FFJORD", ICLR 2019, §3.1;
:class:`~probdiff.HutchPlusPlus`; :class:`~probdiff.GaussianControlVariate`). :math:`\Delta` holds one
integral per estimate of the trace (``P`` per sample), whose spread is the standard error
``stats.se``. The
integration variable is any :class:`~probdiff.TimeVariable`, which changes the
cost, not the answer; the default is the process' own time, which needed fewer evaluations than log-SNR
time on every oracle measured (benchmarks/likelihood.py).

Error control is per sample: the solver's error norm is the largest over the batch of each sample's RMS
error over its own state :math:`(x_i, \Delta_{1..P,i})`, so each sample meets ``rtol``/``atol`` as if it were
solved alone and the answer does not depend on the rest of the batch (a batch-wide RMS norm, as in
torchdiffeq's default or scipy's ``solve_ivp``, lets the error of one sample hide behind the others).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torchdiffeq import odeint

from .._util import check_positive, check_positive_int, expand_like
from ..models.base import bind
from ..processes.gaussian import as_gaussian
from ..reverse.base import build_reverse
from ..solvers.adapters import TorchDiffEq, check_odeint_options
from ..timevars import PhysicalTime, TimeVariable
from .adaptive import StepUnderflow, solve_per_sample
from .frame_adams import GaussianFrameAdams
from .structured_trace import denoiser_divergence
from .traces import ExactTrace, Trace

__all__ = ["LikelihoodStats", "log_likelihood"]


# ==================================================================== the likelihood
def _per_sample_norm(x: torch.Tensor):
    """Error norm of the augmented state: max over samples of the RMS over ``(x_i, Delta_{1..P, i})``."""
    b, d = x.shape[0], x[0].numel()

    def norm(state):
        y, delta = state
        return ((y.reshape(b, d).pow(2).sum(1) + delta.pow(2).sum(0)) / (d + delta.shape[0])).sqrt().max()

    return norm


@dataclass
class LikelihoodStats:
    r"""Diagnostics of :func:`log_likelihood`: the cost, the uncertainty and the pieces of the answer.

    Attributes:
        nfe: calls of the augmented ODE's right-hand side (each one drift and one divergence) on the batch.
            With one step for the whole batch (torchdiffeq methods) every sample is evaluated at each call, so
            this is also the per-sample count; with per-sample steps (the default) a call evaluates only the
            samples still running, each at its own time, and ``nfe`` is the largest per-sample count plus the
            calls shared by the first step's selection.
        endpoint: :math:`x(t_{max})`, the ODE's end, ``(batch, *event)``.
        delta_log_prob: :math:`\int_{t_{min}}^{t_{max}} \nabla\cdot h\,dt`, ``(batch,)``.
        prior_log_prob: :math:`\log p_{ref}(x(t_{max}))`, ``(batch,)``.
        se: standard error of each sample's log-density from the trace estimate, ``(batch,)``:
            :meth:`Trace.standard_error <probdiff.likelihood.Trace.standard_error>` of the ``P``
            integrated per-probe estimates of ``delta_log_prob`` (zero for :class:`~probdiff.ExactTrace`,
            ``NaN`` for a single probe). It does not include the ODE solver's error (``rtol``/``atol``).
        estimates: the ``P`` integrated estimates of ``delta_log_prob``, ``(P, batch)``; their mean is
            ``delta_log_prob``.
        matvecs: vector-Jacobian products per sample and evaluation (``nfe * matvecs`` is the
            divergence's cost per sample).
        completed: ``False`` when ``max_nfe`` ran out: then ``endpoint``, ``delta_log_prob`` and
            ``estimates`` are the state at ``t_end`` and the log-likelihood is ``NaN``.
        t_end: the time the integration reached (``t_max`` when completed).
        density_time: the time whose marginal the result is a log-density of, :math:`t_{min}`: the answer is
            :math:`\log p_{t_{min}}(x)` of the model's flow.
        is_log_p0: ``True`` when that is the data density itself, :math:`\log p_0`
            (:math:`\sigma_{t_{min}} = 0` and :math:`\alpha_{t_{min}} = 1`: ``LinearBlend(t_min=0)``); else it
            is the density of data blurred by :math:`\sigma_{t_{min}}`, which
            :func:`~probdiff.likelihood.decoders.decoder_bound` completes into a bound on :math:`\log p_0`.
        nfe_per_sample: each sample's own number of evaluations, ``(batch,)`` int64 (its cost in network
            evaluations; equal to ``nfe`` for every sample with one step for the batch).
    """

    nfe: int
    endpoint: torch.Tensor
    delta_log_prob: torch.Tensor
    prior_log_prob: torch.Tensor
    se: torch.Tensor | None = None
    estimates: torch.Tensor | None = None
    matvecs: int = 0
    completed: bool = True
    t_end: float | None = None
    density_time: float | None = None
    is_log_p0: bool = False
    nfe_per_sample: torch.Tensor | None = None


def _rows(state, rows):
    """The rows ``rows`` of a trace's per-trajectory state: probes ``(P, B, ...)``, a tuple of them, or None."""
    if state is None:
        return None
    if isinstance(state, tuple):
        return tuple(_rows(part, rows) for part in state)
    return state[:, rows]


class _OverBudget(Exception):
    """Raised inside the right-hand side when ``max_nfe`` is spent (caught by :func:`log_likelihood`)."""


def log_likelihood(process_or_model, model=None, x: torch.Tensor | None = None, *, trace: Trace = ExactTrace(),
                   time: TimeVariable = PhysicalTime(), rtol: float = 1e-5, atol: float = 1e-5, method: str = "dopri5",
                   options: dict | None = None, generator: torch.Generator | None = None, return_stats: bool = False,
                   steps: int = 64, max_nfe: int | None = None, segments: int = 8, per_sample: bool = True,
                   solver: GaussianFrameAdams | None = None):
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
        trace: a :class:`~probdiff.likelihood.Trace` of :math:`\nabla\cdot D`: :class:`~probdiff.ExactTrace`,
            :class:`~probdiff.Hutchinson`, :class:`~probdiff.HutchPlusPlus` or
            :class:`~probdiff.GaussianControlVariate`.
        time: integration variable, :class:`~probdiff.PhysicalTime` (default) or :class:`~probdiff.LogSNRTime`.
        rtol, atol: tolerances of the adaptive solver, per sample (see the module docstring).
        method: a torchdiffeq method of :attr:`probdiff.solvers.TorchDiffEq.ORDERS` (``"dopri5"``,
            ``"dopri8"``, ``"bosh3"``, ...); ``options`` go to torchdiffeq unchanged.
        generator: source of the Hutchinson probes.
        return_stats: also return :class:`LikelihoodStats`.
        steps: for a fixed-step ``method`` (``"rk4"``, ``"midpoint"``, ``"euler"``, ...) the number of
            equal steps in the variable ``time`` unless ``options`` set ``step_size`` or ``grid_points``
            (ignored by adaptive methods). A fixed grid makes the same number of evaluations for every
            input, so ranks of a distributed evaluation (torchrun) stay in step where an adaptive solver
            would take a different NFE on each.
        max_nfe: a budget of right-hand-side evaluations. When it runs out the integration stops and
            returns instead of raising: the log-likelihood is ``NaN`` and ``stats.completed`` is ``False``,
            with the state at ``stats.t_end``, the last of ``segments`` equal pieces of the span that was
            finished. Setting a budget costs a few evaluations per piece (an adaptive solver restarts).
        segments: pieces of the span when ``max_nfe`` is set.
        per_sample: with ``method="dopri5"``, give every sample its own step size, error control and
            accept/reject decision (:func:`probdiff.likelihood.adaptive.solve_per_sample`, vectorised over the
            batch), so that each sample's answer and cost are those of solving it alone; ``False`` uses
            torchdiffeq's one step for the whole batch (the error norm is still per sample). Other methods,
            and ``options`` for torchdiffeq, always use torchdiffeq. A tabulated schedule
            (:class:`~probdiff.DiscreteVP`) has kinks at its steps, across which the error estimate is
            unreliable: there per-sample steps need a smaller ``rtol`` for the same error (1e-8 where one
            batch step, which every sample takes at the smallest size, was within 1e-4 nats at 1e-7).
        solver: :class:`~probdiff.likelihood.frame_adams.GaussianFrameAdams` integrates the flow in a
            Gaussian frame by per-sample Adams steps, with its own tolerances (about half the evaluations of
            the default at equal error on the Gaussian-mixture oracles); it replaces ``time``, ``rtol``,
            ``atol``, ``method``, ``options`` and ``per_sample``, which must then be left at their defaults.

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
    check_positive_int("steps", steps)
    check_positive_int("segments", segments)
    if max_nfe is not None:
        check_positive_int("max_nfe", max_nfe)
    if not isinstance(per_sample, bool):
        raise ValueError(f"per_sample must be True or False, got {per_sample!r}")
    if solver is not None and not isinstance(solver, GaussianFrameAdams):
        raise ValueError(f"solver must be None or a GaussianFrameAdams, got {solver!r}")
    if solver is not None and (not isinstance(time, PhysicalTime) or options
                               or (rtol, atol, method, per_sample) != (1e-5, 1e-5, "dopri5", True)):
        raise ValueError("solver= sets its own variable and tolerances: leave time, rtol, atol, method, options and "
                         f"per_sample at their defaults (use GaussianFrameAdams(rtol=..., atol=...)), got {solver!r}")
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise ValueError(f"x must be a floating tensor of shape (batch, *event), got {type(x).__name__}")
    process.check_data("x", x)
    options = check_odeint_options(method, options)
    x = x.detach()
    if x.shape[0] == 0:                   # an empty batch is valid input and gives an empty result
        empty = x.new_zeros(0)
        stats = LikelihoodStats(nfe=0, endpoint=x, delta_log_prob=empty, prior_log_prob=empty, se=empty,
                                estimates=x.new_zeros(trace.num_estimates, 0), matvecs=trace.matvecs(x[:1]),
                                t_end=float(process.t_max), nfe_per_sample=torch.zeros(0, dtype=torch.int64),
                                **_density_of(process))
        return (empty, stats) if return_stats else empty

    flow = build_reverse(process, model, 0.0)
    probes = trace.prepare(x, generator)
    u0, u1 = time.bounds(process)
    b, dim, n_est = x.shape[0], x[0].numel(), trace.num_estimates
    fast = isinstance(trace, ExactTrace) and not trace.replicate
    nfe = 0

    def rhs(u, y, rows):
        """The augmented field at rows ``rows`` of the batch, each at its own ``u`` (a scalar or ``(n,)``)."""
        nonlocal nfe
        if max_nfe is not None and nfe >= max_nfe:
            raise _OverBudget
        nfe += 1
        t = time.time(process, u)
        t = t.to(y.dtype)
        t_row = t.expand(y.shape[0]) if t.dim() == 0 else t
        scale = time.dt_du(process, t_row).to(y.dtype)
        alpha = process.alpha(t_row)
        live = ~flow.noiseless(t_row, y.dtype)
        a, c = flow.drift_coefficients(torch.where(live, t_row, torch.full_like(t_row, float(process.t_max))))
        known = denoiser_divergence(model, y, t_row) if fast else None
        if known is not None:             # D and div D by the model's structure (structured_trace.py)
            denoised, div_d = known
            affine = expand_like(torch.where(live, a, process.alpha_dot(t_row) / alpha).to(y.dtype), y) * y
            field = affine + expand_like(torch.where(live, c, torch.zeros_like(c)).to(y.dtype), y) * denoised
            div_d = div_d[None]
        else:
            # The one drift, split as a x + b D: the affine part's divergence a d is exact, only div D estimated.
            field, div_d = trace.estimates(
                lambda z: flow.drift_and_denoised(z, t_row.repeat(z.shape[0] // y.shape[0])), y,
                _rows(probes, rows), process=process, t=t_row)
        # Where the process is noiseless (sigma below sqrt(eps): x_t = alpha x_0) the flow is (alpha'/alpha) x and div eps -> 0 for a data density that
        # is smooth and positive at x, so the divergence is d alpha'/alpha (LinearBlend(t_min=0): -d at t = 0).
        div = torch.where(live, a.to(y.dtype) * dim + c.to(y.dtype) * div_d,
                          (dim * process.alpha_dot(t_row) / alpha).to(y.dtype))
        return field * expand_like(scale, field), div * scale

    pieces = segments if max_nfe is not None else 1
    # A budget splits the span into pieces so that the state at the last finished piece can be returned.
    cuts = torch.linspace(u0, u1, pieces + 1, dtype=torch.float64, device=x.device)
    own = per_sample and method == "dopri5" and not options
    if method in TorchDiffEq.ADAPTIVE:
        options.setdefault("norm", _per_sample_norm(x))
    elif not {"step_size", "grid_points", "grid_constructor"} & set(options):
        # fixed grid: steps + 1 points uniform in the time variable, the same NFE for every input (and rank)
        grid = torch.linspace(u0, u1, steps + 1, dtype=torch.float64, device=x.device)
        cuts = grid[torch.linspace(0, steps, min(pieces, steps) + 1).round().long().unique()]
        options["grid_constructor"] = lambda f, y0, t: torch.cat([t[:1], grid[(grid > t[0]) & (grid < t[-1])],
                                                                  t[-1:]])
    everyone = torch.arange(b, device=x.device)

    def flat(u, z, rows):                 # (rows, d + P) <-> (x, Delta) for the per-sample solver
        field, div = rhs(u, z[:, :dim].reshape(z.shape[0], *x.shape[1:]), rows)
        return torch.cat([field.reshape(z.shape[0], dim), div.transpose(0, 1)], 1)

    def flat_t(t, z, rows):                # (field, divergence) of flattened rows for the Gaussian frame's solver
        field, div = rhs(t, z.reshape(z.shape[0], *x.shape[1:]), rows)
        return field.reshape(z.shape[0], dim), div.transpose(0, 1)

    def piece(lo, hi, state):
        if solver is not None:
            end, delta, counts = solver.integrate(process, flat_t, state[0].reshape(b, dim),
                                                  state[1].transpose(0, 1), float(lo), float(hi))
            return (end.reshape(x.shape), delta.transpose(0, 1).contiguous()), counts
        if own:
            z, counts = solve_per_sample(flat, torch.cat([state[0].reshape(b, dim), state[1].transpose(0, 1)], 1),
                                         float(lo), float(hi), rtol=rtol, atol=atol)
            return (z[:, :dim].reshape(x.shape), z[:, dim:].transpose(0, 1).contiguous()), counts
        xs, deltas = odeint(lambda u, st: rhs(u, st[0], everyone), state, torch.stack([lo, hi]), rtol=rtol,
                            atol=atol, method=method, options=options)
        return (xs[-1], deltas[-1]), None

    state = (x, torch.zeros(n_est, b, dtype=x.dtype, device=x.device))
    per_row = torch.zeros(b, dtype=torch.int64, device=x.device)
    reached, completed = u0, True
    with torch.no_grad():
        for lo, hi in zip(cuts[:-1], cuts[1:]):
            before = nfe
            try:
                state, counts = piece(lo, hi, state)
            except _OverBudget:
                completed = False
                per_row += nfe - before
                break
            except (AssertionError, StepUnderflow) as exc:  # torchdiffeq asserts when its step underflows
                raise ValueError(f"x: the probability-flow ODE could not be integrated from this x ({exc}); x has "
                                 f"values in [{float(x.min()):.3g}, {float(x.max()):.3g}]; check x, or loosen "
                                 "rtol/atol") from None
            per_row += counts if counts is not None else nfe - before
            reached = float(hi)
        end, estimates = state
        delta = estimates.mean(0)
        prior = process.prior(x.shape[1:], device=x.device, dtype=x.dtype)
        prior_lp = prior.log_prob(end)
    log_prob = prior_lp + delta if completed else torch.full_like(delta, float("nan"))
    if return_stats:
        return log_prob, LikelihoodStats(nfe=nfe, endpoint=end, delta_log_prob=delta, prior_log_prob=prior_lp,
                                         se=trace.standard_error(estimates), estimates=estimates,
                                         matvecs=trace.matvecs(x), completed=completed,
                                         t_end=float(time.time(process, torch.tensor(reached, dtype=torch.float64))),
                                         nfe_per_sample=per_row, **_density_of(process))
    return log_prob


def _density_of(process) -> dict:
    """:class:`LikelihoodStats`' ``density_time`` and ``is_log_p0`` for ``process``."""
    t = torch.tensor(process.t_min, dtype=torch.float64)
    exact = bool(process.sigma(t) == 0) and bool(process.alpha(t) == 1)
    return {"density_time": float(process.t_min), "is_log_p0": exact}
