"""Exact-trace likelihood of the quickstart's lattice model: images/s before and after issue 15, item 7.

Old: the route of the first likelihood release — ``ExactTrace(replicate=True)`` (the network *and* the lattice
head run on the batch replicated once per pixel, one backward pass) under torchdiffeq's dopri5 with one step
for the whole batch (``per_sample=False``). New: the default of ``pd.log_likelihood`` — the head's divergence
in closed form, the network's Jacobian trace from one forward pass and vectorised vector-Jacobian products
(``torch.func``; probdiff/likelihood/lattice_trace.py), and per-sample steps (probdiff/likelihood/adaptive.py).
Both at the quickstart's ``rtol = atol = 1e-3`` and batch 16 on the held-out digits (uniform dequantisation,
seed 0). The answers are compared per image: the same solver with either trace (the fast trace must equal
the replicated one to 1e-6 relative), and the two complete routes (which differ by the ODE error, as
``rtol`` allows).

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


def run(setup, x, batch, **kwargs):
    """Per-image log p and the wall time of the whole held-out set in batches of ``batch``."""
    t0, out, nfe = time.perf_counter(), [], []
    for xb in x.split(batch):
        lp, st = pd.log_likelihood(setup.process, setup.model, xb, rtol=1e-3, atol=1e-3, return_stats=True,
                                   **kwargs)
        out.append(lp)
        nfe.append(st.nfe_per_sample.double())
    return torch.cat(out), time.perf_counter() - t0, float(torch.cat(nfe).mean())


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", default=None)
    parser.add_argument("--train-steps", type=int, default=1000)
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1)
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
            ("replicated trace, per-sample steps", {"trace": pd.ExactTrace(replicate=True)}),
            ("fast trace, one step per batch", {"per_sample": False}),
            ("new: default (fast trace, per-sample steps)", {})]
    print(f"\n## Exact-trace likelihood of the lattice model ({args.images} held-out digits, batch {args.batch}, "
          f"rtol = atol = 1e-3, {args.threads} thread(s))\n")
    print("| route | wall s | images/s | speed-up vs old | NFE / image | mean bits/dim |")
    print("|---|---|---|---|---|---|")
    results = {}
    for label, kwargs in rows:
        lp, wall, nfe = run(setup, x, args.batch, **kwargs)
        results[label] = lp
        old = results[rows[0][0]], wall if label == rows[0][0] else old[1]
        print(f"| {label} | {wall:.1f} | {args.images / wall:.2f} | {old[1] / wall:.1f}x | {nfe:.1f} "
              f"| {float(bits(lp).mean()):.4f} |")

    def rel(a, b):
        return float(((results[a] - results[b]).abs() / results[b].abs()).max())

    print("\nlargest per-image relative difference of log p:")
    print(f"- fast vs replicated trace, one step per batch: {rel(rows[2][0], rows[0][0]):.2e}")
    print(f"- fast vs replicated trace, per-sample steps: {rel(rows[3][0], rows[1][0]):.2e}")
    print(f"- new vs old route (different steps; the ODE error at rtol 1e-3): {rel(rows[3][0], rows[0][0]):.2e}")


if __name__ == "__main__":
    main()
