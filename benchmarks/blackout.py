"""Blackout sampling throughput: probdiff's ``BinomialBridge`` against the original implementation's approach.

Both samplers run the same :class:`probdiff.BlackoutModel` on the same logit observation grid from the
same start and draw births ``Binomial(round(y_hat), (p_s - p_t)/(1 - p_t))`` per step. They differ in
where the draws happen:

* probdiff: ``pd.sample(..., solver=BinomialBridge())`` — ``torch.binomial`` on the model's device, the
  state never leaves it (no host round trip per step);
* original (Santos et al., "Blackout Diffusion", ICML 2023, reference code): per step the model output is
  copied to the host (``.cpu().numpy()``), births are drawn with ``numpy.random.binomial`` and copied back.

``--elbo`` runs the second benchmark instead: the per-draw spread of the continuous-time Blackout ELBO
(:func:`probdiff.likelihood.blackout_elbo`), every estimator at two network evaluations per draw: the logit
estimator of Santos et al. (``time=LogitTime(), fold_decoder=False``), probdiff's default (mixed time proposal,
decoder folded into the draws), a proposal fitted to the model (:class:`probdiff.likelihood.FittedBlackoutTime`,
its pilot evaluations listed) and the same fit with importance-sampled counts
(:class:`probdiff.likelihood.DefensiveCounts`, kept only where the pilot draws say it pays) and a control variate
of the counts (:class:`probdiff.likelihood.CountsControlVariate`), from the same pilot evaluations, which also choose
the share of the default proposal in the fitted time mixture (cross-fitted; rows with the share fixed follow); on the
3-point set of issue 16 with the exact oracle and on the digits with a network trained for ``--minutes``. It prints mean ± SE (the oracle's bound is log(1/3) up to a 3e-4 prior KL),
the standard deviation of one draw, quantiles, the minimum and the ratio of spreads to the logit estimator.

Usage: ``python benchmarks/blackout.py [--device cuda] [--steps 200] [--repeats 3] [--threads 1]``
or ``python benchmarks/blackout.py --elbo [--minutes 3]``. Prints a
table of samples per second and the ratio. The goal is a ratio >= 2 on a GPU, where the per-step copies and
synchronisations of the original approach dominate; on a CPU the copies are free and the ratio measures
only the binomial samplers (torch vs numpy).

To say what a device allows, the table also times the model alone over the same grid (the same
``mean_births`` calls, no draws). Both loops pay it, so ``original / model alone`` is the largest ratio
*any* sampler could reach there; and ``(loop - model alone)`` is each loop's own machinery (draws, copies,
bookkeeping), whose ratio compares the two samplers without the shared model cost.
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
import torch
from torch import nn

import probdiff as pd
from probdiff.nn import MLP


class ConvNet(nn.Module):
    """A small convolutional network for image-shaped counts (the model cost of a light U-Net stage)."""

    def __init__(self, channels: int, width: int = 32):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(channels + 1, width, 3, padding=1), nn.SiLU(),
                                 nn.Conv2d(width, width, 3, padding=1), nn.SiLU(),
                                 nn.Conv2d(width, channels, 3, padding=1))

    def forward(self, x, t):
        x = x.to(torch.get_default_dtype()) / 255.0
        tt = torch.log(t).reshape(-1, 1, 1, 1).expand(x.shape[0], 1, *x.shape[2:]).to(x.dtype)
        return self.net(torch.cat([x, tt], dim=1)) + 1.0


class FlatNet(nn.Module):
    def __init__(self, dim: int, max_count: int):
        super().__init__()
        self.scale = float(max_count)
        self.mlp = MLP(dim, hidden=256, depth=2)

    def forward(self, x, t):
        return self.mlp(x / self.scale, torch.log(t) / 10) + 1.0


def original(reverse, x, ts, rng: np.random.Generator):
    """The reference code's loop: model on the device, binomial draws in numpy on the host."""
    max_count = reverse.process.max_count
    for i in range(len(ts) - 1):
        t, s = ts[i], ts[i + 1]
        y = reverse.mean_births(x, t)
        prob = float((torch.exp(-s) - torch.exp(-t)) / (1 - torch.exp(-t)))
        y_host = np.round(y.detach().cpu().numpy()).astype(np.int64)
        x_host = x.cpu().numpy()
        count = np.minimum(y_host, max_count - x_host)
        births = rng.binomial(count, prob)
        x = x + torch.from_numpy(births).to(x.device)
    return x


def model_alone(reverse, x, ts):
    """The model calls both loops make, and nothing else: the floor of either loop's time."""
    for i in range(len(ts) - 1):
        reverse.mean_births(x, ts[i])
    return x


def ours(reverse, x, grid, generator):
    return pd.sample(reverse, x_init=x, solver=pd.solvers.BinomialBridge(), grid=grid, generator=generator).x


def sync(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def best_time(fn, device, repeats):
    fn()                                                         # warm-up
    sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return min(times)


ESTIMATORS = (("logit (Santos et al.)", dict(time=pd.LogitTime(), fold_decoder=False)),
              ("default (mixed, folded)", {}))


def spread_rows(name, process, model, points, reps, extra, want=None):
    """One row per estimator: mean ± SE, per-draw std, quantiles and minimum over all points' draws. Every
    estimator spends two network evaluations per draw (``extra`` rows' pilot evaluations are spent once, before
    the draws, and listed in their labels), so the ratio of per-draw spreads is at equal cost."""
    rows = list(ESTIMATORS) + list(extra)
    x = points.repeat_interleave(reps, 0)
    base = None
    print(f"\n{name}: {len(points)} points x {reps} draws, 2 network evaluations per draw for every estimator"
          + ("" if want is None else f"; target log(1/N) = {want:.4f}"))
    print(f"{'estimator':56s} {'mean':>9s} {'SE':>7s} {'std/draw':>9s} {'ratio':>6s} {'q0.1%':>8s} {'q1%':>8s}"
          f" {'q50%':>8s} {'min':>8s}" + ("" if want is None else f" {'|err|/SE':>8s}"))
    for label, options in rows:
        with torch.no_grad():
            e = pd.elbo(process, model, x, generator=torch.Generator().manual_seed(0), **options).reshape(-1, reps)
        sd = float(e.std(1).pow(2).mean().sqrt())         # rms over points of the per-point std of one draw
        se = float(e.std(1).pow(2).mean().sqrt() / math.sqrt(e.numel()))
        base = sd if base is None else base
        # quantiles of the draws centred on their point's mean, plus the overall mean (points differ in level)
        q = torch.quantile(e.flatten() - e.mean(1, keepdim=True).expand_as(e).flatten() + e.mean(),
                           torch.tensor([0.001, 0.01, 0.5]))
        err = "" if want is None else f" {float((e.mean(1) - want).abs().max() / (e.std(1).max() / math.sqrt(reps))):8.2f}"
        print(f"{label:56s} {float(e.mean()):9.4f} {se:7.4f} {sd:9.3f} {base / sd:6.2f} {float(q[0]):8.2f}"
              f" {float(q[1]):8.2f} {float(q[2]):8.3f} {float(e.min()):8.1f}" + err)


def fitted_rows(process, model, x, pilot, seed):
    """The fitted estimators: the time proposal alone, and with the counts (importance-sampled where the pilot
    says it pays) and their control variate, all from one set of ``pilot`` draws per point of ``x``, with the
    time proposal's defensive share chosen by the fit (cross-fitted among its default candidates); then the same
    with the share fixed at the previous default 0.3 and at 0.1 (a value chosen after seeing an earlier run)."""
    from probdiff.likelihood import DefensiveCounts, FittedBlackoutTime
    evals = pilot * len(x)

    def fitted(**options):
        return FittedBlackoutTime.fit(process, model, x, pilot=pilot, generator=torch.Generator().manual_seed(seed),
                                      **options)
    fit = fitted()
    full = fitted(counts=(None, DefensiveCounts()), control=True)
    fixed = [(d, fitted(counts=(None, DefensiveCounts()), control=True, defensive=d)) for d in (0.3, 0.1)]

    def chose(f):
        return "defensive counts" if f.counts is not None else "plain counts"
    return [(f"fitted, share {fit.defensive:g} ({evals} pilot evals)", dict(time=fit)),
            (f"fitted + {chose(full)} + control, share {full.defensive:g} ({evals})",
             dict(time=full, counts=full.counts, control=full.control))] + \
        [(f"  same, share fixed {d:g} ({evals})", dict(time=f, counts=f.counts, control=f.control)) for d, f in fixed]


def elbo_spread(args):
    """The ELBO spread benchmark (``--elbo``)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    from blackout_digits import CountNet, train
    from probdiff.losses import BlackoutLoss
    from probdiff.oracles import Empirical

    torch.set_default_dtype(torch.float64)
    data3 = torch.tensor([[8, 0], [3, 5], [1, 1]])
    b3 = pd.Blackout(max_count=8, t_max=10.0)
    oracle = Empirical(data3).model(b3)
    spread_rows("3-point set [[8,0],[3,5],[1,1]], Blackout(8, t_max=10), exact oracle", b3, oracle, data3, 20000,
                fitted_rows(b3, oracle, data3, 2000, 9), want=math.log(1 / 3))
    x, _ = load_digits(return_X_y=True)
    train_x, test_x = train_test_split(torch.tensor(x, dtype=torch.long), test_size=0.2, random_state=0)
    b = pd.Blackout(max_count=16, t_max=10.0)
    torch.manual_seed(0)
    model = pd.BlackoutModel(CountNet(16, b.t_max, 256, 3), b)
    print(f"\ntraining a BlackoutModel (MLP 256 x 3) on the digits for {args.minutes} min")
    its = train(model, BlackoutLoss(b), train_x, args.minutes, 0)
    model.net.eval()
    print(f"{its} iterations; proposals fitted on 40 training images x 32 draws")
    spread_rows("digits, 40 test images (bits/dim = -mean / (64 ln 2))", b, model, test_x[:40], 400,
                fitted_rows(b, model, train_x[:40], 32, 9))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--elbo", action="store_true", help="the ELBO spread benchmark instead of throughput")
    parser.add_argument("--minutes", type=float, default=3.0, help="--elbo: training time of the digits model")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 is steadiest on a shared CPU)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.elbo:
        return elbo_spread(args)
    device = torch.device(args.device)
    torch.manual_seed(0)
    configs = [
        # validate_args=False: argument checks read values back to the host, which both loops would pay
        ("digits 8x8, max 16, MLP", pd.Blackout(max_count=16, t_max=10.0, validate_args=False), (1024, 64),
         FlatNet(64, 16)),
        ("32x32x3, max 255, conv", pd.Blackout(max_count=255, t_max=15.0, validate_args=False), (32, 3, 32, 32),
         ConvNet(3, 16)),
    ]
    print(f"device: {device}, grid: LogitObservation({args.steps}), best of {args.repeats}, "
          f"torch threads {torch.get_num_threads()}")
    print(f"{'config':28s} {'batch':>6s} {'original (numpy) s/s':>21s} {'BinomialBridge s/s':>19s} {'ratio':>6s}"
          f" {'model alone s/s':>16s} {'ceiling':>8s} {'machinery ratio':>16s}")
    for name, process, shape, net in configs:
        net = net.to(device)
        model = pd.BlackoutModel(net, process)
        reverse = pd.reverse(process, model)
        grid = pd.grids.LogitObservation(args.steps)
        ts = grid.times(process).to(device=device, dtype=torch.get_default_dtype())
        x0 = torch.zeros(shape, dtype=torch.long, device=device)
        with torch.no_grad():
            t_orig = best_time(lambda: original(reverse, x0, ts, np.random.default_rng(0)), device, args.repeats)
            t_ours = best_time(lambda: ours(reverse, x0, grid, torch.Generator(device=device).manual_seed(0)),
                               device, args.repeats)
            # the model at a typical mid-run state (half the photons back), the same calls the loops make
            x_mid = torch.full(shape, process.max_count // 2, dtype=torch.long, device=device)
            t_model = best_time(lambda: model_alone(reverse, x_mid, ts), device, args.repeats)
        batch = shape[0]
        machinery = (t_orig - t_model) / max(t_ours - t_model, 1e-9)
        print(f"{name:28s} {batch:6d} {batch / t_orig:21.1f} {batch / t_ours:19.1f} {t_orig / t_ours:6.2f}"
              f" {batch / t_model:16.1f} {t_orig / t_model:8.2f} {machinery:16.2f}")


if __name__ == "__main__":
    main()
