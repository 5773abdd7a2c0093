"""Samplers benchmark: probdiff's solvers x grids against diffusers' schedulers, same oracle, same noise.

Setup (identical for every method):

* Data: two Gaussian mixtures (the 8-mode ring in 2-D and a 4-component mixture in 16-D); the model is the
  exact mixture oracle (``pd.oracles.GaussianMixture.model``), so every error below is a solver/schedule error.
* Process: the VP SDE with linear beta (0.1 -> 20) on t in [0.001, 1]. diffusers gets the same noise table:
  ``trained_betas`` with ``alphas_cumprod[i] = alpha(t_i)^2`` at ``t_i = (i + 1) / 1000``, so its integer
  timestep ``i`` is probdiff's time ``t_i`` and its noise levels run over the same range
  ``sigma/alpha`` in [sigma~(0.001), sigma~(1)] = [0.0100, 152].
* Start: the same initial noise ``x_T = sigma(t_max) z`` (in diffusers' VE-scaled schedulers ``x_T / alpha``).
* End: probdiff stops at t_min (sigma~ = 0.01). diffusers schedulers are configured to stop there too where
  they can (DDIM ``set_alpha_to_one=False``, ``final_sigmas_type="sigma_min"``); HeunDiscrete always ends at
  sigma = 0, and DPM++ Karras is also run with its default end 0, compared with the probability-flow
  endpoint at sigma = 0.
* Oracle in diffusers' convention: the scheduler calls ``eps(x_in, timestep)`` with VP-scaled input; the
  wrapper evaluates the exact epsilon at ``t = (timestep + 1) / 1000``.
* Grids fitted from the model: ``ScoreOptimal`` (from 512 data samples) and ``EndpointOptimal`` (one fit per
  solver and budget, on the first 1000 of the pilot initial states, drawn with another seed than the scored
  ones, against their own dopri5 reference). ``MultistepOptimal`` fits the times and the coefficients of an
  ``ExponentialMultistep`` solver together (one fit per budget, on all 4000 pilot states, a quarter of them
  held out by the fit; L-BFGS, ``min(200, 2000 // steps)`` iterations). The fits' total times are printed
  under each table. Fitting is a one-off cost per (model, solver, steps), like a published schedule; it is
  not counted in the NFE columns, and no fit sees the scored initial noise.
* Errors: RMS distance to the converged probability-flow endpoint of the same initial noise (dopri5,
  rtol = atol = 1e-10), and sliced Wasserstein-2 (256 projections) to fresh data samples.

Also measured: the cost of the torchsde path (``TorchSDE``, Brownian increments drawn per interval) against a
hand-written Euler-Maruyama loop and against ``torchsde.sdeint`` with its default ``BrownianInterval``.

Run: ``python benchmarks/samplers.py [--out DIR] [--quick]`` (needs the ``bench`` extra: diffusers).
"""

from __future__ import annotations

import argparse
import math
import os
import time

import torch

import probdiff as pd
from probdiff.grids import EndpointOptimal, Karras, LogSNR, MultistepOptimal, ScoreOptimal, Uniform
from probdiff.solvers import Ancestral, DPMSolver2M, Euler, EulerMaruyama, Heun, TorchDiffEq, TorchSDE, UniPC

NFES = (5, 10, 20, 50)
T_MIN, T_MAX, TRAIN_STEPS = 1e-3, 1.0, 1000
PILOT, FIT_EVALS = 1000, 400       # EndpointOptimal: pilot initial states, most sampling runs per fit
MULTISTEP_PILOT = 4000               # MultistepOptimal: pilot initial states (the first PILOT serve EndpointOptimal)


# ==================================================================== data and references
def mixture16():
    """The 16-D, 4-component mixture with full covariances (``pd.oracles.GaussianMixture.correlated()``)."""
    return pd.oracles.GaussianMixture.correlated()


def sliced_wasserstein(x, y, projections=256, seed=0):
    """Sliced W2 between equal-size samples: RMS over random directions of the sorted-projection W2."""
    dirs = torch.randn(x.shape[1], projections, generator=torch.Generator().manual_seed(seed), dtype=x.dtype)
    dirs = dirs / dirs.norm(dim=0)
    px, py = (x @ dirs).sort(0).values, (y @ dirs).sort(0).values
    return float((px - py).pow(2).mean().sqrt())


def rms(x, ref):
    return float((x - ref).pow(2).sum(1).mean().sqrt())


class Problem:
    """One data set: process, oracle, initial noise, references, fresh data for the distribution distance."""

    def __init__(self, name, mix, n):
        self.name, self.mix = name, mix
        self.process = pd.VPSDE(t_min=T_MIN, t_max=T_MAX)
        self.model = mix.model(self.process)
        self.x_init = self.process.sample_prior(n, (mix.dim,), generator=torch.Generator().manual_seed(1),
                                                dtype=torch.float64)
        self.data = mix.sample(n, generator=torch.Generator().manual_seed(2))
        self.fit_data = mix.sample(512, generator=torch.Generator().manual_seed(3))
        tight = TorchDiffEq(rtol=1e-10, atol=1e-10)
        rev = pd.probability_flow(self.process, self.model)
        self.ref_min = pd.sample(rev, x_init=self.x_init, solver=tight, grid=LogSNR(8)).x
        # continue the flow to sigma ~ 0 for schedulers whose last step lands on sigma = 0
        tail = pd.VPSDE(t_min=1e-12, t_max=T_MIN)
        tail_rev = pd.probability_flow(tail, self.mix.model(tail))
        self.ref_zero = pd.sample(tail_rev, x_init=self.ref_min, solver=tight, grid=LogSNR(8)).x
        # pilot noise for fitting EndpointOptimal grids: other draws than x_init, which scores them
        self.pilot_all = self.process.sample_prior(MULTISTEP_PILOT, (mix.dim,),
                                                   generator=torch.Generator().manual_seed(7), dtype=torch.float64)
        self.pilot_all_ref = pd.sample(rev, x_init=self.pilot_all, solver=tight, grid=LogSNR(8)).x
        self.pilot, self.pilot_ref = self.pilot_all[:PILOT], self.pilot_all_ref[:PILOT]
        self.fit_seconds, self.fit_runs = 0.0, 0
        self.multistep_seconds, self.multistep_fits = 0.0, []

    def endpoint_optimal(self, steps, solver):
        """EndpointOptimal grid for ``solver`` fitted on the pilot noise (its cost is tallied, not hidden)."""
        start = time.perf_counter()
        rev = pd.probability_flow(self.process, self.model)
        grid = EndpointOptimal.fit(rev, solver, steps, self.pilot, reference=self.pilot_ref, max_evals=FIT_EVALS)
        self.fit_seconds += time.perf_counter() - start
        self.fit_runs += 1
        return grid

    def multistep_optimal(self, steps):
        """MultistepOptimal grid and solver fitted on all the pilot noise (cost tallied)."""
        start = time.perf_counter()
        rev = pd.probability_flow(self.process, self.model)
        fitted = MultistepOptimal.fit(rev, steps, self.pilot_all, reference=self.pilot_all_ref,
                                      max_iter=min(200, 2000 // steps))
        self.multistep_seconds += time.perf_counter() - start
        self.multistep_fits.append((steps, fitted.start, fitted.errors))
        return fitted

    def errors(self, x, at_zero=False):
        return rms(x, self.ref_zero if at_zero else self.ref_min), sliced_wasserstein(x, self.data)


# ==================================================================== probdiff
def probdiff_runs(problem):
    """Rows: (name, {nfe: (actual_nfe, rms, sw)})."""
    rev = pd.probability_flow(problem.process, problem.model)
    grids = {
        "Uniform": lambda n, solver: Uniform(n),
        "LogSNR": lambda n, solver: LogSNR(n),
        "Karras(7)": lambda n, solver: Karras(n),
        "ScoreOptimal": lambda n, solver: ScoreOptimal.fit(problem.process, problem.model, problem.fit_data, n,
                                                            iterations=3, generator=torch.Generator().manual_seed(4)),
        "ScoreOptimal(VP frame)": lambda n, solver: ScoreOptimal.fit(
            problem.process, problem.model, problem.fit_data, n, iterations=3,
            generator=torch.Generator().manual_seed(4), scale_free=False),
        "EndpointOptimal": problem.endpoint_optimal,
    }
    solvers = {"Euler": (Euler(), 1), "Heun": (Heun(), 2), "DPMSolver2M": (DPMSolver2M(), 1),
               "UniPC": (UniPC(), 1), "DDIM(Ancestral eta=0)": (Ancestral(eta=0.0), 1)}
    rows = []
    for sname, (solver, per_step) in solvers.items():
        for gname, make in grids.items():
            cells = {}
            for nfe in NFES:
                steps = max(1, nfe // per_step)
                sol = pd.sample(rev, x_init=problem.x_init, solver=solver, grid=make(steps, solver))
                cells[nfe] = (sol.nfe, *problem.errors(sol.x))
            rows.append((f"probdiff {sname} + {gname}", cells))
    cells = {}
    for nfe in NFES:
        fitted = problem.multistep_optimal(nfe)
        sol = pd.sample(rev, x_init=problem.x_init, solver=fitted.solver, grid=fitted)
        cells[nfe] = (sol.nfe, *problem.errors(sol.x))
    rows.append(("probdiff ExponentialMultistep + MultistepOptimal", cells))
    return rows


# ==================================================================== diffusers
def _alphas_cumprod(process):
    t = torch.arange(1, TRAIN_STEPS + 1, dtype=torch.float64) / TRAIN_STEPS
    return torch.exp(2.0 * process.log_alpha(t))


def _trained_betas(process):
    abar = _alphas_cumprod(process)
    prev = torch.cat([torch.ones(1, dtype=torch.float64), abar[:-1]])
    return (1.0 - abar / prev).tolist()


def diffusers_configs():
    import diffusers

    return [
        ("DDIMScheduler (trailing)", diffusers.DDIMScheduler,
         dict(timestep_spacing="trailing", set_alpha_to_one=False, clip_sample=False), False),
        ("EulerDiscreteScheduler (trailing)", diffusers.EulerDiscreteScheduler,
         dict(timestep_spacing="trailing", final_sigmas_type="sigma_min"), False),
        ("HeunDiscreteScheduler (trailing, ends at 0)", diffusers.HeunDiscreteScheduler,
         dict(timestep_spacing="trailing"), True),
        ("DPMSolverMultistep++ 2M Karras", diffusers.DPMSolverMultistepScheduler,
         dict(use_karras_sigmas=True, algorithm_type="dpmsolver++", solver_order=2, final_sigmas_type="sigma_min"),
         False),
        ("DPMSolverMultistep++ 2M Karras (ends at 0)", diffusers.DPMSolverMultistepScheduler,
         dict(use_karras_sigmas=True, algorithm_type="dpmsolver++", solver_order=2), True),
        ("UniPCMultistepScheduler (trailing)", diffusers.UniPCMultistepScheduler,
         dict(timestep_spacing="trailing", final_sigmas_type="sigma_min"), False),
    ]


def run_scheduler(problem, cls, kwargs, steps):
    """Drive a diffusers scheduler with the exact oracle; returns (x in VP scaling, model evaluations)."""
    process = problem.process
    sched = cls(num_train_timesteps=TRAIN_STEPS, trained_betas=_trained_betas(process), prediction_type="epsilon",
                **kwargs)
    sched.set_timesteps(steps)
    ve_scaled = float(sched.init_noise_sigma) > 1.5      # Euler/Heun integrate x / alpha
    alpha_max = float(process.alpha(torch.tensor(T_MAX, dtype=torch.float64)))
    x = problem.x_init / alpha_max if ve_scaled else problem.x_init.clone()
    calls = 0
    for timestep in sched.timesteps:
        x_in = sched.scale_model_input(x, timestep)
        t = ((float(timestep) + 1.0) / TRAIN_STEPS)
        eps = problem.model.epsilon(x_in, min(max(t, T_MIN), T_MAX))
        calls += 1
        x = sched.step(eps, timestep, x).prev_sample
    if ve_scaled:   # back to VP scaling at the final noise level sigma~_end: x_vp = x / sqrt(1 + sigma~^2)
        x = x / math.sqrt(1.0 + float(sched.sigmas[-1]) ** 2)
    return x.to(torch.float64), calls


def diffusers_runs(problem):
    rows = []
    for name, cls, kwargs, at_zero in diffusers_configs():
        cells = {}
        for nfe in NFES:
            steps = (nfe + 1) // 2 if cls.__name__.startswith("Heun") else nfe   # Heun: 2 steps - 1 evaluations
            x, calls = run_scheduler(problem, cls, kwargs, steps)
            cells[nfe] = (calls, *problem.errors(x, at_zero))
        rows.append((f"diffusers {name}", cells))
    return rows


# ==================================================================== torchsde overhead
class _Sde:
    noise_type, sde_type = "diagonal", "ito"

    def __init__(self, rev):
        self.rev = rev

    def f(self, tau, y):
        return -self.rev.drift(y, -tau)

    def g(self, tau, y):
        return self.rev.diffusion(-tau).expand_as(y)


def torchsde_overhead(steps=100, batch=1000, dim=64, repeats=5):
    import torchsde

    process = pd.VPSDE()
    model = pd.DenoiserModel(lambda x, t: 0.5 * x, process)      # a cheap model: the loop overhead shows
    rev = pd.reverse(process, model, 1.0)
    grid = Uniform(steps)
    x0 = torch.randn(batch, dim, generator=torch.Generator().manual_seed(0))
    ts = grid.times(process).to(x0.dtype)

    def hand_written():
        g, x = torch.Generator().manual_seed(1), x0
        for i in range(steps):
            t, s = ts[i], ts[i + 1]
            z = torch.randn(x.shape, generator=g, dtype=x.dtype)
            x = x + (s - t) * rev.drift(x, t) + rev.diffusion(t) * torch.sqrt(t - s) * z
        return x

    def probdiff_em():
        return pd.sample(rev, x_init=x0, solver=EulerMaruyama(), grid=grid,
                         generator=torch.Generator().manual_seed(1)).x

    def probdiff_torchsde():
        return pd.sample(rev, x_init=x0, solver=TorchSDE("euler"), grid=grid,
                         generator=torch.Generator().manual_seed(1)).x

    def sdeint_default():
        taus = torch.tensor([-process.t_max, -process.t_min], dtype=x0.dtype)
        return torchsde.sdeint(_Sde(rev), x0, taus, method="euler", dt=float(taus[1] - taus[0]) / steps)[-1]

    fns = {"hand-written EM loop": hand_written, "pd.sample EulerMaruyama": probdiff_em,
           "pd.sample TorchSDE(euler)": probdiff_torchsde, "torchsde.sdeint, default BrownianInterval": sdeint_default}
    for fn in fns.values():                      # warm-up: lazy imports, allocator
        fn()
    wall = {k: float("inf") for k in fns}
    cpu = dict(wall)
    for _ in range(repeats):                      # interleaved, best of `repeats` (the machine may be shared)
        for k, fn in fns.items():
            start, start_cpu = time.perf_counter(), time.process_time()
            fn()
            wall[k] = min(wall[k], time.perf_counter() - start)
            cpu[k] = min(cpu[k], time.process_time() - start_cpu)
    return wall, cpu


# ==================================================================== report
def print_table(problem, rows):
    print(f"\n## {problem.name}: RMS to converged PF endpoint | sliced W2 to data (n = {problem.x_init.shape[0]})")
    head = "".join(f" | NFE {n:>2} rms    sw    " for n in NFES)
    print(f"{'method':<56}{head}")
    for name, cells in rows:
        line = "".join(f" | {cells[n][0]:>3} {cells[n][1]:.2e} {cells[n][2]:.3f}" for n in NFES)
        print(f"{name:<56}{line}")


def best_at(rows, nfe, metric):
    """Best (value, name) over rows at budget ``nfe`` among runs whose actual NFE does not exceed it."""
    k = {"rms": 1, "sw": 2}[metric]
    return min((cells[nfe][k], name) for name, cells in rows if cells[nfe][0] <= nfe)


def plot(results, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(results), 2, figsize=(13, 5 * len(results)), squeeze=False)
    for r, (problem, prows, drows) in enumerate(results):
        keep = sorted(prows, key=lambda row: row[1][10][1])[:5]       # the five best probdiff rows at NFE 10
        for c, (k, label) in enumerate(((1, "RMS to PF endpoint"), (2, "sliced W2 to data"))):
            ax = axes[r][c]
            for name, cells in keep + drows:
                style = "-" if name.startswith("probdiff") else "--"
                ax.plot([cells[n][0] for n in NFES], [cells[n][k] for n in NFES], style, marker="o", label=name)
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlabel("NFE")
            ax.set_title(f"{problem.name}: {label}")
            ax.grid(True, which="both", alpha=0.3)
        axes[r][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv=None):
    global NFES
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "out"),
                        help="directory for samplers.png (default: benchmarks/out)")
    parser.add_argument("--samples", type=int, default=2000)
    parser.add_argument("--quick", action="store_true", help="the ring only, fewer samples")
    parser.add_argument("--repeats", type=int, default=15, help="timing repeats of the torchsde comparison")
    parser.add_argument("--only", choices=["ring", "mixture16"], default=None,
                        help="one data set only (the two can run as separate processes)")
    parser.add_argument("--no-timing", action="store_true", help="skip the torchsde timing comparison")
    parser.add_argument("--nfes", default=",".join(map(str, NFES)),
                        help="comma-separated budgets (default: 5,10,20,50; 10 must be among them)")
    args = parser.parse_args(argv)
    NFES = tuple(int(n) for n in args.nfes.split(","))
    if 10 not in NFES:
        parser.error("--nfes must include 10 (the plot and the goal are at 10 evaluations)")
    torch.set_num_threads(1)
    problems = []
    if args.only in (None, "ring"):
        problems.append(Problem("ring 2-D, 8 modes", pd.oracles.GaussianMixture.ring(dtype=torch.float64),
                                500 if args.quick else args.samples))
    if not args.quick and args.only in (None, "mixture16"):
        problems.append(Problem("mixture 16-D, 4 components", mixture16(), args.samples))
    results = []
    for problem in problems:
        prows, drows = probdiff_runs(problem), diffusers_runs(problem)
        print_table(problem, prows + drows)
        print(f"EndpointOptimal: {problem.fit_runs} fits (one per solver and budget) on {PILOT} pilot initial states "
              f"(not the {problem.x_init.shape[0]} scored above), at most {FIT_EVALS} sampling runs each: "
              f"{problem.fit_seconds:.0f} s in all")
        print(f"MultistepOptimal: {len(problem.multistep_fits)} fits (one per budget) on {MULTISTEP_PILOT} pilot "
              f"initial states ({MULTISTEP_PILOT // 4} held out by each fit): {problem.multistep_seconds:.0f} s in all")
        for steps, start, errs in problem.multistep_fits:
            print(f"    {steps:>2} steps: start DPM-Solver++(2M) + {start!r}, pilot RMS fit/held-out "
                  f"{errs['start'][0]:.3e}/{errs['start'][1]:.3e} -> {errs['fitted'][0]:.3e}/{errs['fitted'][1]:.3e}")
        results.append((problem, prows, drows))
    print("\n## probdiff best / diffusers best at equal NFE budget (issue 18 goal, rms: <= 0.5 at NFE 5 and 10 on the "
          "16-D mixture, <= 0.1 on the ring)")
    for nfe in NFES:
        for problem, prows, drows in results:
            for metric in ("rms", "sw"):
                (pv, pn), (dv, dn) = best_at(prows, nfe, metric), best_at(drows, nfe, metric)
                print(f"NFE {nfe:>2} {problem.name:<28} {metric:>3}: {pv:.3e} ({pn}) / {dv:.3e} ({dn}) = {pv / dv:.3f}")
    if not args.no_timing:
        torchsde_report(args.repeats)
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, f"samplers{'_' + args.only if args.only else ''}.png")
    plot(results, path)
    print(f"\nplot: {path}")


def torchsde_report(repeats):
    wall, cpu = torchsde_overhead(repeats=repeats)
    hw, hc = wall["hand-written EM loop"], cpu["hand-written EM loop"]
    print(f"\n## torchsde path: 100 Euler steps, state 1000 x 64, one thread (best of {repeats}; "
          "seconds and ratio to the hand-written loop)")
    print(f"{'':<45} {'wall':>8} {'ratio':>7} {'cpu':>8} {'ratio':>7}")
    for k in wall:
        print(f"{k:<45} {wall[k]:8.4f} {wall[k] / hw:6.2f}x {cpu[k]:8.4f} {cpu[k] / hc:6.2f}x")
    key = "pd.sample TorchSDE(euler)"
    print(f"torchsde overhead ratio (TorchSDE / hand-written EM): wall {wall[key] / hw:.3f}, cpu {cpu[key] / hc:.3f} "
          "(goal <= 1.25)")


if __name__ == "__main__":
    main()
