r"""The reverse step of an interpolating chain as a structured law: O(1) per token plus the model's output.

For an :class:`~probdiff.InterpolatingChain` the mixture of posteriors
:math:`p(x_s = y \mid x_t) = \sum_{x_0} p(x_0\mid x_t)\,q(x_s = y\mid x_t, x_0)` is, per token,

.. math::

    p(y) = c_w\,w_y + c_\pi\,\pi_y \quad (y \ne x_t), \qquad p(x_t) = d,

with :math:`w = p(x_0 = \cdot \mid x_t)` the model's ``(..., S)`` output, :math:`\pi` the chain's shared law and
three per-token coefficients (:meth:`InterpolatingChain.reverse_kernel
<probdiff.InterpolatingChain.reverse_kernel>`; Austin et al., "Structured Denoising Diffusion Models in
Discrete State-Spaces", NeurIPS 2021, Eq. (4) and App. A.2). :class:`PosteriorMixture` keeps a reference to
:math:`w` (no copy) and the coefficients: ``log_prob`` gathers one entry of :math:`w` per token, ``draw``
reads :math:`w` once and writes nothing of size ``S`` per token (a two-level inverse CDF: block sums, then
one block), and the dense :attr:`~PosteriorMixture.probs` / :attr:`~PosteriorMixture.logits` are formed only
when asked, in one fused pass.
"""

from __future__ import annotations

import math

import torch
from pyro.distributions import TorchDistribution
from torch.distributions import constraints

from .._util import check_out
from .atomic import sample_base

__all__ = ["PosteriorMixture", "sample_excluding", "fill_rows", "block_sums"]

_BLOCK = 256


def block_sums(w: torch.Tensor, block: int = _BLOCK) -> torch.Tensor:
    """Sums of consecutive blocks of ``block`` states of the rows of ``w`` ``(N, S)``, float64
    ``(N, ceil(S / block))``: one read of ``w`` (summed in its dtype, pairwise, then widened)."""
    n, s = w.shape
    nb = s // block
    parts = []
    if nb:
        parts.append(w[:, :nb * block].reshape(n, nb, block).sum(-1).double())    # (a dtype= argument copies)
    if s > nb * block:
        parts.append(w[:, nb * block:].sum(-1, keepdim=True).double())
    return torch.cat(parts, -1)


def sample_excluding(w: torch.Tensor, x: torch.Tensor, u: torch.Tensor, block: int = _BLOCK,
                     sums: torch.Tensor | None = None) -> torch.Tensor:
    r"""Per row of ``w`` ``(N, S)`` (non-negative weights), the state :math:`k \ne x` with
    :math:`\sum_{j<k, j\ne x} w_j \le u\,(W - w_x) < \sum_{j\le k, j\ne x} w_j` (inverse CDF of the weights with
    state ``x`` removed), ``torch.long`` ``(N,)``; ``u`` in [0, 1).

    Two levels, so that no ``(N, S)`` tensor is written: the sums of blocks of ``block`` states (one read of
    ``w``), a cumulative sum over the :math:`\lceil S/\text{block}\rceil` blocks, then the cumulative sum of the
    chosen block only. Rows whose weight off ``x`` is zero return ``x``. ``sums``: :func:`block_sums` of ``w``
    if the caller has them (they are updated in place).
    """
    n, s = w.shape
    x = x.long()
    sums = block_sums(w, block) if sums is None else sums                               # (N, blocks)
    rows = torch.arange(n, device=w.device)
    wx = w[rows, x].double()
    bx = torch.div(x, block, rounding_mode="floor")
    sums[rows, bx] -= wx                                                                 # remove state x
    sums.clamp_min_(0.0)
    cum = torch.cumsum(sums, -1)
    total = cum[:, -1]
    target = u.double() * total
    b = torch.searchsorted(cum, target[:, None], right=True)[:, 0].clamp_max(sums.shape[1] - 1)
    rest = target - torch.where(b > 0, cum[rows, (b - 1).clamp_min(0)], torch.zeros_like(target))
    start = b * block
    offs = torch.arange(block, device=w.device)
    vals = torch.gather(w, 1, (start[:, None] + offs).clamp_max_(s - 1)).double()
    j = x - start                                                   # state x inside the chosen block
    inside = (j >= 0) & (j < block)
    vals[rows[inside], j[inside]] = 0.0
    tail = torch.nonzero(start + block > s)[:, 0]                   # the last block may run past S
    if tail.numel():
        vals[tail] = vals[tail].masked_fill_((start[tail, None] + offs) >= s, 0.0)
    inner = torch.cumsum(vals, -1)
    # below the block's total, the first prefix sum above the target sits on a state of positive weight
    rest = torch.minimum(rest, inner[:, -1] * (1 - 1e-12))
    k = torch.searchsorted(inner, rest[:, None], right=True)[:, 0].clamp_max(block - 1)
    out = start + k
    return torch.where(total > 0, out, x)


def fill_rows(w: torch.Tensor, c_w: torch.Tensor, c_pi: torch.Tensor, log_pi: torch.Tensor, x: torch.Tensor,
              at_x: torch.Tensor, *, log: bool, out: torch.Tensor | None = None) -> torch.Tensor:
    """A ``(*batch, S)`` tensor (new, or ``out``) ``c_w * w + c_pi * pi`` with ``at_x`` at state ``x``, in the
    dtype of ``w``: one fused pass over ``w`` into the output (``addcmul``; ``pi`` written as its most common
    value plus the few states that differ, as for uniform noise, masking and their mixture, which are then set
    exactly), the logarithm taken in place if ``log`` (rows that are zero off ``x`` and those states, e.g.
    unmasked tokens of masking, are set to ``-inf`` instead: the logarithm of 0 is ten times slower). Where a
    gradient is needed (a network being trained on the bound) the same values are formed out of place. ``out``:
    a preallocated result to write into (:func:`~probdiff._util.check_out`; reusing one saves the allocation
    and, on 4 kB pages, the first-touch page faults, about half the time at S = 50,257)."""
    dt = w.dtype
    check_out(out, w.shape, dt, w.device, w)
    pi = torch.exp(log_pi.to(device=w.device, dtype=torch.float64))
    if torch.is_grad_enabled() and any(v.requires_grad for v in (w, c_w, c_pi, at_x)):
        if out is not None:
            raise ValueError("out must be None where a gradient is needed (the inputs require one; in-place "
                             "writes would break it)")
        # training through the bound: the same values out of place (in-place writes into out= break autograd)
        out = w * c_w.to(dt)[..., None] + (c_pi.double()[..., None] * pi).to(dt)
        out = out.scatter(-1, x.long()[..., None], at_x.to(dt)[..., None])
        return out.log() if log else out
    values, counts = torch.unique(pi, return_counts=True)
    common = float(values[counts.argmax()])
    bias = c_pi.double() * common                              # the common part of pi's term, per row
    scale = c_w.double()
    if log:
        # rows with nothing off x but pi's exceptions: the logarithm of 0 takes a slow path (about 10x), so
        # such rows get w in the pass, and -inf after it
        dead = (scale == 0) & (bias == 0)
        scale = torch.where(dead, torch.ones_like(scale), scale)
    if common != 0.0:                                          # one pass: read w, write the output
        out = torch.addcmul(bias.to(dt)[..., None], w, scale.to(dt)[..., None], out=out)
    else:
        out = torch.mul(w, scale.to(dt)[..., None], out=out)
    if log:
        out.log_()
        rows = torch.nonzero(dead.reshape(-1))[:, 0]
        if rows.numel():                                       # (writes those rows only; a mask reads them all)
            out.view(-1, out.shape[-1]).index_fill_(0, rows, -math.inf)
    idx = torch.nonzero(pi != common)[:, 0]
    if idx.numel():                                            # pi's exceptions, exactly, in float64
        exc = w[..., idx].double() * c_w.double()[..., None] + c_pi.double()[..., None] * pi[idx]
        out[..., idx] = (exc.log() if log else exc).to(dt)
    at_x = at_x.double()
    out.scatter_(-1, x.long()[..., None], (at_x.log() if log else at_x).to(dt)[..., None])
    return out


class PosteriorMixture(TorchDistribution):
    r""":math:`p(y) = c_w w_y + c_\pi \pi_y` for :math:`y \ne x`, :math:`p(x) = d`, per element (see the module).

    Args:
        w: the model's weights ``(*batch, S)`` (referenced, not copied; any floating dtype).
        x: the current states ``(*batch)``.
        c_w, c_pi, d: per-element coefficients ``(*batch)`` (float64).
        log_pi: :math:`\log\pi` ``(S,)``.
        w_off: optional :math:`\sum_{y \ne x} w_y` ``(*batch)`` where ``c_w > 0``, if the caller has it (saves
            a read of ``w``).
        blocks: optional :func:`block_sums` of ``w`` (flattened to ``(N, S)``), if the caller has them (saves
            the draw's read of ``w``).

    ``batch_shape == x.shape``, ``event_shape == ()``; samples are ``torch.long``.
    """

    arg_constraints = {}
    has_enumerate_support = False

    def __init__(self, w, x, c_w, c_pi, d, log_pi, w_off=None, blocks=None, validate_args=None):
        self.w, self.x = w, x.long()
        self.blocks = blocks
        self.w_off = None if w_off is None else w_off.double()
        self.c_w, self.c_pi, self.d = c_w.double(), c_pi.double(), d.double()
        self.log_pi = log_pi
        super().__init__(x.shape, torch.Size(), validate_args=False)

    @constraints.dependent_property(is_discrete=True, event_dim=0)
    def support(self):
        return constraints.integer_interval(0, self.w.shape[-1] - 1)

    def _off_mass(self):
        """(model part, base part) of the mass off ``x``."""
        pi = torch.exp(self.log_pi.to(torch.float64))
        if self.w_off is None:
            wx = self.w.gather(-1, self.x[..., None])[..., 0].double()
            self.w_off = self.w.sum(-1).double() - wx         # torch sums float32 pairwise: accurate enough
        return self.c_w * self.w_off.clamp_min(0.0), self.c_pi * (1 - pi[self.x]).clamp_min(0.0)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """Per-element log-probability, O(1) per element (``-inf`` off ``0 .. S-1``)."""
        value = torch.as_tensor(value, device=self.w.device)
        s = self.w.shape[-1]
        k = value.to(torch.float64)
        inside = (k >= 0) & (k <= s - 1) & (k == torch.round(k))
        idx = torch.where(inside, k, torch.zeros_like(k)).long()
        shape = torch.broadcast_shapes(idx.shape, self.x.shape)
        w = self.w.expand(shape + self.w.shape[-1:])
        wv = w.gather(-1, idx.expand(shape)[..., None])[..., 0].double()
        off = self.c_w * wv + self.c_pi * torch.exp(self.log_pi.to(torch.float64))[idx]
        p = torch.where(idx == self.x, self.d.expand(shape), off)
        lp = torch.log(p)
        return torch.where(inside, lp, torch.full_like(lp, -math.inf))

    def draw(self, generator: torch.Generator | None = None) -> torch.Tensor:
        """One draw per element from ``generator``: one read of :math:`w`, O(S / block + block) writes per
        element. Stay at ``x`` with probability :math:`d`, else the model part or :math:`\\pi`, off ``x``."""
        s = self.w.shape[-1]
        model, base = self._off_mass()
        total = self.d + model + base
        shape = self.x.shape
        u = torch.rand((3,) + tuple(shape), generator=generator, dtype=torch.float64, device=self.w.device)
        pick = u[0] * total
        sums = None if self.blocks is None else self.blocks.clone()
        from_w = sample_excluding(self.w.reshape(-1, s), self.x.reshape(-1), u[1].reshape(-1),
                                  sums=sums).reshape(shape)
        from_pi = self._sample_pi_excluding(generator)
        out = torch.where(pick < self.d + model, from_w, from_pi)
        return torch.where(pick < self.d, self.x, out)

    def _sample_pi_excluding(self, generator):
        """Draws from :math:`\\pi` restricted to states other than ``x`` (redrawn where they hit ``x``; elements
        where :math:`\\pi` has no mass off ``x`` keep ``x``)."""
        pi_x = torch.exp(self.log_pi.to(torch.float64))[self.x]
        y = sample_base(self.log_pi, self.x.shape, generator)
        todo = (y == self.x) & (pi_x < 1)
        while bool(todo.any()):
            y = torch.where(todo, sample_base(self.log_pi, self.x.shape, generator), y)
            todo = (y == self.x) & (pi_x < 1)
        return y

    def sample(self, sample_shape=torch.Size()):
        with torch.no_grad():
            draws = [self.draw(None) for _ in range(math.prod(sample_shape))]
        if not sample_shape:
            return draws[0]
        return torch.stack(draws).reshape(torch.Size(sample_shape) + self.batch_shape)

    def dense(self, *, log: bool, out: torch.Tensor | None = None) -> torch.Tensor:
        """The ``(*batch, S)`` probabilities (or their logarithms) in the dtype of ``w``, one fused pass;
        written into ``out`` if given (contiguous, that shape and dtype, not ``w``'s memory)."""
        return fill_rows(self.w, self.c_w, self.c_pi, self.log_pi, self.x, self.d, log=log, out=out)

    @property
    def probs(self) -> torch.Tensor:
        return self.dense(log=False)

    @property
    def logits(self) -> torch.Tensor:
        return self.dense(log=True)

    @property
    def mean(self) -> torch.Tensor:
        states = torch.arange(self.w.shape[-1], dtype=torch.float64, device=self.w.device)
        return self.probs.double() @ states
