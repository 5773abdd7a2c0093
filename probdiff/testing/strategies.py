"""Hypothesis strategies for property tests of diffusion processes.

Processes come with random *valid* parameters in the ranges where their reference distribution matches
the marginal at ``t_max`` for unit-scale data (so that every identity of
:func:`~probdiff.testing.check_process`, the prior's included, must hold). Times cover the whole domain
with extra weight at both ends; data, mixtures and empirical sets are of unit scale. Tensors are drawn
from a hypothesis-chosen seed (shrinking then moves to small seeds, not to small values) to stay fast.

Example::

    from hypothesis import given
    from probdiff.testing import strategies as pst

    @given(pst.gaussian_processes(), pst.data())
    def test_bayes(process, data):
        s, t = data.draw(pst.time_pairs(process))
        ...
"""

from __future__ import annotations

import math

import torch
from hypothesis import strategies as st

from ..oracles.empirical import Empirical
from ..oracles.gaussian import GaussianMixture
from ..processes.blackout import Blackout
from ..processes.chain import MarkovChain
from ..processes.uniform_masking import AbsorbingChain, UniformChain
from ..processes.gaussian import VESDE, LinearBlend
from ..processes.linear_sde import LinearSDE
from ..processes.vp import VPSDE, CosineVP, SubVPSDE
from ._inputs import DATA

__all__ = [
    "data", "vp_sdes", "subvp_sdes", "ve_sdes", "cosine_vps", "linear_blends", "linear_sdes", "gaussian_processes",
    "times", "time_pairs", "data_shapes", "seeds", "tensors", "process_data", "gaussian_mixtures",
    "empirical_datasets", "uniform_chains", "absorbing_chains", "blackouts", "random_chains", "markov_chains",
    "processes",
]

#: Re-exported for convenience: ``@given(pst.data())`` draws interactively.
data = st.data


def _log_uniform(lo: float, hi: float) -> st.SearchStrategy[float]:
    return st.floats(math.log(lo), math.log(hi)).map(math.exp)


# ==================================================================== Gaussian processes
def vp_sdes() -> st.SearchStrategy[VPSDE]:
    """:class:`~probdiff.VPSDE` with ``beta_min`` in [0.01, 1], ``beta_max`` in [10, 30] (so
    :math:`\\alpha_{t_{max}} \\le e^{-2.5}`), ``t_min`` log-uniform in [1e-5, 1e-3]."""
    return st.builds(VPSDE, beta_min=_log_uniform(0.01, 1.0), beta_max=st.floats(10.0, 30.0),
                     t_min=_log_uniform(1e-5, 1e-3))


def subvp_sdes() -> st.SearchStrategy[SubVPSDE]:
    """:class:`~probdiff.SubVPSDE` with the parameter ranges of :func:`vp_sdes`."""
    return st.builds(SubVPSDE, beta_min=_log_uniform(0.01, 1.0), beta_max=st.floats(10.0, 30.0),
                     t_min=_log_uniform(1e-5, 1e-3))


def ve_sdes() -> st.SearchStrategy[VESDE]:
    """:class:`~probdiff.VESDE` with ``sigma_min`` log-uniform in [1e-3, 0.1] and ``sigma_max`` in [10, 100]."""
    return st.builds(VESDE, sigma_min=_log_uniform(1e-3, 0.1), sigma_max=_log_uniform(10.0, 100.0))


def cosine_vps() -> st.SearchStrategy[CosineVP]:
    """:class:`~probdiff.CosineVP` with ``offset`` in [0, 0.02] and ``t_max`` in [0.99, 0.999]."""
    return st.builds(CosineVP, offset=st.floats(0.0, 0.02), t_min=_log_uniform(1e-5, 1e-3),
                     t_max=st.floats(0.99, 0.999))


def linear_blends() -> st.SearchStrategy[LinearBlend]:
    """:class:`~probdiff.LinearBlend` on ``[t_min, t_max]`` with ``t_min`` in [1e-4, 1e-2], ``t_max`` in
    [0.99, 0.999] (both ends of [0, 1] are singular)."""
    return st.builds(LinearBlend, t_min=_log_uniform(1e-4, 1e-2), t_max=st.floats(0.99, 0.999))


class _Smooth:
    """A smooth positive coefficient ``scale * (a + b t + c sin^2(w t + phi)) ** power`` (picklable, printable)."""

    def __init__(self, scale, a, b, c, w, phi, power, sign=1.0):
        self.args = (scale, a, b, c, w, phi, power, sign)

    def __call__(self, t):
        scale, a, b, c, w, phi, power, sign = self.args
        t = torch.as_tensor(t)
        return sign * scale * (a + b * t + c * torch.sin(w * t + phi) ** 2) ** power

    def __repr__(self):
        scale, a, b, c, w, phi, power, sign = self.args
        return f"{sign * scale:.4g}*({a:.4g} + {b:.4g} t + {c:.4g} sin^2({w:.4g} t + {phi:.4g}))^{power:g}"


class _Exponential:
    """``scale * exp(rate * t)``: the diffusion of a variance-exploding schedule."""

    def __init__(self, scale, rate):
        self.scale, self.rate = scale, rate

    def __call__(self, t):
        return self.scale * torch.exp(self.rate * torch.as_tensor(t))

    def __repr__(self):
        return f"{self.scale:.4g}*exp({self.rate:.4g} t)"


@st.composite
def linear_sdes(draw, *, table_size: int = 257) -> LinearSDE:
    """Random :class:`~probdiff.LinearSDE` with smooth positive coefficients, two shapes:

    * variance-preserving-like: ``f = -beta(t)/2``, ``g = sqrt(beta(t) (1 + d cos(w2 t)))`` with
      ``beta(t) = a + b t + c sin^2(w t + phi)``, ``b`` in [10, 25] (so the signal is gone at ``t_max = 1``);
    * variance-exploding-like: ``f = 0``, ``g = s0 r^t sqrt(2 log r)`` with ``sigma_init = s0`` in
      [5e-3, 2e-2] and ``r`` such that ``sigma_{t_max} = s0 r`` lies in [10, 100].

    ``table_size`` (nodes of the solved schedule) defaults to 257 to keep construction fast.
    """
    if draw(st.booleans()):
        a, b, c = draw(st.floats(0.05, 1.0)), draw(st.floats(10.0, 25.0)), draw(st.floats(0.0, 5.0))
        w, phi = draw(st.floats(0.5, 6.0)), draw(st.floats(0.0, math.pi))
        d, w2 = draw(st.floats(-0.5, 0.5)), draw(st.floats(0.5, 6.0))
        f = _Smooth(0.5, a, b, c, w, phi, 1.0, sign=-1.0)
        beta = _Smooth(1.0, a, b, c, w, phi, 1.0)
        g = _Product(beta, d, w2)
        return LinearSDE(f, g, t_min=draw(_log_uniform(1e-5, 1e-3)), table_size=table_size)
    s0, sigma_end = draw(_log_uniform(5e-3, 2e-2)), draw(_log_uniform(10.0, 100.0))
    r = sigma_end / s0  # sigma_t = s0 r^t, so sigma_{t_max} = sigma_end >= 10
    return LinearSDE(_Zero(), _Exponential(s0 * math.sqrt(2 * math.log(r)), math.log(r)), t_min=0.0,
                     sigma_init=s0, table_size=table_size)


class _Zero:
    def __call__(self, t):
        return torch.zeros_like(torch.as_tensor(t))

    def __repr__(self):
        return "0"


class _Product:
    """``sqrt(beta(t) * (1 + d cos(w t)))``."""

    def __init__(self, beta, d, w):
        self.beta, self.d, self.w = beta, d, w

    def __call__(self, t):
        t = torch.as_tensor(t)
        return torch.sqrt(self.beta(t) * (1.0 + self.d * torch.cos(self.w * t)))

    def __repr__(self):
        return f"sqrt(({self.beta!r}) * (1 + {self.d:.4g} cos({self.w:.4g} t)))"


def gaussian_processes() -> st.SearchStrategy:
    """Any built-in Gaussian process with random valid parameters, or a random :class:`~probdiff.LinearSDE`."""
    return st.one_of(vp_sdes(), subvp_sdes(), ve_sdes(), cosine_vps(), linear_blends(), linear_sdes())


# ==================================================================== Markov chains
def uniform_chains(*, max_states: int = 5) -> st.SearchStrategy[UniformChain]:
    """:class:`~probdiff.UniformChain` with 2..``max_states`` states, rate in [0.5, 2], ``t_max = 10/rate``."""
    return st.tuples(st.integers(2, max_states), st.floats(0.5, 2.0)).map(
        lambda a: UniformChain(a[0], rate=a[1], t_max=10.0 / a[1]))


def absorbing_chains(*, max_states: int = 5) -> st.SearchStrategy[AbsorbingChain]:
    """:class:`~probdiff.AbsorbingChain` with 2..``max_states`` states, rate in [0.5, 2], ``t_max = 10/rate``."""
    return st.tuples(st.integers(2, max_states), st.floats(0.5, 2.0)).map(
        lambda a: AbsorbingChain(a[0], rate=a[1], t_max=10.0 / a[1]))


def blackouts(*, max_states: int = 5) -> st.SearchStrategy[Blackout]:
    """:class:`~probdiff.Blackout` with ``max_count`` 1..``max_states - 1`` and ``t_max`` in [10, 15]."""
    return st.tuples(st.integers(1, max(1, max_states - 1)), st.floats(10.0, 15.0)).map(
        lambda a: Blackout(max_count=a[0], t_max=a[1]))


class _LinearBeta:
    """``beta(t) = a + b t`` and its integral ``a t + b t^2 / 2``."""

    def __init__(self, a, b):
        self.a, self.b = a, b

    def __call__(self, t):
        return self.a + self.b * torch.as_tensor(t)

    def integral(self, t):
        t = torch.as_tensor(t)
        return self.a * t + 0.5 * self.b * t * t


@st.composite
def random_chains(draw, *, max_states: int = 5) -> MarkovChain:
    """:class:`~probdiff.MarkovChain` with a random irreducible generator (off-diagonal rates in
    [0.1, 2]) on 2..``max_states`` states, optionally scaled by ``beta(t) = a + b t``, and ``t_max``
    large enough that the chain forgets its start (``B(t_max)`` times the spectral gap >= 12)."""
    n = draw(st.integers(2, max_states))
    rates = torch.tensor(draw(st.lists(st.floats(0.1, 2.0), min_size=n * n, max_size=n * n)),
                         dtype=torch.float64).reshape(n, n)
    rates.fill_diagonal_(0.0)
    gen = rates - torch.diag(rates.sum(1))
    gap = float(-torch.linalg.eigvals(gen).real.sort(descending=True).values[1])
    if draw(st.booleans()):
        beta = _LinearBeta(draw(st.floats(0.2, 1.0)), draw(st.floats(0.0, 2.0)))
        # smallest t_max with B(t_max) gap >= 12
        a, b = beta.a, beta.b
        target = 12.0 / gap
        t_max = 2.0 * target / (a + math.sqrt(a * a + 2.0 * b * target))  # root of a t + b t^2/2 = target
        return MarkovChain(gen, beta=beta, integrated_beta=beta.integral, t_max=t_max)
    return MarkovChain(gen, t_max=12.0 / gap)


def markov_chains(*, max_states: int = 5) -> st.SearchStrategy[MarkovChain]:
    """Any Markov chain with a random valid generator: uniform, absorbing, Blackout or a random one."""
    return st.one_of(uniform_chains(max_states=max_states), absorbing_chains(max_states=max_states),
                     blackouts(max_states=max_states), random_chains(max_states=max_states))


def processes() -> st.SearchStrategy:
    """Any built-in forward process with random valid parameters (Gaussian processes and Markov chains)."""
    return st.one_of(gaussian_processes(), markov_chains())


# ==================================================================== times
def times(process) -> st.SearchStrategy[float]:
    """Times in ``[t_min, t_max]``: both ends exactly, values within 1e-9..1e-2 (relative) of either end,
    and uniform values in between."""
    lo, hi = process.t_min, process.t_max
    span = hi - lo
    offset = st.floats(-9.0, -2.0).map(lambda e: span * 10.0**e)
    return st.one_of(st.sampled_from([lo, hi]), st.floats(lo, hi),
                     offset.map(lambda o: lo + o), offset.map(lambda o: max(lo, hi - o)))


@st.composite
def time_pairs(draw, process, *, min_gap: float = 1e-6) -> tuple[float, float]:
    """Pairs ``s < t`` in ``[t_min, t_max]`` with ``t - s >= min_gap (t_max - t_min)``: the full range,
    pairs touching either end, close pairs (gap log-uniform down to ``min_gap``) and random pairs."""
    lo, hi = process.t_min, process.t_max
    span = hi - lo
    gap = draw(st.one_of(st.just(1.0), _log_uniform(min_gap, 1.0)))
    u = draw(st.one_of(st.sampled_from([0.0, 1.0]), st.floats(0.0, 1.0)))
    s_rel = u * (1.0 - gap)
    s = lo + span * s_rel
    t = min(hi, lo + span * (s_rel + gap))
    if not s < t:  # rounding at the top end
        s = t - span * gap
    return s, t


# ==================================================================== data
def data_shapes(*, min_batch: int = 1, max_batch: int = 8, max_event_dims: int = 3,
                max_side: int = 4) -> st.SearchStrategy[tuple]:
    """Shapes ``(batch, *event)`` with 1..``max_event_dims`` event dimensions of size 1..``max_side``."""
    return st.tuples(st.integers(min_batch, max_batch),
                     st.lists(st.integers(1, max_side), min_size=1, max_size=max_event_dims)).map(
        lambda bt: (bt[0], *bt[1]))


def seeds() -> st.SearchStrategy[int]:
    """Seeds of ``torch.Generator`` s."""
    return st.integers(0, 2**32 - 1)


def _generator(seed: int) -> torch.Generator:
    g = torch.Generator()
    g.manual_seed(seed)
    return g


def tensors(shape, *, low: float = -1.0, high: float = 1.0, dtype=torch.float64) -> st.SearchStrategy[torch.Tensor]:
    """Tensors of ``shape`` with entries uniform in ``[low, high]`` (from a drawn seed)."""
    return seeds().map(lambda seed: low + (high - low) * torch.rand(tuple(shape), generator=_generator(seed),
                                                                       dtype=dtype))


def process_data(process, shape, *, dtype=torch.float64) -> st.SearchStrategy[torch.Tensor]:
    """Unit-scale data of ``shape`` for ``process`` (real entries in [-1, 1] for Gaussian processes,
    states for chains), from the :data:`~probdiff.testing.DATA` registry."""
    maker = DATA.dispatch(type(process))
    return seeds().map(lambda seed: maker(process, tuple(shape), _generator(seed), dtype, None))


@st.composite
def gaussian_mixtures(draw, dim: int, *, max_components: int = 4, max_condition: float = 20.0,
                      dtype=torch.float64) -> GaussianMixture:
    """:class:`~probdiff.oracles.GaussianMixture` in ``dim`` dimensions: 1..``max_components`` components
    with weights >= 0.05 (before normalisation), means in [-1, 1]^d, and covariances ``Q diag(e) Q^T``
    with a random rotation ``Q`` and eigenvalues in [0.05, 1] with condition number <= ``max_condition``."""
    k = draw(st.integers(1, max_components))
    raw = torch.tensor(draw(st.lists(st.floats(0.05, 1.0), min_size=k, max_size=k)), dtype=dtype)
    gen = _generator(draw(seeds()))
    means = 2.0 * torch.rand(k, dim, generator=gen, dtype=dtype) - 1.0
    q, r = torch.linalg.qr(torch.randn(k, dim, dim, generator=gen, dtype=dtype))
    q = q * torch.sign(torch.diagonal(r, dim1=-2, dim2=-1))[:, None, :]
    top = draw(st.floats(0.05, 1.0))
    lo = max(0.05, top / max_condition)
    e = lo + (top - lo) * torch.rand(k, dim, generator=gen, dtype=dtype)
    e[:, 0] = top
    covs = q @ torch.diag_embed(e) @ q.transpose(-1, -2)
    return GaussianMixture(raw / raw.sum(), means, 0.5 * (covs + covs.transpose(-1, -2)))


def empirical_datasets(event_shape=(2,), *, min_points: int = 1, max_points: int = 32,
                       dtype=torch.float64) -> st.SearchStrategy[Empirical]:
    """:class:`~probdiff.oracles.Empirical` data sets of 1..``max_points`` points with entries in [-1, 1]."""
    return st.integers(min_points, max_points).flatmap(
        lambda n: tensors((n, *event_shape), dtype=dtype)).map(Empirical)
