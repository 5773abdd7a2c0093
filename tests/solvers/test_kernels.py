"""Step kernels (THEORY.md §12): every stochastic solver × process family gives a normalised kernel whose
draws are the solver's steps; sampling with log_prob=True leaves the samples unchanged and scores them;
path_log_prob rescores a path; a planted kernel without its normaliser is caught; McAllester's identity
(the reverse path measure equals the forward one with the exact denoiser) holds on a fine grid."""

import itertools
import math

import pyro
import pytest
import scipy.stats
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import probdiff as pd
from probdiff import testing as pt
from probdiff.oracles import Empirical
from probdiff.reverse.kernels import GaussianKernel

MIXTURE_1D = pd.oracles.GaussianMixture(torch.tensor([0.3, 0.7]), torch.tensor([[-1.5], [1.0]]),
                                        torch.tensor([[[0.2]], [[0.5]]]))
DATA_1D = torch.tensor([[0], [1], [1], [1], [3], [3], [4], [4]])
GAUSSIAN = {"VP": pd.VPSDE, "VE": pd.VESDE, "blend": pd.LinearBlend, "cosine": pd.CosineVP}
CHAINS = {"uniform": lambda: pd.UniformChain(5, t_max=8.0), "absorbing": lambda: pd.AbsorbingChain(6, t_max=12.0),
          "blackout": lambda: pd.Blackout(max_count=4, t_max=10.0)}

# (family, process key, solver, noise): every stochastic solver with a kernel (pd.solvers.HasKernel)
CASES = ([("gauss", p, pd.solvers.EulerMaruyama(), noise) for p in GAUSSIAN for noise in (1.0, 0.5)]
         + [("gauss", p, pd.solvers.Ancestral(eta), 1.0) for p in GAUSSIAN for eta in (1.0, 0.4, 1.5)]
         + [("gauss", "VP", pd.solvers.Ancestral(None), 0.7)]
         + [("gauss", p, pd.solvers.CoefficientPreserving(eta), 1.0) for p in ("VP", "blend") for eta in (0.3, 1.0)]
         + [("gauss", p, pd.solvers.TorchSDE(m), 0.8) for p in ("VP", "blend") for m in ("euler", "milstein", "euler_heun")]
         + [("chain", c, pd.solvers.Ancestral(), 1.0) for c in CHAINS]
         + [("chain", c, pd.solvers.TauLeaping(), 1.0) for c in CHAINS]
         + [("chain", "blackout", pd.solvers.BinomialBridge(), 1.0),
            ("chain", "subs", pd.solvers.MaskedAncestral(), 1.0)])
#: solvers whose kernel draw takes the step's random numbers through another float path (torchsde's)
ROUNDING_ONLY = (pd.solvers.TorchSDE,)


def _subs_model(chain):
    """A time-free SUBS model of DATA_1D's law (a context-free categorical), for MaskedAncestral."""
    counts = torch.bincount(DATA_1D.flatten(), minlength=chain.num_states).double()

    def net(x, t):
        return torch.log(counts + 0.5).to(torch.get_default_dtype()).expand(*x.shape, chain.num_states).clone()

    return pd.SUBSModel(net, chain, time_conditioned=False)


def _reverse(family, key, noise):
    if family == "gauss":
        process = GAUSSIAN[key]()
        return pd.reverse(MIXTURE_1D.model(process), noise)
    if key == "subs":
        chain = CHAINS["absorbing"]()
        return pd.reverse(_subs_model(chain))
    chain = CHAINS[key]()
    return pd.reverse(chain, Empirical(DATA_1D).model(chain))


def _state(rev, family, u, seed):
    """Three states at time ``t``: Gaussian draws of p_t, or chain states from the forward marginal."""
    p = rev.process
    g = torch.Generator().manual_seed(seed)
    if family == "gauss":
        x0 = MIXTURE_1D.sample(3, generator=g)
        return p.marginal(x0, u).sample()
    torch.manual_seed(seed)
    return p.marginal(DATA_1D[[0, 3, 6]], u).sample().long()


@pytest.mark.parametrize("family,key,solver,noise", CASES, ids=[f"{c[1]}-{c[2]!r}-{c[3]}" for c in CASES])
@settings(max_examples=4, deadline=None, derandomize=True)
@given(a=st.floats(0.05, 0.95), b=st.floats(0.02, 0.5))
def test_kernel_is_normalised_and_its_draws_are_the_step(family, key, solver, noise, a, b):
    rev = _reverse(family, key, noise)
    p = rev.process
    t = p.t_min + a * (p.t_max - p.t_min)
    s = max(p.t_min, t - b * (p.t_max - p.t_min))
    t, s = torch.tensor(t), torch.tensor(s)
    x = _state(rev, family, t, seed=int(1e6 * a))
    kernel = solver.kernel(rev, x, t, s)
    assert kernel.batch_shape == (3,) and kernel.event_shape == (1,)
    # same seed, same sample: the kernel's draw is the step
    one = solver.step(rev, x, t, s, solver.init(rev, x, None), torch.Generator().manual_seed(11)).x
    if isinstance(solver, ROUNDING_ONLY):
        torch.testing.assert_close(kernel.draw(torch.Generator().manual_seed(11)), one, rtol=1e-5, atol=1e-5)
    else:
        assert torch.equal(kernel.draw(torch.Generator().manual_seed(11)), one)
    n = 2000
    step = solver.step(rev, x.repeat(n, 1), t, s, solver.init(rev, x, None), torch.Generator().manual_seed(7))
    draws = step.x.reshape(n, 3, 1)
    assert draws.dtype == x.dtype
    pt.assert_kernel(kernel, draws)


def _paths(rev, solver, shape, steps, seed):
    g = torch.Generator().manual_seed(seed)
    return pd.sample(rev, shape, solver=solver, grid=pd.grids.Uniform(steps), generator=g, trajectory=True,
                     log_prob=True)


@pytest.mark.parametrize("family,key,solver,noise", CASES[::3], ids=[f"{c[1]}-{c[2]!r}" for c in CASES[::3]])
def test_sampling_with_log_prob_gives_the_same_samples_and_path_log_prob_rescoring_agrees(family, key, solver, noise):
    rev = _reverse(family, key, noise)
    plain = pd.sample(rev, (6, 1), solver=solver, grid=pd.grids.Uniform(12), generator=torch.Generator().manual_seed(3),
                      trajectory=True)
    sol = _paths(rev, solver, (6, 1), 12, 3)
    if isinstance(solver, ROUNDING_ONLY):
        torch.testing.assert_close(plain.xs, sol.xs, rtol=1e-4, atol=1e-4)
    else:
        assert torch.equal(plain.x, sol.x) and torch.equal(plain.xs, sol.xs)
    if not isinstance(solver, pd.solvers.MaskedAncestral):          # which skips the network on unchanged steps
        assert sol.nfe == plain.nfe
    assert sol.log_prob.shape == (6,) and sol.step_log_probs.shape == (12, 6)
    assert torch.isfinite(sol.log_prob).all()
    # independent sum: the prior and the kernels, evaluated one step at a time
    prior = rev.prior((1,), dtype=torch.get_default_dtype()).log_prob(sol.xs[0])
    by_hand = prior + sum(solver.kernel(rev, sol.xs[k], sol.ts[k], sol.ts[k + 1]).log_prob(sol.xs[k + 1])
                          for k in range(12))
    torch.testing.assert_close(sol.log_prob, by_hand)
    total, steps = pd.path_log_prob(rev, solver, sol.xs, sol.ts, return_steps=True)
    torch.testing.assert_close(total, sol.log_prob)
    torch.testing.assert_close(steps, sol.step_log_probs)


def test_euler_maruyama_kernel_is_the_closed_form_gaussian():
    process = pd.VPSDE()
    model = MIXTURE_1D.model(process)
    rev = pd.reverse(model, 0.8)
    x, t, s = torch.tensor([[0.3], [-1.0]]), torch.tensor(0.6), torch.tensor(0.55)
    kernel = pd.solvers.EulerMaruyama().kernel(rev, x, t, s)
    # drift f x - (1 + eta^2)/2 g^2 score from the oracle's score, variance eta^2 g^2 (t - s)
    f, g2 = process.drift_coef(t), process.diffusion(t) ** 2
    mean = x + (s - t) * (f * x - (1 + 0.8**2) / 2 * g2 * model.score(x, t))
    std = math.sqrt(0.8**2 * float(g2) * 0.05)
    v = torch.tensor([[0.1], [0.2]])
    expected = torch.tensor(scipy.stats.norm(mean.flatten().numpy(), std).logpdf(v.flatten().numpy()),
                            dtype=v.dtype)
    torch.testing.assert_close(kernel.log_prob(v), expected, rtol=1e-5, atol=1e-5)


def test_ddpm_kernel_is_the_forward_posterior_at_the_oracle_denoiser():
    process = pd.VPSDE()
    model = MIXTURE_1D.model(process)
    rev = pd.reverse(model, 1.0)
    x, t, s = torch.tensor([[0.3], [-1.0]]), torch.tensor(0.6), torch.tensor(0.4)
    kernel = pd.solvers.Ancestral(1.0).kernel(rev, x, t, s)
    v = torch.tensor([[0.1], [0.2]])
    expected = process.posterior(model.denoise(x, t), x, s, t).log_prob(v)
    torch.testing.assert_close(kernel.log_prob(v), expected, rtol=1e-5, atol=1e-5)


def test_blackout_bridge_kernel_is_the_closed_form_binomial():
    chain = pd.Blackout(max_count=4, t_max=10.0)
    rev = pd.reverse(chain, Empirical(DATA_1D).model(chain))
    x, t, s = torch.tensor([[0], [2], [4]]), torch.tensor(1.0), torch.tensor(0.5)
    kernel = pd.solvers.BinomialBridge(pd.solvers.NearestRounding()).kernel(rev, x, t, s)
    y = rev.mean_births(x, t)
    n = torch.minimum(torch.round(y), 4 - x.double())
    prob = (math.exp(-0.5) - math.exp(-1.0)) / (1 - math.exp(-1.0))
    v = torch.tensor([[1], [3], [4]])
    expected = torch.tensor([scipy.stats.binom(int(n[i, 0]), prob).logpmf(int(v[i, 0] - x[i, 0])) for i in range(3)])
    torch.testing.assert_close(kernel.log_prob(v).double(), expected.double(), rtol=1e-6, atol=1e-9)
    # the default stochastic rounding: a mixture of the binomials of floor(y) and floor(y) + 1 (capped)
    mixed = pd.solvers.BinomialBridge().kernel(rev, x, t, s)
    low, w = torch.floor(y)[:, 0], (y - torch.floor(y))[:, 0]
    pmf = lambda k, i: scipy.stats.binom(int(min(k, 4 - x[i, 0])), prob).pmf(int(v[i, 0] - x[i, 0]))  # noqa: E731
    expected = torch.tensor([math.log((1 - w[i]) * pmf(low[i], i) + w[i] * pmf(low[i] + 1, i)) for i in range(3)])
    torch.testing.assert_close(mixed.log_prob(v).double(), expected.double(), rtol=1e-6, atol=1e-9)
    leap = pd.solvers.TauLeaping().kernel(rev, x, t, s)
    rate = (y * prob)[:, 0]
    cap = 4 - x[:, 0]
    exp = [scipy.stats.poisson(float(rate[i])).logpmf(int(v[i, 0] - x[i, 0])) if v[i, 0] - x[i, 0] < cap[i]
           else scipy.stats.poisson(float(rate[i])).logsf(int(cap[i]) - 1) for i in range(3)]
    torch.testing.assert_close(leap.log_prob(v).double(), torch.tensor(exp, dtype=torch.float64), rtol=1e-6, atol=1e-9)


def _clamped_jumps_by_enumeration(x, means, most=14):
    """P(clamp(x + sum_y N_y (y - x)) = k), N_y ~ Poisson(means[y]) independent, by enumerating every count
    vector with counts below ``most`` (scipy's Poisson pmf; the left-out mass is below 1e-12 here)."""
    size = len(means)
    targets = [y for y in range(size) if y != x]
    pmfs = {y: scipy.stats.poisson(float(means[y])).pmf(range(most)) for y in targets}
    out = [0.0] * size
    for counts in itertools.product(range(most), repeat=len(targets)):
        prob = math.prod(pmfs[y][c] for y, c in zip(targets, counts))
        out[min(max(x + sum(c * (y - x) for y, c in zip(targets, counts)), 0), size - 1)] += prob
    return torch.tensor(out, dtype=torch.float64)


def test_tau_leaping_kernel_on_a_general_chain_is_the_clamped_sum_of_poisson_jumps():
    chain = CHAINS["uniform"]()
    rev = pd.reverse(chain, Empirical(DATA_1D).model(chain))
    x, t, s = torch.tensor([[0], [2], [4]]), torch.tensor(3.0), torch.tensor(2.2)
    kernel = pd.solvers.TauLeaping().kernel(rev, x, t, s)
    rates = rev.rates(x, t)                                       # frozen over the step
    for i in range(3):
        means = (rates[i, 0] * 0.8).clamp_min(0.0).double()
        means[int(x[i, 0])] = 0.0
        expected = _clamped_jumps_by_enumeration(int(x[i, 0]), means)
        assert abs(float(expected.sum()) - 1) < 1e-12
        torch.testing.assert_close(torch.exp(kernel.logits[i, 0].double()), expected, rtol=1e-5, atol=1e-7)


def test_clamped_jump_law_keeps_small_probabilities_and_refuses_overlong_steps():
    # two states: P(x_s = 1 | x = 0) = P(N_1 >= 1) = 1 - exp(-m) exactly; tiny m keeps its relative accuracy
    from probdiff.reverse.jumps import clamped_jump_probs

    for m in (1e-12, 1e-3, 2.0, 40.0):
        probs = clamped_jump_probs(torch.tensor([0]), torch.tensor([[0.0, m]], dtype=torch.float64))
        torch.testing.assert_close(probs[0], torch.tensor([math.exp(-m), -math.expm1(-m)], dtype=torch.float64),
                                   rtol=1e-12, atol=0)
    with pytest.raises(ValueError, match="expected jumps"):
        clamped_jump_probs(torch.tensor([0]), torch.tensor([[0.0, 1e4]]))


def test_deterministic_steps_have_no_kernel():
    rev = pd.reverse(MIXTURE_1D.model(pd.VPSDE()), 0.0)
    x = torch.zeros(2, 1)
    for solver in (pd.solvers.Euler(), pd.solvers.Heun(), pd.solvers.DPMSolver2M(), pd.solvers.UniPC()):
        assert not isinstance(solver, pd.solvers.HasKernel)
    for solver in (pd.solvers.EulerMaruyama(), pd.solvers.Ancestral(0.0), pd.solvers.CoefficientPreserving(0.0),
                   pd.solvers.TorchSDE("euler")):
        with pytest.raises(ValueError, match="no kernel|for a kernel"):
            solver.kernel(rev, x, torch.tensor(0.5), torch.tensor(0.4))
    with pytest.raises(ValueError, match=r"Heun\(\) takes no step with a closed-form law"):
        pd.sample(rev, (2, 1), solver=pd.solvers.Heun(), grid=pd.grids.Uniform(3), log_prob=True)


@pytest.mark.parametrize("method", sorted(set(pd.solvers.TorchSDE.ORDERS) - set(pd.solvers.TorchSDE.GAUSSIAN_METHODS)))
def test_torchsde_methods_without_a_closed_form_step_refuse_by_name(method):
    # srk, midpoint and heun evaluate the drift at a point moved by the noise; reversible_heun carries history
    rev = pd.reverse(MIXTURE_1D.model(pd.VPSDE()), 1.0)
    solver = pd.solvers.TorchSDE(method)
    assert not isinstance(solver, pd.solvers.HasKernel)
    assert pd.sample(rev, (2, 1), solver=solver, grid=pd.grids.Uniform(3)).x.shape == (2, 1)   # it still samples
    with pytest.raises(ValueError, match=rf"TorchSDE\(method='{method}'\) takes no step with a closed-form law"):
        pd.sample(rev, (2, 1), solver=solver, grid=pd.grids.Uniform(3), log_prob=True)
    xs, ts = torch.zeros(3, 2, 1), torch.tensor([1.0, 0.5, 0.1])
    with pytest.raises(ValueError, match="closed-form law"):
        pd.path_log_prob(rev, solver, xs, ts)


def test_every_stochastic_solver_of_the_namespace_has_a_kernel_or_is_named_as_lacking_one():
    # the audit: a solver exported by pd.solvers either has the capability, integrates an ODE, or is a torchsde
    # method without a closed-form step; every solver with the capability appears in CASES
    exported = [getattr(pd.solvers, name) for name in pd.solvers.__all__]
    classes = [c for c in exported if isinstance(c, type) and issubclass(c, pd.solvers.Solver)
               and c not in (pd.solvers.Solver, pd.solvers.ODESolver, pd.solvers.SDESolver, pd.solvers.CTMCSolver)]
    tested = {type(c[2]) for c in CASES}
    for cls in classes:
        if issubclass(cls, pd.solvers.ODESolver):
            continue
        if cls is pd.solvers.TorchSDE:
            for method in pd.solvers.TorchSDE.ORDERS:
                has = isinstance(cls(method), pd.solvers.HasKernel)
                assert has == (method in cls.GAUSSIAN_METHODS), method
            continue
        assert issubclass(cls, pd.solvers.HasKernel), cls
        assert cls in tested, cls


def test_copies_of_torchsde_keep_their_capability():
    import copy
    import pickle

    for method in pd.solvers.TorchSDE.ORDERS:
        solver = pd.solvers.TorchSDE(method)
        for clone in (copy.deepcopy(solver), pickle.loads(pickle.dumps(solver))):
            assert repr(clone) == repr(solver) == f"TorchSDE(method={method!r})"
            assert isinstance(clone, pd.solvers.HasKernel) == (method in pd.solvers.TorchSDE.GAUSSIAN_METHODS)


# ==================================================================== planted errors
class Unnormalised(GaussianKernel):
    """The Gaussian kernel with its normaliser dropped, as in one of the threads of issue 17."""

    def element_log_prob(self, value):
        return -0.5 * ((value - self.loc) / self.scale) ** 2


class WrongScale(GaussianKernel):
    """Reports 1.3 times the step's standard deviation."""

    def __init__(self, loc, scale):
        super().__init__(loc, 1.3 * scale)


def test_planted_kernel_without_its_normaliser_is_caught():
    loc, scale = torch.tensor([[0.0], [1.0]]), torch.tensor([[0.3], [0.05]])
    pt.assert_kernel(GaussianKernel(loc, scale), generator=torch.Generator().manual_seed(0))
    with pytest.raises(AssertionError, match="not normalised"):
        pt.assert_kernel(Unnormalised(loc, scale), generator=torch.Generator().manual_seed(0))


def test_planted_kernel_that_is_not_the_step_is_caught():
    loc, scale = torch.tensor([[0.0], [1.0]]), torch.tensor([[0.3], [0.05]])
    draws = torch.stack([GaussianKernel(loc, scale).draw(torch.Generator().manual_seed(i)) for i in range(3000)])
    with pytest.raises(AssertionError, match="draws do not follow"):
        pt.assert_kernel(WrongScale(loc, scale), draws)


# ==================================================================== McAllester's identity
def _identity_residual(steps, eta, seed=0, n=400):
    r"""log prior + sum log kernel - sum log q(x_{t_k} | x_{t_{k+1}}) - [log p_0(x) + log prior - log p_T]:
    zero when the reverse path measure equals the forward one (THEORY.md §12)."""
    process = pd.VPSDE()
    mixture = pd.oracles.GaussianMixture(torch.tensor([0.5, 0.5]), torch.tensor([[-1.0, 0.5], [1.0, -0.5]]),
                                         torch.stack([0.3 * torch.eye(2), torch.tensor([[0.5, 0.2], [0.2, 0.2]])]))
    mixture = mixture.to(torch.float64)
    rev = pd.reverse(mixture.model(process), 1.0)
    g = torch.Generator().manual_seed(seed)
    x_init = torch.randn(n, 2, generator=g, dtype=torch.float64)
    sol = pd.sample(rev, x_init=x_init, solver=pd.solvers.Ancestral(eta), grid=pd.grids.LogSNR(steps),
                    generator=g, trajectory=True, log_prob=True)
    ts, xs = sol.ts, sol.xs
    forward = sum(process.transition(xs[k + 1], ts[k + 1], ts[k]).log_prob(xs[k]) for k in range(steps))
    prior = rev.prior((2,), dtype=torch.float64).log_prob(xs[0])
    log_p0 = mixture.marginal_log_prob(process, xs[-1], ts[-1])
    log_pT = mixture.marginal_log_prob(process, xs[0], ts[0])
    return sol.log_prob - forward - (log_p0 + prior - log_pT)


def test_mcallester_identity_residual_shrinks_as_the_grid_refines():
    # The residual r is the accumulated difference between the Gaussian ancestral kernel and the true
    # mixture-of-posteriors step over log-SNR-uniform grids (a uniform grid in t puts the whole range
    # sigma = 0.016 -> 0.001 of the VP into its last step, where the kernel is far too narrow). Its
    # per-path spread falls like steps^(-1/2). Measured (seed 0, 400 paths, D = 2): mean |r| = 1.65 nats at
    # 100 steps, 0.73 at 400, 0.35 at 1600. Only eta = 1 has this identity: other eta keep the marginals,
    # not the path measure.
    coarse, fine = _identity_residual(100, 1.0).abs().mean(), _identity_residual(400, 1.0).abs().mean()
    assert fine < 0.9
    assert fine < 0.6 * coarse


@pytest.mark.slow
def test_mcallester_identity_on_a_fine_grid():
    r = _identity_residual(1600, 1.0)
    assert r.abs().mean() < 0.45
    assert abs(float(r.mean())) < 4 * float(r.std()) / math.sqrt(len(r)) + 0.1


# ==================================================================== multi-element events
class UnnormalisedNormal(pyro.distributions.Normal):
    """A per-element normal whose log-density misses -log(scale) - log(2 pi)/2."""

    def log_prob(self, value):
        return -0.5 * ((value - self.loc) / self.scale) ** 2


IMAGE = (2, 3, 4, 4)            # (batch, C, H, W)


def test_assert_kernel_checks_image_shaped_kernels_element_by_element():
    g = torch.Generator().manual_seed(0)
    loc, scale = torch.randn(IMAGE, generator=g), 0.05 + torch.rand(IMAGE, generator=g)
    # a sampler's kernel over images, and the same law as a Pyro distribution with to_event
    pt.assert_kernel(GaussianKernel(loc, scale), generator=torch.Generator().manual_seed(1))
    torch.manual_seed(2)
    pt.assert_kernel(pyro.distributions.Normal(loc, scale).to_event(3))
    with pytest.raises(AssertionError, match="not normalised"):
        pt.assert_kernel(Unnormalised(loc, scale), generator=torch.Generator().manual_seed(1))
    with pytest.raises(AssertionError, match="not normalised"):
        pt.assert_kernel(UnnormalisedNormal(loc, scale).to_event(3))
    # draws of another step (one pixel's scale 1.3 times the kernel's) are caught too
    wrong = scale.clone()
    wrong[1, 2, 3, 0] *= 1.3
    draws = torch.stack([GaussianKernel(loc, wrong).draw(torch.Generator().manual_seed(i)) for i in range(3000)])
    with pytest.raises(AssertionError, match="draws do not follow"):
        pt.assert_kernel(GaussianKernel(loc, scale), draws)


def test_assert_kernel_on_a_chain_kernel_over_images():
    chain = pd.UniformChain(5, t_max=8.0)
    data = torch.tensor([[[0, 1], [3, 4]], [[1, 1], [4, 0]]])           # (2, 2, 2) images with 5 states
    rev = pd.reverse(chain, Empirical(data).model(chain))
    torch.manual_seed(0)
    x = chain.marginal(data, torch.tensor(2.0)).sample().long()
    for solver in (pd.solvers.Ancestral(), pd.solvers.TauLeaping()):
        kernel = solver.kernel(rev, x, torch.tensor(2.0), torch.tensor(1.4))
        assert kernel.event_shape == (2, 2)
        step = solver.step(rev, x.repeat(2000, 1, 1), torch.tensor(2.0), torch.tensor(1.4), None,
                           torch.Generator().manual_seed(5))
        pt.assert_kernel(kernel, step.x.reshape(2000, 2, 2, 2))


def test_assert_kernel_refuses_a_kernel_that_does_not_factorise():
    cov = torch.tensor([[1.0, 0.5], [0.5, 1.0]])
    with pytest.raises(ValueError, match="factorise"):
        pt.assert_kernel(pyro.distributions.MultivariateNormal(torch.zeros(2, 2), cov))
