r"""Exact models: the ground truth every test and benchmark leans on (THEORY.md §2).

* :class:`GaussianMixture` — data :math:`p_0 = \sum_k w_k\mathcal N(\mu_k, C_k)` stay a mixture under
  any linear Gaussian process, :math:`p_t = \sum_k w_k\mathcal N(\alpha_t\mu_k, \alpha_t^2C_k + \sigma_t^2I)`,
  so :math:`\log p_t`, the score and the denoiser are closed forms at every t.
* Empirical data (:class:`~probdiff.oracles.Empirical`) — a finite data set :math:`\{y_i\}_{i=1}^N`. Under a Gaussian process the optimal
  denoiser is the softmax-weighted mean
  :math:`D^*(x,t) = \sum_i w_i y_i`, :math:`w = \mathrm{softmax}_i(-\|x-\alpha_t y_i\|^2/2\sigma_t^2)`,
  one Gaussian-kernel mean-shift step (Chen et al., "A Geometric Perspective on Diffusion Models",
  2023, §4); :class:`EmpiricalGaussianModel` is registered as the exact model of
  :class:`~probdiff.oracles.Empirical` data under every Gaussian process.
"""

from __future__ import annotations

import math

import torch

from .._util import check_finite, check_positive, check_positive_int, expand_like
from ..models.gaussian import GaussianModel
from ..processes.gaussian import GaussianProcess, as_gaussian
from .empirical import Empirical, exact_model

__all__ = ["GaussianMixture", "MixtureModel", "EmpiricalGaussianModel"]

_LOG_2PI = math.log(2 * math.pi)


# ==================================================================== Gaussian mixture
class GaussianMixture:
    r"""A Gaussian mixture in :math:`\mathbb R^d` with full covariances, and its exact diffused law.

    Args:
        weights: ``(K,)`` non-negative, summing to one.
        means: ``(K, d)``.
        covs: ``(K, d, d)`` symmetric positive definite.
        validate_args: check the arguments (default True).

    Each covariance is diagonalised once, :math:`C_k = U_k\,\mathrm{diag}(e_k)\,U_k^\top`, so that
    :math:`\alpha^2C_k + \sigma^2I = U_k\,\mathrm{diag}(\alpha^2e_k + \sigma^2)\,U_k^\top` is inverted in
    :math:`O(d^2)` per point and time. Per component the denoiser is
    :math:`\mu_k + \alpha C_k(\alpha^2C_k+\sigma^2I)^{-1}(x-\alpha\mu_k)`, mixed with the posterior
    component weights.
    """

    def __init__(self, weights, means, covs, *, validate_args: bool = True):
        weights, means, covs = (torch.as_tensor(v) for v in (weights, means, covs))
        dtype = torch.promote_types(torch.promote_types(means.dtype, covs.dtype), torch.get_default_dtype())
        weights, means, covs = weights.to(dtype), means.to(dtype), covs.to(dtype)
        if validate_args:
            _check_mixture(weights, means, covs)
        self.weights, self.means, self.covs = weights, means, covs
        self.eigvals, self.eigvecs = torch.linalg.eigh(covs)
        self._chol = torch.linalg.cholesky(covs)

    @classmethod
    def ring(cls, modes: int = 8, radius: float = 4.0, variance: float = 0.05, *,
             dtype: torch.dtype | None = None) -> "GaussianMixture":
        r"""``modes`` equally weighted isotropic Gaussians of covariance ``variance * I`` in 2-D, with means
        :math:`r(\cos\theta_k, \sin\theta_k)`, :math:`\theta_k = 2\pi k/\mathrm{modes}`: the multi-modal toy
        law of the sampler tests, benchmarks and examples (default dtype: torch's default).

        Example:
            >>> import probdiff as pd
            >>> ring = pd.oracles.GaussianMixture.ring(4, radius=2.0)
            >>> ring.num_components, ring.dim, ring.weights.tolist()
            (4, 2, [0.25, 0.25, 0.25, 0.25])
        """
        modes = check_positive_int("modes", modes)
        check_positive("radius", radius)
        check_positive("variance", variance)
        dtype = dtype or torch.get_default_dtype()
        angles = torch.arange(modes, dtype=dtype) * (2 * math.pi / modes)
        means = radius * torch.stack([angles.cos(), angles.sin()], 1)
        return cls(torch.full((modes,), 1.0 / modes, dtype=dtype), means,
                   variance * torch.eye(2, dtype=dtype).expand(modes, 2, 2))

    @classmethod
    def correlated(cls, dim: int = 16, weights=(0.1, 0.2, 0.3, 0.4), *, seed: int = 0,
                   dtype: torch.dtype = torch.float64) -> "GaussianMixture":
        r"""Unequally weighted Gaussians with random means and random full covariances in ``dim`` dimensions:
        the 16-D oracle of the sampler and schedule tests and benchmarks (where the 2-D :meth:`ring` is too
        easy). From a generator seeded with ``seed``, in ``dtype``: means :math:`\mu_k = 2 z_k`,
        :math:`z_k \sim \mathcal N(0, I)`, then covariances :math:`\Sigma_k = 0.2\,A_kA_k^\top + 0.05\,I` with
        :math:`A_k` of independent :math:`\mathcal N(0, 1/\mathrm{dim})` entries (so every eigenvalue is at
        least 0.05); one component per weight.

        Example:
            >>> import probdiff as pd
            >>> mix = pd.oracles.GaussianMixture.correlated()
            >>> mix.num_components, mix.dim, mix.weights.tolist()
            (4, 16, [0.1, 0.2, 0.3, 0.4])
        """
        dim = check_positive_int("dim", dim)
        w = torch.as_tensor(weights, dtype=dtype)
        if w.dim() != 1 or w.numel() < 1:
            raise ValueError(f"weights must be a non-empty sequence of component weights, got {weights!r}")
        g = torch.Generator().manual_seed(seed)
        k = w.numel()
        means = 2.0 * torch.randn(k, dim, generator=g, dtype=dtype)
        a = torch.randn(k, dim, dim, generator=g, dtype=dtype) / math.sqrt(dim)
        covs = 0.2 * a @ a.transpose(1, 2) + 0.05 * torch.eye(dim, dtype=dtype)
        return cls(w, means, covs)

    @property
    def dim(self) -> int:
        """Dimension d of the data."""
        return self.means.shape[-1]

    @property
    def num_components(self) -> int:
        return self.weights.shape[0]

    def to(self, *args, **kwargs) -> "GaussianMixture":
        """A copy on another device or dtype (as ``Tensor.to``)."""
        return GaussianMixture(self.weights.to(*args, **kwargs), self.means.to(*args, **kwargs),
                               self.covs.to(*args, **kwargs), validate_args=False)

    # ---------------------------------------------------------------- data law
    def sample(self, n: int, *, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` i.i.d. draws, shape ``(n, d)``."""
        if int(n) != n or n < 1:
            raise ValueError(f"n must be a positive integer, got {n}")
        device = self.means.device
        comp = torch.multinomial(self.weights, int(n), replacement=True, generator=generator)
        z = torch.randn(int(n), self.dim, dtype=self.means.dtype, device=device, generator=generator)
        return self.means[comp] + torch.einsum("nij,nj->ni", self._chol[comp], z)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """Log-density of the data law at ``x`` of shape ``(batch, d)``."""
        x = self._check_x(x)
        ones = torch.ones(x.shape[0], dtype=x.dtype, device=x.device)
        return self._terms(x, ones, torch.zeros_like(ones))[0]

    # ---------------------------------------------------------------- diffused law
    def marginal_log_prob(self, process: GaussianProcess, x: torch.Tensor, t) -> torch.Tensor:
        """:math:`\\log p_t(x)` under ``process``, shape ``(batch,)``."""
        x = self._check_x(x)
        t = as_gaussian(process).check_time(t, x)
        return self._terms(x, process.alpha(t), process.sigma(t))[0]

    def condition(self, A, noise_cov, y) -> "GaussianMixture":
        r"""The exact posterior :math:`p(x \mid y)` for the observation :math:`y = A x + n`,
        :math:`n \sim \mathcal N(0, S)` (THEORY.md §11): again a Gaussian mixture, with

        .. math::

            w'_k \propto w_k\,\mathcal N(y;\ A\mu_k,\ A C_k A^\top + S),\quad
            K_k = C_k A^\top (A C_k A^\top + S)^{-1},\quad
            \mu'_k = \mu_k + K_k (y - A\mu_k),\quad C'_k = C_k - K_k A C_k

        (the Kalman update per component; Bishop, "Pattern Recognition and Machine Learning", §2.3.3).
        Pushed through any Gaussian process, its :meth:`model` is the exact conditional denoiser and score.

        Args:
            A: ``(m, d)`` observation operator (masking, averaging, projection, ...).
            noise_cov: :math:`S`, ``(m, m)`` symmetric positive definite, or a positive number (``S = c I``).
            y: ``(m,)`` the observation.
        """
        dtype, device = self.means.dtype, self.means.device
        A = torch.as_tensor(A, dtype=dtype, device=device)
        if A.dim() != 2 or A.shape[1] != self.dim:
            raise ValueError(f"A must have shape (m, {self.dim}), got {tuple(A.shape)}")
        m = A.shape[0]
        y = torch.as_tensor(y, dtype=dtype, device=device)
        if y.shape != (m,):
            raise ValueError(f"y must have shape ({m},) (one observation of A x), got {tuple(y.shape)}")
        S = torch.as_tensor(noise_cov, dtype=dtype, device=device)
        if S.dim() == 0:
            check_positive("noise_cov", float(S))
            S = float(S) * torch.eye(m, dtype=dtype, device=device)
        if S.shape != (m, m) or not bool(torch.linalg.cholesky_ex(S).info.eq(0)):
            raise ValueError(f"noise_cov must be a positive number or a ({m}, {m}) positive definite matrix")
        for name, v in (("A", A), ("y", y)):
            check_finite(name, v)
        AC = A @ self.covs                                                        # (K, m, d)
        innov = AC @ A.T + S                                                      # (K, m, m)
        resid = y - self.means @ A.T                                              # (K, m)
        chol = torch.linalg.cholesky(innov)
        gain = torch.linalg.solve(innov, AC).transpose(-1, -2)                    # (K, d, m) = C A^T innov^-1
        means = self.means + (gain @ resid[..., None])[..., 0]
        covs = self.covs - gain @ AC
        covs = 0.5 * (covs + covs.transpose(-1, -2))
        white = torch.linalg.solve_triangular(chol, resid[..., None], upper=False)[..., 0]
        log_evidence = (-0.5 * (white**2).sum(-1) - torch.log(torch.diagonal(chol, dim1=-2, dim2=-1)).sum(-1)
                        - 0.5 * m * _LOG_2PI)
        weights = torch.softmax(torch.log(self.weights) + log_evidence, dim=0)
        return GaussianMixture(weights, means, covs, validate_args=False)

    def model(self, process: GaussianProcess) -> "GaussianModel":
        """The exact model (denoiser, score, epsilon, velocity) of this mixture under ``process``."""
        return MixtureModel(self, as_gaussian(process))

    # ---------------------------------------------------------------- internals
    def _check_x(self, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(x, torch.Tensor) or x.dim() != 2 or x.shape[1] != self.dim:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"x must have shape (batch, {self.dim}), got {shape}")
        check_finite("x", x)
        return x

    def _terms(self, x: torch.Tensor, alpha: torch.Tensor, sigma: torch.Tensor, need: str = ""):
        """Log-density, and (when asked) the score and the denoiser, at ``x`` with per-sample
        ``alpha``, ``sigma`` of shape ``(batch,)``."""
        dtype = torch.promote_types(x.dtype, self.means.dtype)
        xx, a, s = x.to(dtype), alpha.to(dtype), sigma.to(dtype)
        mu, e, u = (v.to(device=x.device, dtype=dtype) for v in (self.means, self.eigvals, self.eigvecs))
        logw = torch.log(self.weights.to(device=x.device, dtype=dtype))
        resid = xx[:, None, :] - a[:, None, None] * mu[None]                       # (B, K, d)
        z = torch.einsum("kde,bkd->bke", u, resid)                                  # U^T resid
        var = a[:, None, None] ** 2 * e[None] + s[:, None, None] ** 2               # (B, K, d)
        log_n = -0.5 * ((z**2 / var).sum(-1) + torch.log(var).sum(-1) + self.dim * _LOG_2PI)
        joint = logw[None] + log_n
        log_p = torch.logsumexp(joint, dim=1)
        out = [log_p.to(x.dtype)]
        if need:
            post = torch.softmax(joint, dim=1)[..., None]                             # (B, K, 1)
            if "score" in need:
                score_k = -torch.einsum("kde,bke->bkd", u, z / var)
                out.append((post * score_k).sum(1).to(x.dtype))
            if "denoise" in need:
                gain = a[:, None, None] * e[None] / var
                den_k = mu[None] + torch.einsum("kde,bke->bkd", u, gain * z)
                out.append((post * den_k).sum(1).to(x.dtype))
        return out

    def __repr__(self) -> str:
        return f"GaussianMixture(num_components={self.num_components}, dim={self.dim})"


def _check_mixture(weights, means, covs) -> None:
    if weights.dim() != 1:
        raise ValueError(f"weights must have shape (K,), got {tuple(weights.shape)}")
    k = weights.shape[0]
    if means.dim() != 2 or means.shape[0] != k:
        raise ValueError(f"means must have shape (K, d) = ({k}, d), got {tuple(means.shape)}")
    d = means.shape[1]
    if covs.shape != (k, d, d):
        raise ValueError(f"covs must have shape (K, d, d) = ({k}, {d}, {d}), got {tuple(covs.shape)}")
    for name, v in (("weights", weights), ("means", means), ("covs", covs)):
        check_finite(name, v)
    if bool((weights < 0).any()) or abs(float(weights.sum()) - 1.0) > 1e-5:
        raise ValueError(f"weights must be non-negative and sum to 1, got sum {float(weights.sum()):.6g}")
    if not torch.allclose(covs, covs.transpose(-1, -2), rtol=1e-6, atol=1e-8):
        raise ValueError("covs must be symmetric")
    if not bool(torch.linalg.cholesky_ex(covs).info.eq(0).all()):
        raise ValueError("covs must be positive definite")


class MixtureModel(GaussianModel):
    """Exact score and denoiser of a :class:`GaussianMixture` under a Gaussian process."""

    def __init__(self, mixture: GaussianMixture, process: GaussianProcess):
        super().__init__(None, process)
        self.mixture = mixture

    def _eval(self, x, t, need):
        t = self._prepare(x, t)
        self.mixture._check_x(x)
        return self.mixture._terms(x, self.process.alpha(t), self.process.sigma(t), need)[1]

    def denoise(self, x, t):
        return self._eval(x, t, "denoise")

    def score(self, x, t):
        return self._eval(x, t, "score")

    def epsilon(self, x, t):
        t = self._prepare(x, t)
        return -expand_like(self.process.sigma(t), x) * self.score(x, t)

    def log_prob(self, x, t) -> torch.Tensor:
        """Exact :math:`\\log p_t(x)`."""
        return self.mixture.marginal_log_prob(self.process, x, t)

    def __repr__(self) -> str:
        return f"{self.mixture!r}.model({self.process!r})"


class EmpiricalGaussianModel(GaussianModel):
    """Optimal denoiser of a finite data set under a Gaussian process (softmax-weighted mean)."""

    def __init__(self, empirical: Empirical, process: GaussianProcess):
        super().__init__(None, process)
        self.empirical = empirical

    def denoise(self, x, t):
        t = self._prepare(x, t)
        self.empirical._check_x(x)
        return self.empirical.kernel_scan(x, self.process.alpha(t), self.process.sigma(t))[1]

    def log_prob(self, x, t) -> torch.Tensor:
        """Exact :math:`\\log p_t(x)` of the diffused empirical law."""
        return self.empirical.marginal_log_prob(self.process, x, t)

    def __repr__(self) -> str:
        return f"{self.empirical!r}.model({self.process!r})"



@exact_model.register
def _empirical_gaussian(process: GaussianProcess, empirical: Empirical) -> EmpiricalGaussianModel:
    return EmpiricalGaussianModel(empirical, process)
