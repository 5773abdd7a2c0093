r"""The model as a distribution: :func:`as_distribution` wraps a diffusion model as a Pyro ``TorchDistribution``.

A diffusion model defines a law :math:`p_\theta` on the data at ``t_min``: the law of the samples of its
reverse process. :func:`as_distribution` exposes it where a distribution is expected — a ``pyro.sample``
site (``obs=`` included), a prior in simulation-based inference, a ``log_prob`` in a likelihood ratio —
with two interchangeable ways of scoring a point, each an object with a ``log_prob(model, x)`` method:

* :class:`ODE` — the exact log-density of the model's probability flow (:func:`probdiff.log_likelihood`,
  instantaneous change of variables, Chen et al. 2018; Song et al. 2021, Appendix D.2). It is the density
  of the samples of :class:`Sampler` only when they integrate that flow exactly (noise 0 and a fine
  grid); with an exact model every noise level gives the same law (THEORY.md §3).
* :class:`ELBO` — the evidence lower bound (:func:`probdiff.elbo`): a *bound*, :math:`\le \log p_\theta(x)`
  in expectation, not a density; it is what a variational treatment (``pyro.infer.Trace_ELBO``) would
  optimise, and it is cheap. McAllester (2023) shows it is tight for the exact denoiser.

``sample`` runs :func:`probdiff.sample` with the :class:`Sampler` (solver, grid, noise level).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pyro.distributions as dist
import torch

from .likelihood import elbo as _elbo
from .likelihood import log_likelihood as _log_likelihood
from .models.base import Model
from .placement import Grid, Uniform
from .reverse import reverse as _reverse
from .sampling import sample as _sample
from .solvers import Ancestral, Solver

__all__ = ["ODE", "ELBO", "Sampler", "ModelDistribution", "as_distribution"]


class ODE:
    """Score a point by the exact log-likelihood of the probability flow, :func:`probdiff.log_likelihood`.

    Args:
        **options: passed to :func:`probdiff.log_likelihood` (``trace``, ``time``, ``rtol``, ``atol``,
            ``method``, ...).
    """

    def __init__(self, **options):
        if "return_stats" in options:
            raise ValueError("ODE() returns log-probabilities only; call pd.log_likelihood for statistics")
        self.options = options

    def log_prob(self, model: Model, x: torch.Tensor) -> torch.Tensor:
        """:math:`\\log p_\\theta(x)`, shape ``(batch,)``."""
        return _log_likelihood(model, x, **self.options)

    def __repr__(self) -> str:
        return f"ODE({', '.join(f'{k}={v!r}' for k, v in self.options.items())})"


class ELBO:
    """Score a point by the evidence lower bound :func:`probdiff.elbo` (a bound, not a density).

    Args:
        **options: passed to :func:`probdiff.elbo` (``grid``, ``num_samples``, ...).
    """

    def __init__(self, **options):
        self.options = options

    def log_prob(self, model: Model, x: torch.Tensor) -> torch.Tensor:
        """A lower bound on :math:`\\log p_\\theta(x)` (in expectation over its Monte-Carlo draws), ``(batch,)``."""
        return _elbo(model, x, **self.options)

    def __repr__(self) -> str:
        return f"ELBO({', '.join(f'{k}={v!r}' for k, v in self.options.items())})"


@dataclass
class Sampler:
    """How :class:`ModelDistribution` draws: :func:`probdiff.sample` with ``solver`` on ``grid`` of the reverse
    process at ``noise``.

    Attributes:
        solver: default :class:`~probdiff.solvers.Ancestral` (follows ``noise``; exact steps for chains).
        grid: default ``Uniform(100)``.
        noise: noise level of the reverse family (default 1; chains need 1).
    """

    solver: Solver = field(default_factory=lambda: Ancestral(None))
    grid: Grid = field(default_factory=lambda: Uniform(100))
    noise: float = 1.0


class ModelDistribution(dist.TorchDistribution):
    """A diffusion model's law on the data as a Pyro distribution; built by :func:`as_distribution`.

    ``batch_shape == ()``, ``event_shape`` as given; ``log_prob(value)`` accepts ``(*sample_shape, *event)``
    and returns ``sample_shape``; ``sample(sample_shape)`` returns ``(*sample_shape, *event)``. No
    reparameterised sampling (``has_rsample = False``).
    """

    arg_constraints: dict = {}
    has_rsample = False

    def __init__(self, model: Model, event_shape, *, log_prob=None, sampler: Sampler | None = None,
                 validate_args: bool | None = None):
        if not isinstance(model, Model):
            raise ValueError(f"model must be a probdiff Model (or an oracle's .model(process)), got "
                             f"{type(model).__name__}")
        event_shape = torch.Size(int(n) for n in event_shape)
        if len(event_shape) < 1 or min(event_shape) < 1:
            raise ValueError(f"event_shape must be a non-empty shape of positive sizes, got {tuple(event_shape)}")
        log_prob = ODE() if log_prob is None else log_prob
        if not isinstance(log_prob, (ODE, ELBO)):
            raise ValueError(f"log_prob must be pd.ODE(...) or pd.ELBO(...), got {type(log_prob).__name__}")
        sampler = Sampler() if sampler is None else sampler
        if not isinstance(sampler, Sampler):
            raise ValueError(f"sampler must be a pd.Sampler, got {type(sampler).__name__}")
        self.model, self.scorer, self.sampler = model, log_prob, sampler
        self._prior = model.process.prior(event_shape)
        super().__init__(torch.Size(), event_shape, validate_args=validate_args)

    @property
    def support(self):
        """The support of the process' reference law (real vectors, or the chain's states)."""
        return self._prior.support

    def _flatten(self, value: torch.Tensor):
        n = len(self.event_shape)
        if not isinstance(value, torch.Tensor) or value.dim() < n or value.shape[value.dim() - n:] != self.event_shape:
            shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            raise ValueError(f"value must have shape (*sample_shape, {', '.join(map(str, self.event_shape))}), "
                             f"got {shape}")
        sample_shape = value.shape[:value.dim() - n]
        return value.reshape((-1,) + tuple(self.event_shape)), sample_shape

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        flat, sample_shape = self._flatten(value)
        if self._validate_args and value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise ValueError("value must be finite")
        if flat.shape[0] == 0:
            return torch.zeros(sample_shape, dtype=flat.dtype if flat.is_floating_point() else None)
        return self.scorer.log_prob(self.model, flat).reshape(sample_shape)

    def sample(self, sample_shape=torch.Size(), *, generator: torch.Generator | None = None) -> torch.Tensor:
        sample_shape = torch.Size(sample_shape)
        n = math.prod(sample_shape)
        if n == 0:
            return torch.zeros(sample_shape + self.event_shape)
        rev = _reverse(self.model, self.sampler.noise)
        with torch.no_grad():
            x = _sample(rev, (n,) + tuple(self.event_shape), solver=self.sampler.solver, grid=self.sampler.grid,
                        generator=generator).x
        return x.reshape(sample_shape + self.event_shape)

    def __repr__(self) -> str:
        return (f"ModelDistribution({self.model!r}, event_shape={tuple(self.event_shape)}, log_prob={self.scorer!r}, "
                f"sampler={self.sampler!r})")


def as_distribution(model: Model, event_shape, *, log_prob: ODE | ELBO | None = None, sampler: Sampler | None = None,
                    validate_args: bool | None = None) -> ModelDistribution:
    """The law of ``model``'s samples on data of shape ``event_shape``, as a Pyro ``TorchDistribution``.

    Args:
        model: a probdiff model (it carries its process), or an oracle's ``.model(process)``.
        event_shape: shape of one data point, e.g. ``(2,)`` or ``(1, 28, 28)``.
        log_prob: :class:`ODE` (default; exact log-likelihood of the probability flow) or :class:`ELBO`
            (a lower bound, documented as such).
        sampler: a :class:`Sampler` (default: ancestral steps on 100 uniform steps at noise 1).

    Example:
        >>> import torch, pyro, probdiff as pd
        >>> mixture = pd.oracles.GaussianMixture.ring(4, radius=2.0)
        >>> d = pd.as_distribution(mixture.model(pd.VPSDE()), (2,))
        >>> d.batch_shape, d.event_shape, d.sample((3,)).shape
        (torch.Size([]), torch.Size([2]), torch.Size([3, 2]))
    """
    return ModelDistribution(model, event_shape, log_prob=log_prob, sampler=sampler, validate_args=validate_args)
