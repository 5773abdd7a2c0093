"""Exact per-draw spreads of continuous-time Blackout ELBO estimators on the 3-point oracle (no sampling).

On the set ``[[8, 0], [3, 5], [1, 1]]`` with the exact oracle (``Blackout(8, t_max=10)``), every count vector
:math:`n_t \\le n_0` of a point can be enumerated (at most 54), so the integrand's first and second moments
at each time, :math:`\\mu(t) = E_q[I]` and :math:`s(t) = E_q[I^2]`, are exact on a fine grid of the logit time
(midpoints of 1500 equal cells of :math:`v = \\log(e^t - 1)`); so are the moments of designs that couple two
draws of :math:`n_t` at one time (the binomial's inverse CDF at :math:`U` and :math:`1-U`, or a Latin hypercube
of two uniforms per pixel) and of an importance-sampled law of the counts. Printed: the rms over the three
points of the standard deviation of one draw (two network evaluations), and its ratio to the paper's estimator
(Santos et al. 2023: logit-uniform time, one evaluation for the integral and one for the decoder, whose
variance is included). The designs other than the paper's leave the decoder out (its share of the variance is
below 1e-4 here) and spend both evaluations on the integral.

Usage: ``python benchmarks/blackout_exact.py`` (about a minute on one CPU thread).
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import torch
from scipy.stats import binom

import probdiff as pd
from probdiff.oracles import Empirical
from probdiff.processes.matrices import poisson_kl

T = 1500


def setup():
    torch.set_num_threads(1)
    torch.set_default_dtype(torch.float64)
    data = torch.tensor([[8, 0], [3, 5], [1, 1]])
    b = pd.Blackout(8, t_max=10.0)
    rev = pd.reverse(b, Empirical(data).model(b))
    half = b.t_max + math.log1p(-math.exp(-b.t_max))
    v = -half + (np.arange(T) + 0.5) / T * 2 * half
    t = np.log1p(np.exp(v))
    dtdv = -np.expm1(-t)
    grid = dict(t=t, W=dtdv * 2 * half / T, dtdv=dtdv, half=half)
    return data, b, rev, grid


def moments(n0, b, rev, times):
    """States, q (T, S), integrand I (T, S) at every time of ``times``; and the decoder's value (S,) at t_lo."""
    states = np.array(list(itertools.product(*[range(k + 1) for k in n0])))
    s = len(states)
    nt = torch.tensor(states).repeat(len(times), 1)
    tt = torch.tensor(np.repeat(times, s))
    with torch.no_grad():
        y = rev.mean_births(nt, tt).double().numpy().reshape(len(times), s, -1)
    m = np.broadcast_to((np.array(n0)[None] - states)[None].astype(float), y.shape).copy()
    kl = poisson_kl(torch.tensor(m), torch.tensor(y)).numpy().sum(-1)
    integrand = kl / np.expm1(times)[:, None]
    p = np.exp(-times)
    q = np.prod([binom.pmf(states[:, j][None], n0[j], p[:, None]) for j in range(len(n0))], 0)
    decoder = (torch.xlogy(torch.tensor(m[0]), torch.tensor(y[0])) - torch.tensor(y[0])
               - torch.lgamma(torch.tensor(m[0]) + 1)).numpy().sum(-1)
    return states, q, integrand, decoder


def pixel_pairs(n0, p):
    """Per pixel, the law of (F^-1(U), F^-1(1-U)) for Bin(n0, p): (T, n0+1, n0+1)."""
    k = np.arange(n0 + 1)
    hi = binom.cdf(k[None], n0, p[:, None])
    lo = np.concatenate([np.zeros((len(p), 1)), hi[:, :-1]], 1)
    return np.clip(np.minimum(hi[:, :, None], 1 - lo[:, None, :]) - np.maximum(lo[:, :, None], 1 - hi[:, None, :]),
                   0, None)


def pixel_halves(n0, p):
    """Per pixel, the law of F^-1(U) for U uniform on [0, 1/2) and on [1/2, 1): (T, 2, n0+1)."""
    k = np.arange(n0 + 1)
    hi = binom.cdf(k[None], n0, p[:, None])
    lo = np.concatenate([np.zeros((len(p), 1)), hi[:, :-1]], 1)
    low = np.clip(np.minimum(hi, .5) - np.minimum(lo, .5), 0, None) * 2
    high = np.clip(np.maximum(hi, .5) - np.maximum(lo, .5), 0, None) * 2
    return np.stack([low, high], 1)


def coupled_second_moments(n0, states, integrand, p):
    """E[((I_1 + I_2)/2)^2] at each time, for antithetic and for Latin-hypercube pairs of n_t: (T,) each."""
    pairs = [pixel_pairs(n0[j], p) for j in range(2)]
    law = pairs[0][:, states[:, 0]][:, :, states[:, 0]] * pairs[1][:, states[:, 1]][:, :, states[:, 1]]
    anti = (law * ((integrand[:, :, None] + integrand[:, None, :]) / 2) ** 2).sum((1, 2))
    halves = [pixel_halves(n0[j], p) for j in range(2)]
    lhs = 0
    for a, c in itertools.product((0, 1), (0, 1)):              # the two strata of each pixel, paired at random
        first = halves[0][:, a][:, states[:, 0]] * halves[1][:, c][:, states[:, 1]]
        second = halves[0][:, 1 - a][:, states[:, 0]] * halves[1][:, 1 - c][:, states[:, 1]]
        e1, e2 = (first * integrand).sum(1), (second * integrand).sum(1)
        lhs = lhs + 0.25 * 0.25 * ((first * integrand ** 2).sum(1) + (second * integrand ** 2).sum(1) + 2 * e1 * e2)
    return anti, lhs


def main():
    data, b, rev, g = setup()
    t, W = g["t"], g["W"]
    t_lo = b.elbo_time_range()[0]
    logit = 1 / (2 * g["half"] * g["dtdv"])
    default = b.elbo_time_density(torch.tensor(t)).numpy()
    p = np.exp(-t)
    rows = {}
    per_point = []
    for n0 in data.tolist():
        states, q, integrand, _ = moments(n0, b, rev, t)
        _, q_lo, _, decoder = moments(n0, b, rev, np.array([t_lo]))
        mu, s2 = (q * integrand).sum(1), (q * integrand ** 2).sum(1)
        total = (W * mu).sum()
        dec_var = (q_lo[0] * decoder ** 2).sum() - (q_lo[0] * decoder).sum() ** 2
        anti, lhs = coupled_second_moments(n0, states, integrand, p)
        # the counts drawn from the defensive mixture r = (q + q_later) / 2, weight q/r (DefensiveCounts())
        later = np.prod([binom.pmf(states[:, j][None], n0[j], p[:, None] * math.exp(-0.5)) for j in range(2)], 0)
        s2_mix = (q ** 2 * integrand ** 2 / np.maximum(0.5 * q + 0.5 * later, 1e-300)).sum(1)
        per_point.append(dict(mu=mu, s2=s2, total=total, dec_var=dec_var, anti=anti, lhs=lhs, s2_mix=s2_mix))
    pooled = np.mean([d["s2"] for d in per_point], 0)
    best = np.sqrt(pooled) / (W * np.sqrt(pooled)).sum()        # the best time density for the three points
    pooled_mix = np.mean([d["s2_mix"] for d in per_point], 0)
    best_mix = np.sqrt(pooled_mix) / (W * np.sqrt(pooled_mix)).sum()

    def two(second, density, d):                                  # two draws, each at its own time, or a pair
        return (W * second / density).sum() - d["total"] ** 2

    designs = [
        ("paper: logit time, 1 eval + decoder eval", lambda d: (W * d["s2"] / logit).sum() - d["total"] ** 2
         + d["dec_var"]),
        ("default time, 2 independent draws", lambda d: two((d["s2"] + d["mu"] ** 2) / 2, default, d)),
        ("default time, antithetic n_t at one time", lambda d: two(d["anti"], default, d)),
        ("default time, Latin hypercube n_t at one time", lambda d: two(d["lhs"], default, d)),
        ("best time (oracle), 2 independent draws", lambda d: two((d["s2"] + d["mu"] ** 2) / 2, best, d)),
        ("best time (oracle), antithetic n_t", lambda d: two(d["anti"], best, d)),
        ("best time (oracle), Latin hypercube n_t", lambda d: two(d["lhs"], best, d)),
        ("DefensiveCounts(), its best time, 2 draws", lambda d: two((d["s2_mix"] + d["mu"] ** 2) / 2, best_mix, d)),
    ]
    print(f"3-point oracle, exact moments on {T} logit-time cells; std of one draw (rms over the 3 points)")
    print(f"{'design':48s} {'[8,0]':>7s} {'[3,5]':>7s} {'[1,1]':>7s} {'rms':>7s} {'ratio':>6s}")
    base = None
    for label, var in designs:
        v = np.array([var(d) for d in per_point])
        rms = math.sqrt(v.mean())
        base = base or rms
        rows[label] = rms
        print(f"{label:48s} " + " ".join(f"{math.sqrt(x):7.3f}" for x in v) + f" {rms:7.3f} {base / rms:6.2f}")


if __name__ == "__main__":
    main()
