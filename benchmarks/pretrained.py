"""Likelihoods of a diffusers model: images/s and model evaluations for the two numbers papers quote.

Setup:

* Model: a ``UNet2DModel`` with the architecture of the DDPM CIFAR-10 model (Ho et al. 2020: channels
  128-256-256-256, two residual blocks per level, attention at 16x16; about 36M parameters) and *random*
  weights, with a ``DDPMScheduler`` (linear betas 1e-4 to 0.02, N = 1000), wrapped by
  ``probdiff.integrations.diffusers.wrap``; or real weights from a local ``save_pretrained`` directory with
  ``--diffusers DIR`` (nothing is downloaded). ``--quick`` uses a small UNet and N = 100 (a smoke test).
* Data: random 8-bit 32x32x3 images (``x = 2n/255 - 1``), or ``--data FILE.npz`` with an ``images`` or
  ``x`` array of uint8 images ``(n, 32, 32, 3)`` or ``(n, 3, 32, 32)``.
* Bounds: ``pd.likelihood.ddpm_vlb`` (Ho et al.'s bound, one network call per training step, so NFE = N)
  and ``pd.log_likelihood`` (probability-flow ODE, dopri5 at ``--rtol``, Hutchinson trace with one Rademacher
  probe, uniform dequantisation), both in bits/dim with a 95% interval over the images.

With random weights the bits/dim are meaningless (no data was learned); the point is cost. Run:
``python benchmarks/pretrained.py [--diffusers DIR] [--images 8] [--batch 4] [--device cpu|cuda] [--quick]``
(needs the ``diffusers`` extra). One torch thread unless ``--threads``.
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
import torch

import probdiff as pd
from probdiff.integrations import diffusers as pdd

CIFAR_UNET = dict(sample_size=32, in_channels=3, out_channels=3, layers_per_block=2,
                  block_out_channels=(128, 256, 256, 256),
                  down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"),
                  up_block_types=("UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"))
SMALL_UNET = dict(sample_size=32, in_channels=3, out_channels=3, layers_per_block=1, block_out_channels=(16, 32),
                  down_block_types=("DownBlock2D", "AttnDownBlock2D"), up_block_types=("AttnUpBlock2D", "UpBlock2D"),
                  norm_num_groups=8)
LATTICE = (-1 - 1 / 255, 1 + 1 / 255)      # bin edges of x = 2n/255 - 1 (pd.bits_per_dim's convention)


def build(args, device):
    import diffusers

    if args.diffusers:
        process, model = pdd.load(args.diffusers)
        model.net.unet.to(device)
        return process, model, "weights from " + args.diffusers
    torch.manual_seed(0)
    unet = diffusers.UNet2DModel(**(SMALL_UNET if args.quick else CIFAR_UNET)).eval().to(device)
    scheduler = diffusers.DDPMScheduler(num_train_timesteps=100 if args.quick else 1000)
    process, model = pdd.wrap(unet, scheduler)
    params = sum(p.numel() for p in unet.parameters())
    return process, model, f"random weights, {params / 1e6:.1f}M parameters"


def images(args):
    if args.data:
        arr = np.load(args.data)
        arr = arr["images"] if "images" in arr else arr["x"]
        n = torch.as_tensor(arr[: args.images]).long()
        if n.shape[-1] == 3:
            n = n.permute(0, 3, 1, 2)
        return n
    return torch.randint(0, 256, (args.images, 3, 32, 32), generator=torch.Generator().manual_seed(1))


def ci(v):
    half = 1.96 * float(v.std()) / math.sqrt(v.numel()) if v.numel() > 1 else float("nan")
    return f"{float(v.mean()):.3f} ± {half:.3f}"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--diffusers", help="a local save_pretrained directory (UNet2DModel + scheduler)")
    ap.add_argument("--data", help=".npz of uint8 images")
    ap.add_argument("--images", type=int, default=4)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--rtol", type=float, default=1e-5)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--skip", choices=["vlb", "ode"], action="append", default=[])
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    process, model, what = build(args, device)
    counts = images(args)
    x = (2 * counts.double() / 255 - 1).float()
    print(f"# {what}; N = {process.num_steps} training steps; {x.shape[0]} images 3x32x32; device {device}, "
          f"{args.threads} thread(s); batch {args.batch}")

    with torch.no_grad():                    # network throughput, for scale
        xb = x[: args.batch].to(device)
        model.epsilon(xb, torch.full((xb.shape[0],), 0.5, device=device))
        t0 = time.perf_counter()
        model.epsilon(xb, torch.full((xb.shape[0],), 0.5, device=device))
        per_call = time.perf_counter() - t0
    print(f"network: {xb.shape[0] / per_call:.1f} images/s per evaluation (batch {xb.shape[0]})")
    print(f"{'method':<34s} {'bits/dim (95% CI)':>20s} {'NFE/image':>10s} {'images/s':>10s} {'seconds':>8s}")
    g = torch.Generator(device=device).manual_seed(2)
    if "vlb" not in args.skip:
        t0, out = time.perf_counter(), []
        for xb in x.split(args.batch):
            out.append(pd.likelihood.ddpm_vlb(model, xb.to(device), generator=g).cpu())
        sec = time.perf_counter() - t0
        print(f"{'ddpm_vlb (small variance)':<34s} {ci(torch.cat(out)):>20s} {process.num_steps:>10d} "
              f"{x.shape[0] / sec:>10.3f} {sec:>8.1f}")
    if "ode" not in args.skip:
        t0, out, nfe = time.perf_counter(), [], []
        for nb in counts.split(args.batch):
            xd = pd.dequantize(nb, 256, LATTICE, generator=torch.Generator().manual_seed(3)).float().to(device)
            lp, stats = pd.log_likelihood(model, xd, trace=pd.Hutchinson(1), rtol=args.rtol, atol=args.rtol,
                                          generator=g, return_stats=True)
            out.append(pd.bits_per_dim(lp, xd.shape[1:], 256, LATTICE).cpu())
            nfe.append(float(torch.as_tensor(stats.nfe).float().mean()))
        sec = time.perf_counter() - t0
        print(f"{'log_likelihood (ODE, Hutchinson 1)':<34s} {ci(torch.cat(out)):>20s} {np.mean(nfe):>10.0f} "
              f"{x.shape[0] / sec:>10.3f} {sec:>8.1f}")


if __name__ == "__main__":
    main()
