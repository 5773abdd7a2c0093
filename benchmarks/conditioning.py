"""Posterior sampling with a diffusion prior: DPS and moment matching against the exact posterior.

The prior is a 16-D, 4-component Gaussian mixture (the exact oracle); the observation is
``y = A x + 0.5 n`` for three operators (masking every other coordinate, averaging neighbouring pairs, a
4-row random projection). ``pd.condition`` gives the exact posterior model (a mixture again, THEORY.md §11)
and, with ``guidance=``, the DPS (Chung et al. 2023) and moment-matching (Boys et al. 2023; Rozet et al.
2024) approximations of the same oracle's prior. Each is sampled with the same sampler (ancestral steps,
log-SNR grid) at NFE 10, 20, 50, 100, and compared with draws of the exact posterior by

* the sliced Wasserstein-2 distance (256 random directions; its Monte-Carlo floor is the ``exact`` row),
* the mean log-density gap ``E_samples[log p(x|y)] - E_exact[log p(x|y)]`` under the exact posterior, with
  its standard error (negative: samples in low-posterior regions; positive: over-concentrated).

The ``exact`` rows sample the exactly conditioned oracle with the same sampler: their error is the
sampler's discretisation alone. NFE counts denoiser evaluations; DPS adds one backward pass per step and
moment matching one per row of A. Usage: ``python benchmarks/conditioning.py [--samples 1000] [--threads 1]``.

The issue's inpainting figure on digits (a learned prior, so no exact posterior) is
``examples/inpainting_digits.py``, regenerated into docs/figures by ``python docs/make_figures.py
inpainting_digits`` like every figure of the docs.
"""

from __future__ import annotations

import argparse
import math
import time

import torch

import probdiff as pd

D = 16


def mixture(seed: int = 0) -> pd.oracles.GaussianMixture:
    g = torch.Generator().manual_seed(seed)
    means = 3.0 * torch.randn(4, D, generator=g, dtype=torch.float64)
    factors = 0.4 * torch.randn(4, D, D, generator=g, dtype=torch.float64) / math.sqrt(D)
    covs = factors @ factors.transpose(-1, -2) + 0.1 * torch.eye(D, dtype=torch.float64)
    return pd.oracles.GaussianMixture(torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=torch.float64), means, covs)


def operators() -> dict:
    g = torch.Generator().manual_seed(1)
    eye = torch.eye(D, dtype=torch.float64)
    return {"masking": eye[::2], "averaging": 0.5 * (eye[0::2] + eye[1::2]),
            "projection": torch.randn(4, D, generator=g, dtype=torch.float64) / math.sqrt(D)}


def sliced_w2(a: torch.Tensor, b: torch.Tensor, directions: int = 256, seed: int = 0) -> float:
    g = torch.Generator().manual_seed(seed)
    v = torch.randn(a.shape[1], directions, generator=g, dtype=a.dtype)
    v = v / v.norm(dim=0, keepdim=True)
    pa, pb = torch.sort(a @ v, 0).values, torch.sort(b @ v, 0).values
    return float(((pa - pb) ** 2).mean().sqrt())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--samples", type=int, default=1000)
    ap.add_argument("--noise", type=float, default=0.5)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    prior, process, n = mixture(), pd.VPSDE(), args.samples
    print(f"16-D mixture prior, VP, ancestral sampler on LogSNR grids, {n} samples, noise_std {args.noise}, "
          f"{args.threads} thread(s)")
    print(f"{'operator':<11} {'rule':<15} {'NFE':>4} {'SW2':>7} {'logp gap':>9} {'± se':>6} {'s':>6}")
    for name, A in operators().items():
        g = torch.Generator().manual_seed(2)
        x_true = prior.sample(1, generator=g)[0]
        y = A @ x_true + args.noise * torch.randn(A.shape[0], generator=g, dtype=torch.float64)
        obs = pd.LinearGaussian(A, args.noise, y)
        exact = prior.condition(A, args.noise**2, y)
        reference = exact.sample(n, generator=torch.Generator().manual_seed(3))
        ref_lp = exact.log_prob(reference)
        base = prior.model(process)
        rules = {"exact": pd.condition(base, obs),
                 "DPS": pd.condition(base, obs, guidance=pd.guidance.DPS()),
                 "MomentMatching": pd.condition(base, obs, guidance=pd.guidance.MomentMatching())}
        for rule, model in rules.items():
            for nfe in (10, 20, 50, 100):
                start = time.perf_counter()
                x = pd.sample(pd.reverse(model, 1.0), (n, D), solver=pd.solvers.Ancestral(), grid=pd.grids.LogSNR(nfe),
                              generator=torch.Generator().manual_seed(4), dtype=torch.float64).x
                elapsed = time.perf_counter() - start
                lp = exact.log_prob(x)
                ok = torch.isfinite(lp)
                gap = float(lp[ok].mean() - ref_lp.mean())
                se = math.sqrt(float(lp[ok].var()) / int(ok.sum()) + float(ref_lp.var()) / n)
                sw = sliced_w2(x[ok.nonzero().flatten()], reference[: int(ok.sum())]) if bool(ok.any()) else float("nan")
                print(f"{name:<11} {rule:<15} {nfe:>4} {sw:>7.3f} {gap:>9.2f} {se:>6.2f} {elapsed:>6.2f}")


if __name__ == "__main__":
    main()
