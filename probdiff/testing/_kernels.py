r"""Checks of step kernels (THEORY.md §12): normalised, and followed by the draws of the step.

A kernel (:meth:`probdiff.solvers.Solver.kernel`) is a distribution over :math:`x_s` given :math:`x_t`. Two
things can go wrong, and both have been seen in hand-written RL post-training code: the log-density misses
its normaliser (harmless for sampling, fatal for importance ratios between models with different step
variances), or it describes another step than the one the sampler takes. :func:`assert_kernel` checks both,
per batch row, on a kernel over a one-element event (kernels factorise over the event, so one element is
the whole story):

* normalised: for a discrete kernel, :math:`\sum_v p(v) = 1` by enumerating its support; for a continuous
  one, the trapezoid integral of :math:`e^{\log p}` over ±8 standard deviations around the draws is 1;
* draws: the empirical frequencies (discrete) or distribution function (continuous, by quadrature of the
  density) of the draws agree with the kernel within ``z`` standard errors.
"""

from __future__ import annotations

import math

import torch

__all__ = ["assert_kernel"]


def assert_kernel(kernel, draws: torch.Tensor | None = None, *, num_draws: int = 4000,
                  generator: torch.Generator | None = None, z: float = 5.0, atol: float = 2e-3) -> None:
    """Raise ``AssertionError`` unless ``kernel`` is normalised and ``draws`` follow its ``log_prob``.

    Args:
        kernel: a step kernel with ``batch_shape == (batch,)`` and a one-element event (``event_shape`` of
            ``(1,)`` or ``()``), and a ``draw(generator)`` method unless ``draws`` is given.
        draws: ``(n, batch, *event)`` draws of the step the kernel describes (e.g. ``solver.step`` on ``x``
            repeated ``n`` times); default: ``num_draws`` calls of ``kernel.draw(generator)``.
        z: tolerance of the draw check in standard errors.
        atol: tolerance of the normalisation of a continuous kernel (quadrature error); a discrete kernel
            must sum to 1 within ``1e-6`` relative.
    """
    batch = kernel.batch_shape
    if len(batch) != 1 or math.prod(kernel.event_shape) != 1:
        raise ValueError(f"assert_kernel needs batch_shape (batch,) and a one-element event, got "
                         f"{tuple(batch)} and {tuple(kernel.event_shape)}")
    shape = batch + kernel.event_shape
    if draws is None:
        draws = torch.stack([kernel.draw(generator) for _ in range(num_draws)])
    draws = draws.reshape(-1, batch[0])
    n = draws.shape[0]

    def log_prob(values):                               # values (m, batch) -> (m, batch), one call
        return kernel.log_prob(values.reshape((values.shape[0],) + shape))

    if kernel.support.is_discrete:
        lo = torch.as_tensor(kernel.support.lower_bound).double().min()
        hi = torch.as_tensor(kernel.support.upper_bound).double().max()
        values = torch.arange(int(lo), int(hi) + 1, dtype=draws.dtype, device=draws.device)
        grid = values[:, None].expand(len(values), batch[0])
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
