"""Score-optimal time grids vs hand-made ones (uniform, log-SNR, Karras rho = 7) at equal step counts.

Williams, Campbell, Doucet & Syed, "Score-Optimal Diffusion Schedules" (NeurIPS 2024): the cost of a
step from t to t' is how much the score changes along it, L(t, t') = sigma_t'^2 E|s(x, t') - s(x, t)|^2,
and the best schedule moves at constant speed in that metric. probdiff fits it from data and a model
(pd.grids.ScoreOptimal.fit). Here the model is the exact score of an 8-mode Gaussian mixture under the
VP SDE, so every error below is the sampler's, not the model's.

Errors, from the same initial noise: RMS distance of the probability-flow endpoint to the converged one
(Heun on 400 log-SNR steps) and the sliced Wasserstein distance of the samples to true data.

References: Williams et al. 2024; Karras et al., NeurIPS 2022 (rho = 7); Kingma et al., NeurIPS 2021 and
Lu et al., DPM-Solver++ 2022 (log-SNR); Song et al., ICLR 2021 (probability-flow ODE).

Run: python examples/score_optimal.py --out out [--quick]
"""

from __future__ import annotations


import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

import probdiff as pd  # noqa: E402
from _common import example_args, sliced_wasserstein  # noqa: E402


def main(argv=None) -> None:
    args = example_args(__doc__, argv)
    n, step_counts, ref_steps = (500, (5, 10), 100) if args.quick else (4000, (5, 10, 20), 400)

    mixture = pd.oracles.GaussianMixture.ring()
    process = pd.VPSDE()
    model = mixture.model(process)
    generator = torch.Generator().manual_seed(args.seed)
    x_init = process.sample_prior(n, (2,), generator=generator)
    truth = mixture.sample(n, generator=generator)
    flow = pd.probability_flow(process, model)
    converged = pd.sample(flow, x_init=x_init, solver=pd.solvers.Heun(), grid=pd.grids.LogSNR(ref_steps)).x
    fit_data = mixture.sample(512, generator=generator)

    def grids(steps):
        return {"uniform": pd.grids.Uniform(steps), "log-SNR": pd.grids.LogSNR(steps),
                "Karras rho=7": pd.grids.Karras(steps),
                # the ring favours the cost in the VP frame (docs/schedules.rst, "Which frame")
                "score-optimal": pd.grids.ScoreOptimal.fit(process, model, fit_data, steps, generator=generator,
                                                           scale_free=False)}

    solvers = {"Euler": pd.solvers.Euler(), "Heun": pd.solvers.Heun()}
    results = {}
    print(f"{'solver':<7}{'steps':>6}{'grid':>15}{'NFE':>5}{'RMS to converged':>18}{'sliced W2':>11}")
    for steps in step_counts:
        for grid_name, grid in grids(steps).items():
            for solver_name, solver in solvers.items():
                solution = pd.sample(flow, x_init=x_init, solver=solver, grid=grid)
                rms = float((solution.x - converged).pow(2).sum(1).mean().sqrt())
                sw = sliced_wasserstein(solution.x, truth)
                results[solver_name, grid_name, steps] = (solution.nfe, rms)
                print(f"{solver_name:<7}{steps:>6}{grid_name:>15}{solution.nfe:>5}{rms:>18.4f}{sw:>11.4f}")

    fig, (ax_grid, ax_err) = plt.subplots(1, 2, figsize=(9, 3.4))
    for k, (grid_name, grid) in enumerate(grids(10).items()):
        ts = grid.times(process)
        ax_grid.plot(ts, torch.full_like(ts, k), "|", markersize=12, label=grid_name)
    ax_grid.set_yticks(range(4)), ax_grid.set_yticklabels(list(grids(10))), ax_grid.set_xlabel("t")
    ax_grid.set_title("10-step grids for the VP SDE", fontsize=9)
    for grid_name in grids(5):
        for solver_name, style in (("Euler", "--"), ("Heun", "-")):
            pts = [results[solver_name, grid_name, s] for s in step_counts]
            ax_err.loglog([p[0] for p in pts], [p[1] for p in pts], style, marker="o", label=f"{solver_name}, {grid_name}")
    ax_err.set_xlabel("NFE"), ax_err.set_ylabel("RMS to converged endpoint"), ax_err.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(args.out / "score_optimal.png", dpi=70)
    print(f"wrote {args.out / 'score_optimal.png'}")


if __name__ == "__main__":
    main()
