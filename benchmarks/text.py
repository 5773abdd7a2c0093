"""Held-out bits per byte of a byte-level masked-diffusion model on the Python standard library's own sources,
next to zlib, bz2 and lzma.

Corpus: the ``.py`` files of the running interpreter's standard library (``sysconfig.get_paths()['stdlib']``),
split by the fixed lists ``TRAIN`` and ``HELD_OUT`` below (top-level modules that every CPython 3.11 installation
carries; the script stops if one is missing). Nothing is downloaded.

Model: :class:`probdiff.AbsorbingChain` over 256 byte values plus the mask (S = 257) with the linear schedule
:math:`\\alpha_t = 1 - t` (so :math:`\\alpha_1 = 0`: the prior KL is zero), a :class:`probdiff.SUBSModel` around a
bidirectional :class:`probdiff.nn.Transformer` over sequences of 256 bytes, trained on one CPU thread for at most
``--minutes`` of the process' CPU time (not wall time: the machine is shared) with :class:`probdiff.losses.ChainELBOLoss` — the negative continuous-time ELBO, which under SUBS
is MDLM/MD4's weighted cross-entropy, with the batch's times spread evenly (low-discrepancy sampler) — per
byte, AdamW, warm-up + cosine learning rate, and an EMA of the weights used for evaluation.

Codelength: each held-out file is cut into consecutive 256-byte sequences, coded independently (no context
crosses a sequence boundary, nor a file boundary); the file's last sequence is padded with spaces to 256 bytes
and the padding's codelength is *counted* (a decoder that knows each file's length can drop it). Bits per byte
= the sum over sequences of ``-ELBO / ln 2`` (``pd.elbo``, continuous time, ``--elbo-samples`` stratified times
per sequence) divided by the number of real bytes; ± is one standard error over the Monte-Carlo draws (the
sequences' estimates are independent). A second row (``--context-block B``, default 64; 0 skips it) codes the
same files with context: each file's first 256 bytes on their own, then each next ``B`` bytes given the
``256 - B`` before them, by the conditional bound ``pd.elbo(..., observed=...)`` of the same model (the chain
rule: the sum bounds the files' codelength; every byte is coded once, and no held-out file is shorter than 256
bytes, so nothing is padded). The compressors use their strongest preset (zlib level 9, bz2 level 9,
lzma ``9 | PRESET_EXTREME``), on each held-out file on its own and on all of them concatenated.

Usage: ``python benchmarks/text.py [--minutes 15] [--seed 0] [--save docs/benchmarks/text.txt]``;
``--quick`` runs a tiny model for a few steps on a few held-out sequences (a smoke test, not a result).
"""

from __future__ import annotations

import argparse
import bz2
import lzma
import math
import sys
import sysconfig
import time
import zlib
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import probdiff as pd  # noqa: E402
from probdiff.losses import ChainELBOLoss  # noqa: E402
from probdiff.nn import FourierTime, Transformer  # noqa: E402
from probdiff.processes.schedules import Linear  # noqa: E402
from probdiff.train import EMA, AdamW, Run, Trainer, WarmupCosine  # noqa: E402

from _report import Report  # noqa: E402

#: Held-out modules (262 kB in CPython 3.11.7).
HELD_OUT = ("bisect.py", "heapq.py", "textwrap.py", "string.py", "fnmatch.py", "shlex.py", "difflib.py",
            "statistics.py", "fractions.py", "calendar.py")
#: Training modules (3.5 MB in CPython 3.11.7).
TRAIN = ("_pydecimal.py", "turtle.py", "inspect.py", "typing.py", "pydoc.py", "tarfile.py", "doctest.py",
         "argparse.py", "_pyio.py", "pickletools.py", "zipfile.py", "datetime.py", "subprocess.py", "locale.py",
         "enum.py", "mailbox.py", "ipaddress.py", "pickle.py", "pdb.py", "ast.py", "optparse.py", "dataclasses.py",
         "threading.py", "shutil.py", "configparser.py", "imaplib.py", "ssl.py", "pathlib.py", "smtplib.py",
         "platform.py", "traceback.py", "os.py", "functools.py", "socket.py", "codecs.py", "ftplib.py", "bdb.py",
         "random.py", "zipimport.py", "sysconfig.py", "ntpath.py", "_collections_abc.py", "tempfile.py",
         "pstats.py", "trace.py", "dis.py", "plistlib.py", "uuid.py", "socketserver.py", "contextlib.py",
         "tokenize.py", "_strptime.py", "webbrowser.py", "pkgutil.py", "pprint.py", "gzip.py", "modulefinder.py",
         "profile.py", "mimetypes.py", "site.py", "wave.py", "weakref.py", "gettext.py", "base64.py",
         "warnings.py", "compileall.py", "copy.py", "glob.py", "csv.py", "hmac.py", "queue.py", "sched.py",
         "selectors.py", "signal.py", "struct.py", "timeit.py", "types.py", "zipapp.py")
LENGTH = 256
PAD = 0x20


def read(names) -> list[bytes]:
    root = Path(sysconfig.get_paths()["stdlib"])
    missing = [n for n in names if not (root / n).is_file()]
    if missing:
        raise SystemExit(f"missing from {root}: {', '.join(missing)} (the split is fixed for CPython 3.11)")
    return [(root / n).read_bytes() for n in names]


def sequences(files: list[bytes]) -> tuple[torch.Tensor, int]:
    """Each file cut into consecutive LENGTH-byte sequences, its last one padded; (sequences, real bytes)."""
    rows = []
    for data in files:
        padded = data + bytes([PAD]) * (-len(data) % LENGTH)
        rows.append(torch.frombuffer(bytearray(padded), dtype=torch.uint8).reshape(-1, LENGTH))
    return torch.cat(rows).long(), sum(len(d) for d in files)


COMPRESSORS = (("zlib -9", lambda b: zlib.compress(b, 9)), ("bz2 -9", lambda b: bz2.compress(b, 9)),
               ("lzma -9e", lambda b: lzma.compress(b, preset=9 | lzma.PRESET_EXTREME)))


def compressor_bits(files: list[bytes]) -> dict[str, float]:
    n = sum(len(d) for d in files)
    out = {}
    for name, f in COMPRESSORS:
        out[f"{name}, each file"] = 8 * sum(len(f(d)) for d in files) / n
        out[f"{name}, concatenated"] = 8 * len(f(b"".join(files))) / n
    return out


def windows(files: list[bytes], block: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Every byte of every file coded once, in LENGTH-byte windows: a file's first LENGTH bytes on their own,
    then each next ``block`` bytes (fewer at the file's end) given the LENGTH - block bytes before them (the
    ``observed`` positions). Returns (windows, observed); a file shorter than LENGTH is padded as in
    :func:`sequences`, its padding counted."""
    rows, masks = [], []
    pos = torch.arange(LENGTH)
    for data in files:
        x = torch.frombuffer(bytearray(data + bytes([PAD]) * max(0, LENGTH - len(data))), dtype=torch.uint8).long()
        rows.append(x[:LENGTH])
        masks.append(torch.zeros(LENGTH, dtype=torch.bool))
        covered = LENGTH
        while covered < len(x):
            new = min(block, len(x) - covered)
            covered += new
            rows.append(x[covered - LENGTH:covered])
            masks.append(pos < LENGTH - new)
    return torch.stack(rows), torch.stack(masks)


def elbo_bits(chain, model, seqs: torch.Tensor, samples: int, seed: int, batch: int, observed=None):
    """Total -ELBO in bits over ``seqs`` (the free positions of each, given its ``observed`` ones) and its
    standard error."""
    g = torch.Generator().manual_seed(seed)
    obs = [None] * len(seqs.split(batch)) if observed is None else observed.split(batch)
    with torch.no_grad():
        nats = torch.cat([pd.elbo(chain, model, chunk, num_samples=samples, generator=g, observed=o).double()
                          for chunk, o in zip(seqs.split(batch), obs)])
    bits = -nats / math.log(2)
    # each sequence's estimate averages `samples` stratified draws; their spread across sequences mixes data
    # variation with Monte-Carlo noise, so the standard error of the total is bounded by sqrt(n) * sd
    return float(bits.sum()), float(bits.std() * math.sqrt(bits.numel())) if bits.numel() > 1 else float("nan")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, default=15.0,
                   help="training budget in CPU minutes of this process (one thread: one core's time)")
    p.add_argument("--width", type=int, default=96)
    p.add_argument("--depth", type=int, default=4)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--ema", type=float, default=0.995)
    p.add_argument("--elbo-samples", type=int, default=4, help="stratified times per held-out sequence")
    p.add_argument("--context-block", type=int, default=64,
                   help="also code the held-out files in blocks of this many bytes, each given the LENGTH - block "
                        "bytes before it (pd.elbo(..., observed=)); 0: skip")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=True,
                   help="mixed precision (Run(autocast=torch.bfloat16)); --no-bf16 trains in float32")
    p.add_argument("--quick", action="store_true", help="tiny model, a few steps, a few held-out sequences")
    p.add_argument("--save", help="write the table, with a header (UTC time, commit, load), to this file")
    a = p.parse_args(argv)
    if not 0 <= a.context_block < LENGTH:
        p.error(f"--context-block must be 0 (skip) or a block size in 1..{LENGTH - 1}, got {a.context_block}")
    if a.quick:
        a.width, a.depth, a.heads, a.batch_size, a.minutes, a.elbo_samples = 32, 1, 2, 4, 0.05, 2
    torch.set_num_threads(1)
    torch.manual_seed(a.seed)
    report = Report("python benchmarks/text.py " + " ".join(sys.argv[1:] if argv is None else argv))

    test_files, train_files = read(HELD_OUT), read(TRAIN)
    test_seqs, test_bytes = sequences(test_files)
    train_stream = b"".join(train_files)
    train_seqs = torch.frombuffer(bytearray(train_stream[: len(train_stream) // LENGTH * LENGTH]),
                                  dtype=torch.uint8).reshape(-1, LENGTH).long()
    report(f"stdlib {sysconfig.get_paths()['stdlib']} (Python {sys.version.split()[0]}): {len(TRAIN)} training "
           f"files, {len(train_stream):,} bytes ({train_seqs.shape[0]} sequences of {LENGTH}); {len(HELD_OUT)} "
           f"held-out files, {test_bytes:,} bytes ({test_seqs.shape[0]} sequences, last of each file padded)")
    anchors = compressor_bits(test_files)

    chain = pd.AbsorbingChain(257, schedule=Linear())
    net = Transformer(257, LENGTH, width=a.width, depth=a.depth, heads=a.heads, time=FourierTime(64, t_max=1.0))
    model = pd.SUBSModel(net, chain)
    params = sum(q.numel() for q in net.parameters())
    elbo_loss = ChainELBOLoss(chain)

    def per_byte(model, x0, generator=None):
        return elbo_loss(model, x0, generator=generator) / LENGTH

    trainer = Trainer(model, per_byte, train_seqs, steps=10**6, batch_size=a.batch_size,
                      optimizer=AdamW(lr=a.lr, weight_decay=0.01), scheduler=WarmupCosine(warmup=100),
                      ema=EMA(a.ema),
                      run=Run(seed=a.seed, device=a.device, autocast=torch.bfloat16 if a.bf16 else None))
    # the budget is CPU time, not wall time: the machine is shared, and a wall-clock budget would measure the load
    budget, t0, c0 = 60.0 * a.minutes, time.time(), time.process_time()
    probe = 5 if a.quick else 20
    for _ in range(probe):
        trainer.train_step()
    # the cosine schedule spans the steps the budget allows at the speed of the first steps
    trainer.steps = max(probe + 1, int(probe * budget / (time.process_time() - c0)))
    ema_loss = None
    while trainer.step < trainer.steps and time.process_time() - c0 < budget:
        value = trainer.train_step()
        ema_loss = value if ema_loss is None else 0.98 * ema_loss + 0.02 * value
        if trainer.step % 100 == 0:
            print(f"  step {trainer.step}/{trainer.steps}  loss {ema_loss / math.log(2):.3f} bits/byte (EMA of "
                  f"batches)  {time.process_time() - c0:.0f} CPU s, {time.time() - t0:.0f} s", flush=True)
    train_time, train_wall = time.process_time() - c0, time.time() - t0

    scored = test_seqs[:8] if a.quick else test_seqs
    scored_bytes = test_bytes if scored is test_seqs else scored.numel()   # quick: 8 full sequences
    t1 = time.time()
    train_sub = train_seqs[:: max(1, train_seqs.shape[0] // 256)][: 8 if a.quick else 256]
    with trainer.ema_weights() as ema_model:
        total, se = elbo_bits(chain, ema_model, scored, a.elbo_samples, a.seed + 1, 32)
        train_total, train_se = elbo_bits(chain, ema_model, train_sub, a.elbo_samples, a.seed + 2, 32)
        if a.context_block:
            wins, observed = windows(test_files, a.context_block)
            if a.quick:
                wins, observed = wins[:8], observed[:8]
            ctx_bytes = test_bytes if not a.quick else int((~observed).sum())
            ctx_total, ctx_se = elbo_bits(chain, ema_model, wins, a.elbo_samples, a.seed + 3, 32, observed)
    eval_time = time.time() - t1
    ours = total / scored_bytes
    lzma_each = anchors["lzma -9e, each file"]

    report(f"model: Transformer width {a.width}, depth {a.depth}, {a.heads} heads, {params:,} parameters; "
           f"{trainer.step} steps of {a.batch_size} x {LENGTH} bytes in {train_time / 60:.1f} CPU min "
           f"({train_wall / 60:.1f} min wall clock; {trainer.step * a.batch_size * LENGTH / train_time:,.0f} bytes "
           f"per CPU s, torch threads "
           f"{torch.get_num_threads()}, device {a.device}, {'bfloat16 autocast' if a.bf16 else 'float32'}); "
           f"ELBO with {a.elbo_samples} times per sequence, {eval_time:.0f} s")
    if a.quick:
        report("QUICK MODE: a smoke test (tiny model, a few steps, the first 8 held-out sequences), not a result")
    report()
    report(f"{'held-out bits per byte':52s} {'bits/byte':>9s} {'± SE':>7s} {'/ lzma each':>12s}")
    for name, value in anchors.items():
        report(f"{name:52s} {value:9.4f} {'':>7s} {value / lzma_each:12.3f}")
    name = "probdiff masked diffusion, -ELBO (256-byte sequences)"
    report(f"{name:52s} {ours:9.4f} {se / scored_bytes:7.4f} {ours / lzma_each:12.3f}")
    if a.context_block:
        name = f"  same, {a.context_block}-byte blocks given {LENGTH - a.context_block} before"
        report(f"{name:52s} {ctx_total / ctx_bytes:9.4f} {ctx_se / ctx_bytes:7.4f} "
               f"{ctx_total / ctx_bytes / lzma_each:12.3f}")
    report(f"{f'  same model on {train_sub.shape[0]} training sequences':52s} {train_total / train_sub.numel():9.4f} "
           f"{train_se / train_sub.numel():7.4f}")
    report()
    report(f"goal: within 1.2x of lzma's bits per byte (each file on its own): ratio {ours / lzma_each:.3f} -> "
           f"{'met' if ours <= 1.2 * lzma_each else 'not met'}; below lzma: {'yes' if ours < lzma_each else 'no'}")
    if a.save:
        report.save(a.save)
    return 0


if __name__ == "__main__":
    sys.exit(main())
