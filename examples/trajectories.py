"""Sampling and denoising trajectories, their deviation from a straight line, and memorisation.

Chen et al., "A Geometric Perspective on Diffusion Models" (2023): in the VE form the probability-flow
ODE is dx/dsigma = (x - D(x; sigma))/sigma, so each step moves the sample towards the denoiser output.
The sampling trajectory is quasi-linear (small deviation from the chord between its endpoints), and the
denoising trajectory D(x(t), t) reaches its final value long before the sample does. With the optimal
denoiser of a finite data set (probdiff.oracles.Empirical: one Gaussian-kernel mean-shift step) the ODE
is annealed mean shift and lands on training points.

The script samples scikit-learn's 8x8 digits (bundled) with the exact empirical denoiser under the VE
SDE (Heun on the rho = 7 grid of Karras et al. 2022), draws the two trajectories of a few samples as
image strips, plots their relative deviation against time, and prints the distance of every sample to
its nearest training image.

Run: python examples/trajectories.py --out out [--quick]
"""

from __future__ import annotations


import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

import probdiff as pd  # noqa: E402
from _common import example_args  # noqa: E402
from probdiff import data as pdata  # noqa: E402


def main(argv=None) -> None:
    args = example_args(__doc__, argv)
    n, steps = (16, 10) if args.quick else (64, 30)

    digits = pdata.digits()
    images = pdata.Dequantize(digits.levels)(digits.counts, noise=False)      # bin centres in [-1, 1]
    process = pd.VESDE(sigma_min=0.01, sigma_max=50.0)
    model = pd.oracles.Empirical(images).model(process)
    generator = torch.Generator().manual_seed(args.seed)
    solution = pd.sample(pd.probability_flow(process, model), (n, *images.shape[1:]), solver=pd.solvers.Heun(),
                         grid=pd.grids.Karras(steps), generator=generator, trajectory=True)

    # Deviation from the chord, relative to the chord's length (Chen et al. 2023, Fig. 3).
    def relative_deviation(xs):
        chord = (xs[-1] - xs[0]).flatten(1).norm(dim=1)
        return pd.geometry.trajectory_deviation(xs) / chord

    dev_x = relative_deviation(solution.xs)
    dev_d = relative_deviation(solution.denoised)
    nearest = torch.cdist(solution.x.flatten(1), images.flatten(1)).min(1).values
    spacing = torch.cdist(images[:200].flatten(1), images.flatten(1)).topk(2, largest=False).values[:, 1]
    print(f"samples: {n}, steps: {steps}, NFE: {solution.nfe}")
    print(f"max relative deviation of the sampling trajectory : {float(dev_x.max(0).values.mean()):.3f} (mean over samples)")
    print(f"max relative deviation of the denoising trajectory: {float(dev_d.max(0).values.mean()):.3f}")
    print(f"distance of samples to the nearest training image : median {float(nearest.median()):.2e}, "
          f"max {float(nearest.max()):.2e}")
    final_d = torch.cdist(solution.denoised[-1].flatten(1), images.flatten(1)).min(1).values
    print(f"distance of the last denoiser output to the data  : max {float(final_d.max()):.2e}")
    print(f"nearest-neighbour distance between training images: median {float(spacing.median()):.2f}")

    columns = 8
    picks = torch.linspace(0, steps - 1, columns).round().long()
    fig = plt.figure(figsize=(10, 4.4))
    gs = fig.add_gridspec(4, columns + 5, left=0.05, right=0.98, top=0.92, bottom=0.12, wspace=0.08, hspace=0.12)
    for row in range(2):
        for kind, traj in enumerate((solution.xs, solution.denoised)):
            for j, k in enumerate(picks):
                ax = fig.add_subplot(gs[2 * row + kind, j])
                ax.imshow(traj[k, row, 0].clamp(-1, 1), cmap="gray_r", vmin=-1, vmax=1)
                ax.set_xticks([]), ax.set_yticks([])
                if j == 0:
                    ax.set_ylabel("x_t" if kind == 0 else "D(x_t)", fontsize=8)
                if row == 0 and kind == 0:
                    ax.set_title(f"t={float(solution.ts[k]):.2g}", fontsize=7)
    ax = fig.add_subplot(gs[:, columns + 1:])
    ax.plot(torch.linspace(0, 1, dev_x.shape[0]), dev_x.mean(1), label="sampling")
    ax.plot(torch.linspace(0, 1, dev_d.shape[0]), dev_d.mean(1), label="denoising")
    ax.set_xlabel("step / steps", fontsize=8), ax.set_title("deviation / chord length", fontsize=8)
    ax.tick_params(labelsize=7), ax.legend(fontsize=7)
    fig.savefig(args.out / "trajectories.png", dpi=70)
    print(f"wrote {args.out / 'trajectories.png'}")


if __name__ == "__main__":
    main()
