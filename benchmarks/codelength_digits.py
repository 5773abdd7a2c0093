"""Lossless bits/dim of masking, uniform and Blackout chains on scikit-learn's 8x8 digits as 17-level tokens.

The split is the one of ``benchmarks/digits.py`` and ``probdiff train`` (``test_fraction=0.2``, ``split_seed=0``:
1438 training and 359 test images of 64 pixels with values 0..16). Each model is trained on the training split
for at most ``--minutes`` of this process' CPU time (one thread; not wall time, the machine is shared), with an
EMA of the weights used for evaluation, and scored on the test split by its continuous-time ELBO
(``pd.elbo(chain, model, x)``, no grid, ``--elbo-samples`` stratified times per image): ``-ELBO / (64 ln 2)`` is a
lossless codelength of the integer image in bits per pixel (no dequantisation). ± is one standard error over
the test images.

* masking: :class:`probdiff.AbsorbingChain` (17 levels + the mask) with the linear schedule, a
  :class:`probdiff.SUBSModel` around a :class:`probdiff.nn.Transformer` over the 64 pixels, trained with
  :class:`probdiff.losses.ChainELBOLoss` (MDLM/MD4's weighted cross-entropy);
* uniform: :class:`probdiff.UniformChain` (17 levels) with the linear schedule, a :class:`probdiff.CategoricalModel`
  around the same transformer, the same loss (the continuous-time chain ELBO);
* Blackout: the command line's Blackout model (``probdiff train --process blackout``: an MLP 512x3 predicting the
  missing photons) with its default loss, the set-up of the 1.89 bits/dim anchor.

Baselines computed here: the uniform code (log2 17), a per-pixel categorical law fitted on the training split
(Krichevsky-Trofimov counts + 1/2) and scored on the test split, and zlib/bz2/lzma (strongest presets) of the
test split's bytes (one byte per pixel, images concatenated). Quoted anchors (measured earlier, not here):
``docs/benchmarks/digits.txt``.

Usage: ``python benchmarks/codelength_digits.py [--minutes 4] [--seed 0] [--save docs/benchmarks/codelength_digits.txt]``;
``--quick`` trains tiny models for a few steps and scores 8 test images (a smoke test, not a result).
"""

from __future__ import annotations

import argparse
import bz2
import lzma
import math
import sys
import time
import zlib
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import probdiff as pd  # noqa: E402
from probdiff import cli, recipes  # noqa: E402
from probdiff.losses import ChainELBOLoss  # noqa: E402
from probdiff.nn import FourierTime, Transformer  # noqa: E402
from probdiff.processes.schedules import Linear  # noqa: E402
from probdiff.train import EMA, AdamW, Run, Trainer, WarmupCosine  # noqa: E402

from _report import Report  # noqa: E402

LN2 = math.log(2)
#: Quoted from docs/benchmarks/digits.txt (2026-11-22, commit 1affd9e); the file gives 95% half-widths.
ANCHORS = (("quoted: probdiff Blackout, MLP 512x3 (4435 steps), CT ELBO", 1.8929, 0.0895 / 1.96),
           ("quoted: probdiff VP lattice MLP 512x3, exact ODE likelihood*", 2.0514, 0.0295 / 1.96),
           ("quoted: scikit-learn GaussianMixture (K=8)*", 2.5985, 0.0622 / 1.96))


def config(process: str, hidden: int = 512, depth: int = 3) -> dict:
    return dict(data="digits", levels=None, test_fraction=0.2, split_seed=0, process=process, t_min=None,
                model=None, net="mlp", hidden=hidden, depth=depth, base=32, mults="1,2", dropout=0.0, weighting=None)


def train(model, loss, data, a, label: str):
    """Train ``model.net`` for at most ``a.minutes`` CPU minutes; the cosine schedule spans the steps the budget
    allows at the speed of the first steps. Returns the trainer, the steps and the CPU seconds."""
    trainer = Trainer(model, loss, data, steps=10**6, batch_size=a.batch_size, optimizer=AdamW(lr=a.lr),
                      scheduler=WarmupCosine(warmup=100), ema=EMA(a.ema), run=Run(seed=a.seed, device=a.device))
    budget, c0 = 60.0 * a.minutes, time.process_time()
    probe = 5 if a.quick else 20
    for _ in range(probe):
        trainer.train_step()
    trainer.steps = max(probe + 1, int(probe * budget / (time.process_time() - c0)))
    while trainer.step < trainer.steps and time.process_time() - c0 < budget:
        value = trainer.train_step()
        if trainer.step % 200 == 0:
            print(f"  {label}: step {trainer.step}/{trainer.steps}, loss {value:.2f}, "
                  f"{time.process_time() - c0:.0f} CPU s", flush=True)
    return trainer, time.process_time() - c0


def score(process, trainer, test, a) -> torch.Tensor:
    """Bits per pixel of each test image, from the continuous-time ELBO of the EMA weights."""
    g = torch.Generator().manual_seed(a.seed + 7)
    with trainer.ema_weights() as model, torch.no_grad():
        e = torch.cat([pd.elbo(process, model, chunk, num_samples=a.elbo_samples, generator=g).double()
                       for chunk in test.split(60)])
    return -e / (64 * LN2)


def chain_model(kind: str, a):
    if kind == "masking":
        chain = pd.AbsorbingChain(18, schedule=Linear())
        wrap = pd.SUBSModel
    else:
        chain = pd.UniformChain(17, schedule=Linear())
        wrap = pd.CategoricalModel
    net = Transformer(chain.num_states, 64, width=a.width, depth=a.depth, heads=a.heads,
                      time=FourierTime(64, t_max=chain.t_max))
    return chain, wrap(net, chain)


def baselines(train_x: torch.Tensor, test_x: torch.Tensor):
    counts = torch.stack([torch.bincount(train_x[:, d], minlength=17) for d in range(64)]).double() + 0.5
    logp = torch.log2(counts / counts.sum(1, keepdim=True))
    per_image = -logp[torch.arange(64), test_x].sum(1) / 64
    raw = bytes(test_x.to(torch.uint8).flatten().tolist())
    n = len(raw)
    return per_image, {"zlib -9": 8 * len(zlib.compress(raw, 9)) / n, "bz2 -9": 8 * len(bz2.compress(raw, 9)) / n,
                       "lzma -9e": 8 * len(lzma.compress(raw, preset=9 | lzma.PRESET_EXTREME)) / n}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, default=4.0, help="CPU minutes of training per model")
    p.add_argument("--width", type=int, default=128)
    p.add_argument("--depth", type=int, default=4)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--ema", type=float, default=0.995)
    p.add_argument("--elbo-samples", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--only", nargs="+", choices=("masking", "uniform", "blackout"),
                   default=["masking", "uniform", "blackout"])
    p.add_argument("--quick", action="store_true", help="tiny models, a few steps, 8 test images")
    p.add_argument("--save", help="write the table, with a header (UTC time, commit, load), to this file")
    a = p.parse_args(argv)
    hidden, depth = 512, 3
    if a.quick:
        a.width, a.depth, a.heads, a.minutes, a.elbo_samples, hidden, depth = 16, 1, 2, 0.03, 2, 32, 1
    torch.set_num_threads(1)
    torch.manual_seed(a.seed)
    report = Report("python benchmarks/codelength_digits.py " + " ".join(sys.argv[1:] if argv is None else argv))

    run = cli.build(config("blackout", hidden, depth))
    train_x, test_x = run.split.train.counts, run.split.test.counts
    flat_train, flat_test = train_x.reshape(len(train_x), 64), test_x.reshape(len(test_x), 64)
    scored = test_x[:8] if a.quick else test_x
    rows = []
    for kind in a.only:
        torch.manual_seed(a.seed)
        if kind == "blackout":
            process, model = run.process, run.model
            loss, name = recipes.loss(model, None, run.transform), f"Blackout, MLP {hidden}x{depth}, Blackout loss"
        else:
            process, model = chain_model(kind, a)
            loss = ChainELBOLoss(process)
            name = f"{kind}, Transformer {a.width}x{a.depth}, ChainELBOLoss"
        trainer, cpu = train(model, loss, train_x, a, kind)
        c0 = time.process_time()
        b = score(process, trainer, scored, a)
        rows.append((f"{name} ({trainer.step} steps)", b, cpu, time.process_time() - c0))

    kt, comp = baselines(flat_train, flat_test)
    report(f"digits: {len(train_x)} training and {len(test_x)} test images (split of benchmarks/digits.py), "
           f"64 pixels, 17 levels; {a.minutes:g} CPU minutes of training per model, torch threads "
           f"{torch.get_num_threads()}, device {a.device}; ELBO with {a.elbo_samples} stratified times per image")
    if a.quick:
        report("QUICK MODE: a smoke test (tiny models, a few steps, the first 8 test images), not a result")
    report()
    report(f"{'lossless bits per pixel on the test split':66s} {'bits/dim':>8s} {'± SE':>7s} {'train CPU s':>11s} "
           f"{'eval CPU s':>10s}")
    for name, b, cpu, ev in rows:
        se = float(b.std() / math.sqrt(b.numel())) if b.numel() > 1 else float("nan")
        report(f"{'probdiff ' + name:66s} {float(b.mean()):8.4f} {se:7.4f} {cpu:11.0f} {ev:10.0f}")
    report(f"{'per-pixel categorical fitted on train (KT +1/2)':66s} {float(kt.mean()):8.4f} "
           f"{float(kt.std() / math.sqrt(kt.numel())):7.4f}")
    for name, value in comp.items():
        report(f"{name + ' of the test bytes (one byte per pixel)':66s} {value:8.4f}")
    report(f"{'uniform over 17 levels':66s} {math.log2(17):8.4f}")
    for name, value, se in ANCHORS:
        report(f"{name:66s} {value:8.4f} {se:7.4f}")
    report("* a dequantised density on [-1, 1]^64 (uniform dequantisation): its -log2 density is an upper bound "
           "on a lossless codelength")
    if a.save:
        report.save(a.save)
    return 0


if __name__ == "__main__":
    sys.exit(main())
