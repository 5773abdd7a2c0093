r"""Variance-reduced divergence estimators: shifted Hutch++ and a Gaussian control variate (THEORY.md §13).

:func:`probdiff.log_likelihood` writes the probability-flow drift in denoiser form,
:math:`h(x, t) = a(t)\,x + b(t)\,D(x, t)` (:meth:`GaussianReverse.drift_coefficients
<probdiff.reverse.GaussianReverse.drift_coefficients>`), takes the divergence of the affine part exactly,
:math:`a(t)\,d`, and estimates only :math:`\nabla\cdot D`. The Jacobian
:math:`\partial D/\partial x = (\alpha_t/\sigma_t^2)\,\mathrm{Cov}[x_0 \mid x_t]` is symmetric positive
semi-definite and, for data near a low-dimensional set, close to a low-rank matrix plus a multiple of the
identity — the case the estimators here are built for. Both are unbiased; both give ``P >= 2`` i.i.d.
estimates per sample given what they share, so that their spread is the standard error.
"""

from __future__ import annotations

import torch

from .._util import check_positive_int, expand_like
from .traces import Hutchinson, ProbeKind, Trace, probe_vjps

__all__ = ["HutchPlusPlus", "GaussianControlVariate"]


def _dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-sample inner products of ``(P, B, *event)`` stacks: ``(P, B)``."""
    return (a * b).reshape(a.shape[0], a.shape[1], -1).sum(-1)


class HutchPlusPlus(Trace):
    r"""Hutch++ with a shift (Meyer, Musco, Musco & Woodruff, "Hutch++: Optimal Stochastic Trace
    Estimation", SOSA 2021, Alg. 1; the shift is THEORY.md §13).

    With ``m = num_matvecs`` products per sample and evaluation, ``k`` sketch probes :math:`S`
    (default ``m // 3``) and ``n = m - 2k`` residual probes :math:`z_p` (Rademacher, all drawn once per
    trajectory):

    1. :math:`Y = J^\top S` (``k`` vector-Jacobian products), shift :math:`c = \langle S, Y\rangle /
       \langle S, S\rangle`, :math:`Q = \mathrm{orth}(Y - cS)` (``d × k``);
    2. :math:`w_p = (I - QQ^\top) z_p`; ``k + n`` products give :math:`q_i^\top J` and :math:`w_p^\top J`;
    3. the ``n`` estimates

       .. math:: \widehat{\mathrm{tr}}_p = c\,d + \mathrm{tr}\big(Q^\top (J - cI) Q\big) + w_p^\top (J - cI)\, w_p .

    Since :math:`\mathrm{tr}\,J = c\,d + \mathrm{tr}(Q^\top (J-cI) Q) + \mathrm{tr}((I-QQ^\top)(J-cI)(I-QQ^\top))`
    for every orthonormal :math:`Q` and :math:`E[z z^\top] = I`, each estimate is unbiased given
    :math:`S` (``c`` and ``Q`` depend on :math:`S` only, never on the :math:`z_p`), so the spread of the
    ``n`` estimates is an unbiased estimate of the variance. The shift makes the estimator exact on
    multiples of the identity (where plain Hutch++ is worse than Rademacher Hutchinson, THEORY.md §13)
    and points the sketch at what is *not* a multiple of the identity. It is not exact on "identity plus
    rank ``<= k``" (the fitted :math:`c` differs from the identity's weight by about
    :math:`\mathrm{tr}(L)/d`, which tilts the sketch), but on such matrices it cut the variance ~40× below
    Rademacher Hutchinson at the same ``m = 9`` in ``d = 50`` (tests/likelihood/test_variance.py). The sketch uses :math:`J^\top S` (vector-Jacobian products, the only cheap products in
    reverse mode); the identity above holds for any :math:`Q`, so a non-symmetric Jacobian costs
    variance, never bias.

    Args:
        num_matvecs: ``m``, products per sample and evaluation (at least 4, so that ``n >= 2``).
        sketch: ``k``; default ``m // 3`` (Meyer et al.'s split). ``n = m - 2k`` must be ``>= 2``.
    """

    def __init__(self, num_matvecs: int = 12, sketch: int | None = None):
        m = check_positive_int("num_matvecs", num_matvecs)
        k = m // 3 if sketch is None else check_positive_int("sketch", sketch)
        if m - 2 * k < 2:
            raise ValueError(f"num_matvecs - 2 * sketch must be >= 2 (residual probes for the standard error), "
                             f"got num_matvecs={num_matvecs!r}, sketch={k}")
        self.num_matvecs, self.sketch = m, k

    def prepare(self, x, generator=None):
        probes = ProbeKind.RADEMACHER.draw((self.num_matvecs - self.sketch, *x.shape), like=x, generator=generator)
        return probes[:self.sketch], probes[self.sketch:]

    @property
    def num_estimates(self):
        return self.num_matvecs - 2 * self.sketch

    def matvecs(self, x):
        return self.num_matvecs

    def estimates(self, fn, x, state, *, process=None, t=None):
        if not isinstance(state, tuple) or state[0].shape[1:] != x.shape:
            raise ValueError("HutchPlusPlus needs the probes from prepare(x) for this x")
        s, z = state
        k, b, d = s.shape[0], x.shape[0], x[0].numel()
        field, y = probe_vjps(fn, x, s)                                     # (k, B, *event): S^T J
        c = _dot(s, y).sum(0) / _dot(s, s).sum(0)                           # (B,) shift
        sketch = (y - expand_like(c, y[0])[None] * s).reshape(k, b, d).permute(1, 2, 0)    # (B, d, k)
        q = torch.linalg.qr(sketch).Q                                       # (B, d, min(k, d))
        k = q.shape[2]                                                      # k >= d: Q spans all, exact
        zf = z.reshape(z.shape[0], b, d).permute(1, 2, 0)                   # (B, d, n)
        w = zf - q @ (q.transpose(1, 2) @ zf)
        cot = torch.cat([q, w], 2).permute(2, 0, 1).reshape(k + z.shape[0], *x.shape)
        _, v = probe_vjps(fn, x, cot)                                       # (k + n, B, *event): rows of J
        forms = _dot(v, cot)
        shifted = forms - c[None] * _dot(cot, cot)                          # quadratic forms of J - cI
        return field, c[None] * d + shifted[:k].sum(0, keepdim=True) + shifted[k:]

    def __repr__(self) -> str:
        return f"HutchPlusPlus(num_matvecs={self.num_matvecs}, sketch={self.sketch})"


class GaussianControlVariate(Trace):
    r"""Control variate with a known trace: the exact denoiser of a Gaussian surrogate of the data.

    For data :math:`\mathcal N(\mu, C)` the denoiser of a Gaussian process is affine,
    :math:`D_0(x, t) = \mu + \alpha_t C(\alpha_t^2 C + \sigma_t^2 I)^{-1}(x - \alpha_t\mu)`, with the
    closed-form trace :math:`\mathrm{tr}\,\partial D_0/\partial x = \sum_i \alpha_t\lambda_i /
    (\alpha_t^2\lambda_i + \sigma_t^2)` (:math:`\lambda_i` the eigenvalues of :math:`C`). The estimate is

    .. math:: \widehat{\nabla\cdot D} = \widehat{\mathrm{tr}}\big(\partial (D - D_0)/\partial x\big)
              + \mathrm{tr}\,\partial D_0/\partial x ,

    unbiased whatever the surrogate; the variance that :math:`D_0` explains (all of it for Gaussian data,
    the bulk near :math:`t_{max}` for any data) is removed (THEORY.md §13; the classical control variate,
    e.g. Owen, *Monte Carlo theory, methods and examples*, §8.9). Only meaningful where the probed part is
    the denoiser, as in :func:`probdiff.log_likelihood`, which passes ``process`` and ``t``.

    Args:
        mean: :math:`\mu`, ``(d,)`` (the data's mean over the flattened event).
        cov: :math:`C`, ``(d, d)`` symmetric positive semi-definite (e.g. the data's covariance).
        base: the estimator of the remainder's trace (default ``Hutchinson(2)``).
    """

    def __init__(self, mean: torch.Tensor, cov: torch.Tensor, base: Trace | None = None):
        mean, cov = torch.as_tensor(mean), torch.as_tensor(cov)
        if mean.dim() != 1 or cov.shape != (mean.shape[0], mean.shape[0]):
            raise ValueError(f"mean must be (d,) and cov (d, d), got {tuple(mean.shape)} and {tuple(cov.shape)}")
        if not torch.allclose(cov, cov.transpose(0, 1), rtol=1e-6, atol=1e-8):
            raise ValueError("cov must be symmetric")
        base = Hutchinson(2) if base is None else base
        if not isinstance(base, Trace):
            raise ValueError(f"base must be a Trace, got {base!r}")
        eigvals, self.eigvecs = torch.linalg.eigh(cov)
        if bool((eigvals < -1e-8 * eigvals.abs().max().clamp_min(1.0)).any()):
            raise ValueError("cov must be positive semi-definite")
        self.mean, self.eigvals, self.base = mean, eigvals.clamp_min(0.0), base

    def prepare(self, x, generator=None):
        return self.base.prepare(x, generator)

    @property
    def num_estimates(self):
        return self.base.num_estimates

    def matvecs(self, x):
        return self.base.matvecs(x)

    def standard_error(self, estimates):
        return self.base.standard_error(estimates)

    def _gains(self, process, t, like):
        alpha, sigma = (v.to(like.dtype) for v in (process.alpha(t), process.sigma(t)))
        lam = self.eigvals.to(like)
        gain = alpha[..., None] * lam / (alpha[..., None] ** 2 * lam + sigma[..., None] ** 2)
        return alpha, gain                                                  # gain: (B or 1, d)

    def surrogate(self, process, z: torch.Tensor, t) -> torch.Tensor:
        """:math:`D_0(z, t)`, ``(n, *event)``."""
        alpha, gain = self._gains(process, torch.as_tensor(t), z)
        mu, u = self.mean.to(z), self.eigvecs.to(z)
        flat = z.reshape(z.shape[0], -1)
        rot = (flat - alpha.reshape(-1, 1) * mu) @ u
        return (mu + (gain.reshape(-1, u.shape[0]) * rot) @ u.T).reshape(z.shape)

    def estimates(self, fn, x, state, *, process=None, t=None):
        if process is None or t is None:
            raise ValueError("GaussianControlVariate needs the process and time of the denoiser it corrects")
        if x[0].numel() != self.mean.shape[0]:
            raise ValueError(f"the surrogate has dimension {self.mean.shape[0]}, x has {x[0].numel()}")
        t = torch.as_tensor(t)

        def remainder(z):
            field, part = fn(z)
            tz = t.repeat(z.shape[0] // t.shape[0]) if t.dim() == 1 else t
            return field, part - self.surrogate(process, z, tz)

        field, est = self.base.estimates(remainder, x, state, process=process, t=t)
        known = self._gains(process, t, x)[1].sum(-1)
        return field, est + known.expand(x.shape[0])[None]

    def __repr__(self) -> str:
        return f"GaussianControlVariate(dim={self.mean.shape[0]}, base={self.base!r})"
