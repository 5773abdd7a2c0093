"""Exact likelihood and bits/dim on the 8x8 digits: the probability-flow ODE, the ELBO, and dequantisation.

Two density models of scikit-learn's digits (17 grey levels, dequantised uniformly onto [-1, 1]):

1. A full-covariance Gaussian mixture fitted by scikit-learn, turned into an *exact* diffusion model:
   under a linear Gaussian process a mixture stays a mixture, so pd.oracles.GaussianMixture gives its
   exact score at every t. The probability-flow ODE likelihood (pd.log_likelihood, exact divergence)
   must then reproduce the mixture's own closed-form density — a check of the ODE machinery on real data.
2. A small network trained with the likelihood-weighted denoising loss (pd.Trainer), scored with the
   exact ODE likelihood and with the ELBO.

bits/dim = -E_u[log p(x)]/(D ln 2) + log2(K) - log2(hi - lo): pd.bits_per_dim adds the constant
(log2 17 - 1 = 3.09 here) from the declared levels and range. The last row shows what happens without
dequantisation: a density evaluated on the bin centres is not a code length and can even be negative.

References: Song et al., ICLR 2021 (probability-flow likelihood); Grathwohl et al., ICLR 2019 (FFJORD);
Kingma et al., NeurIPS 2021 (ELBO); Theis et al., ICLR 2016 (dequantisation); McAllester 2023.

Run: python examples/likelihood_digits.py --out out [--quick]
"""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from sklearn.mixture import GaussianMixture as SkMixture  # noqa: E402

import probdiff as pd  # noqa: E402
from _common import example_args  # noqa: E402
from probdiff import data as pdata  # noqa: E402
from probdiff.nn import MLP, FourierLogSNR  # noqa: E402


def main(argv=None) -> None:
    args = example_args(__doc__, argv)
    n_test, train_steps, components, rtol = (16, 60, 4, 1e-3) if args.quick else (64, 1500, 10, 1e-3)
    gmm_rtol = 1e-3 if args.quick else 1e-5      # the sharp fitted components make the ODE stiff near t_min
    torch.manual_seed(args.seed)
    generator = torch.Generator().manual_seed(args.seed)

    digits = pdata.digits()
    split = digits.split(0.2, seed=0)
    levels, data_range, dim = digits.levels, (-1.0, 1.0), digits.dim
    dequantize = pdata.Dequantize(levels, data_range)
    train_x = dequantize(split.train.counts, generator, dtype=torch.float64).flatten(1)
    test_n = split.test.counts[:n_test]
    test_x = dequantize(test_n, generator, dtype=torch.float64).flatten(1)   # one draw of u per image
    rows = []

    # ---- 1. a Gaussian mixture, exact under the VP SDE ------------------------------------------------
    sk = SkMixture(components, covariance_type="full", reg_covar=1e-3, random_state=args.seed).fit(train_x.numpy())
    mixture = pd.oracles.GaussianMixture(torch.as_tensor(sk.weights_), torch.as_tensor(sk.means_),
                                         torch.as_tensor(sk.covariances_))
    process = pd.VPSDE(beta_max=40.0)        # beta_max = 40: the reference N(0, I) matches p_{t_max}
    closed = mixture.marginal_log_prob(process, test_x, process.t_min)
    ode, stats = pd.log_likelihood(process, mixture.model(process), test_x, rtol=gmm_rtol, atol=gmm_rtol,
                                   return_stats=True)
    bpd_closed = pd.bits_per_dim(closed, (dim,), levels, data_range)
    bpd_ode = pd.bits_per_dim(ode, (dim,), levels, data_range)
    rows.append((f"GMM ({components} comp.), closed form", bpd_closed, "-"))
    rows.append(("GMM, probability-flow ODE", bpd_ode, str(stats.nfe)))
    print(f"GMM: max |ODE - closed form| = {float((ode - closed).abs().max()):.2e} nats per image", flush=True)

    # ---- 2. a trained network ---------------------------------------------------------------------------
    net_process = pd.VPSDE(t_min=1e-4)
    net = MLP(dim, hidden=256, depth=3, time=FourierLogSNR(net_process))
    model = pd.EpsilonModel(net, net_process)
    loss = pd.losses.DenoisingScoreMatching(net_process, pd.losses.ImportanceSampled())
    trainer = pd.Trainer(model, loss, split.train.counts.flatten(1), transform=dequantize, steps=train_steps,
                         batch_size=128, optimizer=pd.train.AdamW(lr=2e-3), run=pd.train.Run(seed=args.seed))
    losses = trainer.fit()
    print(f"trained {train_steps} steps, final loss {sum(losses[-50:]) / len(losses[-50:]):.1f} nats", flush=True)
    x32 = test_x.float()
    with trainer.ema_weights(), torch.no_grad():
        ll, stats = pd.log_likelihood(net_process, model, x32, rtol=rtol, atol=rtol, return_stats=True)
        elbo = pd.elbo(net_process, model, x32, num_samples=64, generator=generator)
        centres = dequantize(test_n, noise=False).flatten(1)
        ll_centres = pd.log_likelihood(net_process, model, centres, rtol=rtol, atol=rtol)
    rows.append(("network, probability-flow ODE", pd.bits_per_dim(ll, (dim,), levels, data_range), str(stats.nfe)))
    rows.append(("network, ELBO (upper bound)", pd.bits_per_dim(elbo, (dim,), levels, data_range), "-"))
    rows.append(("network, bin centres (NOT a bpd)", -ll_centres / (dim * math.log(2)), "-"))

    print(f"{'held-out digits, ' + str(len(test_x)) + ' images':<36}{'bits/dim':>10}{'+-':>7}{'NFE':>6}")
    for name, bpd, nfe in rows:
        print(f"{name:<36}{float(bpd.mean()):>10.3f}{float(bpd.std() / math.sqrt(len(bpd))):>7.3f}{nfe:>6}")
    print(f"{'uniform over 17 levels':<36}{math.log2(levels):>10.3f}")

    fig, (ax_bar, ax_hist) = plt.subplots(1, 2, figsize=(10, 3.4), gridspec_kw={"width_ratios": [1.3, 1]})
    names = [r[0] for r in rows[:-1]] + ["uniform"]
    values = [float(r[1].mean()) for r in rows[:-1]] + [math.log2(levels)]
    ax_bar.barh(names[::-1], values[::-1], color=["gray"] + ["tab:blue"] * (len(values) - 1))
    ax_bar.set_xlabel("held-out bits/dim (lower is better)"), ax_bar.tick_params(labelsize=7)
    ax_hist.hist(bpd_ode.numpy(), bins=20, alpha=0.6, label="GMM (ODE)")
    ax_hist.hist(rows[2][1].numpy(), bins=20, alpha=0.6, label="network (ODE)")
    ax_hist.set_xlabel("bits/dim per test image"), ax_hist.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(args.out / "likelihood_digits.png", dpi=70)
    print(f"wrote {args.out / 'likelihood_digits.png'}")


if __name__ == "__main__":
    main()
