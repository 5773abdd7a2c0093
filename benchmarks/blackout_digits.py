"""Held-out lossless bits/dim of discrete diffusion on scikit-learn's 8x8 digits (counts 0..16).

Trains, on a deterministic split (``train_test_split(..., test_size=0.2, random_state=0)``):

* a :class:`probdiff.BlackoutModel` on :class:`probdiff.Blackout` (``max_count=16``), with the Blackout
  loss under the likelihood weighting, evaluated with the continuous-time Blackout ELBO;
* a :class:`probdiff.CategoricalModel` on a :class:`probdiff.UniformChain` (``S=17``), with the
  categorical cross-entropy loss, evaluated with the discrete-time chain ELBO (exact KLs) on the logit
  observation grid.

Both bounds are lossless codelengths of the discrete data (no dequantisation): bits/dim is
``-ELBO / (64 ln 2)``. The reference "uniform over 17 levels" is log2(17) = 4.09 bits/dim.

Usage: ``python benchmarks/blackout_digits.py [--minutes 3.5] [--seed 0] [--out results.json] [--skip-blackout]``
(training time per model in minutes, on CPU by default).
"""

from __future__ import annotations

import argparse
import json
import math
import time

import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn

import probdiff as pd
from probdiff.losses import BlackoutLoss, CategoricalCrossEntropy, LogitTime
from probdiff.nn import MLP


class TimeWarp(nn.Module):
    """Feed the MLP the logit of the survival ``e^{-t}`` mapped to [0, 1] (the scale on which the
    processes change), instead of ``t`` itself."""

    def __init__(self, t_max: float):
        super().__init__()
        self.half = t_max + math.log1p(-math.exp(-t_max))   # logit(1 - e^{-t_max})

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        t = t.clamp_min(1e-12)
        logit = -torch.log(torch.expm1(t))               # logit(e^{-t})
        return ((logit + self.half) / (2 * self.half)).clamp(-0.5, 1.5)


class CountNet(nn.Module):
    """Counts / max_count -> MLP -> pre-softplus mean births."""

    def __init__(self, max_count: int, t_max: float, hidden: int, depth: int):
        super().__init__()
        self.scale = float(max_count)
        self.warp = TimeWarp(t_max)
        self.mlp = MLP(64, hidden=hidden, depth=depth)

    def forward(self, x, t):
        return self.mlp(x / self.scale, self.warp(t))


class OneHotNet(nn.Module):
    """One-hot states -> MLP -> per-pixel logits over the S states, plus the per-pixel likelihood
    :math:`\\log q(x_t \\mid x_0 = k)` of the chain, so that p(x_0|x_t) ∝ exp(MLP) q(x_t|x_0) (Bayes' rule
    with a learned context term: at small t the network need not learn the identity)."""

    def __init__(self, chain, hidden: int, depth: int):
        super().__init__()
        self.chain = chain
        self.s = chain.num_states
        self.warp = TimeWarp(chain.t_max)
        self.mlp = MLP((64, self.s), hidden=hidden, depth=depth)

    def forward(self, x, t):
        oh = torch.nn.functional.one_hot(x.long(), self.s).to(torch.get_default_dtype())
        loglik = self.chain.matrices(torch.zeros_like(t), t, log=True).cols(x.long()).to(oh.dtype)
        return self.mlp(oh, self.warp(t)) + loglik.clamp_min(-30.0)


def train(model, loss_fn, data, minutes, seed, lr=2e-3, batch=128):
    params = list(model.net.parameters())
    opt = torch.optim.Adam(params, lr=lr)
    g = torch.Generator().manual_seed(seed)
    start, it, ema = time.time(), 0, None
    total = minutes * 60
    while time.time() - start < total:
        frac = (time.time() - start) / total
        for group in opt.param_groups:                    # cosine decay to 5% of the rate
            group["lr"] = lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * frac)))
        idx = torch.randint(0, data.shape[0], (batch,), generator=g)
        loss = loss_fn(model, data[idx], generator=g).mean()
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        ema = loss.item() if ema is None else 0.98 * ema + 0.02 * loss.item()
        it += 1
        if it % 500 == 0:
            print(f"  it {it:6d}  loss(ema) {ema:9.3f}  {time.time() - start:6.0f}s", flush=True)
    return it


def bits(elbo: torch.Tensor) -> float:
    return float(-elbo.mean() / (64 * math.log(2)))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--minutes", type=float, default=3.5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--depth", type=int, default=3)
    parser.add_argument("--elbo-samples", type=int, default=16)
    parser.add_argument("--grid-steps", type=int, default=1000)
    parser.add_argument("--out", default=None)
    parser.add_argument("--skip-blackout", action="store_true")
    parser.add_argument("--skip-chain", action="store_true")
    args = parser.parse_args()
    torch.manual_seed(args.seed)

    X, _ = load_digits(return_X_y=True)
    train_x, test_x = train_test_split(torch.tensor(X, dtype=torch.long), test_size=0.2, random_state=0)
    print(f"digits: {train_x.shape[0]} train, {test_x.shape[0]} test, 64 pixels, counts 0..16")
    results = {"uniform_bpd": math.log2(17)}

    g = torch.Generator().manual_seed(1)
    if not args.skip_blackout:
        results["blackout"] = run_blackout(args, train_x, test_x, g)
    if not args.skip_chain:
        results["uniform_chain"] = run_chain(args, train_x, test_x, g)
    print(json.dumps(results, indent=2))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=2)


def run_blackout(args, train_x, test_x, g):
    blackout = pd.Blackout(max_count=16, t_max=10.0)
    bmodel = pd.BlackoutModel(CountNet(16, blackout.t_max, args.hidden, args.depth), blackout)
    print("training BlackoutModel (Blackout loss, likelihood weighting)")
    its = train(bmodel, BlackoutLoss(blackout), train_x, args.minutes, args.seed)
    bmodel.net.eval()
    with torch.no_grad():
        e_test = torch.cat([pd.elbo(blackout, bmodel, chunk, num_samples=args.elbo_samples, generator=g)
                            for chunk in test_x.split(60)])
        e_train = torch.cat([pd.elbo(blackout, bmodel, chunk, num_samples=args.elbo_samples, generator=g)
                             for chunk in train_x[:360].split(60)])
    out = {"iterations": its, "test_bpd": bits(e_test), "train_bpd": bits(e_train),
                           "test_bpd_stderr": float(e_test.std() / math.sqrt(len(e_test)) / (64 * math.log(2)))}
    print(f"Blackout CT ELBO: test {bits(e_test):.3f} bits/dim, train {bits(e_train):.3f} bits/dim")
    return out


def run_chain(args, train_x, test_x, g):
    chain = pd.UniformChain(17, t_max=8.0)
    cmodel = pd.CategoricalModel(OneHotNet(chain, args.hidden, args.depth), chain)
    print("training CategoricalModel on UniformChain(17) (cross-entropy, logit-uniform times)")
    its = train(cmodel, CategoricalCrossEntropy(chain, time=LogitTime()), train_x, args.minutes, args.seed)
    cmodel.net.eval()
    grid = pd.grids.LogitObservation(args.grid_steps)
    with torch.no_grad():
        e_test = torch.cat([pd.elbo(chain, cmodel, chunk, grid=grid, num_samples=2, generator=g)
                            for chunk in test_x.split(90)])
    out = {"iterations": its, "grid_steps": args.grid_steps, "test_bpd": bits(e_test),
                                "test_bpd_stderr": float(e_test.std() / math.sqrt(len(e_test)) / (64 * math.log(2)))}
    print(f"UniformChain discrete-time ELBO ({args.grid_steps} steps): test {bits(e_test):.3f} bits/dim")
    return out


if __name__ == "__main__":
    main()
