"""Exact-trace likelihood of the quickstart's lattice model: images/s before and after issue 15, item 7.

Old: the route of the first likelihood release — ``ExactTrace(replicate=True)`` (the network *and* the lattice
head run on the batch replicated once per pixel, one backward pass) under torchdiffeq's dopri5 with one step
for the whole batch (``per_sample=False``). New: the default of ``pd.log_likelihood`` — the head's divergence
in closed form, the network's Jacobian trace from one forward pass and vectorised vector-Jacobian products
(``torch.func``; probdiff/nn/lattice.py), and per-sample steps (probdiff/likelihood/adaptive.py).
Both at the quickstart's ``rtol = atol = 1e-3`` and batch 16 on the held-out digits (uniform dequantisation,
seed 0). Each route is warmed up on one image first (one-time compilation is not counted), and the routes
take turns batch by batch (the machine is shared: its load drifts over all routes alike). The answers
are compared per image: the same solver with either trace (the fast trace must equal the replicated one
to 1e-6 relative; checked in float64, where rounding cannot flip a step decision, and on a fixed grid in
float32), and the two complete routes (which differ by the ODE error, as ``rtol`` allows).

Usage: ``python benchmarks/lattice_trace.py --checkpoint digits.pt [--images 32] [--threads 1]``; without
``--checkpoint`` it first trains the quickstart's recipe for ``--train-steps`` steps into a temporary folder.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

import probdiff as pd
from probdiff.cli.app import QUICKSTART_TRAIN
from probdiff.cli.app import dispatch
from probdiff.cli.runs import from_checkpoint


def run_interleaved(setup, x, rows, batch):
    """Per-image log p, wall time and mean NFE of every route: every route runs each batch before the next
    batch, so that the load of the shared machine drifts over all routes alike."""
    out = {label: ([], [], 0.0) for label, _ in rows}
    for xb in x.split(batch):
        for label, kwargs in rows:
            lps, nfes, wall = out[label]
            t0 = time.perf_counter()
            lp, st = pd.log_likelihood(setup.process, setup.model, xb, rtol=1e-3, atol=1e-3, return_stats=True,
                                       **kwargs)
            lps.append(lp)
            nfes.append(st.nfe_per_sample.double())
            out[label] = (lps, nfes, wall + time.perf_counter() - t0)
    return {label: (torch.cat(lps), wall, float(torch.cat(nfes).mean())) for label, (lps, nfes, wall) in out.items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", default=None)
    parser.add_argument("--train-steps", type=int, default=1000)
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--check", type=int, default=4, help="images of the same-answer checks")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    ckpt = args.checkpoint
    if ckpt is None:
        ckpt = str(Path(tempfile.mkdtemp()) / "digits.pt")
        dispatch(["train", "--checkpoint", ckpt, "--steps", str(args.train_steps), "--seed", "0", "--quiet",
                  "--threads", str(args.threads), *QUICKSTART_TRAIN])
    setup, _ = from_checkpoint(ckpt, "cpu")
    x = setup.transform(setup.split.test.counts[: args.images], torch.Generator().manual_seed(0))
    bits = lambda lp: pd.bits_per_dim(lp, x.shape[1:], **setup.transform.bits_options())  # noqa: E731
    rows = [("old: ExactTrace(replicate=True), one step per batch", {"trace": pd.ExactTrace(replicate=True),
                                                                     "per_sample": False}),
            ("fast trace, one step per batch", {"per_sample": False}),
            ("new: default (fast trace, per-sample steps)", {})]
    print(f"\n## Exact-trace likelihood of the lattice model ({args.images} held-out digits, batch {args.batch}, "
          f"rtol = atol = 1e-3, {args.threads} thread(s))\n")
    print("| route | wall s | images/s | speed-up vs old | NFE / image | mean bits/dim |")
    print("|---|---|---|---|---|---|")
    results = {}
    for trace in (pd.ExactTrace(replicate=True), pd.ExactTrace()):           # warm-up, not timed
        pd.log_likelihood(setup.process, setup.model, x[:1], method="rk4", steps=2, trace=trace)
    measured = run_interleaved(setup, x, rows, args.batch)
    old_wall = measured[rows[0][0]][1]
    for label, _ in rows:
        lp, wall, nfe = measured[label]
        results[label] = lp
        print(f"| {label} | {wall:.1f} | {args.images / wall:.2f} | {old_wall / wall:.1f}x | {nfe:.1f} "
              f"| {float(bits(lp).mean()):.4f} |")

    def rel(a, b):
        return float(((results[a] - results[b]).abs() / results[b].abs()).max())

    print("\nlargest per-image relative difference of log p:")
    print(f"- fast vs replicated trace, same solver (one step per batch), float32: {rel(rows[1][0], rows[0][0]):.2e} "
          "(float32 rounding of the trace can flip an accept/reject decision at rtol 1e-3)")
    print(f"- new vs old route (different steps; the ODE error at rtol 1e-3): {rel(rows[2][0], rows[0][0]):.2e}")
    few = x[: args.check]
    grid = {}
    for label, trace in (("replicated", pd.ExactTrace(replicate=True)), ("fast", pd.ExactTrace())):
        grid[label] = pd.log_likelihood(setup.process, setup.model, few, method="rk4", steps=16, trace=trace)
    diff = float(((grid["fast"] - grid["replicated"]).abs() / grid["replicated"].abs()).max())
    print(f"- fast vs replicated trace on the same fixed grid (rk4, 16 steps), float32, {args.check} images: "
          f"{diff:.2e}")
    setup.model.net.double()
    same = {}
    for label, trace in (("replicated", pd.ExactTrace(replicate=True)), ("fast", pd.ExactTrace())):
        same[label] = pd.log_likelihood(setup.process, setup.model, few.double(), rtol=1e-3, atol=1e-3, trace=trace)
    diff = float(((same["fast"] - same["replicated"]).abs() / same["replicated"].abs()).max())
    print(f"- fast vs replicated trace, same solver (per-sample steps), float64, {args.check} images: {diff:.2e}")


if __name__ == "__main__":
    main()
