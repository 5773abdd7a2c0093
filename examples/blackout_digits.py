"""Blackout diffusion on the 8x8 digits: train, sample, and report lossless bits/dim from the ELBO.

Santos, Fox, Lubbers & Lin, "Blackout Diffusion: Generative Diffusion Models in Discrete-State Spaces"
(ICML 2023). Pixel values of scikit-learn's digits are photon counts 0..16; every photon dies at rate 1,
so n_t | n_0 ~ Binomial(n_0, e^{-t}) and the image fades to black. A network predicts the expected
number of missing photons y = E[n_0 - n_t | n_t] (pd.BlackoutModel), trained with the Poisson-type loss
under the likelihood weighting p_t/(1 - p_t) (pd.losses.BlackoutLoss), which makes its minimisation
maximum likelihood. Samples come from the binomial bridge on the paper's logit-uniform observation grid.

The continuous-time ELBO of the reverse counting process (pd.elbo) is a lossless code length of the
discrete data: bits/dim = -ELBO / (64 ln 2), no dequantisation. Uniform over 17 levels is log2(17) = 4.09.

Run: python examples/blackout_digits.py --out out [--quick]
"""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

import probdiff as pd  # noqa: E402
from _common import example_args  # noqa: E402
from probdiff import data as pdata  # noqa: E402
from probdiff.losses import BlackoutLoss  # noqa: E402
from probdiff.nn import MLP  # noqa: E402


class CountNet(nn.Module):
    """counts / max_count and the logit of the survival probability e^{-t} -> pre-softplus mean births."""

    def __init__(self, process: pd.Blackout, hidden: int, depth: int):
        super().__init__()
        self.scale = float(process.max_count)
        self.half = process.t_max + math.log1p(-math.exp(-process.t_max))     # logit(1 - e^{-t_max})
        self.mlp = MLP((1, 8, 8), hidden=hidden, depth=depth)

    def forward(self, x, t):
        logit = -torch.log(torch.expm1(t.clamp_min(1e-12)))                  # logit(e^{-t})
        return self.mlp(x / self.scale, ((logit + self.half) / (2 * self.half)).clamp(-0.5, 1.5))


def main(argv=None) -> None:
    args = example_args(__doc__, argv)
    train_steps, hidden, grid_steps, elbo_samples = (100, 64, 50, 1) if args.quick else (1500, 256, 200, 4)
    torch.manual_seed(args.seed)

    split = pdata.digits().split(0.2, seed=0)                  # counts 0..16, shape (N, 1, 8, 8)
    train, test = split.train.counts, split.test.counts
    process = pd.Blackout(max_count=16, t_max=10.0)
    model = pd.BlackoutModel(CountNet(process, hidden, 3), process)
    loss_fn = BlackoutLoss(process)                            # likelihood weighting p_t / (1 - p_t)
    optimiser = torch.optim.Adam(model.net.parameters(), lr=2e-3)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, train_steps)
    generator = torch.Generator().manual_seed(args.seed)
    for step in range(train_steps):
        loss = loss_fn(model, train[torch.randint(0, len(train), (128,), generator=generator)],
                       generator=generator).mean()
        optimiser.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.net.parameters(), 1.0)
        optimiser.step()
        schedule.step()
        if step % max(1, train_steps // 5) == 0 or step == train_steps - 1:
            print(f"step {step:5d}  loss {loss.item():9.3f} nats")

    model.net.eval()
    with torch.no_grad():
        elbo = torch.cat([pd.elbo(process, model, chunk, num_samples=elbo_samples, generator=generator)
                          for chunk in test.split(120)])
        bpd = -elbo / (test[0].numel() * math.log(2))
        print(f"held-out lossless bits/dim (continuous-time ELBO, {len(test)} test digits): "
              f"{float(bpd.mean()):.3f} +- {float(bpd.std() / math.sqrt(len(bpd))):.3f}   (uniform: {math.log2(17):.3f})")
        solution = pd.sample(pd.reverse(process, model), (32, 1, 8, 8), solver=pd.solvers.BinomialBridge(),
                             grid=pd.grids.LogitObservation(grid_steps), generator=generator)
    print(f"sampled 32 digits with {solution.nfe} network evaluations")

    fig = plt.figure(figsize=(9, 3.6))
    gs = fig.add_gridspec(4, 14, left=0.02, right=0.98, top=0.9, bottom=0.02, wspace=0.1, hspace=0.1)
    times = (0.0, 0.5, 1.0, 2.0, 3.0, 5.0)
    x0 = test[:2]
    for row in range(2):
        for j, t in enumerate(times):
            nt = x0 if t == 0 else process.sample_marginal(x0, torch.full((2,), t), generator=generator)
            ax = fig.add_subplot(gs[row, j])
            ax.imshow(nt[row, 0], cmap="gray", vmin=0, vmax=16)
            ax.set_xticks([]), ax.set_yticks([])
            if row == 0:
                ax.set_title(f"t = {t:g}", fontsize=8)
    for k in range(32):
        ax = fig.add_subplot(gs[k // 8, 6 + k % 8])
        ax.imshow(solution.x[k, 0], cmap="gray", vmin=0, vmax=16)
        ax.set_xticks([]), ax.set_yticks([])
    fig.text(0.22, 0.95, "forward: photons die", ha="center", fontsize=9)
    fig.text(0.71, 0.95, "samples (binomial bridge)", ha="center", fontsize=9)
    fig.savefig(args.out / "blackout_digits.png", dpi=70)
    print(f"wrote {args.out / 'blackout_digits.png'}")


if __name__ == "__main__":
    main()
