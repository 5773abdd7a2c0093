"""Score-optimal grids (Williams et al. 2024) against the best fixed grid, per solver, at 10 model evaluations.

For each data set and each deterministic solver: the RMS distance of the probability-flow endpoint to the
converged one (dopri5 at tight tolerance) from the same initial noise, on the uniform, log-SNR and Karras
(rho = 7) grids and on two fitted grids:

* ``paper``: :meth:`probdiff.grids.ScoreOptimal.fit` with ``solver=None`` — the paper's constant speed in
  the corrector-cost metric (scale-free frame);
* ``order``: the same cost, with the step density per unit of log-SNR proportional to
  ``delta^(1/(2(p+1)))`` for the solver's order ``p`` (``ScoreOptimal.fit(..., solver=solver)``).

* ``local``: :meth:`probdiff.grids.LocalErrorOptimal.fit` on the same 300 pilot states — every step of the
  solver carries an equal share of its endpoint error, measured by step halving (equidistribution,
  iterated; the iterate with the smallest pilot error is kept; ``it`` is its index, 0 = the log-SNR start;
  ``last/best``: the last iterate's ratio, the equidistribution without that choice).

* ``traj`` (a diagnostic, not a probdiff API): the solver's own local-error density along probability-flow
  trajectories from 300 pilot noise states (not the scored ones), ``C(u) = E|d^(p+1) y/du^(p+1)|`` in the
  variable ``u`` the solver steps in (``t`` for Euler and Heun, ``ell`` = log-SNR/2 with ``y = alpha D`` for
  the exponential integrators), equidistributed: step density ``C^(1/(p+1))``. It shows how far a cost
  that is the solver's truncation error gets, where the score-only cost (a first time derivative at a
  fixed point) does not.

The ratio columns divide a fitted grid's error by the best fixed grid's (goal of issue 18: <= 1.1 for every
solver, < 1 for Euler). Grids are fitted from 512 data samples (3 iterations, 8 sub-intervals per step),
never from the scored noise.

Data sets (VP SDE, t in [1e-3, 1]):

* ``ring``: the 8-mode ring of ``benchmarks/samplers.py`` (exact mixture oracle), 500 initial states;
* ``16-D``: the 16-D, 4-component mixture of ``benchmarks/samplers.py`` (exact oracle), 500 initial states;
* ``digits``: scikit-learn's 8x8 digits dequantised to [-1, 1], an epsilon-MLP (256 wide, depth 3) trained
  for ``--train-steps`` steps with the importance-sampled denoising loss; 256 initial states; fitted from
  512 training images.

Run: ``python benchmarks/score_optimal.py [--train-steps 1500] [--quick]`` (one thread).
"""

from __future__ import annotations

import argparse
import math
import os
import time

import torch

import probdiff as pd
from probdiff import data as pdata
from probdiff.grids import Explicit, Karras, LocalErrorOptimal, LogSNR, ScoreOptimal, Uniform
from probdiff.nn import MLP, FourierLogSNR
from samplers import mixture16                    # the 16-D, 4-component mixture (this folder's samplers.py)
from probdiff.solvers import Ancestral, DPMSolver2M, Euler, Heun, TorchDiffEq, UniPC

NFE = 10
SOLVERS = {"Euler": (Euler(), 1), "Heun": (Heun(), 2), "DPMSolver2M": (DPMSolver2M(), 1), "UniPC": (UniPC(), 1),
           "DDIM": (Ancestral(eta=0.0), 1)}


def mixture_problem(mix, n=500):
    process = pd.VPSDE(t_min=1e-3)
    return (process, mix.model(process), mix.sample(512, generator=torch.Generator().manual_seed(3)),
            process.sample_prior(n, (mix.dim,), generator=torch.Generator().manual_seed(1), dtype=torch.float64),
            process.sample_prior(300, (mix.dim,), generator=torch.Generator().manual_seed(7), dtype=torch.float64))


def digits_model(train_steps, seed=0):
    """An epsilon-MLP trained on the digits training split (float32); returns process, model, fit data, noise."""
    torch.manual_seed(seed)
    digits = pdata.digits()
    split = digits.split(0.2, seed=0)
    dequantize = pdata.Dequantize(digits.levels, (-1.0, 1.0))
    process = pd.VPSDE(t_min=1e-3)
    net = MLP(digits.dim, hidden=256, depth=3, time=FourierLogSNR(process))
    model = pd.EpsilonModel(net, process)
    loss = pd.losses.DenoisingScoreMatching(process, pd.losses.ImportanceSampled())
    trainer = pd.Trainer(model, loss, split.train.counts.flatten(1), transform=dequantize, steps=train_steps,
                         batch_size=128, optimizer=pd.train.AdamW(lr=2e-3), run=pd.train.Run(seed=seed))
    trainer.fit()
    net.load_state_dict(trainer.ema)          # evaluate the EMA weights
    net.eval()
    data = dequantize(split.train.counts[:512], torch.Generator().manual_seed(3)).flatten(1)
    x_init = process.sample_prior(256, (digits.dim,), generator=torch.Generator().manual_seed(1))
    pilot = process.sample_prior(300, (digits.dim,), generator=torch.Generator().manual_seed(7))
    return process, model, data, x_init, pilot


#: the variable each solver steps in and what it extrapolates: Euler and Heun step x in t; the exponential
#: integrators (DPMSolver2M, UniPC, DDIM) step in ell = log-SNR / 2 and extrapolate alpha * D (THEORY.md §1).
VARIABLE = {"Euler": "t", "Heun": "t", "DPMSolver2M": "ell", "UniPC": "ell", "DDIM": "ell"}


def trajectory_grid(process, model, x_init, solver_name, order, steps, fine=200):
    """Diagnostic (not a probdiff API): the solver's own local-error density along probability-flow
    trajectories, ``C(u) = E|d^(p+1) y / du^(p+1)|`` with ``y = x`` in ``u = t`` (Euler, Heun) or
    ``y = alpha D`` integrated in ``u = ell`` (exponential integrators), by divided differences on a
    ``fine``-step log-SNR grid of a UniPC solution from ``x_init``; returns the ``steps``-step grid with step
    density ``C^(1/(p+1))`` in ``u`` (equidistributed local error)."""
    ts = LogSNR(fine).times(process)
    flow = pd.probability_flow(process, model)
    with torch.no_grad():
        xs = pd.sample(flow, x_init=x_init, solver=UniPC(), grid=LogSNR(4 * fine), trajectory=True).xs[::4]
        if VARIABLE[solver_name] == "t":
            u, y, k = ts, xs, order + 1
        else:
            u = 0.5 * process.log_snr(ts)
            y = torch.stack([process.alpha(t) * model.denoise(x, t.expand(x.shape[0])) for x, t in zip(xs, ts)])
            k = order
    u = u.to(y.dtype)
    for j in range(1, k + 1):       # divided differences: y[i..i+j] = (y[i+1..i+j] - y[i..i+j-1]) / (u_{i+j} - u_i)
        y = (y[1:] - y[:-1]) / (u[j:] - u[:-j]).reshape(-1, *[1] * (y.dim() - 1))
    c = (math.factorial(k) * y).flatten(2).norm(dim=2).mean(1).double().clamp_min(1e-300)
    c = torch.cat([c, c[-1:].expand(fine - c.shape[0])])          # the last k intervals: the last estimate
    h = (u[1:] - u[:-1]).abs().double()
    # increments C^(1/(p+1)) h_u: ScoreOptimal.reparameterise with "costs" (C^(1/(p+1)) h_u)^2 at exponent 1/2
    return Explicit(ScoreOptimal.reparameterise(ts, (c ** (1.0 / (order + 1)) * h) ** 2, steps=steps))


def rms(x, ref):
    return float((x - ref).flatten(1).pow(2).sum(1).mean().sqrt())


def table(name, process, model, data, x_init, pilot, *, iterations=3):
    """One data set: errors of every grid for every solver at NFE 10, and the fitted/best-fixed ratios."""
    flow = pd.probability_flow(process, model)
    tol = 1e-9 if x_init.dtype == torch.float64 else 1e-5
    with torch.no_grad():
        ref = pd.sample(flow, x_init=x_init, solver=TorchDiffEq(rtol=tol, atol=tol), grid=LogSNR(8)).x
    with torch.no_grad():
        pilot_ref = pd.sample(flow, x_init=pilot, solver=TorchDiffEq(rtol=tol, atol=tol), grid=LogSNR(8)).x
    fit_seconds, local_seconds = 0.0, 0.0
    print(f"\n{name}: RMS distance to the converged probability-flow endpoint at NFE {NFE}")
    print(f"{'solver':<12}{'Uniform':>9}{'LogSNR':>9}{'Karras':>9}{'paper':>9}{'order':>9}{'traj':>9}{'local':>9}"
          f"{'it':>4}{'paper/best':>12}{'order/best':>12}{'traj/best':>12}{'local/best':>12}{'last/best':>11}")
    ratios = {}
    for sname, (solver, per_step) in SOLVERS.items():
        steps = NFE // per_step
        with torch.no_grad():
            fixed = [rms(pd.sample(flow, x_init=x_init, solver=solver, grid=g).x, ref)
                     for g in (Uniform(steps), LogSNR(steps), Karras(steps))]
        fitted = []
        for which in (None, solver):
            start = time.perf_counter()
            grid = ScoreOptimal.fit(process, model, data, steps, iterations=iterations, solver=which,
                                    generator=torch.Generator().manual_seed(4))
            fit_seconds += time.perf_counter() - start
            with torch.no_grad():
                fitted.append(rms(pd.sample(flow, x_init=x_init, solver=solver, grid=grid).x, ref))
        grid = trajectory_grid(process, model, pilot, sname, solver.order, steps)
        with torch.no_grad():
            fitted.append(rms(pd.sample(flow, x_init=x_init, solver=solver, grid=grid).x, ref))
        start = time.perf_counter()
        grid = LocalErrorOptimal.fit(flow, solver, steps, pilot, reference=pilot_ref)
        local_seconds += time.perf_counter() - start
        with torch.no_grad():
            fitted.append(rms(pd.sample(flow, x_init=x_init, solver=solver, grid=grid).x, ref))
            last = rms(pd.sample(flow, x_init=x_init, solver=solver, grid=Explicit(grid.history[-1][0])).x, ref)
        best = min(fixed)
        ratios[sname] = tuple(f / best for f in fitted)
        print(f"{sname:<12}" + "".join(f"{e:>9.4f}" for e in fixed + fitted) + f"{grid.chosen:>4}"
              + "".join(f"{r:>12.2f}" for r in ratios[sname]) + f"{last / best:>11.2f}", flush=True)
    print(f"(score-optimal fits: {fit_seconds:.1f} s in all; local-error fits: {local_seconds:.1f} s in all)")
    return ratios


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-steps", type=int, default=1500)
    parser.add_argument("--quick", action="store_true", help="small sizes (a smoke run)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    n = 100 if args.quick else 500
    start = time.perf_counter()
    summary = {}
    summary["ring"] = table("ring", *mixture_problem(pd.oracles.GaussianMixture.ring(dtype=torch.float64), n))
    summary["16-D"] = table("16-D mixture", *mixture_problem(mixture16(), n))
    t0 = time.perf_counter()
    problem = digits_model(60 if args.quick else args.train_steps)
    print(f"\ndigits model trained in {time.perf_counter() - t0:.0f} s")
    summary["digits"] = table("digits (trained MLP)", *problem)
    print(f"\nfitted / best fixed grid at NFE {NFE} (goal: <= 1.1 for every solver, < 1 for Euler)")
    kinds = ("paper", "order", "traj", "local")
    print(f"{'solver':<12}" + "".join(f"{k + ' ' + c:>13}" for k in summary for c in kinds))
    for sname in SOLVERS:
        print(f"{sname:<12}" + "".join(f"{r:>13.2f}" for k in summary for r in summary[k][sname]))
    print(f"\ntotal {time.perf_counter() - start:.0f} s; load average at the end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
