"""VP vs VE vs linear blend on the same Gaussian mixture: forward marginals and probability-flow samples.

Three forward processes diffuse the same 8-mode mixture. For each, the exact diffused density p_t (a
closed form: a mixture stays a mixture under a linear Gaussian process) is drawn at three times, and the
probability-flow ODE driven by the exact oracle score generates samples from the process' reference.
The table reports how well each reproduces the data: the average log-density of its samples under the
true mixture (the reference value is that of true data) and the worst mode occupancy.

References: Song et al., "Score-Based Generative Modeling through SDEs", ICLR 2021 (VP, VE);
Heitz et al., "Iterative alpha-(de)Blending", SIGGRAPH 2023 and Liu et al., ICLR 2023 (linear blend);
Karras et al., "Elucidating the Design Space", NeurIPS 2022 (Heun and the rho = 7 grid).

Run: python examples/processes_compare.py --out out [--quick]
"""

from __future__ import annotations


import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

import probdiff as pd  # noqa: E402
from _common import example_args  # noqa: E402


def mode_occupancy(mixture: pd.oracles.GaussianMixture, x: torch.Tensor) -> torch.Tensor:
    """Fraction of samples nearest to each mixture mean."""
    nearest = torch.cdist(x, mixture.means).argmin(1)
    return torch.bincount(nearest, minlength=mixture.num_components).double() / x.shape[0]


def main(argv=None) -> None:
    args = example_args(__doc__, argv)
    n, steps, res = (500, 8, 40) if args.quick else (4000, 18, 120)

    mixture = pd.oracles.GaussianMixture.ring()
    processes = {"VP": pd.VPSDE(), "VE": pd.VESDE(), "linear blend": pd.LinearBlend()}
    generator = torch.Generator().manual_seed(args.seed)
    reference = float(mixture.log_prob(mixture.sample(100_000, generator=generator)).mean())
    fractions = (0.05, 0.3, 0.7)

    fig, axes = plt.subplots(len(processes), len(fractions) + 1, figsize=(9, 6.6))
    print(f"{'process':<14}{'NFE':>5}{'mean log p':>12}{'data':>8}{'worst mode':>12}")
    for row, (name, process) in enumerate(processes.items()):
        for col, u in enumerate(fractions):
            t = process.t_min + u * (process.t_max - process.t_min)
            scale = float(4 * process.alpha(torch.tensor(t)) + 3 * process.sigma(torch.tensor(t))) + 1
            grid = torch.linspace(-scale, scale, res)
            xy = torch.stack(torch.meshgrid(grid, grid, indexing="xy"), -1).reshape(-1, 2)
            logp = mixture.marginal_log_prob(process, xy, t).reshape(res, res)
            ax = axes[row, col]
            ax.imshow(logp.exp(), extent=(-scale, scale, -scale, scale), origin="lower", cmap="magma")
            ax.set_title(f"{name}: p_t, t = {t:.2g}", fontsize=8)
            ax.set_xticks([]), ax.set_yticks([])

        flow = pd.probability_flow(process, mixture.model(process))
        solution = pd.sample(flow, (n, 2), solver=pd.solvers.Heun(), grid=pd.grids.Karras(steps),
                             generator=generator)
        mean_logp = float(mixture.log_prob(solution.x).mean())
        worst = float((mode_occupancy(mixture, solution.x) - 1 / mixture.num_components).abs().max())
        print(f"{name:<14}{solution.nfe:>5}{mean_logp:>12.3f}{reference:>8.3f}{worst:>12.3f}")
        ax = axes[row, -1]
        ax.scatter(*solution.x.T, s=1, alpha=0.5)
        ax.set_xlim(-6, 6), ax.set_ylim(-6, 6), ax.set_aspect("equal")
        ax.set_title(f"{name}: samples ({solution.nfe} NFE)", fontsize=8)
        ax.set_xticks([]), ax.set_yticks([])
    fig.tight_layout()
    fig.savefig(args.out / "processes_compare.png", dpi=70)

    fig, ax = plt.subplots(figsize=(4.5, 3))
    for name, process in processes.items():
        t = torch.linspace(process.t_min, process.t_max, 200, dtype=torch.float64)
        ax.plot((t - process.t_min) / (process.t_max - process.t_min), process.log_snr(t), label=name)
    ax.set_xlabel("(t - t_min) / (t_max - t_min)"), ax.set_ylabel("log-SNR"), ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(args.out / "processes_log_snr.png", dpi=70)
    print(f"wrote {args.out / 'processes_compare.png'} and {args.out / 'processes_log_snr.png'}")


if __name__ == "__main__":
    main()
