"""Conditioning (THEORY.md §11): GaussianMixture.condition against independent computations (information
form with scipy's evidence in 16-D; Bayes' rule by quadrature in 2-D); sampling pd.condition(oracle) reproduces
the exact posterior (16-D mixture; masking, averaging and random-projection operators); moment matching is
exact for Gaussian data; DPS is its closed-form gradient; classifier-free guidance combines denoisers."""

import math

import numpy as np
import pytest
import scipy.stats
import torch

import probdiff as pd

D = 16


def mixture_16d(seed=0):
    g = torch.Generator().manual_seed(seed)
    means = 3.0 * torch.randn(4, D, generator=g, dtype=torch.float64)
    factors = 0.4 * torch.randn(4, D, D, generator=g, dtype=torch.float64) / math.sqrt(D)
    covs = factors @ factors.transpose(-1, -2) + 0.1 * torch.eye(D, dtype=torch.float64)
    return pd.oracles.GaussianMixture(torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=torch.float64), means, covs)


def operators():
    g = torch.Generator().manual_seed(1)
    eye = torch.eye(D, dtype=torch.float64)
    return {
        "masking": eye[::2],                                             # observe every other coordinate
        "averaging": 0.5 * (eye[0::2] + eye[1::2]),                      # average neighbouring pairs
        "projection": torch.randn(4, D, generator=g, dtype=torch.float64) / math.sqrt(D),
    }


def observe(mixture, A, noise_std, seed=2):
    g = torch.Generator().manual_seed(seed)
    x = mixture.sample(1, generator=g)[0]
    return A @ x + noise_std * torch.randn(A.shape[0], generator=g, dtype=torch.float64)


@pytest.mark.parametrize("name", list(operators()))
def test_condition_matches_the_information_form_and_scipys_evidence(name):
    mixture, A, noise = mixture_16d(), operators()[name], 0.3
    y = observe(mixture, A, noise)
    post = mixture.condition(A, noise**2, y)
    S = noise**2 * np.eye(A.shape[0])
    An, yn = A.numpy(), y.numpy()
    log_w = []
    for k in range(4):
        mu, C = mixture.means[k].numpy(), mixture.covs[k].numpy()
        prec = np.linalg.inv(C) + An.T @ np.linalg.inv(S) @ An        # information form (Bishop Eq. 2.116-2.117)
        cov = np.linalg.inv(prec)
        mean = cov @ (np.linalg.solve(C, mu) + An.T @ np.linalg.solve(S, yn))
        np.testing.assert_allclose(post.means[k].numpy(), mean, rtol=1e-7, atol=1e-8)
        np.testing.assert_allclose(post.covs[k].numpy(), cov, rtol=1e-7, atol=1e-9)
        log_w.append(math.log(mixture.weights[k]) + scipy.stats.multivariate_normal(An @ mu, An @ C @ An.T + S).logpdf(yn))
    log_w = np.array(log_w)
    np.testing.assert_allclose(post.weights.numpy(), np.exp(log_w - np.logaddexp.reduce(log_w)), rtol=1e-7, atol=1e-12)


def test_condition_is_bayes_rule_by_quadrature_in_two_dimensions():
    mixture = pd.oracles.GaussianMixture.ring(3, radius=1.5, variance=0.2, dtype=torch.float64)
    A, noise, y = torch.tensor([[0.6, 0.8]], dtype=torch.float64), 0.5, torch.tensor([0.7], dtype=torch.float64)
    post = mixture.condition(A, noise**2, y)
    u = torch.linspace(-6, 6, 481, dtype=torch.float64)
    grid = torch.stack(torch.meshgrid(u, u, indexing="ij"), -1).reshape(-1, 2)
    log_joint = mixture.log_prob(grid) + torch.tensor(scipy.stats.norm(0, noise).logpdf((grid @ A.T - y).numpy()))[:, 0]
    h = float(u[1] - u[0])
    log_z = torch.logsumexp(log_joint, 0) + 2 * math.log(h)            # Riemann sum of p(x) p(y|x)
    points = torch.tensor([[0.0, 0.0], [1.5, 0.0], [-0.5, 1.2], [0.3, -1.0]], dtype=torch.float64)
    expected = (mixture.log_prob(points)
                + torch.tensor(scipy.stats.norm(0, noise).logpdf((points @ A.T - y).numpy()))[:, 0] - log_z)
    torch.testing.assert_close(post.log_prob(points), expected, rtol=0, atol=1e-6)


def _occupancy_pvalue(mixture, x):
    """Chi-square p-value of the samples' most likely components against the mixture's own draws' rates."""
    resp = torch.stack([torch.log(mixture.weights[k]) + torch.distributions.MultivariateNormal(
        mixture.means[k], mixture.covs[k]).log_prob(x) for k in range(mixture.num_components)], -1)
    counts = torch.bincount(resp.argmax(-1), minlength=mixture.num_components).double()
    keep = mixture.weights > 1e-3
    assert counts[~keep].sum() <= 2, "samples in components of negligible posterior weight"
    expected = mixture.weights[keep] / mixture.weights[keep].sum() * counts[keep].sum()
    if keep.sum() < 2:
        return 1.0
    return scipy.stats.chisquare(counts[keep].numpy(), expected.numpy()).pvalue


@pytest.mark.parametrize("name", list(operators()))
def test_sampling_the_conditioned_oracle_reproduces_the_exact_posterior(name):
    mixture, A, noise = mixture_16d(), operators()[name], 0.5
    y = observe(mixture, A, noise, seed=5)
    process = pd.VPSDE()
    posterior = pd.condition(mixture.model(process), pd.LinearGaussian(A, noise, y))
    exact = mixture.condition(A, noise**2, y)
    n = 2000
    g = torch.Generator().manual_seed(6)
    # A second-order sampler: first-order ancestral steps at 100 log-SNR steps are ~0.8 nats too
    # concentrated in 16-D on the *unconditional* mixture too (a discretisation error, not the conditioning).
    x = pd.sample(pd.probability_flow(posterior), (n, D), solver=pd.solvers.DPMSolver2M(), grid=pd.grids.LogSNR(50),
                  generator=g, dtype=torch.float64).x
    reference = exact.sample(n, generator=g)
    lp, lp_ref = exact.log_prob(x), exact.log_prob(reference)
    se = math.sqrt(lp.var() / n + lp_ref.var() / n)
    # 5 standard errors plus 0.1 nats for the 50-step discretisation (16 dimensions)
    assert abs(float(lp.mean() - lp_ref.mean())) < 5 * se + 0.1
    assert _occupancy_pvalue(exact, x) > 1e-3


def gaussian_oracle():
    mixture = mixture_16d()
    return pd.oracles.GaussianMixture(torch.ones(1, dtype=torch.float64), mixture.means[:1], mixture.covs[:1])


@pytest.mark.parametrize("process", [pd.VPSDE(), pd.VESDE(), pd.LinearBlend()], ids=repr)
def test_moment_matching_is_exact_for_gaussian_data(process):
    oracle, A, noise = gaussian_oracle(), operators()["projection"], 0.3
    obs = pd.LinearGaussian(A, noise, observe(oracle, A, noise))
    guided = pd.condition(oracle.model(process), obs, guidance=pd.guidance.MomentMatching())
    exact = pd.condition(oracle.model(process), obs)
    g = torch.Generator().manual_seed(3)
    x, t = torch.randn(5, D, generator=g, dtype=torch.float64), torch.tensor([0.05, 0.2, 0.5, 0.7, 0.9],
                                                                             dtype=torch.float64)
    torch.testing.assert_close(guided.denoise(x, t), exact.denoise(x, t), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(guided.score(x, t), exact.score(x, t), rtol=1e-6, atol=1e-6)


def test_dps_is_the_gradient_of_the_plugged_in_likelihood():
    oracle, A, noise = gaussian_oracle(), operators()["masking"], 0.3
    process = pd.VPSDE()
    y = observe(oracle, A, noise)
    obs = pd.LinearGaussian(A, noise, y)
    model = oracle.model(process)
    x, t = torch.randn(3, D, dtype=torch.float64), torch.full((3,), 0.4, dtype=torch.float64)
    g, denoised = pd.guidance.DPS(2.0).grad(model, obs, x, t)
    # Gaussian data: D = mu + alpha C (alpha^2 C + sigma^2 I)^-1 (x - alpha mu), so J = alpha C (alpha^2 C + sigma^2 I)^-1
    a, s = process.alpha(t[0]).double(), process.sigma(t[0]).double()
    C = oracle.covs[0]
    J = a * C @ torch.linalg.inv(a**2 * C + s**2 * torch.eye(D, dtype=torch.float64))
    expected = 2.0 * ((y - denoised @ A.T) / noise**2) @ A @ J
    torch.testing.assert_close(g, expected, rtol=1e-6, atol=1e-8)


def test_classifier_free_guidance_combines_the_denoisers():
    mixture, A = mixture_16d(), operators()["masking"]
    process = pd.VPSDE()
    unconditional = mixture.model(process)
    conditional = pd.condition(unconditional, pd.LinearGaussian(A, 0.5, observe(mixture, A, 0.5)))
    x, t = torch.randn(4, D, dtype=torch.float64), torch.full((4,), 0.3, dtype=torch.float64)
    d_c, d_u = conditional.denoise(x, t), unconditional.denoise(x, t)
    for scale in (0.0, 1.0, 3.0):
        cfg = pd.guidance.ClassifierFree(conditional, unconditional, scale)
        torch.testing.assert_close(cfg.denoise(x, t), d_u + scale * (d_c - d_u))
        # the same combination of scores (Ho & Salimans 2021, with w = scale - 1)
        torch.testing.assert_close(cfg.score(x, t), scale * conditional.score(x, t)
                                   + (1 - scale) * unconditional.score(x, t), rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="same process"):
        pd.guidance.ClassifierFree(conditional, mixture.model(pd.VPSDE()), 2.0)


def test_bad_observations_and_models_are_rejected():
    mixture = mixture_16d()
    A = operators()["masking"]
    with pytest.raises(ValueError, match="y must have shape"):
        pd.LinearGaussian(A, 0.1, torch.zeros(3))
    with pytest.raises(ValueError, match="noise_std"):
        pd.LinearGaussian(A, 0.0, torch.zeros(8))
    with pytest.raises(ValueError, match="A must have shape"):
        mixture.condition(torch.zeros(2, 3), 0.1, torch.zeros(2))
    with pytest.raises(ValueError, match="noise_cov"):
        mixture.condition(A, -1.0 * torch.eye(8), torch.zeros(8))
    net_model = pd.DenoiserModel(lambda x, t: x, pd.VPSDE())
    with pytest.raises(ValueError, match="guidance"):
        pd.condition(net_model, pd.LinearGaussian(A, 0.1, torch.zeros(8)))
    with pytest.raises(ValueError, match="LinearGaussian"):
        pd.condition(mixture.model(pd.VPSDE()), (A, 0.1))


@pytest.mark.slow
def test_the_digits_inpainting_figure_runs_and_its_samples_match_the_observed_pixels(tmp_path, monkeypatch):
    # examples/inpainting_digits.py --quick (the generator of docs/figures/inpainting_digits.png, reduced): both
    # rules' samples agree with y at the observed pixels within the noise (RMS residual below 3 noise standard
    # deviations, about 1 for the exact posterior) and far closer than unconditional prior samples do
    import importlib.util
    import sys
    from pathlib import Path

    examples = Path(__file__).resolve().parents[1] / "examples"
    monkeypatch.syspath_prepend(str(examples))
    spec = importlib.util.spec_from_file_location("inpainting_digits", examples / "inpainting_digits.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "inpainting_digits", module)
    spec.loader.exec_module(module)
    torch.set_num_threads(1)
    stats = module.main(["--out", str(tmp_path), "--quick"])
    assert (tmp_path / "inpainting_digits.png").stat().st_size > 1000
    assert stats["prior"]["residual"] > 4.0
    for rule in ("DPS", "moment matching"):
        assert stats[rule]["residual"] < 3.0, stats
        assert stats[rule]["residual"] < 0.5 * stats["prior"]["residual"], stats
