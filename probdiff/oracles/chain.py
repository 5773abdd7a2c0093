r"""The exact model of a finite data set under a Markov chain (THEORY.md §2, §5).

For data :math:`\{y_i\}_{i=1}^N` the posterior over data points given :math:`x_t` has weights

.. math::

    w_i(x_t) \propto q(x_t \mid y_i) = \prod_d P(t_{min}, t)[y_{i,d}, x_{t,d}],

so :math:`p(x_0 \mid x_t)` per dimension is :math:`\sum_i w_i\,\mathbb 1[y_{i,d} = \cdot]` and
:math:`\log p_t(x) = \mathrm{LSE}_i \log q(x_t\mid y_i) - \log N`. Weights are computed in log space and
streamed over chunks of the data with an online log-sum-exp, so memory is ``O(batch · chunk · D)``.
Registered with :func:`~probdiff.oracles.exact_model` for :class:`~probdiff.MarkovChain`, so
``Empirical(data).model(chain)`` returns it.
"""

from __future__ import annotations

import math

import torch

from ..models.chain import CategoricalModel
from ..processes.chain import MarkovChain
from .empirical import Empirical, exact_model

__all__ = ["EmpiricalChainModel"]


class EmpiricalChainModel(CategoricalModel):
    """Exact :math:`p(x_0 \\mid x_t)` of an :class:`~probdiff.oracles.Empirical` data set under a chain.

    States that no data point can reach get :math:`x_0 = x` (a point mass), so samplers stay finite.
    Exposes the interface of :class:`~probdiff.CategoricalModel` (``x0_probs``, ``denoise``), the Blackout
    statistic ``mean_births`` and the exact ``log_prob(x, t)`` of the diffused data law.
    """

    def __init__(self, empirical: Empirical, process: MarkovChain):
        super().__init__(None, process)
        process.check_states("data", empirical.data)
        self.empirical = empirical

    def _scan(self, x: torch.Tensor, t, want_probs: bool):
        p = self.process
        p.check_states("x", x)
        self.empirical._check_x(x)
        t = p.check_time(t, x)
        dtype = torch.float64
        b, s = x.shape[0], p.num_states
        cols = p.marginal_log_likelihood(x, t).to(dtype).reshape(b, math.prod(x.shape[1:]), s)   # (B, D, S): log q(x_d | k)
        d = cols.shape[1]
        bi = torch.arange(b, device=x.device)[:, None, None]
        di = torch.arange(d, device=x.device)[None, None, :]
        run_max = torch.full((b, 1), -math.inf, dtype=dtype, device=x.device)
        run_sum = torch.zeros((b, 1), dtype=dtype, device=x.device)
        acc = torch.zeros((b, d * s), dtype=dtype, device=x.device) if want_probs else None
        data = self.empirical.data
        for start in range(0, data.shape[0], self.empirical.chunk_size):
            y = data[start:start + self.empirical.chunk_size].to(x.device).long().reshape(-1, d)
            logits = cols[bi, di, y[None]].sum(-1)                                # (B, n)
            new_max = torch.maximum(run_max, logits.max(1, keepdim=True).values)
            safe = new_max.clamp_min(torch.finfo(dtype).min)
            scale = torch.exp(run_max - safe)
            w = torch.exp(logits - safe)
            run_sum = run_sum * scale + w.sum(1, keepdim=True)
            if want_probs:
                onehot = torch.nn.functional.one_hot(y, s).reshape(y.shape[0], d * s).to(dtype)
                acc = acc * scale + w @ onehot
            run_max = new_max
        lse = (run_max + torch.log(run_sum)).reshape(b)
        probs = None
        if want_probs:
            # A state no data point can reach (p_t(x) = 0, e.g. after a tau-leaping overshoot) has no
            # posterior; report x_0 = x there so that samplers stay finite (no births for Blackout).
            probs = (acc / run_sum.clamp_min(torch.finfo(dtype).tiny)).reshape(*x.shape, s)
            stay = torch.nn.functional.one_hot(x.long(), s).to(dtype)
            probs = torch.where((run_sum == 0).reshape(b, *([1] * x.dim())), stay, probs)
        return lse, probs, t.dtype

    def x0_probs(self, x: torch.Tensor, t) -> torch.Tensor:
        """Exact :math:`p(x_0 \\mid x_t = x)` per dimension, shape ``(batch, *event, S)``."""
        _, probs, dtype = self._scan(x, t, True)
        return probs.to(dtype)

    def x0_logits(self, x: torch.Tensor, t) -> torch.Tensor:
        """:math:`\\log p(x_0 \\mid x_t = x)` (``-inf`` for data values no data point has there)."""
        return torch.log(self.x0_probs(x, t))

    def log_prob(self, x: torch.Tensor, t) -> torch.Tensor:
        """Exact :math:`\\log p_t(x)` of the diffused empirical law, shape ``(batch,)``."""
        lse, _, dtype = self._scan(x, t, False)
        return (lse - math.log(len(self.empirical))).to(dtype)

    def __repr__(self) -> str:
        return f"{self.empirical!r}.model({self.process!r})"



@exact_model.register
def _empirical_chain(process: MarkovChain, empirical: Empirical) -> EmpiricalChainModel:
    return EmpiricalChainModel(empirical, process)
