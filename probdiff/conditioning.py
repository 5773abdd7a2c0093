r"""Conditioning a diffusion model on an observation: :func:`condition` (THEORY.md §11).

``pd.condition(model, pd.LinearGaussian(A, noise_std, y))`` returns a model of the posterior
:math:`p(x_0 \mid y)`, :math:`y = A x_0 + \varsigma n`, that every sampler accepts:

* exact for the Gaussian-mixture oracle (:meth:`GaussianMixture.condition
  <probdiff.oracles.GaussianMixture.condition>`: the posterior is again a mixture), so posterior sampling
  has ground truth in any dimension;
* for any other Gaussian model, a guidance rule of :mod:`probdiff.guidance` (``guidance=pd.guidance.DPS()``
  or ``pd.guidance.MomentMatching()``), an approximation.

:func:`condition` is a ``functools.singledispatch`` function on the model's class: register the exact
conditional of your own model class with ``@probdiff.conditioning.condition.register``.
"""

from __future__ import annotations

import functools
import math

import torch

from ._util import check_finite
from .guidance import GuidanceRule, GuidedModel
from .models.gaussian import GaussianModel
from .oracles.gaussian import MixtureModel

__all__ = ["LinearGaussian", "condition"]


class LinearGaussian:
    r"""The observation :math:`y = A x + \varsigma n`, :math:`n \sim \mathcal N(0, I)`, of one data point
    (``x`` flattened to ``D`` elements).

    Args:
        A: ``(m, D)`` operator (masking rows of the identity, averages, a random projection, ...).
        noise_std: :math:`\varsigma > 0`.
        y: ``(m,)`` the observed values.
    """

    def __init__(self, A, noise_std: float, y):
        A = torch.as_tensor(A)
        y = torch.as_tensor(y, dtype=A.dtype if A.is_floating_point() else None)
        if A.dim() != 2:
            raise ValueError(f"A must have shape (m, D), got {tuple(A.shape)}")
        if y.shape != (A.shape[0],):
            raise ValueError(f"y must have shape ({A.shape[0]},) (one value per row of A), got {tuple(y.shape)}")
        check_finite("A", A)
        check_finite("y", y)
        check_finite("noise_std", noise_std)
        if noise_std <= 0:
            raise ValueError(f"noise_std must be > 0, got {noise_std}")
        self.A, self.y, self.noise_std = A, y, float(noise_std)

    def noise_cov(self, dtype=None, device=None) -> torch.Tensor:
        """:math:`S = \\varsigma^2 I`, ``(m, m)``."""
        return self.noise_std**2 * torch.eye(self.A.shape[0], dtype=dtype or self.A.dtype, device=device)

    def log_likelihood(self, x: torch.Tensor) -> torch.Tensor:
        """:math:`\\log \\mathcal N(y;\\ A x,\\ \\varsigma^2 I)` for ``x`` of shape ``(batch, *event)``; ``(batch,)``."""
        if x.dim() < 2 or math.prod(x.shape[1:]) != self.A.shape[1]:
            raise ValueError(f"x must have shape (batch, *event) with {self.A.shape[1]} elements per point, "
                             f"got {tuple(x.shape)}")
        A, y = self.A.to(dtype=x.dtype, device=x.device), self.y.to(dtype=x.dtype, device=x.device)
        r = (x.reshape(x.shape[0], -1) @ A.T - y) / self.noise_std
        m = A.shape[0]
        return -0.5 * (r**2).sum(-1) - m * math.log(self.noise_std) - 0.5 * m * math.log(2 * math.pi)

    def __repr__(self) -> str:
        return f"LinearGaussian(A: {tuple(self.A.shape)}, noise_std={self.noise_std:g})"


@functools.singledispatch
def condition(model, observation, *, guidance: GuidanceRule | None = None):
    """A model of :math:`p(x_0 \\mid y)` for ``observation`` (a :class:`LinearGaussian`).

    Exact for the Gaussian-mixture oracle's models (``guidance`` must then be None); for other Gaussian
    models ``guidance`` chooses the approximation (:class:`~probdiff.guidance.DPS`,
    :class:`~probdiff.guidance.MomentMatching`) and the result is a
    :class:`~probdiff.guidance.GuidedModel`. Register an exact conditional for a model class with
    ``@probdiff.conditioning.condition.register``.

    Example:
        >>> import torch, probdiff as pd
        >>> mixture = pd.oracles.GaussianMixture.ring(4, radius=2.0)
        >>> obs = pd.LinearGaussian(torch.tensor([[1.0, 0.0]]), 0.1, torch.tensor([2.0]))
        >>> posterior = pd.condition(mixture.model(pd.VPSDE()), obs)        # exact: a mixture again
        >>> sol = pd.sample(pd.reverse(posterior, 1.0), (100, 2), solver=pd.solvers.Ancestral(),
        ...                 grid=pd.grids.LogSNR(50))
        >>> bool((sol.x[:, 0] - 2.0).abs().mean() < 0.5)
        True
    """
    if not isinstance(model, GaussianModel):
        raise ValueError(f"condition needs a Gaussian model (or a registered exact conditional), got "
                         f"{type(model).__name__}")
    if guidance is None:
        raise ValueError(f"{type(model).__name__} has no exact conditional: give guidance=pd.guidance.DPS() or "
                         "pd.guidance.MomentMatching()")
    _check_observation(observation)
    return GuidedModel(model, observation, guidance)


def _check_observation(observation) -> None:
    if not isinstance(observation, LinearGaussian):
        raise ValueError(f"observation must be a pd.LinearGaussian, got {type(observation).__name__}")


@condition.register
def _condition_mixture(model: MixtureModel, observation, *, guidance: GuidanceRule | None = None):
    _check_observation(observation)
    if guidance is not None:
        return GuidedModel(model, observation, guidance)   # guidance on an oracle: to measure the rule
    mixture = model.mixture
    posterior = mixture.condition(observation.A, observation.noise_cov(), observation.y)
    return posterior.model(model.process)
