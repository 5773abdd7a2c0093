r"""Checks of step kernels (THEORY.md §12): normalised, and followed by the draws of the step.

A kernel (:meth:`probdiff.solvers.HasKernel.kernel`) is a distribution over :math:`x_s` given :math:`x_t`. Two
things can go wrong, and both have been seen in hand-written RL post-training code: the log-density misses
its normaliser (harmless for sampling, fatal for importance ratios between models with different step
variances), or it describes another step than the one the sampler takes. :func:`assert_kernel` checks both
on a kernel that factorises over its event — a :class:`~probdiff.reverse.kernels.StepKernel` (every
sampler's kernel), an ``Independent`` distribution (``.to_event(n)``) of per-element laws, or a one-element
event — one element at a time (a factorised kernel is normalised, and followed by the step's draws, exactly
when each element is), so images ``(C, H, W)`` are checked as ``batch * C * H * W`` one-element kernels:

* normalised: for a discrete kernel, :math:`\sum_v p(v) = 1` by enumerating its support; for a continuous
  one, the trapezoid integral of :math:`e^{\log p}` over ±8 standard deviations around the draws is 1;
* draws: the empirical frequencies (discrete) or distribution function (continuous, by quadrature of the
  density) of the draws agree with the kernel within ``z`` standard errors.
"""

from __future__ import annotations

import math

import torch
from torch.distributions import Independent

from ..reverse.kernels import StepKernel

__all__ = ["assert_kernel"]


def assert_kernel(kernel, draws: torch.Tensor | None = None, *, num_draws: int = 4000,
                  generator: torch.Generator | None = None, z: float = 5.0, atol: float = 2e-3) -> None:
    """Raise ``AssertionError`` unless ``kernel`` is normalised and ``draws`` follow its ``log_prob``.

    Args:
        kernel: a kernel with ``batch_shape == (batch,)`` that factorises over its event: a
            :class:`~probdiff.reverse.kernels.StepKernel`, an ``Independent`` (``.to_event``) of per-element
            laws, or any distribution with a one-element event. Without ``draws`` a StepKernel is drawn with
            ``draw(generator)``, another distribution with ``sample`` (torch's global generator). Rows named in messages count ``batch * prod(event_shape)`` elements.
        draws: ``(n, batch, *event)`` draws of the step the kernel describes (e.g. ``solver.step`` on ``x``
            repeated ``n`` times); default: ``num_draws`` calls of ``kernel.draw(generator)``.
        z: tolerance of the draw check in standard errors.
        atol: tolerance of the normalisation of a continuous kernel (quadrature error); a discrete kernel
            must sum to 1 within ``1e-6`` relative.
    """
    batch = kernel.batch_shape
    if len(batch) != 1:
        raise ValueError(f"assert_kernel needs batch_shape (batch,), got {tuple(batch)}")
    shape = batch + kernel.event_shape
    elementwise, support = _elementwise(kernel)
    if draws is None and isinstance(kernel, StepKernel):
        draws = torch.stack([kernel.draw(generator) for _ in range(num_draws)])
    elif draws is None:
        draws = kernel.sample((num_draws,))              # a Pyro/torch distribution: torch's global generator
    if tuple(draws.shape[-len(shape):]) != tuple(shape):
        raise ValueError(f"draws must have shape (n, *{tuple(shape)}), got {tuple(draws.shape)}")
    rows = math.prod(shape)
    draws = draws.reshape(-1, rows)
    n = draws.shape[0]

    def log_prob(values):                       # values (m, rows) -> per-element log-probabilities (m, rows)
        return elementwise(values.reshape((values.shape[0],) + shape)).reshape(values.shape[0], rows)

    if support.is_discrete:
        lo = torch.as_tensor(support.lower_bound).double().min()
        hi = torch.as_tensor(support.upper_bound).double().max()
        values = torch.arange(int(lo), int(hi) + 1, dtype=draws.dtype, device=draws.device)
        grid = values[:, None].expand(len(values), rows)
        probs = torch.exp(log_prob(grid).double())
        total = probs.sum(0)
        bad = (total - 1).abs() > 1e-6
        if bool(bad.any()):
            raise AssertionError(f"kernel not normalised: probabilities over its support sum to "
                                 f"{total[bad].tolist()} (rows {bad.nonzero().flatten().tolist()})")
        freq = (draws[None].double() == grid[:, None, :].double()).double().mean(1)
        se = torch.sqrt(probs * (1 - probs) / n) + 1.0 / n
        dev = (freq - probs).abs() / se
        if bool((dev > z).any()):
            worst = int(dev.max(0).values.argmax())
            raise AssertionError(f"draws do not follow the kernel: in row {worst} the frequencies "
                                 f"{freq[:, worst].tolist()} differ from the kernel's {probs[:, worst].tolist()} by "
                                 f"up to {float(dev.max()):.1f} standard errors")
        return
    d = draws.double()
    std = d.std(0).clamp_min(1e-12)
    lo, hi = d.min(0).values - 8 * std, d.max(0).values + 8 * std
    u = torch.linspace(0, 1, 4001, dtype=torch.float64)[:, None]
    grid = lo + u * (hi - lo)                                          # (m, batch)
    dens = torch.exp(log_prob(grid.to(draws.dtype)).double())
    total = torch.trapezoid(dens, grid, dim=0)
    bad = (total - 1).abs() > atol
    if bool(bad.any()):
        raise AssertionError(f"kernel not normalised: its density integrates to {total[bad].tolist()} "
                             f"(rows {bad.nonzero().flatten().tolist()})")
    cdf = torch.cumulative_trapezoid(dens, grid, dim=0) / total
    cdf = torch.cat([torch.zeros_like(cdf[:1]), cdf])
    quantiles = torch.quantile(d, torch.tensor([0.1, 0.25, 0.5, 0.75, 0.9], dtype=torch.float64), dim=0)
    g, c = grid.T.contiguous(), cdf.T.contiguous()                  # (batch, m)
    for q, level in zip(quantiles, (0.1, 0.25, 0.5, 0.75, 0.9)):
        hi_idx = torch.searchsorted(g, q[:, None].contiguous()).clamp(1, g.shape[1] - 1)
        x0, x1 = g.gather(1, hi_idx - 1), g.gather(1, hi_idx)
        c0, c1 = c.gather(1, hi_idx - 1), c.gather(1, hi_idx)
        model = (c0 + (c1 - c0) * (q[:, None] - x0) / (x1 - x0)).flatten()
        dev = (model - level).abs() / math.sqrt(level * (1 - level) / n)
        if bool((dev > z).any()):
            raise AssertionError(f"draws do not follow the kernel: the draws' {level:g}-quantile has kernel "
                                 f"CDF {model.tolist()} ({float(dev.max()):.1f} standard errors off)")


def _elementwise(kernel):
    """``(log_prob, support)`` per element of a kernel that factorises over its event: ``log_prob`` maps values of
    shape ``(m, batch, *event)`` to per-element log-probabilities of the same shape."""
    if isinstance(kernel, StepKernel):
        return kernel.element_log_prob, kernel.support
    base, ndims = kernel, 0
    while isinstance(base, Independent):
        base, ndims = base.base_dist, ndims + base.reinterpreted_batch_ndims
    if ndims and not base.event_shape:
        return base.log_prob, base.support
    if math.prod(kernel.event_shape) == 1:
        return (lambda v: kernel.log_prob(v).reshape(v.shape)), kernel.support
    raise ValueError(f"assert_kernel checks kernels that factorise over their event (a StepKernel, an Independent / "
                     f".to_event of per-element laws, or a one-element event); got {type(kernel).__name__} with "
                     f"event_shape {tuple(kernel.event_shape)}")
