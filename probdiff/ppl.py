r"""The diffusion model as a pair of Pyro programs (THEORY.md §4, "ELBO (VAE view)").

A diffusion model on a grid :math:`t_{max} = t_0 > t_1 > \dots > t_N = t_{min}` is a hierarchical VAE
whose encoder is fixed (Kingma et al., "Variational Diffusion Models", NeurIPS 2021, §3; Ho et al. 2020, §2):

* :func:`reverse_model` — the *model*: :math:`x_{t_0} \sim p_{ref}`,
  :math:`x_{t_{i+1}} \sim q(x_{t_{i+1}} \mid x_{t_i}, x_0 = D(x_{t_i}, t_i))`, and the data observed through
  the decoder, :math:`x \sim p(x \mid x_{t_N})`;
* :func:`forward_model` — the *guide*: :math:`x_{t_N} \sim q(x_{t_{min}} \mid x)`, then the forward
  transitions :math:`x_{t_i} \sim q(x_{t_i} \mid x_{t_{i+1}})` up to :math:`t_0`.

The guide's joint is :math:`q(x_{t_N}, \dots, x_{t_0} \mid x)`, so ``pyro.infer.Trace_ELBO`` on the pair
estimates :math:`E_q[\log p(x, x_{t_{0:N}}) - \log q(x_{t_{0:N}} \mid x)]`, the same bound that
:func:`probdiff.elbo` with ``grid`` computes in its Rao–Blackwellised form (analytic KLs per step), with
more variance. Latent sites are named ``"x_0" ... "x_N"`` (``"x_i"`` at ``grid.times(process)[i]``, so
``"x_0"`` is at ``t_max``), the observed site ``"data"``; the batch lives in ``pyro.plate("batch")``, so
``poutine.condition``, ``poutine.scale``, ``poutine.mask`` and friends apply as to any Pyro program.
"""

from __future__ import annotations

import pyro
import torch

from .placement import Grid
from .likelihood.decoders import Decoder, GaussianDecoder
from .processes.gaussian import GaussianProcess, as_gaussian

__all__ = ["forward_model", "reverse_model", "site_name"]


def site_name(i: int) -> str:
    """Name of the latent site at grid index ``i`` (``i = 0`` is ``t_max``)."""
    return f"x_{i}"


def _check(process, grid):
    as_gaussian(process)
    if not isinstance(grid, Grid):
        raise ValueError(f"grid must be a Grid (e.g. probdiff.grids.Uniform(steps)), got {grid!r}")
    return grid.times(process)


def _check_data(process, x):
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"x must be a tensor of shape (batch, *event), got {type(x).__name__}")
    process.check_data("x", x)


def forward_model(process: GaussianProcess, grid: Grid):
    """The guide ``guide(x)``: the forward chain on ``grid`` started from the data ``x`` at ``t_min``.

    Returns:
        A Pyro program taking data ``x`` of shape ``(batch, *event)`` and returning :math:`x_{t_{max}}`.
    """
    ts = _check(process, grid)
    n = ts.shape[0] - 1

    def guide(x: torch.Tensor):
        _check_data(process, x)
        times = ts.to(device=x.device, dtype=x.dtype)
        with pyro.plate("batch", x.shape[0]):
            z = pyro.sample(site_name(n), process.marginal(x, times[n]))
            for i in range(n - 1, -1, -1):
                z = pyro.sample(site_name(i), process.transition(z, times[i + 1], times[i]))
        return z

    return guide


def reverse_model(process: GaussianProcess, model, grid: Grid, decoder: Decoder = GaussianDecoder()):
    """The generative program ``program(x)``: prior, reverse steps with the model's denoiser, decoder.

    Args:
        process: a :class:`~probdiff.GaussianProcess`.
        model: a Gaussian model (``denoise``) or an oracle.
        grid: the time grid of the chain.
        decoder: :math:`p(x \\mid x_{t_{min}})`, observed at the site ``"data"`` with value ``x``.

    Returns:
        A Pyro program taking data ``x`` (``None`` to sample) and returning the last latent :math:`x_{t_{min}}`.
    """
    ts = _check(process, grid)
    if not isinstance(decoder, Decoder):
        raise ValueError(f"decoder must be a Decoder, got {decoder!r}")
    n = ts.shape[0] - 1

    def program(x: torch.Tensor | None = None, *, batch_size: int | None = None, event_shape=None):
        if x is not None:
            _check_data(process, x)
            batch_size, event_shape, like = x.shape[0], x.shape[1:], x
        elif batch_size is None or event_shape is None:
            raise ValueError("give the data x, or batch_size and event_shape to sample")
        else:
            like = torch.empty((), dtype=torch.get_default_dtype())
        times = ts.to(device=like.device, dtype=like.dtype)
        prior = process.prior(tuple(event_shape), device=like.device, dtype=like.dtype)
        with pyro.plate("batch", batch_size):
            z = pyro.sample(site_name(0), prior)
            for i in range(n):
                d = model.denoise(z, times[i])
                z = pyro.sample(site_name(i + 1), process.posterior(d, z, times[i + 1], times[i]))
            pyro.sample("data", decoder.distribution(process, z), obs=x)
        return z

    return program
