r"""Divergence (Jacobian trace) computers for the instantaneous change of variables (THEORY.md §4, §13).

:class:`ExactTrace` computes :math:`\nabla\cdot f` exactly with ``D`` vector-Jacobian products, batched over
basis vectors; :class:`Hutchinson` estimates it without bias with probes held fixed along a trajectory
(Hutchinson 1990; Grathwohl et al., "FFJORD", ICLR 2019, §3.1). The variance-reduced estimators
(:class:`~probdiff.HutchPlusPlus`, :class:`~probdiff.GaussianControlVariate`) live in
:mod:`probdiff.likelihood.variance`.

Every trace returns ``P`` estimates per sample (:meth:`Trace.estimates`), independent and identically
distributed given whatever is shared between them, so that their spread is an honest standard error
(:meth:`Trace.standard_error`). The function whose divergence is taken may return a pair ``(field, g)``:
then ``field`` is returned and the divergence of ``g`` is estimated — :func:`probdiff.log_likelihood`
passes the probability-flow drift as ``field`` and the denoiser as ``g``, whose divergence is the only
part of :math:`\nabla\cdot h` that is not known in closed form (THEORY.md §13).
"""

from __future__ import annotations

import abc
import enum
import math

import torch
import torch.distributed

from .._util import check_positive_int

__all__ = ["probe_forms", "probe_vjps", "linearized_forms", "Trace", "ExactTrace", "ProbeKind", "Hutchinson"]


def _field_and_part(out):
    """``fn``'s output as ``(field, part whose Jacobian is probed)``: a pair as given, a tensor twice."""
    if isinstance(out, tuple):
        return out
    return out, out


def probe_vjps(fn, x: torch.Tensor, probes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    r"""``fn(x)`` and the vector-Jacobian products :math:`e^\top (\partial g/\partial x)` for a stack of probes.

    One replicated forward pass on the ``(P·B, *event)`` batch and one backward pass (see
    :func:`probe_forms`). ``fn`` returns a tensor ``g`` or a pair ``(field, g)``.

    Returns:
        ``(field, vjps)``: the field at ``x`` (detached, ``(B, *event)``) and ``(P, B, *event)`` products.
    """
    p, b = probes.shape[0], x.shape[0]
    with torch.enable_grad():
        xr = x.detach().unsqueeze(0).expand(p, *x.shape).reshape(p * b, *x.shape[1:]).requires_grad_(True)
        field, part = _field_and_part(fn(xr))
        vjp, = torch.autograd.grad(part, xr, grad_outputs=probes.reshape(part.shape))
    return field[:b].detach(), vjp.reshape(probes.shape).detach()


def linearized_forms(fn, x: torch.Tensor, probes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    r"""What :func:`probe_forms` returns, from *one* forward pass: ``torch.func.vjp`` linearises ``fn`` at ``x``
    once and ``torch.func.vmap`` maps the vector-Jacobian product over the ``P`` probes, where
    :func:`probe_forms` runs ``fn`` on the ``P``-fold replicated batch. Same products, the forward pass (and
    whatever it computes that does not depend on the probe) paid once instead of ``P`` times."""
    def split(z):
        field, part = _field_and_part(fn(z))
        return part, field

    with torch.enable_grad():
        _, vjp_fn, field = torch.func.vjp(split, x.detach(), has_aux=True)
        vjp, = torch.func.vmap(vjp_fn)(probes.reshape(probes.shape[0], *x.shape))
    p, b = probes.shape[0], x.shape[0]
    return field.detach(), (vjp.detach() * probes).reshape(p, b, -1).sum(-1)


def probe_forms(fn, x: torch.Tensor, probes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    r"""``fn(x)`` and the quadratic forms :math:`e^\top (\partial f/\partial x)\, e` for a stack of probes.

    All probes are evaluated in one pass: ``x`` is replicated ``P`` times along the batch, ``fn`` runs once
    on the ``(P·B, *event)`` batch, and one vector-Jacobian product with the probes as cotangents gives
    :math:`e^\top J` per row (reverse mode works for every differentiable model; samples of a batch must
    not interact, which holds for every model of probdiff).

    Args:
        fn: batched vector field ``(n, *event) -> (n, *event)``, or a pair ``(field, g)`` of them, whose
            ``g`` is probed.
        x: ``(B, *event)``.
        probes: ``(P, B, *event)``.

    Returns:
        ``(field, forms)``: the field at ``x`` (detached, ``(B, *event)``) and ``(P, B)`` quadratic forms.
    """
    p, b = probes.shape[0], x.shape[0]
    field, vjp = probe_vjps(fn, x, probes)
    return field, (vjp * probes).reshape(p, b, -1).sum(-1)


class Trace(abc.ABC):
    r"""A divergence (Jacobian trace) computer for the change of variables; configuration only.

    :meth:`prepare` draws whatever is held fixed along one trajectory (Hutchinson's probes);
    :meth:`estimates` returns the field and ``P`` estimates of the divergence at one point; their mean
    is the estimate (:meth:`__call__`) and :meth:`standard_error` its standard error. Because the
    state is fixed along the trajectory, the ``P`` integrated estimates of :math:`\int\nabla\cdot h\,dt`
    are still i.i.d. given what they share, which is what makes the standard error of
    :func:`probdiff.log_likelihood` calibrated.
    """

    def prepare(self, x: torch.Tensor, generator: torch.Generator | None = None):
        """Per-trajectory state (e.g. probes), drawn once before integrating."""
        return None

    @abc.abstractmethod
    def estimates(self, fn, x: torch.Tensor, state, *, process=None, t=None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(field, estimates)``: the field at ``x`` and ``(P, B)`` estimates of the divergence of ``g``.

        ``fn(z)`` returns ``g`` or ``(field, g)``. ``process`` and ``t`` say where the likelihood
        evaluates (a control variate needs them; the plain estimators ignore them).
        """

    @property
    def num_estimates(self) -> int:
        """``P``, the number of estimates :meth:`estimates` returns per sample."""
        return 1

    def matvecs(self, x: torch.Tensor) -> int:
        """Vector-Jacobian products per sample and evaluation (the cost beside the forward passes)."""
        return math.prod(x.shape[1:])

    def standard_error(self, estimates: torch.Tensor) -> torch.Tensor:
        r"""Standard error of the mean of ``(P, B)`` i.i.d. estimates, :math:`s/\sqrt P` with the unbiased
        sample deviation :math:`s`; ``NaN`` where ``P = 1`` (one estimate carries no spread: ask for more
        probes)."""
        p = estimates.shape[0]
        if p < 2:
            return torch.full(estimates.shape[1:], float("nan"), dtype=estimates.dtype, device=estimates.device)
        return estimates.std(0, unbiased=True) / math.sqrt(p)

    def __call__(self, fn, x: torch.Tensor, state) -> tuple[torch.Tensor, torch.Tensor]:
        """``(field, divergence)`` with the divergence of shape ``(B,)``: the mean of :meth:`estimates`."""
        field, est = self.estimates(fn, x, state)
        return field, est.mean(0)


class ExactTrace(Trace):
    r"""Exact divergence :math:`\sum_j \partial f_j/\partial x_j`, batched over basis vectors.

    The ``D`` basis vectors are taken ``chunk_size`` at a time. By default ``fn`` is linearised once per
    evaluation and the chunk's vector-Jacobian products are mapped over the basis vectors
    (:func:`linearized_forms`, ``torch.func``): one forward pass and ``D`` products. ``replicate=True``
    runs one replicated forward and backward pass per chunk instead (:func:`probe_forms`: ``D`` forward
    passes), for a model whose operations ``torch.func.vmap`` does not support; both give the same trace.
    Inside a ``torch.distributed`` process group the replicated route is always taken: with torch 2.13 and
    gloo, a worker that had used the ``torch.func`` route aborted at exit ("terminate called without an active
    exception") in about a third of two-rank torchrun runs, after finishing its work; none did on this route.

    Args:
        chunk_size: basis vectors per pass; ``None`` takes as many as keep the replicated input below
            ``max_elements`` entries.
        max_elements: memory budget of the replicated input when ``chunk_size`` is ``None``.
        replicate: use the replicated batch (:func:`probe_forms`) instead of :func:`linearized_forms`.
    """

    def __init__(self, chunk_size: int | None = None, *, max_elements: int = 2**22, replicate: bool = False):
        if not isinstance(replicate, bool):
            raise ValueError(f"replicate must be True or False, got {replicate!r}")
        self.replicate = bool(replicate)
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

    def estimates(self, fn, x, state, *, process=None, t=None):
        b, d = x.shape[0], x[0].numel()
        chunk = self._chunk(x)
        eye = torch.eye(d, dtype=x.dtype, device=x.device)
        field, div = None, torch.zeros(b, dtype=x.dtype, device=x.device)
        for start in range(0, d, chunk):
            basis = eye[start:start + chunk]                                   # (c, d)
            probes = basis[:, None, :].expand(basis.shape[0], b, d).reshape(basis.shape[0], *x.shape)
            route = probe_forms if self.replicate or _in_process_group() else linearized_forms
            out, forms = route(fn, x, probes)
            field = out if field is None else field
            div = div + forms.sum(0)
        return field, div[None]

    def standard_error(self, estimates):
        """Zero: the trace is exact (the ODE solver's error is controlled by ``rtol``/``atol`` instead)."""
        return torch.zeros_like(estimates[0])

    def __repr__(self) -> str:
        return f"ExactTrace(chunk_size={self.chunk_size}, replicate={self.replicate})"


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
        num_probes: probes per sample, ``P``; the variance falls as ``1/P``, and ``P >= 2`` gives a standard
            error (the spread of the ``P`` integrated estimates; one probe gives ``NaN``).
        kind: :class:`ProbeKind` (or its value ``"rademacher"`` / ``"gaussian"``).
    """

    def __init__(self, num_probes: int = 1, kind: ProbeKind | str = ProbeKind.RADEMACHER):
        check_positive_int("num_probes", num_probes)
        self.num_probes = int(num_probes)
        self.kind = ProbeKind.parse(kind)

    def prepare(self, x, generator=None):
        return self.kind.draw((self.num_probes, *x.shape), like=x, generator=generator)

    def estimates(self, fn, x, state, *, process=None, t=None):
        if state is None or state.shape[1:] != x.shape:
            raise ValueError("Hutchinson needs the probes from prepare(x) for this x")
        return probe_forms(fn, x, state)

    @property
    def num_estimates(self):
        return self.num_probes

    def matvecs(self, x):
        return self.num_probes

    def __repr__(self) -> str:
        return f"Hutchinson(num_probes={self.num_probes}, kind={self.kind})"


def _in_process_group() -> bool:
    """Whether this process is a rank of an initialised ``torch.distributed`` group (see :class:`ExactTrace`)."""
    return torch.distributed.is_available() and torch.distributed.is_initialized()
