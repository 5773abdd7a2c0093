r"""The empirical law of a finite data set, and the extension point that gives its exact model per family.

:meth:`Empirical.model` dispatches on the process' family with :func:`exact_model`, a
``functools.singledispatch`` function: the Gaussian family (:mod:`probdiff.oracles.gaussian`, the optimal
denoiser) and the chain family (:mod:`probdiff.oracles.chain`, the exact posterior over the data points)
register theirs in this package; a new family registers its own from outside with
``@probdiff.oracles.exact_model.register`` (or :meth:`Empirical.register`).
"""

from __future__ import annotations

import functools
import math
from typing import Callable

import torch

from .._util import check_finite
from ..processes.base import ForwardProcess
from ..processes.gaussian import GaussianProcess, as_gaussian

__all__ = ["Empirical", "exact_model"]

_LOG_2PI = math.log(2 * math.pi)


@functools.singledispatch
def exact_model(process: ForwardProcess, empirical: "Empirical"):
    """The exact model of ``empirical`` data under ``process``; dispatches on the type of ``process``.

    Register a family with ``@exact_model.register`` on ``builder(process: MyFamily, empirical) -> model``.
    """
    known = ", ".join(sorted(c.__name__ for c in exact_model.registry if c is not object)) or "none"
    raise ValueError(f"no exact model of empirical data is registered for {type(process).__name__}; "
                     f"registered: {known}")


class Empirical:
    r"""The empirical law of a finite data set, and the exact (optimal) model it induces.

    Args:
        data: tensor of shape ``(N, *event)``; kept as given (move it with :meth:`to`).
        chunk_size: data points processed at once; the denoiser streams over the data with an online
            log-sum-exp, so memory is ``O(batch · chunk_size)`` whatever ``N`` is (60 000 × 784 fits).

    :meth:`model` returns the exact model for a process (:func:`exact_model`); Gaussian processes and
    Markov chains are built in, other families register theirs with :meth:`register`.
    """

    def __init__(self, data: torch.Tensor, *, chunk_size: int = 4096):
        if not isinstance(data, torch.Tensor) or data.dim() < 2 or data.shape[0] < 1:
            shape = tuple(data.shape) if isinstance(data, torch.Tensor) else type(data).__name__
            raise ValueError(f"data must be a tensor of shape (N, *event) with N >= 1, got {shape}")
        if data.is_floating_point():
            check_finite("data", data)
        if int(chunk_size) < 1:
            raise ValueError(f"chunk_size must be a positive integer, got {chunk_size}")
        self.data = data
        self.chunk_size = int(chunk_size)

    def __len__(self) -> int:
        return self.data.shape[0]

    @property
    def event_shape(self) -> torch.Size:
        return self.data.shape[1:]

    def to(self, *args, **kwargs) -> "Empirical":
        return Empirical(self.data.to(*args, **kwargs), chunk_size=self.chunk_size)

    # ---------------------------------------------------------------- registration
    @classmethod
    def register(cls, process_type: type) -> Callable:
        """Decorator: ``@Empirical.register(MyProcess)`` on ``builder(empirical, process) -> model``
        (registers it with :func:`exact_model`; the most specific class wins)."""
        if not (isinstance(process_type, type) and issubclass(process_type, ForwardProcess)):
            raise ValueError(f"process_type must be a ForwardProcess subclass, got {process_type!r}")

        def decorator(builder: Callable) -> Callable:
            exact_model.register(process_type)(lambda process, empirical: builder(empirical, process))
            return builder

        return decorator

    def model(self, process: ForwardProcess):
        """The exact model of this data set under ``process`` (most specific registration wins)."""
        return exact_model(process, self)

    # ---------------------------------------------------------------- Gaussian kernel scan
    def _check_x(self, x: torch.Tensor) -> None:
        if not isinstance(x, torch.Tensor) or tuple(x.shape[1:]) != tuple(self.event_shape):
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"x must have shape (batch, {', '.join(map(str, self.event_shape))}), got {shape}")
        check_finite("x", x)

    def kernel_scan(self, x: torch.Tensor, alpha: torch.Tensor, sigma: torch.Tensor, *, mean: bool = True):
        r"""Stream over the data: :math:`\mathrm{LSE}_i\,\ell_i` and :math:`\sum_i \mathrm{softmax}(\ell)_i y_i`,
        with logits :math:`\ell_i = -\|x - \alpha y_i\|^2 / (2\sigma^2)` per row of ``x``.

        Squared distances use the expansion :math:`\|x\|^2 - 2\alpha x\cdot y + \alpha^2\|y\|^2` in float64
        (cancellation in float32 would swamp the logits at small :math:`\sigma`). Returns
        ``(logsumexp, weighted_mean_or_None)`` in ``x``'s dtype.
        """
        b = x.shape[0]
        xf = x.reshape(b, math.prod(x.shape[1:])).to(torch.float64)  # no -1: b may be 0
        a = alpha.to(torch.float64).reshape(b, 1)
        inv2s2 = 0.5 / sigma.to(torch.float64).reshape(b, 1) ** 2
        x2 = (xf * xf).sum(1, keepdim=True)
        run_max = torch.full((b, 1), -math.inf, dtype=torch.float64, device=x.device)
        run_sum = torch.zeros((b, 1), dtype=torch.float64, device=x.device)
        acc = torch.zeros_like(xf) if mean else None
        for start in range(0, len(self), self.chunk_size):
            y = self.data[start:start + self.chunk_size].to(device=x.device, dtype=torch.float64).reshape(-1, xf.shape[1])
            d2 = (x2 - 2 * a * (xf @ y.T) + a**2 * (y * y).sum(1)[None]).clamp_min(0.0)
            logits = -d2 * inv2s2
            new_max = torch.maximum(run_max, logits.max(1, keepdim=True).values)
            scale = torch.exp(run_max - new_max)
            p = torch.exp(logits - new_max)
            run_sum = run_sum * scale + p.sum(1, keepdim=True)
            if mean:
                acc = acc * scale + p @ y
            run_max = new_max
        lse = (run_max + torch.log(run_sum)).reshape(b).to(x.dtype)
        avg = (acc / run_sum).reshape(x.shape).to(x.dtype) if mean else None
        return lse, avg

    def marginal_log_prob(self, process: GaussianProcess, x: torch.Tensor, t) -> torch.Tensor:
        r""":math:`\log p_t(x) = \mathrm{LSE}_i\,\log\mathcal N(x;\alpha_t y_i,\sigma_t^2I) - \log N`."""
        self._check_x(x)
        t = as_gaussian(process).check_time(t, x)
        sigma = process.sigma(t)
        lse, _ = self.kernel_scan(x, process.alpha(t), sigma, mean=False)
        dim = x[0].numel()
        return lse - math.log(len(self)) - dim * (torch.log(sigma) + 0.5 * _LOG_2PI)

    def __repr__(self) -> str:
        return f"Empirical(N={len(self)}, event_shape={tuple(self.event_shape)})"
