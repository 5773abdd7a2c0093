"""The reverse-time family at several noise levels: same marginals, different paths.

For a Gaussian process and every eta >= 0 the reverse SDE
    dx = [f x - (1 + eta^2)/2 g^2 s(x, t)] dt + eta g dW
has the forward process' marginals p_t (McAllester, "On the Mathematics of Diffusion Models", 2023).
This script drives the family for eta in {0, 0.5, 1, 2} with the exact score of an 8-mode mixture under
the VP SDE, from the *same* initial noise, with Euler–Maruyama. It checks the claim at the end (the
data law) and half-way (the diffused law p_t, whose log-density is a closed form), and draws the paths
of a few particles: deterministic and straight-ish at eta = 0, increasingly erratic as eta grows.

References: McAllester 2023; Song et al., ICLR 2021 (eta = 0 and 1); Anderson 1982 (eta = 1);
Karras et al., NeurIPS 2022 (stochastic sampling as a noise level).

Run: python examples/reverse_family.py --out out [--quick]
"""

from __future__ import annotations


import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

import probdiff as pd  # noqa: E402
from _common import example_args  # noqa: E402


def main(argv=None) -> None:
    args = example_args(__doc__, argv)
    n, steps = (500, 50) if args.quick else (4000, 200)

    mixture = pd.oracles.GaussianMixture.ring()
    process = pd.VPSDE()
    model = mixture.model(process)
    generator = torch.Generator().manual_seed(args.seed)
    x_init = process.sample_prior(n, (2,), generator=generator)
    grid = pd.grids.Uniform(steps)
    mid = steps // 2
    t_mid = float(grid.times(process)[mid])

    # Reference values from true data: E log p_0(x_0) and E log p_t(x_t) at the half-way time.
    x0 = mixture.sample(100_000, generator=generator)
    ref_end = float(mixture.log_prob(x0).mean())
    xt = process.marginal(x0, t_mid).sample()
    ref_mid = float(mixture.marginal_log_prob(process, xt, t_mid).mean())

    noises = (0.0, 0.5, 1.0, 2.0)
    fig, axes = plt.subplots(1, len(noises), figsize=(11, 3))
    print(f"{'eta':>5}{'E log p_t(x_t), t=' + format(t_mid, '.2f'):>24}{'true':>8}{'E log p_0(x)':>14}{'true':>8}")
    for ax, noise in zip(axes, noises):
        solution = pd.sample(pd.reverse(process, model, noise=noise), x_init=x_init.clone(),
                             solver=pd.solvers.EulerMaruyama(), grid=grid, generator=generator, trajectory=True)
        mid_logp = float(mixture.marginal_log_prob(process, solution.xs[mid], t_mid).mean())
        end_logp = float(mixture.log_prob(solution.x).mean())
        print(f"{noise:>5.1f}{mid_logp:>24.3f}{ref_mid:>8.3f}{end_logp:>14.3f}{ref_end:>8.3f}")
        ax.scatter(*solution.x.T, s=1, alpha=0.3, color="gray")
        for i in range(6):
            ax.plot(*solution.xs[:, i].T, lw=0.8)
        ax.set_xlim(-6, 6), ax.set_ylim(-6, 6), ax.set_aspect("equal")
        ax.set_xticks([]), ax.set_yticks([])
        ax.set_title(f"eta = {noise:g}", fontsize=9)
    fig.tight_layout()
    fig.savefig(args.out / "reverse_family.png", dpi=70)
    print(f"wrote {args.out / 'reverse_family.png'}")


if __name__ == "__main__":
    main()
