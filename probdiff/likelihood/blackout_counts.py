r"""Importance sampling of the counts in the continuous-time Blackout ELBO: a defensive mixture over :math:`n_t`.

At a fixed time the bound's integrand :math:`I(n_t) = \frac{p_t}{1-p_t}\sum_{px}(\hat y - m\log\hat y + m\log m
- m)` (:func:`probdiff.likelihood.blackout_elbo`, :math:`m = n_0 - n_t`) is non-negative and, over
:math:`n_t \sim q = \mathrm{Bin}(n_0, p_t)`, heavy-tailed: its largest values come from rare draws with many
deaths that another data point explains better (on the 3-point oracle of the tests, :math:`[8,0] \to [1,0]` at
:math:`t = 0.44`: probability 0.004, integrand 287 nats), and nine tenths of the variance of the bound's
estimator is there, over :math:`n_t` at fixed :math:`t`. Since the network's output depends on :math:`n_t`,
that spread cannot be summed out at equal cost; it can be importance-sampled. :class:`DefensiveCounts` draws

.. math::

    n_t \sim r = (1 - s)\,\mathrm{Bin}(n_0, p_t) + s\,\mathrm{Bin}(n_0, p_t e^{-\delta})

(the second component is the law of the counts a time :math:`\delta` later: more deaths) and weights the
draw by :math:`q(n_t)/r(n_t) = 1/\big(1 - s + s\,\prod_{px}(q_\delta/q)\big) \le 1/(1-s)`, so that every draw
keeps the expectation :math:`E_q[I]` (the bound is unchanged) while the rare many-death draws come
:math:`s\,q_\delta/q` times more often with a weight that much smaller: a defensive mixture (Hesterberg,
"Weighted average importance sampling and defensive mixture distributions", Technometrics 37(2), 1995; Owen,
"Monte Carlo theory, methods and examples", 2013, §9.11), whose weight stays bounded however badly the
second component fits. Binomial coefficients cancel in the ratio:

.. math::

    \log\frac{q_\delta(n_t)}{q(n_t)} = \sum_{px} \Big(-\delta\,n_t + (n_0 - n_t)
    \log\frac{1 - p_t e^{-\delta}}{1 - p_t}\Big).
"""

from __future__ import annotations

import math

import torch

from .._util import check_real, expand_like, logit_half_range
from ..processes.blackout import Blackout

__all__ = ["DefensiveCounts", "CountsControlVariate"]


class DefensiveCounts:
    r"""Draw the counts :math:`n_t` of the Blackout ELBO from a defensive mixture with later counts, weighted
    back to :math:`q(n_t|n_0)` (module docstring); pass it as ``counts=`` to :func:`probdiff.elbo` (and to
    :meth:`FittedBlackoutTime.fit <probdiff.likelihood.FittedBlackoutTime.fit>`, so that the time proposal is
    fitted to the weighted integrand). Costs nothing extra: one network evaluation per draw, as before.

    Args:
        share: :math:`s`, the probability of drawing from the later counts, in (0, 1); the weight is at most
            :math:`1/(1-s)`.
        delay: :math:`\delta > 0`, how much later (in the time of the process) the second component's counts
            are: each photon survives it with probability :math:`p_t e^{-\delta}`.
    """

    def __init__(self, share: float = 0.5, delay: float = 0.5):
        self.share = check_real("share", share, low=0.0, low_open=True)
        if not self.share < 1.0:
            raise ValueError(f"share must be < 1 (the weight is at most 1/(1 - share)), got {share!r}")
        self.delay = check_real("delay", delay, low=0.0, low_open=True)

    def sample(self, process: Blackout, x0: torch.Tensor, t: torch.Tensor,
               generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        r"""``(n_t, q/r)``: counts drawn from the mixture (``torch.long``, shaped like ``x0``) and each row's
        weight :math:`q(n_t|n_0)/r(n_t|n_0)` (float64, ``(batch,)``), for times ``t`` of shape ``(batch,)``."""
        if not isinstance(process, Blackout):
            raise ValueError(f"process must be a probdiff.Blackout, got {type(process).__name__}")
        t = torch.as_tensor(t, dtype=torch.float64, device=x0.device)
        later = torch.rand(t.shape, generator=generator, dtype=torch.float64, device=x0.device) < self.share
        keep = torch.exp(-t - torch.where(later, self.delay, 0.0))
        n0 = x0.to(torch.float64)
        nt = torch.binomial(n0.contiguous(), expand_like(keep, n0).expand(n0.shape).contiguous(),
                            generator=generator)
        return nt.long(), torch.exp(self.log_weight(x0, nt, t))

    def log_weight(self, x0: torch.Tensor, nt: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        r""":math:`\log q(n_t|n_0) - \log r(n_t|n_0)` per row, float64 ``(batch,)``, at most
        :math:`-\log(1-s)`."""
        t = torch.as_tensor(t, dtype=torch.float64, device=x0.device)
        n0, nt = x0.to(torch.float64), nt.to(torch.float64)
        deaths = n0 - nt
        # log(1 - p e^{-delta}) - log(1 - p), with p = e^{-t}: both log1m_exp, exact at small t
        shift = expand_like(torch.log(-torch.expm1(-t - self.delay)) - torch.log(-torch.expm1(-t)), n0)
        per_px = -self.delay * nt + torch.where(deaths > 0, deaths * shift, torch.zeros_like(deaths))
        log_ratio = per_px.reshape(n0.shape[0], math.prod(n0.shape[1:])).sum(1)
        return -torch.logaddexp(torch.full_like(log_ratio, math.log1p(-self.share)), math.log(self.share) + log_ratio)

    def __repr__(self) -> str:
        return f"DefensiveCounts(share={self.share:g}, delay={self.delay:g})"


def _logit_bin(process: Blackout, t: torch.Tensor, bins: int) -> torch.Tensor:
    r"""Index of ``t`` among ``bins`` equal bins of :math:`v = \log(e^t - 1)` on :math:`[-L/2, L/2]`, the
    range of the ELBO's times (``torch.long``)."""
    half = logit_half_range(process.t_max)
    v = torch.log(torch.expm1(torch.as_tensor(t, dtype=torch.float64).clamp_min(1e-300)))
    return ((v + half) / (2 * half) * bins).floor().long().clamp(0, bins - 1)


def _xlogx_minus_x(k: torch.Tensor) -> torch.Tensor:
    return torch.xlogy(k, k) - k


class CountsControlVariate:
    r"""Control variates of the Blackout ELBO's integrand with means known in closed form under
    :math:`q(n_t|n_0)`; pass it as ``control=`` to :func:`probdiff.elbo`.

    The features, at a draw :math:`n_t` with weight :math:`\omega = q/r` (1 without a proposal of the counts,
    :class:`DefensiveCounts`), are the network-free parts of the integrand, centred:

    .. math::

        z_1 = \frac{p_t}{1-p_t}\Big(\omega\sum_{px} m - \sum_{px} n_0(1-p_t)\Big),\qquad
        z_2 = \frac{p_t}{1-p_t}\Big(\omega\sum_{px}(m\log m - m) - \sum_{px}E_q[m\log m - m]\Big),

    :math:`m = n_0 - n_t \sim \mathrm{Bin}(n_0, 1-p_t)` under :math:`q`, the second mean an exact sum over
    the :math:`n_0 + 1` values of :math:`m`. Each has mean 0 at every time (:math:`E_r[\omega g] = E_q[g]`),
    so subtracting :math:`c_{j(t)}\cdot z` from the draw, with coefficients per bin :math:`j` of the logit time
    fixed before the draws (fitted on pilot draws by :meth:`FittedBlackoutTime.fit
    <probdiff.likelihood.FittedBlackoutTime.fit>` with ``control=True``), keeps the bound unbiased and removes
    the part of the within-time spread that follows the number of deaths (Owen 2013, §8.9, regression
    estimators with coefficients from a separate pilot).

    Args:
        process: the Blackout process.
        coefs: ``(bins, 2)`` coefficients of :math:`(z_1, z_2)` per equal bin of :math:`v = \log(e^t - 1)`.
    """

    def __init__(self, process: Blackout, coefs):
        if not isinstance(process, Blackout):
            raise ValueError(f"process must be a probdiff.Blackout, got {type(process).__name__}")
        coefs = torch.as_tensor(coefs, dtype=torch.float64).detach().cpu()
        if coefs.dim() != 2 or coefs.shape[1] != 2 or coefs.shape[0] < 1 or not bool(torch.isfinite(coefs).all()):
            raise ValueError(f"coefs must be a finite (bins, 2) tensor, got shape {tuple(coefs.shape)}")
        self.process = process
        self.coefs = coefs

    @staticmethod
    def features(process: Blackout, x0: torch.Tensor, nt: torch.Tensor, t: torch.Tensor,
                 weight=1.0) -> torch.Tensor:
        """The centred features :math:`(z_1, z_2)`, float64 ``(batch, 2)`` (the exact means take a table of
        ``batch × S × S`` floats, ``S = max_count + 1``)."""
        b = x0.shape[0]
        n0 = x0.to(torch.float64).reshape(b, math.prod(x0.shape[1:]))
        m = n0 - nt.to(torch.float64).reshape(b, n0.shape[1])
        t = torch.as_tensor(t, dtype=torch.float64, device=x0.device)
        death = -torch.expm1(-t)                                                     # 1 - p_t
        mean1 = (n0 * death[:, None]).sum(1)
        # E[m log m - m] for m ~ Bin(a, 1 - p_t), for every count a, then looked up per pixel: (b, S) table
        k = torch.arange(process.num_states, dtype=torch.float64, device=x0.device)
        a = k[:, None]
        log_pmf = (torch.lgamma(a + 1) - torch.lgamma(k + 1) - torch.lgamma((a - k).clamp_min(0) + 1))[None] \
            + torch.xlogy(k, death[:, None, None]) + torch.xlogy((a - k).clamp_min(0), torch.exp(-t)[:, None, None])
        pmf = torch.where(k <= a, torch.exp(log_pmf), torch.zeros_like(log_pmf))    # (b, a, k)
        table = (pmf * _xlogx_minus_x(k)).sum(-1)                                    # (b, a)
        mean2 = torch.gather(table, 1, n0.long()).sum(1)
        w = process.birth_weight(t)
        return torch.stack([w * (weight * m.sum(1) - mean1), w * (weight * _xlogx_minus_x(m).sum(1) - mean2)], 1)

    def correction(self, x0: torch.Tensor, nt: torch.Tensor, t: torch.Tensor, weight=1.0) -> torch.Tensor:
        """:math:`c_{j(t)}\\cdot z`, float64 ``(batch,)``: subtract it from the draw's integrand."""
        z = self.features(self.process, x0, nt, t, weight)
        c = self.coefs.to(z.device)[_logit_bin(self.process, t, self.coefs.shape[0])]
        return (c * z).sum(1)

    def __repr__(self) -> str:
        return f"CountsControlVariate(bins={self.coefs.shape[0]})"
