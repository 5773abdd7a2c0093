r"""Checks of linear Gaussian processes (THEORY.md §1, §3).

For :math:`q(x_t|x_0) = \mathcal N(\alpha_t x_0, \sigma_t^2 I)`:

* Chapman–Kolmogorov by exact moments: the transition mean is affine in :math:`x_s`, so
  :math:`E[x_t] = m(\mu_s)` and :math:`\mathrm{Var}[x_t] = v + (m(\mu_s + \sigma_s) - m(\mu_s))^2`.
* :math:`(\alpha,\sigma)\leftrightarrow(f,g)`: :math:`f = (\log\alpha)'`, :math:`g^2 = (\sigma^2)' - 2f\sigma^2
  = -\sigma^2\lambda'` by Ridders' finite differences (Song et al. 2021, App. B; Kingma et al. 2021, §3).
* Forward simulation of ``process.sde()`` with torchsde (Euler–Maruyama on a log-SNR-adapted grid).
* The reverse family :math:`dx = [f x - \tfrac{1+\eta^2}{2} g^2 s]dt + \eta g\,d\bar W` driven by the exact
  score of a Gaussian mixture preserves :math:`p_t` (McAllester 2023, §§5–7).
"""

from __future__ import annotations

import torch

from .._util import expand_like
from ..oracles.empirical import Empirical
from ..oracles.gaussian import GaussianMixture
from ..processes.gaussian import DERIVED, GaussianProcess, time_derivative
from ..reverse.base import build_reverse
from ._config import CheckConfig
from ._core import fail_worst
from ._inputs import Inputs
from ._montecarlo import moment_check, simulate_adaptively
from ._numerics import derivative, integral_residual, last_regular_time, sample_with, simulation_grid, singular_times
from ._generic import event_size
from ._identities import CHAPMAN_KOLMOGOROV, CLOSED_FORMS, COEFFICIENTS, REVERSE_MARGINALS, SCORE, SIMULATION

__all__ = ["default_mixture"]


def _moments(d):
    return d.mean, d.variance


# ==================================================================== Chapman-Kolmogorov
@CHAPMAN_KOLMOGOROV.register(GaussianProcess)
def _chapman_kolmogorov(process, inputs: Inputs, config: CheckConfig):
    x0, s, t = inputs.x0, inputs.s, inputs.t
    rtol, atol = config.tol
    mu_s, var_s = _moments(process.marginal(x0, s))
    sd_s = var_s.sqrt()
    m0, v = _moments(process.transition(mu_s, s, t))
    m_plus = process.transition(mu_s + sd_s, s, t).mean
    m_minus = process.transition(mu_s - sd_s, s, t).mean
    mu_t, var_t = _moments(process.marginal(x0, t))
    ctx = {"s": s, "t": t, "x0": x0}
    scale = mu_t.abs() + var_t.sqrt() + m_plus.abs()
    fail_worst(CHAPMAN_KOLMOGOROV, process, "transition mean is affine in x_s: m(mu+sd) - m(mu) vs m(mu) - m(mu-sd)",
               m_plus - m0, m0 - m_minus, atol + rtol * scale, ctx)
    fail_worst(CHAPMAN_KOLMOGOROV, process, "mean of transition(x_s ~ marginal(x0, s)) vs marginal(x0, t).mean",
               m0, mu_t, atol + rtol * scale, ctx)
    fail_worst(CHAPMAN_KOLMOGOROV, process,
               "variance of transition(x_s ~ marginal(x0, s)) = v + (m(mu_s + sd_s) - m(mu_s))^2 vs marginal(x0, t).variance",
               v + (m_plus - m0) ** 2, var_t, atol + rtol * (var_t + v), ctx)
    return "exact moments"


# ==================================================================== score target
@SCORE.register(GaussianProcess)
def _score(process, inputs: Inputs, config: CheckConfig):
    x0, t = inputs.times()
    gen = inputs.generator
    rtol, atol = config.tol
    noisy = process.sigma(t) > 0        # a noiseless time (LinearBlend(t_min=0) at 0) has a point mass, no score
    x0, t = x0[noisy], t[noisy]
    alpha, sigma = expand_like(process.alpha(t), x0), expand_like(process.sigma(t), x0)
    xt = (alpha * x0 + sigma * torch.randn(x0.shape, generator=gen, dtype=x0.dtype, device=x0.device)).detach()
    target = -(xt - alpha * x0) / sigma**2
    with torch.enable_grad():
        x = xt.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(process.marginal(x0, t).log_prob(x).sum(), x)
    scale = (xt.abs() + (alpha * x0).abs()) / sigma**2
    ctx = {"t": t, "x0": x0, "x_t": xt, "alpha_t": alpha.flatten(), "sigma_t": sigma.flatten()}
    fail_worst(SCORE, process, "-(x_t - alpha_t x_0)/sigma_t^2 vs autograd grad_x log marginal(x0, t).log_prob(x_t)",
               target, grad, atol + rtol * scale, ctx)
    # the exact model of the one-point data set {x0[0]} has the score of q(x_t | x0[0]); it goes through the
    # oracle's float64 kernel scan and the model's Tweedie conversion, hence the looser relative tolerance
    y = x0[:1]
    xt1 = (alpha * y + sigma * torch.randn(x0.shape, generator=gen, dtype=x0.dtype, device=x0.device)).detach()
    model = Empirical(y).model(process).score(xt1, t)
    fail_worst(SCORE, process, "score of Empirical({x0}).model(process) vs -(x_t - alpha_t x_0)/sigma_t^2",
               model, -(xt1 - alpha * y) / sigma**2, atol + 1e3 * rtol * (xt1.abs() + (alpha * y).abs()) / sigma**2,
               {"t": t, "x0": y[0], "x_t": xt1})
    return None


# ==================================================================== coefficients by finite differences
@COEFFICIENTS.register(GaussianProcess)
def _coefficients(process, inputs: Inputs, config: CheckConfig):
    _, t = inputs.times()
    t = torch.unique(t.to(torch.float64))
    lo, hi = process.t_min, process.t_max
    t = _singular_ends(process, t)
    la, la_err = derivative(process.log_alpha, t, lo, hi)
    lam, lam_err = derivative(lambda u: 2.0 * (process.log_alpha(u) - process.log_sigma(u)), t, lo, hi)
    a_dot, a_err = derivative(process.alpha, t, lo, hi)
    s_dot, s_err = derivative(process.sigma, t, lo, hi)
    sigma2 = process.sigma(t) ** 2
    rel = config.fd_rtol

    def compare(what, observed, expected, err, claimed, fn):
        """Fail where the finite difference disagrees *and* so does the integral of the claimed derivative
        over a short interval around t (the latter clears disagreements that are the difference's own
        error: rounding amplified by 1/h, one-sided extrapolation at the ends of the domain)."""
        tol = 1e-12 + rel * expected.abs() + 10 * err
        residual, scale, rounding = integral_residual(claimed, fn, t, lo, hi)
        confirmed = ~((observed - expected).abs() <= tol) & ~(residual.abs() <= rel * scale + rounding)
        fail_worst(COEFFICIENTS, process, what, torch.where(confirmed, observed, expected), expected, tol,
                   {"t": t, "finite-difference error estimate": err,
                    "integral of the claimed derivative over [t - 0.01, t + 0.01] (of the span) minus the "
                    "difference of the function": residual, "its tolerance": rel * scale + rounding})

    def lam_of(u):
        return 2.0 * (process.log_alpha(u) - process.log_sigma(u))

    compare("drift_coef(t) vs f = d log alpha/dt (finite differences)", process.drift_coef(t), la, la_err,
            process.drift_coef, process.log_alpha)
    compare("d_log_snr(t) vs d lambda/dt, lambda = 2 (log alpha - log sigma) (finite differences)",
            process.d_log_snr(t), lam, lam_err, process.d_log_snr, lam_of)
    compare("diffusion(t)^2 vs g^2 = d sigma^2/dt - 2 f sigma^2 = -sigma^2 d lambda/dt (finite differences)",
            process.diffusion(t) ** 2, -sigma2 * lam, sigma2 * lam_err,
            lambda u: process.diffusion(u) ** 2 + 2 * process.drift_coef(u) * process.sigma(u) ** 2,
            lambda u: process.sigma(u) ** 2)
    compare("alpha_dot(t) vs d alpha/dt (finite differences)", process.alpha_dot(t), a_dot, a_err,
            process.alpha_dot, process.alpha)
    compare("sigma_dot(t) vs d sigma/dt (finite differences)", process.sigma_dot(t), s_dot, s_err,
            process.sigma_dot, process.sigma)
    return f"{t.numel()} times, Ridders extrapolation confirmed by Gauss-Legendre integrals"


def _singular_ends(process, t: torch.Tensor) -> torch.Tensor:
    r"""``t`` less the singular times (:math:`\alpha_t` or :math:`\sigma_t` = 0), where no difference quotient
    exists: there each coefficient must be its limit, finite or infinite, never NaN."""
    singular = singular_times(process, t)
    for name in ("drift_coef", "d_log_snr", "diffusion", "alpha_dot", "sigma_dot"):
        value = getattr(process, name)(t[singular])
        fail_worst(COEFFICIENTS, process, f"{name}(t) at a singular end is a limit, not NaN",
                   torch.isnan(value).to(value.dtype), torch.zeros_like(value), 0.0, {"t": t[singular]})
    return t[~singular]


# ==================================================================== closed forms vs the generic path
def _lam(p, u):
    return 2.0 * (p.log_alpha(u) - p.log_sigma(u))


#: For every method of :data:`~probdiff.processes.gaussian.DERIVED`: its generic path, derived from the
#: declared schedule alone (``GaussianProcess``' definitions, with derivatives by autograd of the declared
#: functions rather than through other, possibly closed-form, methods), and whether it is a derivative.
_GENERIC = {
    "alpha": (lambda p, t: GaussianProcess.alpha(p, t), False),
    "sigma": (lambda p, t: GaussianProcess.sigma(p, t), False),
    "log_alpha": (lambda p, t: GaussianProcess.log_alpha(p, t), False),
    "log_sigma": (lambda p, t: GaussianProcess.log_sigma(p, t), False),
    "log_snr": (lambda p, t: _lam(p, t), False),
    "drift_coef": (lambda p, t: time_derivative(p.log_alpha, t), True),
    "d_log_snr": (lambda p, t: time_derivative(lambda u: _lam(p, u), t), True),
    "diffusion": (lambda p, t: p.sigma(t) * torch.sqrt(-time_derivative(lambda u: _lam(p, u), t)), True),
    "alpha_dot": (lambda p, t: time_derivative(p.alpha, t), True),
    "sigma_dot": (lambda p, t: time_derivative(p.sigma, t), True),
}


def _inverse_log_snr(process, times: torch.Tensor, rtol: float):
    """``time_of_log_snr(lambda_t)`` vs the generic bisection, in time; the tolerance is the time error of a
    log-SNR off by ``rtol |lambda|``, i.e. ``rtol (1 + |lambda|) / |lambda'|`` (conditioning of the inverse)."""
    lam = _lam(process, times)
    inside = torch.isfinite(lam)
    lam, times = lam[inside], times[inside]
    observed = process.time_of_log_snr(lam)
    expected = GaussianProcess.time_of_log_snr(process, lam)
    slope = time_derivative(lambda u: _lam(process, u), expected).abs()
    span = process.t_max - process.t_min
    tol = 1e-12 * span + torch.nan_to_num(rtol * (1.0 + lam.abs()) / slope, nan=span, posinf=span)
    fail_worst(CLOSED_FORMS, process, f"{type(process).__name__}.time_of_log_snr(lambda_t) vs generic bisection "
                                      "GaussianProcess.time_of_log_snr", observed, expected, tol,
               {"t": times, "lambda_t": lam})


@CLOSED_FORMS.register(GaussianProcess)
def _closed_forms(process, inputs: Inputs, config: CheckConfig):
    """Every method of ``DERIVED`` and every query against the generic path, unconditionally: where the
    process keeps the generic path the comparison passes trivially; where it has a closed form (its own or
    inherited) the closed form must agree."""
    x0, s, t = inputs.x0, inputs.s, inputs.t
    _, times = inputs.times()
    times = times.to(torch.float64)
    rtol, atol = config.tol
    name_of = type(process).__name__
    singular = singular_times(process, times)
    for name in DERIVED:
        if name == "time_of_log_snr":
            _inverse_log_snr(process, times, max(rtol, 1e-12))
            continue
        generic, is_derivative = _GENERIC[name]
        rel = config.fd_rtol if is_derivative else max(rtol, 1e-12)
        how = "autograd of the declared schedule" if is_derivative else "the other declared functions"
        observed, expected = getattr(process, name)(times), generic(process, times)
        # at a singular end the generic formula may be 0 * inf: the coefficients' check covers the limit there
        keep = ~(torch.isnan(expected) & singular)
        observed, expected = observed[keep], expected[keep]
        fail_worst(CLOSED_FORMS, process, f"{name_of}.{name}(t) vs generic {name} ({how})",
                   observed, expected, 1e-12 + rel * expected.abs(), {"t": times[keep]})
    xt = process.marginal(x0, t).mean
    queries = {
        "marginal": lambda cls: cls.marginal(process, x0, t),
        "transition": lambda cls: cls.transition(process, x0, s, t),
        "posterior": lambda cls: cls.posterior(process, x0, xt, s, t),
        "prior": lambda cls: cls.prior(process, x0.shape[1:], device=x0.device, dtype=x0.dtype),
    }
    for name, query in queries.items():
        mine, generic = query(type(process)), query(GaussianProcess)
        for stat in ("mean", "variance"):
            a, b = getattr(mine, stat), getattr(generic, stat)
            a, b = torch.broadcast_tensors(a, b)
            if a.dim() == x0.dim() - 1:  # the prior has no batch dimension
                a, b = a[None], b[None]
            fail_worst(CLOSED_FORMS, process, f"{name_of}.{name} {stat} vs GaussianProcess.{name} {stat}",
                       a, b, atol + rtol * b.abs(), {"s": s, "t": t, "x0": x0})
    return f"{len(DERIVED)} schedule methods and {len(queries)} queries against the generic path"


# ==================================================================== forward simulation (torchsde)
def _grid_brownian(ts: torch.Tensor, size, generator, dtype, device):
    """Brownian motion sampled on the fixed nodes ``ts`` from a ``torch.Generator`` (reproducible, and
    without torchsde's Brownian-interval overhead); answers the increments torchsde's Euler step asks for
    between nodes."""
    import torchsde

    class GridBrownian(torchsde.BaseBrownian):
        __slots__ = ("_w", "_ts")

        def __init__(self, w, nodes):
            self._w, self._ts = w, nodes

        def _index(self, t) -> int:
            return int(torch.argmin((self._ts - float(t)).abs()))

        def __call__(self, ta, tb=None, return_U=False, return_A=False):
            return self._w[self._index(tb)] - self._w[self._index(ta)]

        def __repr__(self):
            return f"GridBrownian(nodes={self._ts.numel()})"

        dtype = property(lambda self: self._w.dtype)
        device = property(lambda self: self._w.device)
        shape = property(lambda self: self._w.shape[1:])
        levy_area_approximation = property(lambda self: "none")

    dt = (ts[1:] - ts[:-1]).to(dtype=dtype, device=device)
    z = torch.randn((dt.numel(), *size), generator=generator, dtype=dtype, device=device)
    w = torch.cat([torch.zeros((1, *size), dtype=dtype, device=device),
                   torch.cumsum(z * expand_like(dt.sqrt(), z), 0)])
    return GridBrownian(w, ts.to(dtype=torch.float64, device="cpu"))


class _Additive(torch.nn.Module):
    """``process.sde()`` seen as a Stratonovich SDE. The noise of ``dx = f x dt + g dW`` is additive (g does
    not depend on x), so the Itô and Stratonovich solutions coincide and torchsde's Heun method applies:
    trapezoidal in ``g^2``, it removes the O(dt) variance bias of Euler's left-point rule."""

    sde_type = "stratonovich"
    noise_type = "diagonal"

    def __init__(self, sde):
        super().__init__()
        self.sde = sde

    def f(self, t, y):
        return self.sde.f(t, y)

    def g(self, t, y):
        return self.sde.g(t, y)


@SIMULATION.register(GaussianProcess)
def _simulation(process, inputs: Inputs, config: CheckConfig):
    import torchsde

    gen, n = inputs.generator, config.num_samples
    x0 = inputs.x0[:1]
    d = event_size(x0)
    span = process.t_max - process.t_min
    end = last_regular_time(process)
    outputs = [process.t_min + 0.3 * span, process.t_min + 0.7 * span, end]
    dtype, device = x0.dtype, x0.device
    sde = _Additive(process.sde())
    start = process.marginal(x0.expand(n, *x0.shape[1:]), process.t_min)

    def simulate(fine: torch.Tensor) -> dict:
        y0 = sample_with(start, gen).reshape(n, d)
        bm = _grid_brownian(fine, (n, d), gen, dtype, device)
        runs = []
        for nodes in (fine, fine[::2]):  # the coarse grid: every other node, the same Brownian path
            y, out, nodes_dev = y0, {}, nodes.to(dtype=dtype, device=device)
            for k in range(nodes.numel() - 1):
                pair = nodes_dev[k:k + 2]
                y = torchsde.sdeint(sde, y, pair, method="heun", dt=float(pair[1] - pair[0]), bm=bm)[-1]
                for t_out in outputs:
                    if abs(float(nodes[k + 1]) - t_out) < 1e-12 * max(1.0, abs(t_out)):
                        out[t_out] = y
            runs.append(out)
        return {t_out: (runs[0][t_out], runs[1][t_out]) for t_out in runs[0]}

    coarse = simulation_grid(process, process.t_min, end, max(config.steps // 2, 1), include=outputs)
    out, fine = simulate_adaptively(simulate, coarse, config, order=1.0)
    for t_out, (samples, coarse_samples) in out.items():
        marg = process.marginal(x0, t_out)
        moment_check(SIMULATION, process, f"torchsde.sdeint(process.sde()) at t = {t_out:.6g}", samples,
                     marg.mean.reshape(-1), marg.variance.reshape(-1), config,
                     {"t": t_out, "x0": x0[0], "paths": n, "steps": fine.numel() - 1},
                     coarse=coarse_samples, order=1.0)
    note = "" if end == process.t_max else f" (to t = {end:.6g}: infinite coefficients at t_max)"
    return f"{n} paths, {fine.numel() - 1} torchsde Heun steps, error estimated by step halving{note}"


# ==================================================================== reverse family
def default_mixture(dtype=torch.float64, device=None) -> GaussianMixture:
    """The 2-D, two-component mixture of unit scale the reverse-family check uses by default."""
    weights = torch.tensor([0.35, 0.65])
    means = torch.tensor([[-0.6, 0.3], [0.5, -0.25]])
    covs = torch.tensor([[[0.05, 0.02], [0.02, 0.08]], [[0.10, -0.03], [-0.03, 0.04]]])
    return GaussianMixture(weights, means, covs).to(dtype=dtype, device=device)


def _mixture_moments(mixture: GaussianMixture):
    w, mu, c = mixture.weights, mixture.means, mixture.covs
    mean = (w[:, None] * mu).sum(0)
    second = (w[:, None, None] * (c + mu[:, :, None] * mu[:, None, :])).sum(0)
    return mean, second - mean[:, None] * mean[None, :]


def _heun_step(rev, x: torch.Tensor, t: torch.Tensor, s: torch.Tensor, noise: float, dw) -> torch.Tensor:
    """One step backwards from ``t`` to ``s < t`` of ``dx = b dt + eta g dW`` with the Brownian increment ``dw``
    (variance ``t - s``): trapezoidal drift with the same additive noise increment in predictor and corrector
    (stochastic Heun; weak order 2 for additive noise, e.g. Karras et al. 2022, Alg. 2 without churn),
    written here independently of the solvers."""
    dt = t - s
    kick = 0.0
    if noise > 0:
        kick = torch.sqrt(0.5 * (rev.diffusion(t) ** 2 + rev.diffusion(s) ** 2)) * dw
    b_t = rev.drift(x, t)
    pred = x - b_t * dt + kick
    return x - 0.5 * (b_t + rev.drift(pred, s)) * dt + kick


@REVERSE_MARGINALS.register(GaussianProcess)
def _reverse_marginals(process, inputs: Inputs, config: CheckConfig, mixture: GaussianMixture | None = None):
    gen, n = inputs.generator, max(config.num_samples // 2, 2)
    dtype, device = config.dtype, inputs.x0.device
    mixture = mixture or default_mixture(dtype, device)
    model = mixture.model(process)
    span = process.t_max - process.t_min
    t_mid = process.t_min + 0.5 * span
    data_mean, data_cov = _mixture_moments(mixture)
    notes = []
    for noise in config.noises:
        rev = build_reverse(process, model, noise)
        outputs = [t_mid, process.t_min]

        def simulate(fine: torch.Tensor) -> dict:
            x_data = mixture.sample(n, generator=gen)
            t0 = torch.full((n,), float(fine[0]), dtype=dtype, device=device)
            x_start = expand_like(process.alpha(t0), x_data) * x_data + expand_like(
                process.sigma(t0), x_data) * torch.randn(x_data.shape, generator=gen, dtype=dtype, device=device)
            nodes_dev = fine.to(dtype=dtype, device=device)
            dt = (nodes_dev[:-1] - nodes_dev[1:]).abs()
            dw = torch.randn((dt.numel(), *x_data.shape), generator=gen, dtype=dtype, device=device) * expand_like(
                dt.sqrt(), torch.empty((dt.numel(), *x_data.shape)))
            runs = []
            for stride in (1, 2):  # the coarse run: every other node, the Brownian increments summed in pairs
                incs = dw if stride == 1 else dw[0::2] + dw[1::2]
                nodes, x, out = nodes_dev[::stride], x_start, {}
                for k in range(nodes.numel() - 1):
                    x = _heun_step(rev, x, nodes[k], nodes[k + 1], noise, incs[k])
                    for t_out in outputs:
                        if abs(float(nodes[k + 1]) - t_out) < 1e-12 * max(1.0, abs(t_out)):
                            out[t_out] = x
                runs.append(out)
            return {t_out: (runs[0][t_out], runs[1][t_out]) for t_out in runs[0]}

        start = last_regular_time(process) if noise > 0 else process.t_max
        coarse = simulation_grid(process, process.t_min, start, max(config.steps // 4, 1),
                                 include=[t_mid]).flip(0)
        out, fine = simulate_adaptively(simulate, coarse, config, order=1.0)
        notes.append(str(fine.numel() - 1))
        for t_now, (x, x_coarse) in out.items():
            alpha, sigma = process.alpha(torch.tensor(t_now, dtype=dtype)), process.sigma(torch.tensor(t_now, dtype=dtype))
            mean = alpha * data_mean
            var = alpha**2 * torch.diagonal(data_cov) + sigma**2
            moment_check(REVERSE_MARGINALS, process,
                         f"reverse(process, exact mixture model, noise={noise:g}) at t = {t_now:.6g}", x, mean, var,
                         config, {"noise": noise, "t": t_now, "samples": n, "steps": fine.numel() - 1,
                                  "started at": f"p_t, t = {float(coarse[0]):g} (t_max = {process.t_max:g})"},
                         coarse=x_coarse, order=1.0)
    return (f"noises {tuple(config.noises)}, {n} samples, {'/'.join(notes)} stochastic Heun steps, error estimated "
            "by step halving")
