"""Exact log-likelihood: ``pd.log_likelihood`` against the score_sde protocol, on the same oracle and inputs.

Peer (reimplemented here from the published protocol of Song et al., "Score-Based Generative Modeling
through SDEs", ICLR 2021, code ``likelihood.py``): the probability-flow ODE in the process' time ``t`` from
``t_min`` to ``t_max``, state = flattened batch concatenated with the log-density change, integrated by
``scipy.integrate.solve_ivp(method="RK45", rtol=1e-5, atol=1e-5)``; divergence by Hutchinson's estimator
with one Rademacher probe per sample, fixed along the trajectory; drift and divergence computed by two
separate model calls per right-hand side (``drift_fn`` and ``div_fn``); ``log p = prior(z) + delta``.

Truth: a Gaussian mixture, whose exact ``log p_{t_min}`` and ``log p_{t_max}`` are closed forms. Both methods
end at the prior, not at the true ``p_{t_max}``; to measure the *solver's* error the prior term is replaced
by the oracle's exact ``log p_{t_max}`` at each method's own endpoint (same correction for both).

Errors are in nats per dimension (mean and max over the batch); NFE counts right-hand-side evaluations per
image (``solution.nfev`` for the peer, whose every image is evaluated at each of them; the mean of
``stats.nfe_per_sample`` for probdiff, whose default gives each image its own steps). The peer's error
is dominated by its one-probe Hutchinson estimate; the fair reference for the exact trace is the peer
with the exact trace (its error is the ODE's alone), against which the last table gives the NFE ratio
(issue 15's goal: <= 0.5x at equal or better error). Part 2 reports the cost of the exact divergence
against dimension (one right-hand side: drift + divergence) for an MLP score network.

Part 3 (issue 15) compares divergence estimators on a low-rank Gaussian-mixture oracle (4 components of
rank 4 over an isotropic floor of variance 1e-4, the case of THEORY.md §13) in dimensions 16 to 3072: each
estimator's per-image standard error of ``log p`` (from its own ``P`` integrated estimates, calibrated in
tests/likelihood/test_variance.py), its cost in vector-Jacobian products per image (NFE × products per
evaluation), and the work-normalised variance ``SE^2 × cost`` relative to ``Hutchinson(1)`` — below 0.25
means "4× lower variance at equal cost". ``Hutchinson(1)``'s SE is ``sqrt(4)`` × that of
``Hutchinson(4)`` (the mean of 4 i.i.d. probes).

Usage: ``python benchmarks/likelihood.py [--dims 2 16] [--batch 64] [--threads 1] [--variance-dims 16 64 784]``.
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
import torch
from scipy import integrate

import probdiff as pd
from probdiff.likelihood import LogSNRTime
from probdiff.oracles import GaussianMixture
from probdiff import expand_like as _expand

#: Tolerances of the Gaussian-frame Adams rows (the default, and around it for the equal-error interpolation).
FRAME_TOLS = (1e-4, 2e-4, 4e-4, 8e-4)
PROCESSES = {"VP": pd.VPSDE, "VE": pd.VESDE, "sub-VP": pd.SubVPSDE, "blend": pd.LinearBlend}


def mixture(dim: int, seed: int = 0, k: int = 3) -> GaussianMixture:
    g = torch.Generator().manual_seed(seed)
    means = 1.5 * torch.randn(k, dim, generator=g, dtype=torch.float64)
    a = 0.4 * torch.randn(k, dim, dim, generator=g, dtype=torch.float64)
    covs = a @ a.transpose(-1, -2) + 0.1 * torch.eye(dim, dtype=torch.float64)
    return GaussianMixture(torch.softmax(torch.randn(k, generator=g, dtype=torch.float64), 0), means, covs)


# ==================================================================== the peer
def score_sde_likelihood(process, model, x, *, rtol=1e-5, atol=1e-5, generator=None, exact=False):
    """The score_sde protocol (see the module docstring). Returns (endpoint, delta_logp, nfe).

    ``exact=True`` replaces its one-probe Hutchinson divergence by the exact trace (same ODE, same
    solver), so that its error is the ODE's alone: the fair reference for probdiff's exact trace."""
    shape, b = x.shape, x.shape[0]
    eps = (torch.randint(0, 2, shape, generator=generator) * 2 - 1).to(x.dtype)      # Rademacher

    def drift_fn(y, t):   # reverse SDE drift with probability_flow=True: f(x, t) - g^2/2 * score
        return _expand(process.drift_coef(t), y) * y - 0.5 * _expand(process.diffusion(t), y) ** 2 * model.score(y, t)

    def div_fn(y, t):
        if exact:
            return pd.ExactTrace()(lambda z: drift_fn(z, t.repeat(z.shape[0] // b)), y, None)[1]
        with torch.enable_grad():
            y = y.clone().requires_grad_(True)
            fn_eps = torch.sum(drift_fn(y, t) * eps)
            grad = torch.autograd.grad(fn_eps, y)[0]
        return torch.sum(grad * eps, dim=tuple(range(1, y.dim())))

    def ode_func(t, y):
        sample = torch.from_numpy(y[:-b]).reshape(shape).to(x.dtype)
        vec_t = torch.full((b,), t, dtype=x.dtype)
        drift = drift_fn(sample, vec_t).detach().numpy().reshape(-1)
        logp_grad = div_fn(sample, vec_t).detach().numpy().reshape(-1)
        return np.concatenate([drift, logp_grad], axis=0)

    init = np.concatenate([x.numpy().reshape(-1), np.zeros((b,))], axis=0)
    sol = integrate.solve_ivp(ode_func, (process.t_min, process.t_max), init, rtol=rtol, atol=atol, method="RK45")
    zp = sol.y[:, -1]
    return torch.from_numpy(zp[:-b]).reshape(shape), torch.from_numpy(zp[-b:]), sol.nfev


# ==================================================================== part 1: accuracy and cost
def accuracy_table(dims, batch, processes):
    print("\n## Accuracy and cost on the Gaussian-mixture oracle (float64, batch %d)\n" % batch)
    head = ("| D | process | method | NFE | NFE / peer | wall s | mean err nats/dim | max err nats/dim "
            "| mean err / peer |")
    print(head)
    print("|" + "---|" * 9)
    ratios = []
    for dim in dims:
        mix = mixture(dim)
        x = mix.sample(batch, generator=torch.Generator().manual_seed(1))
        for pname in processes:
            process = PROCESSES[pname]()
            model = mix.model(process)
            truth = mix.marginal_log_prob(process, x, process.t_min)

            def error(end, delta):
                err = (delta + mix.marginal_log_prob(process, end, process.t_max) - truth).abs() / dim
                return float(err.mean()), float(err.max())

            t0 = time.perf_counter()
            end, delta, peer_nfe = score_sde_likelihood(process, model, x, generator=torch.Generator().manual_seed(2))
            peer_wall = time.perf_counter() - t0
            peer_mean, peer_max = error(end, delta)
            print(f"| {dim} | {pname} | score_sde (RK45 in t, 1e-5, Hutchinson 1) | {peer_nfe} | 1.00 "
                  f"| {peer_wall:.2f} | {peer_mean:.2e} | {peer_max:.2e} | 1 |")
            end, delta, exact_nfe = score_sde_likelihood(process, model, x, exact=True)
            exact_mean, exact_max = error(end, delta)
            print(f"| {dim} | {pname} | score_sde with the exact trace (RK45 in t, 1e-5) | {exact_nfe} "
                  f"| {exact_nfe / peer_nfe:.2f} | - | {exact_mean:.2e} | {exact_max:.2e} "
                  f"| {exact_mean / peer_mean:.1e} |")
            ours = [
                ("probdiff ExactTrace, 1e-5 (default: per-sample steps)", {}),
                ("probdiff ExactTrace, 2e-5", {"rtol": 2e-5, "atol": 2e-5}),
                ("probdiff ExactTrace, 1e-4", {"rtol": 1e-4, "atol": 1e-4}),
                ("probdiff ExactTrace, 1e-5, one step per batch", {"per_sample": False}),
                ("probdiff ExactTrace, bosh3, 1e-2", {"rtol": 1e-2, "atol": 1e-2, "method": "bosh3"}),
                ("probdiff ExactTrace, 1e-5, LogSNRTime", {"time": LogSNRTime()}),
                ("probdiff Hutchinson 1, 1e-5", {"trace": pd.Hutchinson(1)}),
            ] + [(f"probdiff ExactTrace, GaussianFrameAdams, {tol:.0e}{' (its default)' if tol == 2e-4 else ''}",
                  {"solver": pd.GaussianFrameAdams(rtol=tol, atol=tol)}) for tol in FRAME_TOLS]
            for label, kwargs in ours:
                t0 = time.perf_counter()
                _, stats = pd.log_likelihood(process, model, x, return_stats=True,
                                             generator=torch.Generator().manual_seed(2), **kwargs)
                wall = time.perf_counter() - t0
                mean, worst = error(stats.endpoint, stats.delta_log_prob)
                nfe = float(stats.nfe_per_sample.double().mean())      # network evaluations per image
                print(f"| {dim} | {pname} | {label} | {nfe:.1f} | {nfe / peer_nfe:.2f} | {wall:.2f} "
                      f"| {mean:.2e} | {worst:.2e} | {mean / peer_mean:.1e} |")
                if "ExactTrace" in label:
                    ratios.append((dim, pname, label, nfe, exact_nfe, mean, exact_mean))
    print("\n## NFE ratio against score_sde with the exact trace (the ODE's error alone; goal NFE <= 0.5x at "
          "error <= 1x). NFE = network evaluations per image (probdiff: mean of stats.nfe_per_sample; score_sde: "
          "solve_ivp's nfev on the batch, which every image pays)\n")
    print("| D | process | probdiff setting | our NFE | peer NFE | NFE ratio | our mean err | peer mean err "
          "| error ratio | goal met |")
    print("|" + "---|" * 10)
    for dim, pname, label, nfe, peer, err, peer_err in ratios:
        met = "yes" if nfe <= 0.5 * peer and err <= peer_err else "no"
        print(f"| {dim} | {pname} | {label} | {nfe:.1f} | {peer} | {nfe / peer:.3f} | {err:.2e} | {peer_err:.2e} "
              f"| {err / peer_err:.2f} | {met} |")
    print("\n## NFE ratio at exactly the peer's error: our NFE interpolated log-log in the error between the "
          "tolerances that bracket the peer's error (the default Dormand-Prince rows: 1e-5, 2e-5, 1e-4; "
          "GaussianFrameAdams: " + ", ".join(f"{t:.0e}" for t in FRAME_TOLS) + ")\n")
    print("| D | process | solver | NFE at the peer's error | peer NFE | ratio |")
    print("|---|---|---|---|---|---|")
    for dim, pname in dict.fromkeys((r[0], r[1]) for r in ratios):
        for solver, labels in (("Dormand-Prince (default)", ("default: per-sample", "ExactTrace, 2e-5", "ExactTrace, 1e-4")),
                               ("GaussianFrameAdams", ("GaussianFrameAdams",))):
            pts = sorted((r[5], r[3]) for r in ratios if (r[0], r[1]) == (dim, pname)
                         and any(key in r[2] for key in labels) and "one step" not in r[2])
            peer, peer_err = next((r[4], r[6]) for r in ratios if (r[0], r[1]) == (dim, pname))
            found = [math.exp(math.log(n1) + math.log(peer_err / e1) / math.log(e2 / e1) * math.log(n2 / n1))
                     for (e1, n1), (e2, n2) in zip(pts, pts[1:]) if e1 <= peer_err <= e2 and e1 < e2]
            at = f"{found[0]:.1f} | {peer} | {found[0] / peer:.3f}" if found else f"not bracketed | {peer} | -"
            print(f"| {dim} | {pname} | {solver} | {at} |")


# ==================================================================== part 2: exact trace vs dimension
class _MLP(torch.nn.Module):
    def __init__(self, dim, width=256):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(dim + 1, width), torch.nn.SiLU(),
                                       torch.nn.Linear(width, width), torch.nn.SiLU(), torch.nn.Linear(width, dim))

    def forward(self, x, t):
        return self.net(torch.cat([x, t[:, None].to(x.dtype)], 1))


def trace_cost_table(dims, batch, repeats=3):
    print(f"\n## Cost of one right-hand side (drift + divergence) against dimension "
          f"(MLP width 256, float32, batch {batch})\n")
    print("| D | ExactTrace ms | Hutchinson(1) ms | exact / Hutchinson | drift alone ms | exact / drift |")
    print("|---|---|---|---|---|---|")
    process = pd.VPSDE()
    for dim in dims:
        torch.manual_seed(0)
        model = pd.EpsilonModel(_MLP(dim), process)
        flow = pd.probability_flow(process, model)
        x = torch.randn(batch, dim)
        t = torch.tensor(0.5)
        fn = lambda z: flow.drift(z, t)  # noqa: E731

        def timed(call):
            call()
            best = math.inf
            for _ in range(repeats):
                t0 = time.perf_counter()
                call()
                best = min(best, time.perf_counter() - t0)
            return 1e3 * best

        with torch.no_grad():
            exact = timed(lambda: pd.ExactTrace()(fn, x, None))
            hutch = pd.Hutchinson(1)
            probes = hutch.prepare(x, torch.Generator().manual_seed(0))
            hut = timed(lambda: hutch(fn, x, probes))
            drift = timed(lambda: fn(x))
        print(f"| {dim} | {exact:.2f} | {hut:.2f} | {exact / hut:.1f} | {drift:.2f} | {exact / drift:.1f} |")


# ==================================================================== part 3: variance-reduced traces
def low_rank_mixture(dim: int, seed: int = 0, k: int = 4, rank: int = 4, floor: float = 1e-4) -> GaussianMixture:
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(k, dim, generator=g, dtype=torch.float64)
    a = torch.randn(k, dim, rank, generator=g, dtype=torch.float64) / math.sqrt(rank)
    covs = a @ a.transpose(1, 2) + floor * torch.eye(dim, dtype=torch.float64)
    return GaussianMixture(torch.full((k,), 1.0 / k, dtype=torch.float64), means, covs)


def variance_table(dims, batch, rtol):
    print(f"\n## Divergence estimators: standard error and cost on the low-rank mixture oracle "
          f"(VP, float64, batch {batch}, rtol = atol = {rtol:g})\n")
    print("| D | estimator | NFE | products / eval | cost / image (products) | mean SE nats | SE / Hutchinson(1) SE "
          "| cost / Hutchinson(1) cost | SE^2 x cost / Hutchinson(1)'s | wall s |")
    print("|" + "---|" * 10)
    process = pd.VPSDE()
    for dim in dims:
        mix = low_rank_mixture(dim)
        model = mix.model(process)
        x = mix.sample(batch, generator=torch.Generator().manual_seed(1))
        # the data's exact mean and covariance (the Gaussian surrogate of the control variate)
        mean = (mix.weights[:, None] * mix.means).sum(0)
        second = (mix.weights[:, None, None] * (mix.covs + mix.means[:, :, None] * mix.means[:, None, :])).sum(0)
        cov = second - mean[:, None] * mean[None, :]
        rows = [("Hutchinson(4)", pd.Hutchinson(4)), ("Hutchinson(12)", pd.Hutchinson(12)),
                ("HutchPlusPlus(6)", pd.HutchPlusPlus(6)), ("HutchPlusPlus(12)", pd.HutchPlusPlus(12)),
                ("HutchPlusPlus(24)", pd.HutchPlusPlus(24)), ("HutchPlusPlus(36)", pd.HutchPlusPlus(36)),
                ("GaussianControlVariate(Hutchinson(4))",
                 pd.GaussianControlVariate(mean, cov, base=pd.Hutchinson(4)))]
        if dim <= 64:
            rows.append(("ExactTrace", pd.ExactTrace()))
        ref = None
        for label, trace in rows:
            t0 = time.perf_counter()
            _, st = pd.log_likelihood(process, model, x, trace=trace, rtol=rtol, atol=rtol, return_stats=True,
                                      generator=torch.Generator().manual_seed(3))
            wall = time.perf_counter() - t0
            se = float(st.se.pow(2).mean().sqrt())
            cost = st.nfe * st.matvecs
            if ref is None:                    # Hutchinson(4) -> Hutchinson(1): SE x 2, cost / 4
                ref = (2 * se, cost / 4)
            print(f"| {dim} | {label} | {st.nfe} | {st.matvecs} | {cost} | {se:.3g} | {se / ref[0]:.3g} "
                  f"| {cost / ref[1]:.2f} | {se ** 2 * cost / (ref[0] ** 2 * ref[1]):.3g} | {wall:.1f} |")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dims", type=int, nargs="+", default=[2, 16])
    parser.add_argument("--processes", nargs="+", default=["VP", "VE", "sub-VP", "blend"], choices=list(PROCESSES))
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--trace-dims", type=int, nargs="+", default=[2, 16, 64, 784])
    parser.add_argument("--trace-batch", type=int, default=8)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--variance-dims", type=int, nargs="*", default=[16, 64, 784],
                        help="dimensions of the estimator table (3072 takes minutes: the oracle's eigh)")
    parser.add_argument("--variance-batch", type=int, default=8)
    parser.add_argument("--variance-rtol", type=float, default=1e-4)
    parser.add_argument("--parts", nargs="+", default=["accuracy", "cost", "variance"],
                        choices=["accuracy", "cost", "variance"])
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if "accuracy" in args.parts:
        accuracy_table(args.dims, args.batch, args.processes)
    if "cost" in args.parts:
        trace_cost_table(args.trace_dims, args.trace_batch)
    if "variance" in args.parts:
        variance_table(args.variance_dims, args.variance_batch, args.variance_rtol)


if __name__ == "__main__":
    main()
