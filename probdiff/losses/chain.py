r"""Training losses for Markov chains (THEORY.md §5).

* :class:`BlackoutLoss` — the Poisson-type loss of Blackout diffusion (Santos et al., "Blackout
  Diffusion", ICML 2023, Eq. (11)): with :math:`m = n_0 - n_t` and :math:`\hat y` the model's mean births,

  .. math:: \ell = \int w(t)\,\textstyle\sum_{\text{pixels}}\big(\hat y - m\log\hat y + m\log m - m\big)\,dt,

  whose minimiser is :math:`\hat y = E[m \mid n_t]`. The weight is an object: :class:`BlackoutLikelihood`
  (:math:`w = p_t/(1-p_t)`, the continuous-time ELBO, so the loss is the diffusion term of the negative
  ELBO in nats) or :class:`BlackoutOriginal` (:math:`w = p_t`, the original code's :math:`p_t\,dt`).
  The constant :math:`m\log m - m` makes the integrand a Poisson KL (:math:`\ge 0`, zero at the optimum of
  a single data point); it does not change gradients.
  Times are drawn logit-uniformly in :math:`p_t` (:class:`LogitTime`, the paper's observation law) and
  importance-weighted, so both weightings are unbiased for their integral.
* :class:`CategoricalCrossEntropy` — :math:`-\sum_d \log p_\theta(x_{0,d} \mid x_t)` with
  :math:`x_t \sim q(x_t|x_0)` (the D3PM auxiliary loss, Austin et al. 2021, Eq. (5); Campbell et al. 2022).
"""

from __future__ import annotations

import abc

import torch

from ..models.base import bind
from ..models.chain import CategoricalModel, ChainModel
from ..processes.blackout import Blackout
from ..processes.chain import MarkovChain
from ..processes.matrices import poisson_kl
from ..timevars import LogitTime, TimeVariable

__all__ = ["BlackoutWeight", "BlackoutLikelihood", "BlackoutOriginal", "BlackoutLoss", "CategoricalCrossEntropy"]


class BlackoutWeight(abc.ABC):
    """The weight :math:`w(t)` of the Blackout loss per unit time."""

    @abc.abstractmethod
    def __call__(self, process: Blackout, t: torch.Tensor) -> torch.Tensor:
        """:math:`w(t)`, shape of ``t``."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class BlackoutLikelihood(BlackoutWeight):
    """:math:`w(t) = p_t/(1-p_t)`: the loss is the path-space KL term of the continuous-time ELBO."""

    def __call__(self, process, t):
        return process.birth_weight(t)


class BlackoutOriginal(BlackoutWeight):
    """:math:`w(t) = p_t` (the original implementation's :math:`p_t\\,dt`; a re-weighting, not a likelihood)."""

    def __call__(self, process, t):
        return process.keep_prob(t)


class BlackoutLoss:
    """Per-sample Blackout loss, shape ``(batch,)`` (average it for training).

    Args:
        process: the :class:`~probdiff.Blackout` process.
        weighting: a :class:`BlackoutWeight` (default :class:`BlackoutLikelihood`).
        time: the time proposal (default :class:`LogitTime`).
    """

    def __init__(self, process: Blackout, weighting: BlackoutWeight | None = None, time: LogitTime | None = None):
        if not isinstance(process, Blackout):
            raise ValueError(f"process must be a Blackout process, got {type(process).__name__}")
        weighting = BlackoutLikelihood() if weighting is None else weighting
        if not isinstance(weighting, BlackoutWeight):
            raise ValueError(f"weighting must be BlackoutLikelihood() or BlackoutOriginal(), got {weighting!r}")
        self.process, self.weighting = process, weighting
        self.time = LogitTime() if time is None else time

    def __call__(self, model: ChainModel, x0: torch.Tensor, *, generator=None) -> torch.Tensor:
        bind(self.process, model, entry="BlackoutLoss")
        self.process.check_states("x0", x0)
        dtype = x0.dtype if x0.is_floating_point() else torch.get_default_dtype()
        t, _ = self.time.sample(self.process, x0.shape[0], generator=generator, device=x0.device)
        return self.evaluate(model, x0, t.to(dtype), generator=generator)

    def evaluate(self, model, x0: torch.Tensor, t: torch.Tensor, *, generator=None) -> torch.Tensor:
        """The loss at given times ``t`` ``(batch,)``, with :math:`n_t` drawn from the marginal."""
        p = self.process
        nt = p.sample_marginal(x0, t, generator=generator)
        y = model.mean_births(nt, t)
        m = (x0.to(y.dtype) - nt.to(y.dtype))
        w = self.weighting(p, t) * self.time.inverse_density(p, t)
        return w.to(y.dtype) * poisson_kl(m, y).flatten(1).sum(1)

    def __repr__(self) -> str:
        return f"BlackoutLoss({self.process!r}, weighting={self.weighting!r})"


class CategoricalCrossEntropy:
    """Per-sample :math:`-\\sum_d \\log p_\\theta(x_{0,d} \\mid x_t)` with :math:`x_t \\sim q(x_t|x_0)`.

    Args:
        process: a :class:`~probdiff.MarkovChain`.
        time: the law of ``t``: ``None`` for :math:`U[t_{min}, t_{max}]`, or a proposal with a
            :class:`~probdiff.TimeVariable` such as :class:`~probdiff.LogitTime`
            (which puts more draws at small ``t``, where the ELBO's reconstruction terms live).
    """

    def __init__(self, process: MarkovChain, time: TimeVariable | None = None):
        if not isinstance(process, MarkovChain):
            raise ValueError(f"process must be a MarkovChain, got {type(process).__name__}")
        if time is not None and not isinstance(time, TimeVariable):
            raise ValueError(f"time must be None or a TimeVariable such as LogitTime(), got {time!r}")
        self.process = process
        self.time = time

    def __call__(self, model: CategoricalModel, x0: torch.Tensor, *, generator=None) -> torch.Tensor:
        bind(self.process, model, entry="CategoricalCrossEntropy")
        if not isinstance(model, CategoricalModel):
            raise ValueError(f"model must provide x0_logits(x, t) (CategoricalModel), got {type(model).__name__}")
        p = self.process
        p.check_states("x0", x0)
        dtype = x0.dtype if x0.is_floating_point() else torch.get_default_dtype()
        if self.time is None:
            u = torch.rand(x0.shape[0], generator=generator, device=x0.device, dtype=dtype)
            t = p.t_min + (p.t_max - p.t_min) * u
        else:
            t = self.time.sample(p, x0.shape[0], generator=generator, device=x0.device)[0].to(dtype)
        xt = p.sample_marginal(x0, t, generator=generator)
        logp = torch.log_softmax(model.x0_logits(xt, t), dim=-1)
        return -logp.gather(-1, x0.long()[..., None])[..., 0].flatten(1).sum(1)

    def __repr__(self) -> str:
        return f"CategoricalCrossEntropy({self.process!r})"
