r"""Exact log-likelihood by the probability-flow ODE (THEORY.md §4).

With the probability-flow drift :math:`h(x, t) = f(t)x - \tfrac12 g(t)^2 s(x, t)`
(:func:`probdiff.probability_flow`), the instantaneous change of variables (Chen et al., "Neural Ordinary
Differential Equations", NeurIPS 2018, Thm. 1; Song et al., "Score-Based Generative Modeling through
SDEs", ICLR 2021, App. D.2, Eq. (39)) gives

.. math::

    \log p_{t_{min}}(x) = \log p_{ref}\big(x(t_{max})\big) + \int_{t_{min}}^{t_{max}} \nabla\!\cdot h(x(t), t)\,dt,
    \qquad \frac{dx}{dt} = h(x, t),\quad x(t_{min}) = x,

integrated *forward* in time on the augmented state :math:`(x, \Delta)` with torchdiffeq. The divergence
is computed exactly (:class:`ExactTrace`) or estimated with Hutchinson's trick (:class:`Hutchinson`;
Grathwohl et al., "FFJORD", ICLR 2019, §3.1) with one fixed probe per sample along the trajectory. The
integration variable is any :class:`~probdiff.likelihood.timechange.TimeVariable`, which changes the
cost, not the answer; the default is the process' own time, which needed fewer evaluations than log-SNR
time on every oracle measured (benchmarks/likelihood.py).

Error control is per sample: the solver's error norm is the largest over the batch of each sample's RMS
error over its own state :math:`(x_i, \Delta_i)`, so each sample meets ``rtol``/``atol`` as if it were
solved alone and the answer does not depend on the rest of the batch (a batch-wide RMS norm, as in
torchdiffeq's default or scipy's ``solve_ivp``, lets the error of one sample hide behind the others).
"""

from __future__ import annotations

import abc
import enum
from dataclasses import dataclass

import torch

from .._validation import check_positive, check_positive_int
from ..processes.gaussian import GaussianProcess
from ..reverse import probability_flow
from .timechange import PhysicalTime, TimeVariable

__all__ = ["Trace", "ExactTrace", "Hutchinson", "ProbeKind", "LikelihoodStats", "log_likelihood"]


# ==================================================================== divergence
def probe_forms(fn, x: torch.Tensor, probes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    r"""``fn(x)`` and the quadratic forms :math:`e^\top (\partial f/\partial x)\, e` for a stack of probes.

    All probes are evaluated in one pass: ``x`` is replicated ``P`` times along the batch, ``fn`` runs once
    on the ``(P·B, *event)`` batch, and one vector-Jacobian product with the probes as cotangents gives
    :math:`e^\top J` per row (reverse mode works for every differentiable model; samples of a batch must
    not interact, which holds for every model of probdiff).

    Args:
        fn: batched vector field ``(n, *event) -> (n, *event)``.
        x: ``(B, *event)``.
        probes: ``(P, B, *event)``.

    Returns:
        ``(fn(x), forms)``: the field at ``x`` (detached, ``(B, *event)``) and ``(P, B)`` quadratic forms.
    """
    p, b = probes.shape[0], x.shape[0]
    with torch.enable_grad():
        xr = x.detach().unsqueeze(0).expand(p, *x.shape).reshape(p * b, *x.shape[1:]).requires_grad_(True)
        out = fn(xr)
        vjp, = torch.autograd.grad(out, xr, grad_outputs=probes.reshape(out.shape))
    forms = (vjp.reshape(probes.shape) * probes).reshape(p, b, -1).sum(-1)
    return out[:b].detach(), forms.detach()


class Trace(abc.ABC):
    """A divergence (Jacobian trace) computer for the change of variables; configuration only.

    :meth:`prepare` draws whatever is held fixed along one trajectory (Hutchinson's probes);
    :meth:`__call__` returns the field and its divergence at one point.
    """

    def prepare(self, x: torch.Tensor, generator: torch.Generator | None = None):
        """Per-trajectory state (e.g. probes), drawn once before integrating."""
        return None

    @abc.abstractmethod
    def __call__(self, fn, x: torch.Tensor, state) -> tuple[torch.Tensor, torch.Tensor]:
        """``(fn(x), div fn(x))`` with the divergence of shape ``(B,)``."""


class ExactTrace(Trace):
    r"""Exact divergence :math:`\sum_j \partial f_j/\partial x_j`, batched over basis vectors.

    The ``D`` basis vectors are taken ``chunk_size`` at a time, each chunk in one replicated forward and
    backward pass (:func:`probe_forms`), so the cost is ``D`` vector-Jacobian products per evaluation with
    no Python loop over dimensions unless memory demands chunks.

    Args:
        chunk_size: basis vectors per pass; ``None`` takes as many as keep the replicated input below
            ``max_elements`` entries.
        max_elements: memory budget of the replicated input when ``chunk_size`` is ``None``.
    """

    def __init__(self, chunk_size: int | None = None, *, max_elements: int = 2**22):
        for name, value in (("chunk_size", chunk_size), ("max_elements", max_elements)):
            if value is not None and (isinstance(value, bool) or int(value) != value or value < 1):
                raise ValueError(f"{name} must be a positive integer{' or None' if name == 'chunk_size' else ''}, "
                                 f"got {value!r}")
        self.chunk_size = None if chunk_size is None else int(chunk_size)
        self.max_elements = int(max_elements)

    def _chunk(self, x: torch.Tensor) -> int:
        d = x[0].numel()
        if self.chunk_size is not None:
            return min(self.chunk_size, d)
        return max(1, min(d, self.max_elements // max(1, x.numel())))

    def __call__(self, fn, x, state):
        b, d = x.shape[0], x[0].numel()
        chunk = self._chunk(x)
        eye = torch.eye(d, dtype=x.dtype, device=x.device)
        field, div = None, torch.zeros(b, dtype=x.dtype, device=x.device)
        for start in range(0, d, chunk):
            basis = eye[start:start + chunk]                                   # (c, d)
            probes = basis[:, None, :].expand(basis.shape[0], b, d).reshape(basis.shape[0], *x.shape)
            out, forms = probe_forms(fn, x, probes)
            field = out if field is None else field
            div = div + forms.sum(0)
        return field, div

    def __repr__(self) -> str:
        return f"ExactTrace(chunk_size={self.chunk_size})"


class ProbeKind(enum.Enum):
    """Distribution of Hutchinson probes: both have :math:`E[ee^\\top] = I`, so both are unbiased.

    ``RADEMACHER`` (uniform signs) has the smallest variance among i.i.d. probes (Hutchinson 1990);
    ``GAUSSIAN`` is N(0, I).
    """

    RADEMACHER = "rademacher"
    GAUSSIAN = "gaussian"

    def draw(self, shape, *, like: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Probes of ``shape`` on ``like``'s device and dtype."""
        if self is ProbeKind.RADEMACHER:
            signs = torch.randint(0, 2, shape, generator=generator, device=like.device)
            return (2 * signs - 1).to(like.dtype)
        return torch.randn(shape, generator=generator, device=like.device, dtype=like.dtype)

    @classmethod
    def parse(cls, kind) -> "ProbeKind":
        if isinstance(kind, cls):
            return kind
        try:
            return cls(kind)
        except ValueError:
            allowed = ", ".join(repr(k.value) for k in cls)
            raise ValueError(f"kind must be a ProbeKind or one of {allowed}, got {kind!r}") from None


class Hutchinson(Trace):
    r"""Unbiased divergence estimate :math:`\frac1P\sum_{p} e_p^\top J e_p`, :math:`E[ee^\top] = I`.

    The probes are drawn once per trajectory (:meth:`prepare`) and held fixed while integrating, so the
    ODE stays a smooth ODE and the estimate of :math:`\log p` is unbiased (FFJORD, §3.1).

    Args:
        num_probes: probes per sample, ``P``; the variance falls as ``1/P``.
        kind: :class:`ProbeKind` (or its value ``"rademacher"`` / ``"gaussian"``).
    """

    def __init__(self, num_probes: int = 1, kind: ProbeKind | str = ProbeKind.RADEMACHER):
        check_positive_int("num_probes", num_probes)
        self.num_probes = int(num_probes)
        self.kind = ProbeKind.parse(kind)

    def prepare(self, x, generator=None):
        return self.kind.draw((self.num_probes, *x.shape), like=x, generator=generator)

    def __call__(self, fn, x, state):
        if state is None or state.shape[1:] != x.shape:
            raise ValueError("Hutchinson needs the probes from prepare(x) for this x")
        field, forms = probe_forms(fn, x, state)
        return field, forms.mean(0)

    def __repr__(self) -> str:
        return f"Hutchinson(num_probes={self.num_probes}, kind={self.kind})"


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


def log_likelihood(process, model, x: torch.Tensor, *, trace: Trace = ExactTrace(), time: TimeVariable = PhysicalTime(),
                   rtol: float = 1e-5, atol: float = 1e-5, method: str = "dopri5", options: dict | None = None,
                   generator: torch.Generator | None = None, return_stats: bool = False):
    r"""Log-density :math:`\log p_{t_{min}}(x)` of the model's probability flow, in nats, shape ``(batch,)``.

    Integrates :math:`(x, \Delta)` forward from :math:`t_{min}` to :math:`t_{max}` in the variable ``time``
    (:math:`dx/du = h\,dt/du`, :math:`d\Delta/du = \nabla\!\cdot h\,dt/du`) with torchdiffeq and returns
    :math:`\log p_{ref}(x(t_{max})) + \Delta`. This is the density of the *model's* flow, whose reference is
    ``process.prior`` — not the true :math:`p_{t_{max}}`; with an exact model the two differ by
    :math:`\log p_{t_{max}} - \log p_{ref}` at the endpoint (see :class:`LikelihoodStats`).

    Runs under ``torch.no_grad()`` callers (gradients are switched on internally for the divergence); the
    result is detached (train with :func:`probdiff.elbo`).

    Args:
        process: a :class:`~probdiff.GaussianProcess`.
        model: a Gaussian model (any parameterisation, or an oracle).
        x: data at ``t_min``, ``(batch, *event)``, float32 or float64.
        trace: :class:`ExactTrace` or :class:`Hutchinson`.
        time: integration variable, :class:`~probdiff.likelihood.timechange.PhysicalTime` (default) or
            :class:`~probdiff.likelihood.timechange.LogSNRTime`.
        rtol, atol: tolerances of the adaptive solver, per sample (see the module docstring).
        method: a torchdiffeq method name (``"dopri5"``, ``"dopri8"``, ``"bosh3"``, ...); ``options`` go
            to torchdiffeq unchanged.
        generator: source of the Hutchinson probes.
        return_stats: also return :class:`LikelihoodStats`.

    Returns:
        ``log_prob`` of shape ``(batch,)``, or ``(log_prob, stats)`` with ``return_stats=True``.
    """
    from torchdiffeq import odeint
    from torchdiffeq._impl.odeint import SOLVERS

    if not isinstance(process, GaussianProcess):
        raise ValueError(f"process must be a GaussianProcess (a process with a probability-flow ODE), "
                         f"got {type(process).__name__}")
    if not isinstance(trace, Trace):
        raise ValueError(f"trace must be a Trace (ExactTrace() or Hutchinson(...)), got {trace!r}")
    if not isinstance(time, TimeVariable):
        raise ValueError(f"time must be a TimeVariable (LogSNRTime() or PhysicalTime()), got {time!r}")
    if method not in SOLVERS:
        raise ValueError(f"method must be one of {sorted(SOLVERS)}, got {method!r}")
    check_positive("rtol", rtol)
    check_positive("atol", atol)
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise ValueError(f"x must be a floating tensor of shape (batch, *event), got {type(x).__name__}")
    process._check_data("x", x)
    x = x.detach()

    flow = probability_flow(process, model)
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

    options = dict(options or {})
    options.setdefault("norm", _per_sample_norm(x))   # fixed-step solvers ignore it

    state0 = (x, torch.zeros(x.shape[0], dtype=x.dtype, device=x.device))
    span = torch.tensor([u0, u1], dtype=torch.float64, device=x.device)
    with torch.no_grad():
        xs, deltas = odeint(rhs, state0, span, rtol=rtol, atol=atol, method=method, options=options)
        end, delta = xs[-1], deltas[-1]
        prior = process.prior(x.shape[1:], device=x.device, dtype=x.dtype)
        prior_lp = prior.log_prob(end)
    log_prob = prior_lp + delta
    if return_stats:
        return log_prob, LikelihoodStats(nfe=nfe, endpoint=end, delta_log_prob=delta, prior_log_prob=prior_lp)
    return log_prob
