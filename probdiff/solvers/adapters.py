r"""Adapters to torchdiffeq and torchsde: their integrators, probdiff's loop, grids and NFE count.

Both libraries want increasing time and 2-D state ``(batch, channels)``. The adapters (and only they, see
DESIGN.md "Shapes and time") flatten the event dimensions and integrate in :math:`\tau = -t`, which
increases from :math:`-t` to :math:`-s`; the right-hand sides are negated accordingly
(:math:`dx/d\tau = -b(x, t)`; the Brownian increment keeps its law under time reversal). Each grid
interval is one call, so the grid, the denoising trajectory and the NFE bookkeeping are the same as for
the native solvers.
"""

from __future__ import annotations

import math

import torch

import torchsde
from torchdiffeq import odeint

from .base import HasKernel, ODESolver, SDESolver, Step
from .sde import gaussian_increment_kernel

__all__ = ["TorchDiffEq", "TorchSDE", "check_odeint_options", "ODEINT_OPTIONS", "FIXED_GRID_METHODS"]


class _Recorder:
    """The adapted right-hand side: counts model evaluations and keeps the first denoised estimate.

    The last evaluation is remembered by (time, state tensor, its version): torchsde's ``sdeint`` checks its
    contract by evaluating the drift at the start of the interval, which the first step evaluates again;
    the repeat is answered from memory, so it costs no model evaluation and is not counted.
    """

    def __init__(self, reverse, shape):
        self.reverse, self.shape = reverse, shape
        self.nfe, self.denoised, self.start = 0, None, None
        self._last = None

    def drift(self, tau: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """:math:`dx/d\\tau = -b(x, -\\tau)` on flattened state."""
        key = (float(tau), y.data_ptr(), y._version, tuple(y.shape))
        if self._last is not None and self._last[0] == key:
            return self._last[1]
        x = y.reshape(self.shape)
        v, denoised = self.reverse.drift_and_denoised(x, -tau)
        self.nfe += 1
        if self.denoised is None and bool(tau == self.start):
            self.denoised = denoised
        out = -v.reshape(y.shape)
        self._last = (key, out)
        return out

    def begin(self, tau0: torch.Tensor) -> None:
        self.nfe, self.denoised, self.start = 0, None, tau0


# ==================================================================== torchdiffeq
class TorchDiffEq(ODESolver):
    r"""Any torchdiffeq integrator (Chen et al., "Neural Ordinary Differential Equations", NeurIPS 2018) on
    the probability-flow ODE, one ``odeint`` call per grid interval.

    Adaptive methods (``dopri5``, ``dopri8``, ``bosh3``, ``fehlberg2``, ``adaptive_heun``) choose their own
    steps inside each interval to meet ``rtol``/``atol`` (``Uniform(1)`` gives one adaptive solve from
    ``t_max`` to ``t_min``); they are told to land on the interval's end (``step_t``) and to try the whole
    interval first (``first_step``), so the model is never asked outside ``[t_min, t_max]``. Fixed-step
    methods (``euler``, ``midpoint``, ``heun2``, ``heun3``, ``rk4``) take one step per interval.
    ``order`` is the method's classical order (dopri5: 5). Requires ``reverse.noise == 0``.

    Args:
        method: a torchdiffeq method with a fixed order (keys of :attr:`ORDERS`).
        rtol, atol: tolerances of adaptive methods.
        options: extra torchdiffeq options (override the defaults above).
    """

    #: classical order of each supported torchdiffeq method (multistep Adams methods vary theirs).
    ORDERS = {"euler": 1, "midpoint": 2, "heun2": 2, "heun3": 3, "rk4": 4, "fehlberg2": 2, "adaptive_heun": 2,
              "bosh3": 3, "dopri5": 5, "dopri8": 8}
    ADAPTIVE = frozenset({"fehlberg2", "adaptive_heun", "bosh3", "dopri5", "dopri8"})

    def __init__(self, method: str = "dopri5", rtol: float = 1e-5, atol: float = 1e-5, options: dict | None = None):
        if method not in self.ORDERS:
            raise ValueError(f"method must be one of {sorted(self.ORDERS)}, got {method!r}")
        for name, tol in (("rtol", rtol), ("atol", atol)):
            if not (isinstance(tol, (int, float)) and math.isfinite(tol) and tol > 0):
                raise ValueError(f"{name} must be a finite number > 0, got {tol!r}")
        if options is not None and not isinstance(options, dict):
            raise ValueError(f"options must be a dict of torchdiffeq options or None, got {type(options).__name__}")
        self.method, self.rtol, self.atol = method, float(rtol), float(atol)
        self.options = dict(options or {})

    @property
    def order(self) -> int:
        return self.ORDERS[self.method]

    def step(self, reverse, x, t, s, state, generator) -> Step:
        rhs = _Recorder(reverse, x.shape)
        taus = torch.stack([-t, -s]).to(x.dtype)
        rhs.begin(taus[0])
        options = dict(self.options)
        if self.method in self.ADAPTIVE:
            options.setdefault("step_t", taus[1:])
            options.setdefault("first_step", taus[1] - taus[0])
        y = odeint(rhs.drift, x.reshape(x.shape[0], -1), taus, rtol=self.rtol, atol=self.atol, method=self.method,
                   options=options or None)[-1]
        return Step(y.reshape(x.shape), rhs.denoised, state, rhs.nfe)


# ==================================================================== torchsde
class _Increments:
    """Brownian increments drawn on demand from a ``torch.Generator`` (a torchsde ``BaseBrownian``).

    torchsde's default ``BrownianInterval`` keeps a binary tree of Brownian-bridge samples so that any
    interval can be queried in any order; that costs several normal draws and tree walks per query
    (8–10× a plain Euler–Maruyama loop on a 1000×64 state in ``benchmarks/samplers.py``; the issue measured
    about 30× on its machine). The adapter only ever asks for the
    increment of one grid interval after another, so one draw per interval is exact:
    :math:`W(t_b)-W(t_a)\\sim\\mathcal N(0, (t_b-t_a)I)` and, for SRK, the space-time Lévy area
    :math:`H\\sim\\mathcal N(0, \\tfrac{t_b-t_a}{12}I)` independent of it, returned as
    :math:`U = h(W/2 + H)` (torchsde's convention). A repeated query of the same interval returns the
    same values; a query that does not continue the previous interval raises ``RuntimeError``.
    """

    def __init__(self, shape, dtype, device):
        self._shape, self._dtype, self._device = torch.Size(shape), dtype, device
        self.generator = None
        self._key, self._w, self._u = None, None, None

    def _draw(self):
        return torch.randn(self._shape, generator=self.generator, device=self._device, dtype=self._dtype)

    def __call__(self, ta, tb=None, return_U=False, return_A=False):
        if tb is None or return_A:
            raise RuntimeError("TorchSDE's Brownian increments answer interval queries W(tb) - W(ta) (and U) only; "
                               "use a torchsde method that needs no point values or Davie/Foster areas")
        key = (float(ta), float(tb))
        if key != self._key:
            if self._key is not None and key[0] != self._key[1]:
                raise RuntimeError("TorchSDE's Brownian increments must be queried on consecutive intervals; "
                                   f"got {key} after {self._key}")
            self._key, self._w, self._u = key, math.sqrt(key[1] - key[0]) * self._draw(), None
        if not return_U:
            return self._w
        if self._u is None:
            h = key[1] - key[0]
            self._u = h * (0.5 * self._w + math.sqrt(h / 12.0) * self._draw())
        return self._w, self._u

    def __repr__(self) -> str:
        return f"_Increments(shape={tuple(self._shape)})"

    @property
    def dtype(self):
        return self._dtype

    @property
    def device(self):
        return self._device

    @property
    def shape(self):
        return self._shape

    def size(self):
        return self._shape

    @property
    def levy_area_approximation(self):
        return "space-time"          # torchsde's LEVY_AREA_APPROXIMATIONS.space_time


# torchsde's solvers only call the BaseBrownian interface; registering keeps its isinstance checks happy.
torchsde.BaseBrownian.register(_Increments)


class _FlatSDE:
    """The reverse SDE in :math:`\\tau = -t` on flattened state, in torchsde's interface (diagonal noise)."""

    noise_type = "diagonal"

    def __init__(self, rhs: _Recorder, reverse, sde_type: str):
        self.rhs, self.reverse, self.sde_type = rhs, reverse, sde_type

    def f(self, tau, y):
        return self.rhs.drift(tau, y)

    def g(self, tau, y):
        return self.reverse.diffusion(-tau).to(y.dtype).expand_as(y)

    def f_and_g_prod(self, tau, y, v):
        return self.rhs.drift(tau, y), self.reverse.diffusion(-tau).to(y.dtype) * v


class TorchSDE(SDESolver):
    r"""Any fixed-step torchsde integrator (Li et al., "Scalable Gradients for Stochastic Differential
    Equations", AISTATS 2020; Kidger et al. 2021) on the reverse-time SDE at ``reverse.noise``, one step
    per grid interval.

    The noise is state-independent, so Itô and Stratonovich methods integrate the same SDE (each method is
    given the SDE in the calculus it expects, :attr:`SDE_TYPES`). Each grid interval is one call of the public
    ``torchsde.sdeint`` with one step and exact Brownian increments from ``generator``
    (:class:`_Increments`); the solver's extra state (``reversible_heun``'s history) travels in ``state``
    from one interval to the next, so the run equals one fixed-step integration on the grid. Methods
    needing Davie/Foster Lévy areas (``log_ode``) are rejected by torchsde itself. ``order`` is the method's
    strong order for additive noise (euler: 1). Out of a time where the SDE's coefficients are infinite
    (``LinearBlend(t_max=1.0)`` at t = 1) the step is the exact frozen-denoiser step of
    :class:`~probdiff.solvers.EulerMaruyama`, and torchsde takes over from the next grid time.

    Args:
        method: a torchsde method name (``euler``, ``milstein``, ``srk``, ``midpoint``, ``heun``,
            ``euler_heun``, ``reversible_heun``).
    """

    #: strong order for additive noise of the supported torchsde methods.
    ORDERS = {"euler": 1, "milstein": 1, "srk": 1, "midpoint": 1, "heun": 1, "euler_heun": 1, "reversible_heun": 1}
    #: the calculus each method integrates (torchsde refuses a method given the other one).
    SDE_TYPES = {"euler": "ito", "milstein": "ito", "srk": "ito", "midpoint": "stratonovich",
                 "heun": "stratonovich", "euler_heun": "stratonovich", "reversible_heun": "stratonovich"}

    #: methods whose one step, for the state-independent noise of a reverse diffusion, is
    #: :math:`x + (s - t)\,b_\eta(x, t) + c\,\Delta W`, Gaussian given :math:`x`, with
    #: :math:`c = (1 - w)\,\eta g(t) + w\,\eta g(s)`: the method's weight :math:`w` of the step's end (``euler_heun``
    #: averages both ends). The others evaluate the drift at a point moved by the noise (``srk``, ``midpoint``,
    #: ``heun``) or carry history (``reversible_heun``): their step has no closed-form law.
    GAUSSIAN_METHODS = {"euler": 0.0, "milstein": 0.0, "euler_heun": 0.5}

    def __new__(cls, method: str = "euler"):
        # the kernel capability depends on the method: a Gaussian method gets the HasKernel subclass
        if cls is TorchSDE and method in TorchSDE.GAUSSIAN_METHODS:
            cls = _GaussianTorchSDE
        return super().__new__(cls)

    def __init__(self, method: str = "euler"):
        if method not in self.ORDERS:
            raise ValueError(f"method must be one of {sorted(self.ORDERS)}, got {method!r}")
        self.method = method

    def __repr__(self) -> str:
        return f"TorchSDE(method={self.method!r})"

    def __reduce__(self):
        return TorchSDE, (self.method,)         # copies and pickles rebuild through the method's class

    @property
    def order(self) -> int:
        return self.ORDERS[self.method]

    def step(self, reverse, x, t, s, state, generator) -> Step:
        if reverse.singular(t):
            # infinite coefficients at t (alpha_t = 0): the exact frozen-denoiser step, as EulerMaruyama takes;
            # torchsde then starts afresh from s
            kernel, denoised = reverse.frozen_denoiser_kernel(x, t, s)
            return Step(kernel.draw(generator), denoised, None, 1)
        if state is None:
            rhs = _Recorder(reverse, x.shape)
            sde = _FlatSDE(rhs, reverse, self.SDE_TYPES[self.method])
            bm = _Increments((x.shape[0], x[0].numel()), x.dtype, x.device)
            extra = None
        else:
            rhs, sde, bm, extra = state
        bm.generator = generator
        tau0, tau1 = -t, -s
        rhs.begin(tau0)
        taus = torch.stack([tau0, tau1]).to(x.dtype)
        # dt a hair longer than the interval: sdeint then takes exactly one step, to min(tau0 + dt, tau1) = tau1
        ys, extra = torchsde.sdeint(sde, x.reshape(x.shape[0], -1), taus, bm=bm, method=self.method,
                                    dt=2.0 * float(taus[1] - taus[0]), extra=True, extra_solver_state=extra)
        return Step(ys[-1].reshape(x.shape), rhs.denoised, (rhs, sde, bm, extra), rhs.nfe)


class _GaussianTorchSDE(TorchSDE, HasKernel):
    """:class:`TorchSDE` with a method of :attr:`TorchSDE.GAUSSIAN_METHODS`: the same steps, and their kernel."""

    def kernel_and_denoised(self, reverse, x, t, s):
        """:math:`\\mathcal N\\big(x + (s-t)\\,b_\\eta(x,t),\\ c^2 (t-s) I\\big)` (``c`` as in
        :attr:`TorchSDE.GAUSSIAN_METHODS`) and :math:`D(x, t)`; its draw takes the same normal numbers from the
        generator as the torchsde step, so the two agree up to rounding."""
        w = self.GAUSSIAN_METHODS[self.method]
        c = (1 - w) * reverse.diffusion(t) + w * reverse.diffusion(s)
        return gaussian_increment_kernel(self, reverse, x, t, s, c)


#: The options torchdiffeq's solvers take (its adaptive solvers, and its fixed-grid ones), by method kind.
ODEINT_OPTIONS = {
    "adaptive": frozenset({"first_step", "safety", "ifactor", "dfactor", "max_num_steps", "step_t", "jump_t",
                           "dtype", "min_step", "max_step", "norm"}),
    "fixed": frozenset({"step_size", "grid_constructor", "perturb", "interp", "norm"}),
}
#: torchdiffeq's methods on a fixed grid (they take :data:`ODEINT_OPTIONS` ``["fixed"]``).
FIXED_GRID_METHODS = frozenset({"euler", "midpoint", "rk4", "heun2", "heun3", "explicit_adams", "implicit_adams",
                                "fixed_adams"})


def check_odeint_options(method: str, options) -> dict:
    """``options`` for torchdiffeq's ``method`` as a dict, refusing keys that the method does not take
    (torchdiffeq only warns about them, so a misspelt option would be ignored silently)."""
    if options is None:
        return {}
    if not isinstance(options, dict):
        raise TypeError(f"options must be a dict of torchdiffeq options, got {type(options).__name__}")
    allowed = ODEINT_OPTIONS["fixed" if method in FIXED_GRID_METHODS else "adaptive"]
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise ValueError(f"options has keys {unknown} that torchdiffeq's {method!r} does not take; allowed: "
                         f"{sorted(allowed)}")
    return dict(options)
