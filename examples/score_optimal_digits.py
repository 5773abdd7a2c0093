"""Score-optimal schedules on the 8x8 digits: the online update during training, and the EDM schedule.

Two of the qualitative results of Williams, Campbell, Doucet & Syed, "Score-Optimal Diffusion Schedules"
(NeurIPS 2024), at CPU scale:

1. *Online update.* An epsilon-MLP (256 wide, depth 3) is trained on the digits (dequantised to [-1, 1])
   under the VP SDE; every ``--every`` steps the schedule is re-estimated from the current network and
   blended into the previous one, :math:`t \\leftarrow \\gamma t^* + (1-\\gamma) t` with gamma = 0.5
   (pd.grids.ScoreOptimal.update), starting from a log-SNR grid. Plotted: the 10 noise levels
   sigma/alpha of the grid as training proceeds.
2. *EDM schedule.* The trained network read as a model of the EDM process (alpha = 1, sigma = t, on
   [0.004, 80]): the VP network's denoiser at the VP time of the same sigma/alpha, on x scaled by alpha.
   The 18-step score-optimal schedule fitted on it (from a log-SNR start) is compared in sigma with
   Karras' rho = 7 schedule, the one EDM tuned by hand; the paper reports that its fitted schedule
   recovers rho = 7 on CIFAR-10. Printed: the RMS distance in log sigma between the fitted schedule and
   Karras' for several rho.

Run: python examples/score_optimal_digits.py --out out [--quick]
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

import probdiff as pd  # noqa: E402
from _common import example_args  # noqa: E402
from probdiff import data as pdata  # noqa: E402
from probdiff.nn import MLP, FourierLogSNR  # noqa: E402


def log_distance(a, b):
    """RMS distance between two noise-level schedules in log sigma."""
    return float((a.log() - b.log()).pow(2).mean().sqrt())


def main(argv=None) -> None:
    args = example_args(__doc__, argv)
    train_steps, every = (60, 20) if args.quick else (1500, 100)
    torch.manual_seed(args.seed)
    digits = pdata.digits()
    split = digits.split(0.2, seed=0)
    dequantize = pdata.Dequantize(digits.levels, (-1.0, 1.0))
    data = dequantize(split.train.counts[:512], torch.Generator().manual_seed(args.seed)).flatten(1)

    # ---- 1. the online update during training --------------------------------------------------------
    vp = pd.VPSDE(t_min=1e-4)
    net = MLP(digits.dim, hidden=256, depth=3, time=FourierLogSNR(vp))
    model = pd.EpsilonModel(net, vp)
    loss = pd.losses.DenoisingScoreMatching(vp, pd.losses.ImportanceSampled())
    trainer = pd.Trainer(model, loss, split.train.counts.flatten(1), transform=dequantize, steps=train_steps,
                         batch_size=128, optimizer=pd.train.AdamW(lr=2e-3), run=pd.train.Run(seed=args.seed))
    grid = pd.grids.ScoreOptimal(pd.grids.LogSNR(10).times(vp))
    history = [(0, grid.times(vp))]
    generator = torch.Generator().manual_seed(args.seed + 1)
    while trainer.step < train_steps:
        trainer.fit(until=min(trainer.step + every, train_steps))
        with trainer.ema_weights():
            grid = grid.update(vp, model, data, gamma=0.5, generator=generator)
        history.append((trainer.step, grid.times(vp)))
        print(f"step {trainer.step:>5}: sigma/alpha of the grid "
              + " ".join(f"{float(s):.3g}" for s in vp.sigma(history[-1][1]) / vp.alpha(history[-1][1])), flush=True)

    # ---- 2. the same network as a model of the EDM process; the fitted 18-step schedule ---------------
    net.load_state_dict(trainer.ema)
    net.eval()
    edm = pd.EDM(sigma_min=0.004, sigma_max=80.0)

    def edm_denoiser(x, sigma):
        t = vp.time_of_log_snr(-2.0 * torch.log(sigma))
        return model.denoise(vp.alpha(t)[:, None] * x, t)

    edm_model = pd.DenoiserModel(edm_denoiser, edm)
    with torch.no_grad():
        fitted = pd.grids.ScoreOptimal.fit(edm, edm_model, data, 18,
                                           generator=torch.Generator().manual_seed(args.seed + 2))
    sig_fit = fitted.times(edm)
    distances = {rho: log_distance(sig_fit, pd.grids.Karras(18, rho=rho).times(edm)) for rho in (1, 3, 5, 7, 10, 20)}
    geometric = log_distance(sig_fit, pd.grids.LogSNR(18).times(edm))
    print("fitted EDM schedule (sigma):", " ".join(f"{float(s):.3g}" for s in sig_fit))
    print("RMS distance in log sigma to Karras(rho): "
          + ", ".join(f"rho={rho}: {d:.3f}" for rho, d in distances.items())
          + f"; to log-SNR (geometric): {geometric:.3f}")

    fig, (ax_on, ax_edm) = plt.subplots(1, 2, figsize=(10, 3.6))
    steps = [s for s, _ in history]
    levels = torch.stack([vp.sigma(ts) / vp.alpha(ts) for _, ts in history])
    for i in range(1, levels.shape[1] - 1):
        ax_on.semilogy(steps, levels[:, i], color="C0")
    ax_on.set_xlabel("training step"), ax_on.set_ylabel("sigma / alpha of the grid points")
    ax_on.set_title("online update (gamma = 0.5) while training on digits", fontsize=9)
    index = torch.arange(19)
    ax_edm.semilogy(index, sig_fit, "o-", color="C2", label="score-optimal (fitted)")
    ax_edm.semilogy(index, pd.grids.Karras(18).times(edm), "s--", color="C1", label="Karras rho = 7")
    ax_edm.semilogy(index, pd.grids.LogSNR(18).times(edm), ":", color="0.5", label="geometric (log-SNR)")
    ax_edm.set_xlabel("step i"), ax_edm.set_ylabel("sigma_i"), ax_edm.legend(fontsize=7)
    ax_edm.set_title(f"EDM, 18 steps: RMS |log sigma - log sigma_Karras| = {distances[7]:.2f}", fontsize=9)
    fig.tight_layout()
    fig.savefig(args.out / "score_optimal_digits.png", dpi=70)
    print(f"wrote {args.out / 'score_optimal_digits.png'}")


if __name__ == "__main__":
    main()
