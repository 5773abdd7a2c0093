"""Held-out bits/dim on the digits test split: probdiff's trained model vs scikit-learn's GaussianMixture.

The data are scikit-learn's 8x8 digits (17 levels), split deterministically as ``probdiff train`` does
(20% test, seed 0). Both models are scored on the *same* uniformly dequantised test images mapped to
[-1, 1], and both log-densities go through :func:`probdiff.bits_per_dim` (THEORY.md §4), so the
constant ``log2(17) - log2(2)`` (the Jacobian of the scaling) is the same for both:

* scikit-learn's ``GaussianMixture(covariance_type="full")`` — the baseline a user would pick instead —
  with the number of components chosen on a validation split carved out of the training split, then
  refitted on the whole training split;
* probdiff: the command line's default recipe — a residual MLP (512 wide, 3 blocks, dropout 0.3) under a
  :class:`probdiff.nn.LatticeDenoiser` head (``--model lattice``: one logit per grey level and pixel, the
  posterior within each bin exact), VP SDE stopped at the CLI's noise floor, ELBO-weighted denoising score
  matching with t importance-sampled uniformly in log-SNR and Rao-Blackwellised dequantisation targets,
  EMA, trained for at most ``--minutes`` of CPU time; log-likelihood by the probability-flow ODE. With the
  exact trace (64 backward passes per ODE step) a CPU scores well under one image/s with this network, so
  the default scores the whole split with Hutchinson's unbiased estimate of the same ODE log-likelihood and
  checks it against the exact trace on the first ``--exact-subset`` images (paired difference with its 95%
  interval); ``--trace exact`` scores everything exactly. ``--model epsilon`` trains the epsilon MLP of the
earlier runs (those used 14000 steps and a 0.4-bin noise floor).

Reports training throughput (images/s) and likelihood-evaluation speed (images/s). Every bits/dim is printed
as "bits/dim ± SE(trace) ± 95% CI(data)" (:func:`probdiff.bits_per_dim_summary`): the first is the standard
error of the trace estimate (``--probes`` Hutchinson probes per image; 0 for the exact trace), the second
the confidence interval over the test images.

*Dequantisation table* (``--deq-images``, ``--deq-k``): bits/dim ± SE of the same model on the first
``--deq-images`` test images under each dequantisation bound of :mod:`probdiff.likelihood.dequantization`,
all lossless code lengths of the integer images (:func:`probdiff.likelihood.dequantized_bound`, bits/dim
without the ``levels`` constant): uniform (the usual number), the truncated normal of Zheng et al. (ICML 2023)
with its scale matched to the noise floor and its (negative) entropy term counted, and the importance-weighted
bound over ``K`` draws of each (tighter as K grows). The trace is Hutchinson's with ``--deq-probes``
probes; with K > 1 its noise biases the log-mean-exp upwards by at most SE^2/2 per image, printed.

The lattice model learns fast and then over-fits the 1438 training images (on a validation split carved
from the training split, 1150 images: 2.09 bits/dim after a 1500-step schedule, 2.08 at step 1000 of a
4000-step one, 2.12 at step 2000, 2.78 after 6000 steps with 0.74 on its own training images; dropout
0.5 or weight decay 0.1 changed nothing), so the default schedule is 1500 steps — a few minutes, well
inside the 15-minute budget.

Usage: ``python benchmarks/digits.py [--minutes 15] [--steps 1500] [--json out.json]`` (one torch thread,
``OMP_NUM_THREADS=1``, was fastest on a shared 2-core machine).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

import numpy as np
import torch

from probdiff import cli
from probdiff.likelihood import (ExactTrace, Hutchinson, TruncatedNormalDequantizer, UniformDequantizer,
                                 bits_per_dim, bits_per_dim_summary, dequantized_bound, log_likelihood)
from probdiff import recipes
from probdiff.train import EMA, AdamW, Run, Trainer, WarmupCosine


def gmm_bits(train_x: np.ndarray, val_x: np.ndarray, fit_x: np.ndarray, test_x: np.ndarray, seed: int):
    """Full-covariance GMM: components chosen by validation log-likelihood, refitted on ``fit_x``."""
    from sklearn.mixture import GaussianMixture

    scores = {}
    for k in (1, 2, 4, 8, 12, 16, 24, 32, 48, 64):
        if k * 4 > train_x.shape[0]:
            break
        g = GaussianMixture(k, covariance_type="full", random_state=seed, max_iter=500, n_init=2).fit(train_x)
        scores[k] = float(g.score(val_x))
    best = max(scores, key=scores.get)
    t0 = time.time()
    g = GaussianMixture(best, covariance_type="full", random_state=seed, max_iter=500, n_init=2).fit(fit_x)
    fit_time = time.time() - t0
    t0 = time.time()
    lp = torch.as_tensor(g.score_samples(test_x))
    eval_rate = test_x.shape[0] / max(time.time() - t0, 1e-9)
    return best, scores, lp, fit_time, eval_rate


def blackout_bits(a, test_counts):
    """The CLI's Blackout model (counts 0..16, its default loss and network) trained for ``--blackout-minutes``
    on the same training split; its continuous-time ELBO on the same test images, in bits per dimension."""
    from probdiff.likelihood import elbo

    config = dict(data="digits", levels=None, test_fraction=0.2, split_seed=0, process="blackout", t_min=None,
                  model=None, net="mlp", hidden=a.hidden, depth=a.depth, base=32, mults="1,2", dropout=0.0,
                  weighting=None)
    run = cli.build(config)
    loss = recipes.loss(run.model, None, run.transform)
    trainer = Trainer(run.model, loss, run.split.train.counts, transform=run.transform, steps=10**6,
                      batch_size=a.batch_size, optimizer=AdamW(lr=a.lr), scheduler=WarmupCosine(warmup=200),
                      ema=EMA(a.ema), run=Run(seed=a.seed, device="cpu"))
    t0 = time.time()
    for _ in range(50):
        trainer.train_step()
    # the cosine schedule spans the steps the budget allows at the speed of the first 50
    trainer.steps = max(100, int(50 * 60.0 * a.blackout_minutes / (time.time() - t0)))
    while time.time() - t0 < 60.0 * a.blackout_minutes and trainer.step < trainer.steps:
        trainer.train_step()
    train_time = time.time() - t0
    g = torch.Generator().manual_seed(a.seed + 11)
    t0 = time.time()
    with trainer.ema_weights() as model, torch.no_grad():
        bound = torch.cat([elbo(run.process, model, chunk, num_samples=a.elbo_samples, generator=g)
                           for chunk in test_counts.split(120)])
    eval_rate = test_counts.shape[0] / (time.time() - t0)
    bits = bits_per_dim(bound.double(), run.dataset.event_shape, **run.transform.bits_options())
    return bits, train_time, trainer.step * a.batch_size / train_time, eval_rate, trainer.step


def dequantisation_table(run, counts, a, log_density):
    """Rows ``(name, BitsPerDim, note)`` of each dequantisation bound on ``counts`` (module docstring) and the
    seconds taken. ``log_density(x, generator) -> (log p, SE)``."""
    lattice = run.transform.lattice
    t_min = torch.tensor(run.process.t_min, dtype=torch.float64)
    # Zheng et al.'s training-free choice: the truncated normal's scale is the noise at t_min, in bins
    scale = float(run.process.sigma(t_min) / run.process.alpha(t_min)) / lattice.width
    event, dim = run.dataset.event_shape, run.dataset.dim
    rows, t0 = [], time.time()
    for deq, k in ((UniformDequantizer(), 1), (TruncatedNormalDequantizer(scale), 1),
                   (UniformDequantizer(), a.deq_k), (TruncatedNormalDequantizer(scale), a.deq_k)):
        g = torch.Generator().manual_seed(a.seed + 31)
        bound, se = dequantized_bound(lambda x: log_density(x, g), counts, lattice, dequantizer=deq, num_samples=k,
                                      generator=g)
        entropy = deq.entropy(dim) / (dim * math.log(2.0))
        note = f"entropy term {entropy:+.4f} bits/dim counted"
        if k > 1:
            note += f"; trace-noise bias <= {float((se**2 / 2).mean()) / (dim * math.log(2.0)):.1e} bits/dim"
        rows.append((f"{deq!r}, K={k}", bits_per_dim_summary(bound, se, event), note))
    return rows, time.time() - t0


def format_table(rows) -> str:
    """The dequantisation rows as a table: name, bits/dim, SE(trace), 95% CI(data), note."""
    lines = [f"{'dequantisation':44s} {'bits/dim':>9s} {'SE trace':>9s} {'95% CI':>8s}  note"]
    for name, b, note in rows:
        lines.append(f"{name:44s} {b.value:9.4f} {b.se_trace:9.4f} {b.ci95_data:8.4f}  {note}")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, default=15.0, help="CPU training budget for probdiff")
    p.add_argument("--steps", type=int, default=1500, help="planned training steps (cosine schedule length)")
    p.add_argument("--model", choices=sorted(cli.MODELS), default="lattice", help="parameterisation (CLI names)")
    p.add_argument("--hidden", type=int, default=512)
    p.add_argument("--depth", type=int, default=3)
    p.add_argument("--dropout", type=float, default=0.3)
    p.add_argument("--weighting", choices=("natural", "importance", "likelihood"), default="importance")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--ema", type=float, default=0.999)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--trace", choices=("exact", "hutchinson"), default="hutchinson")
    p.add_argument("--probes", type=int, default=2, help="Hutchinson probes per image (>= 2 gives an SE)")
    p.add_argument("--deq-images", type=int, default=64, help="test images of the dequantisation table (0: skip)")
    p.add_argument("--deq-k", type=int, default=4, help="K of the importance-weighted dequantisation bounds")
    p.add_argument("--deq-probes", type=int, default=4, help="Hutchinson probes per draw in the table")
    p.add_argument("--rtol", type=float, default=1e-5)
    p.add_argument("--exact-subset", type=int, default=24,
                   help="with --trace hutchinson, also score the first N test images with the exact trace")
    p.add_argument("--limit", type=int, default=None, help="score only the first N test images")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--blackout-minutes", type=float, default=3.5,
                   help="also train the CLI's Blackout model for this long and report its lossless codelength "
                        "(0: skip)")
    p.add_argument("--elbo-samples", type=int, default=16, help="Monte-Carlo draws of Blackout's ELBO per image")
    p.add_argument("--json", help="also write the results here")
    a = p.parse_args(argv)
    torch.manual_seed(a.seed)

    config = dict(data="digits", levels=None, test_fraction=0.2, split_seed=0, process="vp", t_min=None,
                  model=a.model,
                  net="mlp", hidden=a.hidden, depth=a.depth, base=32, mults="1,2", dropout=a.dropout,
                  weighting=a.weighting)
    run = cli.build(config)
    deq = run.transform
    test_counts = run.split.test.counts[: a.limit] if a.limit else run.split.test.counts
    # one fixed dequantisation of the test images, shared by both models
    test_x = deq(test_counts, torch.Generator().manual_seed(12345), dtype=torch.float64)
    d = run.dataset.dim
    options = deq.bits_options()

    # ---------------------------------------------------------------- baseline
    inner = run.split.train.split(0.2, seed=1)
    gen = torch.Generator().manual_seed(a.seed)
    # several dequantised copies of each training image: the GMM fits the dequantised density
    copies = lambda ds: torch.cat([deq(ds.counts, gen, dtype=torch.float64) for _ in range(4)]).reshape(-1, d).numpy()
    t0 = time.time()
    k, scores, gmm_lp, gmm_fit, gmm_rate = gmm_bits(copies(inner.train), copies(inner.test), copies(run.split.train),
                                                    test_x.reshape(-1, d).numpy(), a.seed)
    gmm_bpd = bits_per_dim(gmm_lp, run.dataset.event_shape, **options)
    print(f"GMM: components chosen on validation: {k} (validation log-lik per image: "
          f"{', '.join(f'{c}: {s:.1f}' for c, s in scores.items())}), {time.time() - t0:.0f}s", flush=True)

    # ---------------------------------------------------------------- probdiff
    loss = recipes.loss(run.model, config["weighting"], deq)
    trainer = Trainer(run.model, loss, run.split.train.counts, transform=deq, steps=a.steps, batch_size=a.batch_size,
                      optimizer=AdamW(lr=a.lr), scheduler=WarmupCosine(warmup=200), ema=EMA(a.ema),
                      run=Run(seed=a.seed, device="cpu"))
    budget = 60.0 * a.minutes
    t0 = time.time()
    from tqdm.auto import tqdm

    bar = tqdm(total=a.steps, desc="training", unit="step", mininterval=5)
    while trainer.step < a.steps and time.time() - t0 < budget:
        value = trainer.train_step()
        bar.update(1)
        bar.set_postfix(loss=f"{value:.4g}", refresh=False)
    bar.close()
    train_time = time.time() - t0
    train_rate = trainer.step * a.batch_size / train_time
    trace = ExactTrace() if a.trace == "exact" else Hutchinson(num_probes=a.probes)

    def log_density(x, trace, g, desc=None):
        """(log p, SE) of the EMA model's flow, in chunks of 128."""
        lps, ses = [], []
        with trainer.ema_weights() as model:
            chunks = range(0, x.shape[0], 128)
            for i in (tqdm(chunks, desc=desc, unit="batch") if desc else chunks):
                lp, st = log_likelihood(run.process, model, x[i:i + 128].float(), trace=trace, rtol=a.rtol,
                                        atol=a.rtol, generator=g, return_stats=True)
                lps.append(lp.double())
                ses.append(st.se.double())
        return torch.cat(lps), torch.cat(ses)

    def score(x, trace, desc):
        t0 = time.time()
        lp, se = log_density(x, trace, torch.Generator().manual_seed(a.seed + 7), desc)
        return bits_per_dim(lp, run.dataset.event_shape, **options), (lp, se), time.time() - t0

    pd_bpd, pd_scores, eval_time = score(test_x, trace, f"likelihood ({a.trace} trace)")
    if a.exact_subset and a.trace != "exact":
        sub = test_x[: a.exact_subset]
        exact_sub, _, exact_time = score(sub, ExactTrace(), "likelihood (exact trace, subset)")
        print(f"check on the first {sub.shape[0]} test images: exact trace {float(exact_sub.mean()):.4f} bits/dim "
              f"({sub.shape[0] / exact_time:.2f} images/s), {a.trace} trace on the same images "
              f"{float(pd_bpd[: sub.shape[0]].mean()):.4f}; paired difference "
              f"{float((pd_bpd[: sub.shape[0]] - exact_sub).mean()):+.4f} ± "
              f"{1.96 * float((pd_bpd[: sub.shape[0]] - exact_sub).std()) / math.sqrt(sub.shape[0]):.4f}",
              flush=True)

    # ---------------------------------------------------------------- dequantisation table
    deq_rows = []
    if a.deq_images > 0:
        deq_rows, deq_time = dequantisation_table(run, test_counts[: a.deq_images], a,
                                                  lambda x, g: log_density(x, Hutchinson(num_probes=a.deq_probes), g))

    # ---------------------------------------------------------------- Blackout (integer data, lossless)
    blackout = blackout_bits(a, test_counts) if a.blackout_minutes > 0 else None

    # ---------------------------------------------------------------- table
    def ci(b):
        return 1.96 * float(b.std()) / math.sqrt(b.numel())

    n = test_x.shape[0]
    rows = [
        ("scikit-learn GaussianMixture (full, K=%d)" % k, gmm_bpd, gmm_fit, (4 * len(run.split.train)) / gmm_fit,
         gmm_rate),
        (f"probdiff MLP {a.hidden}x{a.depth}, VP, {a.model}, {a.weighting} ({trainer.step} steps)", pd_bpd, train_time,
         train_rate, n / eval_time),
    ]
    print()
    print(f"digits test split: {n} images, 8x8, 17 levels, uniformly dequantised to [-1, 1] "
          f"(same noise for both); trace={a.trace}, rtol={a.rtol}; torch threads={torch.get_num_threads()}, "
          f"CPU cores={os.cpu_count()}")
    print(f"{'model':58s} {'bits/dim':>9s} {'95% CI':>8s} {'train s':>8s} {'train img/s':>12s} {'eval img/s':>11s}")
    for name, b, tt, tr, ev in rows:
        print(f"{name:58s} {float(b.mean()):9.4f} {ci(b):8.4f} {tt:8.0f} {tr:12.1f} {ev:11.1f}")
    print(f"probdiff: {bits_per_dim_summary(*pd_scores, run.dataset.event_shape, **options)} "
          f"({a.trace} trace{'' if a.trace == 'exact' else f', {a.probes} probes'})")
    if deq_rows:
        print()
        print(f"dequantisation bounds of the same model on the first {a.deq_images} test images (lossless code "
              f"lengths of the integer images, Hutchinson trace with {a.deq_probes} probes per draw, {deq_time:.0f}s):")
        print(format_table(deq_rows))
    ratio = float(pd_bpd.mean()) / float(gmm_bpd.mean())
    print(f"ratio probdiff / GMM bits/dim: {ratio:.3f}; goal <= 2.4 bits/dim: "
          f"{'met' if float(pd_bpd.mean()) <= 2.4 else 'not met'}")
    if blackout is not None:
        b, tt, tr, ev, steps = blackout
        print()
        print("not a dequantised density: lossless codelength of the integer test images, -ELBO/(D ln 2) "
              f"({a.elbo_samples} draws per image; an upper bound on -log2 P(n)/D)")
        print(f"{f'probdiff Blackout, MLP {a.hidden}x{a.depth} ({steps} steps)':58s} {float(b.mean()):9.4f} "
              f"{ci(b):8.4f} {tt:8.0f} {tr:12.1f} {ev:11.1f}")
    if a.json:
        with open(a.json, "w") as fh:
            json.dump({"gmm": {"components": k, "bpd": float(gmm_bpd.mean()), "ci": ci(gmm_bpd),
                               "validation": scores},
                       "dequantisation": {name: {"bpd": b.value, "se_trace": b.se_trace, "ci": b.ci95_data}
                                          for name, b, _ in deq_rows},
                       "probdiff": {"steps": trainer.step, "bpd": float(pd_bpd.mean()), "ci": ci(pd_bpd),
                                    "train_seconds": train_time, "train_images_per_s": train_rate,
                                    "eval_images_per_s": n / eval_time, "trace": a.trace},
                       "ratio": ratio,
                       "blackout_lossless": None if blackout is None else {
                           "bpd": float(blackout[0].mean()), "ci": ci(blackout[0]), "steps": blackout[4]}}, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
