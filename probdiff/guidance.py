r"""Guidance: models of a conditional law built from an unconditional model (THEORY.md §11).

Every object here is a :class:`~probdiff.GaussianModel` or a rule that makes one, so every sampler accepts
the result. With :math:`p_t(x \mid y) \propto p_t(x)\,p_t(y \mid x)` the conditional score is
:math:`s(x, t) + \nabla_x \log p_t(y \mid x)`, i.e. in denoiser form (Tweedie)

.. math::

    D(x, t \mid y) = D(x, t) + \frac{\sigma_t^2}{\alpha_t}\,\nabla_x \log p_t(y \mid x).

:math:`p_t(y\mid x_t) = \int p(y\mid x_0)\,p(x_0\mid x_t)\,dx_0` is intractable for a learned model; the rules
approximate :math:`p(x_0 \mid x_t)` for a linear-Gaussian observation :math:`y = A x_0 + n`,
:math:`n \sim \mathcal N(0, S)`:

* :class:`DPS` (Chung et al., "Diffusion Posterior Sampling for General Noisy Inverse Problems", ICLR 2023):
  a point mass at :math:`D(x_t, t)`, so :math:`\nabla_x \log \mathcal N(y; A D, S)`.
* :class:`MomentMatching` (Boys et al., "Tweedie Moment Projected Diffusions for Inverse Problems", 2023;
  Rozet et al., "Learning Diffusion Priors from Observations by Expectation Maximization", 2024):
  a Gaussian with Tweedie's covariance :math:`\mathrm{Cov}[x_0\mid x_t] = (\sigma_t^2/\alpha_t)\,\partial D/\partial x`,
  so :math:`p_t(y\mid x) \approx \mathcal N(y; A D, S + A\,\mathrm{Cov}\,A^\top)`; exact when the data are
  Gaussian.

:class:`ClassifierFree` (Ho & Salimans, "Classifier-Free Diffusion Guidance", 2021) combines two models.
"""

from __future__ import annotations

import torch

from ._util import check_finite, expand_like
from .models.gaussian import GaussianModel

__all__ = ["GuidanceRule", "DPS", "MomentMatching", "GuidedModel", "ClassifierFree"]


class GuidanceRule:
    r"""Base of guidance rules: :meth:`grad` approximates :math:`\nabla_x \log p_t(y \mid x)`."""

    def grad(self, model: GaussianModel, observation, x: torch.Tensor, t: torch.Tensor):
        """``(grad, denoised)``: the approximate likelihood gradient at ``x`` (shaped like ``x``) and the
        unconditional model's :math:`D(x, t)` (from the same evaluation)."""
        raise NotImplementedError


def _flat(v: torch.Tensor) -> torch.Tensor:
    return v.reshape(v.shape[0], -1)


class DPS(GuidanceRule):
    r"""Diffusion posterior sampling: :math:`\zeta\,\nabla_x \log\mathcal N(y;\ A\,D(x,t),\ S)`
    (Chung et al. 2023, Algorithm 1, in its likelihood form; their step-size normalisation by
    :math:`\lVert y - A D\rVert` is a choice of :math:`\zeta`). One backward pass per evaluation.

    Args:
        scale: :math:`\zeta > 0` (1: the plain likelihood gradient).
    """

    def __init__(self, scale: float = 1.0):
        check_finite("scale", scale)
        if scale <= 0:
            raise ValueError(f"scale must be > 0, got {scale}")
        self.scale = float(scale)

    def grad(self, model, observation, x, t):
        with torch.enable_grad():
            xg = x.detach().requires_grad_(True)
            denoised = model.denoise(xg, t)
            log_lik = observation.log_likelihood(denoised).sum()
            (g,) = torch.autograd.grad(log_lik, xg)
        return self.scale * g, denoised.detach()

    def __repr__(self) -> str:
        return f"DPS(scale={self.scale:g})"


class MomentMatching(GuidanceRule):
    r"""Moment-matching guidance: :math:`p_t(y\mid x) \approx \mathcal N\big(y;\ A D,\ \Sigma\big)`,
    :math:`\Sigma = S + \tfrac{\sigma_t^2}{\alpha_t} (A J) A^\top`, :math:`J = \partial D/\partial x`, and
    :math:`\nabla_x \log p_t(y\mid x) \approx (A J)^\top \Sigma^{-1} (y - A D)` (the covariance held fixed,
    as in Rozet et al. 2024, §3). :math:`A J` costs one vector-Jacobian product per row of :math:`A`
    (``m`` backward passes); :math:`\Sigma` is solved densely (fine for ``m`` up to a few thousand).
    Exact for Gaussian data, where :math:`p(x_0\mid x_t)` is Gaussian with Tweedie's covariance.
    """

    def grad(self, model, observation, x, t):
        p = model.process
        t = p.check_time(t, x)
        A = observation.A.to(dtype=x.dtype, device=x.device)
        m = A.shape[0]
        with torch.enable_grad():
            xg = x.detach().requires_grad_(True)
            denoised = model.denoise(xg, t)
            ad = _flat(denoised) @ A.T                                            # (B, m)
            rows = [torch.autograd.grad(ad[:, i].sum(), xg, retain_graph=i < m - 1)[0] for i in range(m)]
        aj = torch.stack([_flat(r) for r in rows], 1)                           # (B, m, D) = A J per sample
        scale = (p.sigma(t) ** 2 / p.alpha(t)).to(x.dtype)
        cov = observation.noise_cov(x.dtype, x.device) + scale[:, None, None] * (aj @ A.T)
        cov = 0.5 * (cov + cov.transpose(-1, -2))
        resid = observation.y.to(dtype=x.dtype, device=x.device) - ad.detach()
        w = torch.linalg.solve(cov, resid[..., None])                           # (B, m, 1)
        g = (aj.transpose(-1, -2) @ w)[..., 0]
        return g.reshape(x.shape), denoised.detach()

    def __repr__(self) -> str:
        return "MomentMatching()"


class GuidedModel(GaussianModel):
    r"""A model of :math:`p(x \mid y)`: the unconditional ``model`` plus a guidance rule's likelihood gradient,
    :math:`D(x,t\mid y) = D(x,t) + (\sigma_t^2/\alpha_t)\,g(x,t)`. Built by :func:`probdiff.condition`.

    Args:
        model: the unconditional :class:`~probdiff.GaussianModel`.
        observation: the observation (e.g. :class:`probdiff.LinearGaussian`).
        rule: a :class:`GuidanceRule`.
    """

    def __init__(self, model: GaussianModel, observation, rule: GuidanceRule):
        if not isinstance(model, GaussianModel):
            raise ValueError(f"model must be a GaussianModel, got {type(model).__name__}")
        if not isinstance(rule, GuidanceRule):
            raise ValueError(f"guidance must be a GuidanceRule (DPS(), MomentMatching()), got {type(rule).__name__}")
        super().__init__(None, model.process)
        self.base, self.observation, self.rule = model, observation, rule

    def denoise(self, x, t):
        t = self._prepare(x, t)
        g, denoised = self.rule.grad(self.base, self.observation, x, t)
        p = self.process
        return denoised + expand_like(p.sigma(t) ** 2 / p.alpha(t), x).to(x.dtype) * g

    def __repr__(self) -> str:
        return f"GuidedModel({self.base!r}, {self.observation!r}, {self.rule!r})"


class ClassifierFree(GaussianModel):
    r"""Classifier-free guidance (Ho & Salimans 2021, §3): the score combination
    :math:`(1 + w)\,s(x, t\mid c) - w\,s(x, t)` with guidance strength :math:`w`, written here with
    ``scale`` :math:`\gamma = 1 + w` as :math:`s_u + \gamma\,(s_c - s_u)`. Since denoiser, noise prediction and
    score are affine in each other with the same coefficients, the same combination holds for all of them;
    it is computed on the denoisers. ``scale = 1`` is the conditional model, ``0`` the unconditional one.

    Args:
        conditional, unconditional: Gaussian models of the same process.
        scale: :math:`\gamma \ge 0`.
    """

    def __init__(self, conditional: GaussianModel, unconditional: GaussianModel, scale: float):
        for name, m in (("conditional", conditional), ("unconditional", unconditional)):
            if not isinstance(m, GaussianModel):
                raise ValueError(f"{name} must be a GaussianModel, got {type(m).__name__}")
        if conditional.process is not unconditional.process:
            raise ValueError("conditional and unconditional must be models of the same process object")
        check_finite("scale", scale)
        if scale < 0:
            raise ValueError(f"scale must be >= 0, got {scale}")
        super().__init__(None, conditional.process)
        self.conditional, self.unconditional, self.scale = conditional, unconditional, float(scale)

    def denoise(self, x, t):
        t = self._prepare(x, t)
        d_u = self.unconditional.denoise(x, t)
        return d_u + self.scale * (self.conditional.denoise(x, t) - d_u)

    def __repr__(self) -> str:
        return f"ClassifierFree({self.conditional!r}, {self.unconditional!r}, scale={self.scale:g})"
