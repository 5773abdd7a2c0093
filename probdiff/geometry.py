r"""Geometry of sampling (Chen et al., "A Geometric Perspective on Diffusion Models", 2023; THEORY.md §7).

In the VE form :math:`y = x/\alpha_t`, :math:`\tilde\sigma = \sigma_t/\alpha_t` of any Gaussian process, the
probability-flow ODE reads :math:`dy/d\tilde\sigma = (y - D)/\tilde\sigma` and its Euler step

.. math::

    y' = \frac{\tilde\sigma'}{\tilde\sigma}\,y + \Big(1 - \frac{\tilde\sigma'}{\tilde\sigma}\Big)D(x, t)

is a convex combination of the current point and the denoiser output. For a finite data set the optimal
denoiser is the Gaussian-kernel mean shift :math:`m(y) = \sum_i \mathrm{softmax}_i(-|y - y_i|^2/2\tilde\sigma^2)\,y_i`
(:func:`mean_shift`), so each ODE step moves a fraction of the way to the mean-shift point: the sampler
seeks modes. Sampling trajectories are nearly straight (:func:`trajectory_deviation`) and the denoising
trajectory :math:`D(x_t, t)` (:func:`denoising_trajectory`) reaches the data sooner.
"""

from __future__ import annotations

import torch

from ._util import expand_like
from .processes.gaussian import GaussianProcess, as_gaussian

__all__ = ["trajectory_deviation", "denoising_trajectory", "to_ve", "ve_euler_step", "mean_shift"]


def trajectory_deviation(xs: torch.Tensor) -> torch.Tensor:
    r"""Perpendicular distance of every point of a trajectory from the chord between its endpoints.

    Args:
        xs: ``(steps + 1, batch, *event)``, e.g. ``Solution.xs`` or ``Solution.denoised``.

    Returns:
        ``(steps + 1, batch)``: :math:`\big|(x_k - x_0) - \langle x_k - x_0, u\rangle u\big|` with
        :math:`u = (x_N - x_0)/|x_N - x_0|` (zero at both endpoints). Where the endpoints coincide the
        distance to :math:`x_0` is returned.
    """
    if not isinstance(xs, torch.Tensor) or xs.dim() < 3:
        raise ValueError("xs must be a trajectory tensor of shape (steps + 1, batch, *event), got "
                         f"{tuple(xs.shape) if isinstance(xs, torch.Tensor) else type(xs).__name__}")
    if xs.shape[0] < 2:
        raise ValueError(f"xs must hold at least two points (steps + 1 >= 2), got {xs.shape[0]}")
    flat = xs.reshape(xs.shape[0], xs.shape[1], -1)
    rel = flat - flat[0]
    chord = rel[-1]
    length = chord.norm(dim=-1, keepdim=True)
    u = torch.where(length > 0, chord / length.clamp_min(torch.finfo(xs.dtype).tiny), torch.zeros_like(chord))
    along = (rel * u).sum(-1, keepdim=True)
    return (rel - along * u).norm(dim=-1)


def denoising_trajectory(solution) -> torch.Tensor:
    r"""The denoising trajectory :math:`D(x_{t_k}, t_k)`, ``(steps, batch, *event)``, of a :class:`probdiff.Solution`.

    Raises:
        ValueError: the solution was sampled without ``trajectory=True`` or by a solver that reports no
            data estimate.
    """
    if getattr(solution, "denoised", None) is None:
        raise ValueError("solution has no denoising trajectory: sample with trajectory=True and a solver that "
                         "reports the model's data estimate (all Gaussian solvers do)")
    return solution.denoised


def to_ve(process: GaussianProcess, xs: torch.Tensor, ts: torch.Tensor):
    r"""Map a trajectory to the VE form: :math:`y_k = x_k/\alpha_{t_k}`,
    :math:`\tilde\sigma_k = \sigma_{t_k}/\alpha_{t_k}`.

    Args:
        process: the Gaussian process.
        xs: ``(K, batch, *event)`` points at the times ``ts`` of shape ``(K,)``.

    Returns:
        ``(ys, sigmas)`` with ``sigmas = exp(-log_snr / 2)`` of shape ``(K,)``.
    """
    as_gaussian(process)
    ts = torch.as_tensor(ts, dtype=xs.dtype, device=xs.device)
    if ts.dim() != 1 or ts.shape[0] != xs.shape[0]:
        raise ValueError(f"ts must have shape ({xs.shape[0]},) to match xs, got {tuple(ts.shape)}")
    alpha = process.alpha(ts)
    return xs / expand_like(alpha, xs), torch.exp(-0.5 * process.log_snr(ts))


def ve_euler_step(process: GaussianProcess, model, x: torch.Tensor, t, s) -> torch.Tensor:
    r"""One Euler step of the probability-flow ODE in the VE form, from ``t`` to ``s < t``, returned in x-space:

    :math:`x_s = \alpha_s\big[r\,x_t/\alpha_t + (1 - r)\,D(x_t, t)\big]`,
    :math:`r = \tilde\sigma_s/\tilde\sigma_t = e^{(\lambda_t - \lambda_s)/2} \in (0, 1)`: a convex combination
    of the current point and the denoiser (Chen et al. 2023, §3). This is DDIM's step (Song et al. 2021).
    """
    s, t = process.check_times(s, t, x)
    r = expand_like(torch.exp(0.5 * (process.log_snr(t) - process.log_snr(s))), x)
    y = x / expand_like(process.alpha(t), x)
    return expand_like(process.alpha(s), x) * (r * y + (1.0 - r) * model.denoise(x, t))


def mean_shift(data: torch.Tensor, y: torch.Tensor, bandwidth) -> torch.Tensor:
    r"""Gaussian-kernel mean shift (Comaniciu & Meer 2002): :math:`m(y) = \sum_i w_i y_i`,
    :math:`w = \mathrm{softmax}_i(-|y - y_i|^2 / 2h^2)`, for ``data`` ``(N, *event)`` and points ``y``
    ``(batch, *event)``; ``bandwidth`` h is a number or a ``(batch,)`` tensor.

    With :class:`probdiff.oracles.Empirical` data it equals the optimal denoiser at :math:`\tilde\sigma = h`
    in the VE form, which is what makes the probability-flow ODE a mean-shift iteration.
    """
    if not isinstance(data, torch.Tensor) or data.dim() < 2 or tuple(data.shape[1:]) != tuple(y.shape[1:]):
        raise ValueError("data must be (N, *event) with the event shape of y")
    h = torch.as_tensor(bandwidth, dtype=torch.float64, device=y.device)
    if bool((h <= 0).any()) or not bool(torch.isfinite(h).all()):
        raise ValueError(f"bandwidth must be finite and > 0, got {bandwidth}")
    yf = y.reshape(y.shape[0], -1).to(torch.float64)
    df = data.reshape(data.shape[0], -1).to(device=y.device, dtype=torch.float64)
    d2 = torch.cdist(yf, df) ** 2
    w = torch.softmax(-d2 / (2.0 * h.reshape(-1, 1) ** 2), dim=1)
    return (w @ df).reshape(y.shape).to(y.dtype)
