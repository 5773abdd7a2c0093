"""Score-optimal schedule on a mollified Cantor set: where a linear schedule fails to separate the modes.

The toy of Williams, Campbell, Doucet & Syed, "Score-Optimal Diffusion Schedules" (NeurIPS 2024), at CPU
scale: 1-D data on the level-4 Cantor set in [-1, 1] (16 points; the closest are 2/81 apart), each point
smoothed by a narrow Gaussian (std 0.002), so the density has structure at every scale down to the
smoothing. The model is the exact score of that mixture under the VP SDE (t_min = 1e-4,
sigma/alpha = 0.003 at the end), so every difference below is the schedule's. The probability flow is
integrated with Euler from the same initial noise on the linear (uniform in t) grid, on Karras' rho = 7
grid and on the score-optimal grid fitted from 1024 data samples (pd.grids.ScoreOptimal.fit).

Printed: the share of samples within 4 smoothing widths of a Cantor point (the data: 1.0). Plotted: the
histograms of the samples at 20 steps against the data, and the share for 10, 20 and 40 steps.

Run: python examples/score_optimal_cantor.py --out out [--quick]
"""

from __future__ import annotations

import itertools

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

import probdiff as pd  # noqa: E402
from _common import example_args  # noqa: E402

LEVEL, WIDTH = 4, 0.002


def cantor_mixture(level=LEVEL, width=WIDTH):
    """Equal-weight mixture of N(c, width^2) over the centres c of the level-``level`` Cantor intervals in [-1, 1]."""
    digits = itertools.product((0, 1), repeat=level)
    left = torch.tensor([sum(2 * d / 3 ** (i + 1) for i, d in enumerate(ds)) for ds in digits], dtype=torch.float64)
    centres = 2.0 * left - 1.0 + 3.0 ** -level
    k = centres.shape[0]
    return centres, pd.oracles.GaussianMixture(torch.full((k,), 1.0 / k, dtype=torch.float64), centres[:, None],
                                               torch.full((k, 1, 1), width**2, dtype=torch.float64))


def main(argv=None) -> None:
    args = example_args(__doc__, argv)
    n, step_counts = (500, (10, 20)) if args.quick else (4000, (10, 20, 40))
    centres, mixture = cantor_mixture()
    process = pd.VPSDE(t_min=1e-4)
    model = mixture.model(process)
    flow = pd.probability_flow(process, model)
    data = mixture.sample(1024, generator=torch.Generator().manual_seed(args.seed))
    x_init = process.sample_prior(n, (1,), generator=torch.Generator().manual_seed(args.seed + 1), dtype=torch.float64)

    def on_modes(x):
        return float(((x - centres[None, :]).abs().min(1).values < 4 * WIDTH).double().mean())

    grids = {"linear (uniform t)": pd.grids.Uniform, "Karras rho=7": pd.grids.Karras,
             "score-optimal": lambda steps: pd.grids.ScoreOptimal.fit(
                 process, model, data, steps, generator=torch.Generator().manual_seed(args.seed + 2))}
    samples, shares = {}, {name: [] for name in grids}
    print(f"{'steps':>5}  " + "".join(f"{name:>22}" for name in grids) + "   (share of samples on a mode)")
    for steps in step_counts:
        for name, make in grids.items():
            x = pd.sample(flow, x_init=x_init, solver=pd.solvers.Euler(), grid=make(steps)).x
            shares[name].append(on_modes(x))
            if steps == 20:
                samples[name] = x[:, 0]
        print(f"{steps:>5}  " + "".join(f"{shares[name][-1]:>22.3f}" for name in grids))

    fig, axes = plt.subplots(1, 4, figsize=(13, 3.2))
    bins = torch.linspace(-1.05, 1.05, 400)
    axes[0].hist(mixture.sample(n, generator=torch.Generator().manual_seed(9))[:, 0], bins=bins, color="k")
    axes[0].set_title("data (16 Cantor points, std 0.002)", fontsize=9)
    for ax, (name, x) in zip(axes[1:3], [(k, samples[k]) for k in ("linear (uniform t)", "score-optimal")]):
        ax.hist(x, bins=bins, color="C0" if name.startswith("linear") else "C2")
        ax.set_title(f"Euler, 20 steps, {name}\n{on_modes(x[:, None]):.0%} of the samples on a mode", fontsize=9)
    for name in grids:
        axes[3].plot(step_counts, shares[name], marker="o", label=name)
    axes[3].set_xlabel("Euler steps"), axes[3].set_ylabel("share of samples on a mode"), axes[3].legend(fontsize=7)
    for ax in axes[:3]:
        ax.set_yticks([]), ax.set_xlabel("x")
    fig.tight_layout()
    fig.savefig(args.out / "score_optimal_cantor.png", dpi=70)
    print(f"wrote {args.out / 'score_optimal_cantor.png'}")


if __name__ == "__main__":
    main()
