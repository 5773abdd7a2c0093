r"""A time proposal for the continuous-time Blackout ELBO fitted to a model (importance sampling of t).

The diffusion term of the bound is :math:`\int_{t_{lo}}^{t_{max}} I(t)\,dt` with
:math:`I(t) = \frac{p_t}{1-p_t}E_{n_t}\sum_{px}(\hat y - m\log\hat y + m\log m - m)`
(:func:`probdiff.likelihood.blackout_elbo`). Drawn with density :math:`\pi`, one draw has second moment
:math:`\int E[I_1(t)^2]/\pi(t)\,dt`, smallest for :math:`\pi \propto \sqrt{E[I_1(t)^2]}` (:math:`I_1` the
single-draw integrand; e.g. Owen, "Monte Carlo theory, methods and examples", 2013, §9.1). Where that profile
lies depends on the model: for an exact data oracle in the middle of the time range, where the data points
become confusable; for a trained network at small :math:`t` too, where it cannot tell which photons are
missing. :class:`FittedBlackoutTime` estimates it from pilot draws, as a piecewise-constant density over equal
bins of the logit variable :math:`v = \log(e^t - 1)` (bin probabilities :math:`\propto` the square root of the
bin's estimated :math:`\int E[I_1^2]\,dt\,dv/dt`), mixed with the process' default proposal (share
``defensive``), so that the weight of every draw stays within :math:`1/\text{defensive}` of the default's. The
share is chosen among candidates from the same pilot draws by a cross-fitted second moment (bin masses fitted on
one half of the draws, each candidate mixture scored on the other, and the other way round), not in-sample: the
draws that fitted a bin's mass would judge it too (a bin whose mass they happened to miss gets little proposal
mass and no draw to show it), which favours small shares. The
fitted proposal is fixed before the draws of the bound, so the bound stays unbiased; its pilot draws cost
network evaluations (``pilot`` per data point of the fitting batch), which a benchmark must count. The same
pilot draws can also choose a proposal of the counts (:class:`~probdiff.likelihood.DefensiveCounts`) and fit a
control variate of them (:class:`~probdiff.likelihood.CountsControlVariate`), see :meth:`FittedBlackoutTime.fit`.
"""

from __future__ import annotations

import math
from numbers import Real

import torch

from .._util import check_bool, check_positive_int, logit_half_range
from ..processes.blackout import Blackout
from ..reverse.base import build_reverse
from ..timevars import TimeVariable
from .blackout_counts import CountsControlVariate, DefensiveCounts, _logit_bin

__all__ = ["FittedBlackoutTime"]

RIDGE = 0.01        # the control variate's ridge, a share of the standardised features' unit variance
# candidate shares of the default proposal: about a factor 2 apart, from a weight bound of 20 (0.05) to 2 (0.5)
DEFENSIVE = (0.05, 0.1, 0.2, 0.3, 0.5)
FOLDS = 2           # cross-fitting of the share: each data point's draws split at random into FOLDS equal folds


class FittedBlackoutTime(TimeVariable):
    """A fitted proposal over :math:`[t_{lo}, t_{max}]` of a :class:`~probdiff.Blackout` process, as a
    :class:`~probdiff.TimeVariable` with ``bounds = (0, 1)`` (pass it as ``time=`` to :func:`probdiff.elbo`).

    Args:
        process: the Blackout process.
        bin_probs: probabilities of ``K`` equal bins of :math:`v = \\log(e^t - 1)` on :math:`[-L/2, L/2]`.
        defensive: share of :meth:`Blackout.sample_elbo_times <probdiff.Blackout.sample_elbo_times>` in the
            mixture, in (0, 1].
    """

    def __init__(self, process: Blackout, bin_probs, defensive: float = 0.3):
        if not isinstance(process, Blackout):
            raise ValueError(f"process must be a probdiff.Blackout, got {type(process).__name__}")
        probs = torch.as_tensor(bin_probs, dtype=torch.float64).detach().cpu()
        if probs.dim() != 1 or probs.numel() < 1 or bool((probs < 0).any()) or not float(probs.sum()) > 0:
            raise ValueError("bin_probs must be a non-empty vector of non-negative weights with a positive sum")
        if not _is_share(defensive):
            raise ValueError(f"defensive must be a real number in (0, 1], got {defensive!r}")
        self.process = process
        self.bin_probs = probs / probs.sum()
        self.defensive = float(defensive)
        self._cdf = torch.cat([torch.zeros(1, dtype=torch.float64), torch.cumsum(self.bin_probs, 0)])
        self._half = logit_half_range(process.t_max)
        self.counts: DefensiveCounts | None = None         # set by fit: the counts and control to pass on
        self.control: CountsControlVariate | None = None

    @classmethod
    def fit(cls, process: Blackout, model, x: torch.Tensor, *, pilot: int = 32, bins: int = 24,
            defensive=DEFENSIVE, generator: torch.Generator | None = None,
            counts=None, control: bool = False) -> "FittedBlackoutTime":
        r"""Fit to ``model`` from ``pilot`` draws per data point of ``x`` (``pilot * len(x)`` evaluations), times
        from the process' default proposal (stratified), counts from :math:`q(n_t|n_0)`.

        ``counts``: ``None``, a :class:`~probdiff.likelihood.DefensiveCounts`, or a sequence of candidates
        (each ``None``, for :math:`q` itself, or a ``DefensiveCounts``). The pilot's counts are drawn from the
        equal mixture :math:`r_0` of the candidates' laws, and reweighted (:math:`E_{r}[h^2] =
        E_{r_0}[h^2\,r/r_0]`, the ratio at most the number of candidates, so no candidate's second moment is
        estimated from draws that miss where it puts its mass), they score each candidate by the second
        moment of its estimator :math:`h` under its own fitted proposal, :math:`(\sum_{bins}\sqrt{mass})^2`;
        the smallest is kept as the fitted object's ``counts`` attribute. With ``control=True`` the same draws
        also fit a :class:`~probdiff.likelihood.CountsControlVariate` per candidate (weighted ridge regression
        per bin on standardised features, with an intercept), kept as ``control`` (``None`` otherwise), and the proposal is fitted to the
        corrected integrand. Pass all three on: ``pd.elbo(..., time=fit, counts=fit.counts,
        control=fit.control)``.

        ``defensive``: the share of the default proposal in the fitted mixture, a number in (0, 1] (kept as
        given), or a sequence of candidates (by default 0.05, 0.1, 0.2, 0.3, 0.5: weight bounds 20 to 2) among
        which the pilot draws of the kept counts choose, kept as ``fit.defensive``. The pilot's draws of each
        data point are split into ``FOLDS`` folds of equal size at random (from ``generator``, after the pilot;
        not by stratum: the strata are ordered in time, and with fewer strata than bins a fold of every other
        stratum would leave the same bins empty for every data point, whose held-out draws would then condemn
        every small share); for each fold the bin masses are fitted on the other
        folds and each candidate mixture :math:`\pi_d = d\,q_0 + (1-d)\,\pi_{fit}` is scored on the fold's draws
        by the second moment of one draw, :math:`E_{\pi_d}[(h/\pi_d)^2] = E_{q_0}[h^2/(q_0\,\pi_d)]` with the
        pilot's time proposal :math:`q_0` (the score of the counts above is proportional to this at :math:`d = 0`,
        in-sample); the smallest sum over the folds wins (cross-fitting: each score comes from draws its mixture
        was not fitted on, so it is unbiased for that mixture, whose bins come from a share ``1 - 1/FOLDS`` of the
        draws). The bins are then refitted on all draws. The control variate's coefficients and the choice of the
        counts stay fitted in-sample, on all draws, before the share is chosen. The score is unbiased but as noisy
        as the draws' squares: where the integrand is heavy-tailed and the pilot sees its rare large values a few
        times or not at all (the time proposal alone, without ``counts``, on the 3-point oracle of
        ``docs/discrete.rst``), the chosen share varies with the pilot seed and can be worse than a fixed one.
        """
        from .chain import _blackout_terms               # the integrand, shared with the bound
        process.check_states("x", x)
        k = check_positive_int("pilot", pilot)
        nb = check_positive_int("bins", bins)
        check_bool("control", control)
        defensives = _shares(defensive)
        if len(defensives) > 1 and k < FOLDS:
            raise ValueError(f"pilot must be >= {FOLDS} to choose defensive among {len(defensives)} candidates (the "
                             f"choice is cross-fitted on {FOLDS} folds of each data point's draws), got {pilot}")
        candidates = list(counts) if isinstance(counts, (list, tuple)) else [counts]
        for c in candidates:
            if c is not None and not isinstance(c, DefensiveCounts):
                raise ValueError(f"counts must be None, a DefensiveCounts or a sequence of them, got {c!r}")
        if not candidates:
            raise ValueError("counts must hold at least one candidate (None for the plain counts)")
        rev = build_reverse(process, model, 1.0)
        x0 = x.repeat_interleave(k, dim=0)
        u = torch.rand(x0.shape[0], generator=generator, dtype=torch.float64, device=x.device)
        u = (torch.arange(k, dtype=torch.float64, device=x.device).repeat(x.shape[0]) + u) / k
        t, inverse_density = process.sample_elbo_times(u)
        dtype = torch.get_default_dtype() if not x.is_floating_point() else x.dtype
        pooled = _Pooled(candidates)
        with torch.no_grad():
            integrand, _, nt, _ = _blackout_terms(process, rev, x0, t, dtype, generator, pooled)
        log_omegas = [torch.zeros_like(t) if c is None else c.log_weight(x0, nt, t) for c in candidates]   # q/r_c
        log_pool = torch.logsumexp(-torch.stack(log_omegas), 0) - math.log(len(candidates))                # r_0/q
        j = _logit_bin(process, t, nb).cpu()
        # weight of a draw in the integral over a bin of (.)^2 dt/dv (the bins are equal in v): 1 / density
        lsq = (-torch.expm1(-t) * inverse_density).cpu() / max(x0.shape[0], 1)
        best = None
        for c, log_omega in zip(candidates, log_omegas):
            omega = torch.exp(log_omega)
            value = (omega * integrand).cpu()                                      # the draw's value under r_c
            share = torch.exp(-log_omega - log_pool).cpu()                         # r_c / r_0 <= len(candidates)
            fitted_control = None
            if control:
                z = CountsControlVariate.features(process, x0, nt, t, omega)
                fitted_control = CountsControlVariate(process, _binned_regression(value, z.cpu(), lsq * share, j, nb))
                value = value - fitted_control.correction(x0, nt, t, omega).cpu()
            squares = value ** 2 * lsq * share            # each draw's part of its bin's mass
            mass = _bin_mass(squares, j, nb)
            score = float(torch.sqrt(mass).sum()) ** 2
            if best is None or score < best[0]:
                best = (score, c, fitted_control, squares, mass)
        _, chosen, fitted_control, squares, mass = best
        if len(defensives) > 1:
            rank = torch.rand(x.shape[0], k, generator=generator, device=x.device).argsort(1).cpu()
            fold = (rank % FOLDS).flatten()
            scores = cls._held_out_scores(process, defensives, squares, t.cpu(), j, nb, fold)
            defensives = (defensives[int(torch.argmin(scores))],)
        fit = cls._from_mass(process, mass, defensives[0])
        fit.counts, fit.control = chosen, fitted_control
        return fit

    @classmethod
    def _from_mass(cls, process: Blackout, mass: torch.Tensor, defensive: float) -> "FittedBlackoutTime":
        """The proposal with bin probabilities proportional to the root of the bins' masses (floored, so that no
        bin has probability 0)."""
        root = torch.sqrt(mass)
        return cls(process, root + 1e-12 * float(root.max().clamp_min(1e-300)), defensive)

    @classmethod
    def _held_out_scores(cls, process: Blackout, defensives, squares: torch.Tensor, t: torch.Tensor, j: torch.Tensor,
                         bins: int, fold: torch.Tensor) -> torch.Tensor:
        r"""Cross-fitted second moments of one draw, one per share (:meth:`fit`): a draw's part of its bin's mass,
        :math:`h^2 (dt/dv) / (q_0 N)`, divided by the density over :math:`v` of the mixture fitted without its fold,
        summed over all draws."""
        scores = torch.zeros(len(defensives), dtype=torch.float64)
        dt_dv = -torch.expm1(-t)
        for f in range(FOLDS):
            out = fold == f
            mass = _bin_mass(squares[~out], j[~out], bins)
            for i, d in enumerate(defensives):
                mixture = cls._from_mass(process, mass, d).density(t[out]) * dt_dv[out]
                scores[i] += float((squares[out] / mixture).sum())
        return scores

    def _bin(self, t: torch.Tensor) -> torch.Tensor:
        return _logit_bin(self.process, t, self.bin_probs.numel())

    def bounds(self, process):
        return 0.0, 1.0

    def time(self, process, u):
        u = torch.as_tensor(u, dtype=torch.float64)
        d = self.defensive
        default = process.sample_elbo_times((u / d).clamp(0.0, 1.0))[0]
        w = ((u - d) / (1 - d)).clamp(0.0, 1.0) if d < 1 else torch.zeros_like(u)
        cdf = self._cdf.to(u.device)
        j = (torch.searchsorted(cdf, w, right=True) - 1).clamp(0, self.bin_probs.numel() - 1)
        frac = (w - cdf[j]) / self.bin_probs.to(u.device)[j].clamp_min(1e-300)
        k = self.bin_probs.numel()
        v = -self._half + (j + frac.clamp(0.0, 1.0)) * (2 * self._half / k)
        t_lo, t_max = process.elbo_time_range()
        fitted = torch.nn.functional.softplus(v).clamp(t_lo, t_max)
        return torch.where(u < d, default, fitted)

    def density(self, t: torch.Tensor) -> torch.Tensor:
        """The proposal's density at ``t`` (float64)."""
        t = torch.as_tensor(t, dtype=torch.float64)
        k = self.bin_probs.numel()
        per_v = self.bin_probs.to(t.device)[self._bin(t)] * k / (2 * self._half)      # density over v
        fitted = per_v / -torch.expm1(-t)                                            # dv/dt = 1/(1 - e^{-t})
        return self.defensive * self.process.elbo_time_density(t) + (1 - self.defensive) * fitted

    def dt_du(self, process, t):
        return 1.0 / self.density(t)

    def __repr__(self) -> str:
        return f"FittedBlackoutTime(bins={self.bin_probs.numel()}, defensive={self.defensive:g})"


def _is_share(d) -> bool:
    return not isinstance(d, bool) and isinstance(d, Real) and 0.0 < float(d) <= 1.0


def _shares(defensive) -> tuple[float, ...]:
    """The candidate shares of :meth:`FittedBlackoutTime.fit`: one number in (0, 1] or a non-empty sequence."""
    items = tuple(defensive) if isinstance(defensive, (list, tuple)) else (defensive,)
    if not items or not all(_is_share(d) for d in items):
        raise ValueError("defensive must be a real number in (0, 1] or a non-empty list or tuple of them, "
                         f"got {defensive!r}")
    return tuple(float(d) for d in items)


def _bin_mass(squares: torch.Tensor, j: torch.Tensor, bins: int) -> torch.Tensor:
    """Sum of the draws' ``squares`` per bin ``j``, float64 ``(bins,)``."""
    return torch.zeros(bins, dtype=torch.float64).index_add_(0, j, squares)


def _binned_regression(y: torch.Tensor, z: torch.Tensor, w: torch.Tensor, j: torch.Tensor, bins: int) -> torch.Tensor:
    r"""Per bin, weighted ridge regression of ``y`` on ``z`` with an intercept, on standardised features (the
    intercept dropped): ``(bins, z.shape[1])``. The ridge, a share of the unit diagonal of the
    features' correlation matrix (``RIDGE``), shrinks the coefficients along nearly collinear directions (at small
    :math:`t` almost every :math:`m` is 0 or 1, and the two features nearly coincide), where least squares
    gives large opposite coefficients that blow up on the next draw with an :math:`m = 2`. Zero in a bin
    whose effective number of draws (Kish's :math:`(\sum w)^2/\sum w^2`) is below four per unknown."""
    coefs = torch.zeros(bins, z.shape[1], dtype=torch.float64)
    for b in range(bins):
        inside = j == b
        ww = w[inside]
        total = float(ww.sum())
        if not total ** 2 >= 4 * (z.shape[1] + 1) * float((ww ** 2).sum()) > 0:
            continue
        zz, yy = z[inside], y[inside]
        zc = zz - (ww[:, None] * zz).sum(0) / total
        yc = yy - (ww * yy).sum() / total
        scale = torch.sqrt((ww[:, None] * zc ** 2).sum(0) / total).clamp_min(1e-300)
        zs = zc / scale
        gram = zs.T @ (ww[:, None] * zs) / total
        beta = torch.linalg.solve(gram + RIDGE * torch.eye(z.shape[1], dtype=torch.float64), zs.T @ (ww * yc) / total)
        coefs[b] = beta / scale
    return coefs


class _Pooled:
    """The pilot's counts: each row from one of the candidates' laws, chosen uniformly (weight 1: the fit
    reweights the draws itself)."""

    def __init__(self, candidates):
        self.candidates = candidates

    def sample(self, process, x0, t, generator):
        pick = torch.randint(len(self.candidates), t.shape, generator=generator, device=x0.device)
        nt = torch.zeros_like(x0, dtype=torch.long)
        for i, c in enumerate(self.candidates):
            rows = pick == i
            if c is None:
                drawn = process.sample_marginal(x0[rows], t[rows], generator=generator)
            else:
                drawn = c.sample(process, x0[rows], t[rows], generator)[0]
            nt[rows] = drawn
        return nt, 1.0
