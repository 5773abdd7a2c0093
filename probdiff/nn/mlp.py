r"""A residual MLP with a time embedding, for flattened data of any event shape.

Each block is pre-norm residual, :math:`h \leftarrow h + W_2\,\mathrm{SiLU}(W_1\,\mathrm{SiLU}(\mathrm{LN}(h))
+ U e(t))`, with :math:`e(t)` the embedding of the noise level (Fourier features of :math:`t` or of the
log-SNR, :mod:`probdiff.nn.embedding`) — the conditioning used by Ho et al. 2020 ("Denoising Diffusion
Probabilistic Models", App. B) in their residual blocks. The output layer starts at zero so that an
untrained denoiser predicts the data mean of zero, not noise.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .._util import check_memory, check_positive_int
from ..likelihood.structured_trace import last_linear
from .embedding import FourierFeatures, FourierTime

__all__ = ["MLP", "TimeMLP", "as_time"]


def _shape(name: str, value) -> tuple[int, ...]:
    shape = (value,) if isinstance(value, int) else tuple(value)
    if not shape or any(isinstance(n, bool) or int(n) != n or n < 1 for n in shape):
        raise ValueError(f"{name} must be a positive integer or a tuple of them, got {value!r}")
    return tuple(int(n) for n in shape)


def as_time(t, x: torch.Tensor) -> torch.Tensor:
    """``t`` (number, 0-d or ``(batch,)`` tensor) as a float ``(batch,)`` tensor on ``x``'s device."""
    t = torch.as_tensor(t, device=x.device)
    t = t.to(x.dtype if x.is_floating_point() else torch.get_default_dtype())
    if t.dim() == 0:
        t = t.expand(x.shape[0])
    if t.shape != (x.shape[0],):
        raise ValueError(f"t must be a scalar or have shape (batch,) = ({x.shape[0]},), got {tuple(t.shape)}")
    return t


class TimeMLP(nn.Module):
    """Embedding features -> a conditioning vector: ``Linear, SiLU, Linear, SiLU``."""

    def __init__(self, features: FourierFeatures, dim: int):
        super().__init__()
        if not isinstance(features, FourierFeatures):
            raise ValueError(f"time must be a probdiff.nn time embedding (FourierTime, FourierLogSNR), "
                             f"got {type(features).__name__}")
        self.features = features
        self.net = nn.Sequential(nn.Linear(features.dim, dim), nn.SiLU(), nn.Linear(dim, dim), nn.SiLU())

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return self.net(self.features(t).to(self.net[0].weight.dtype))


class _Block(nn.Module):
    def __init__(self, width: int, cond: int, dropout: float):
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.fc1 = nn.Linear(width, width)
        self.cond = nn.Linear(cond, width)
        self.fc2 = nn.Linear(width, width)
        self.drop = nn.Dropout(dropout)

    def forward(self, h, c):
        z = self.fc1(torch.nn.functional.silu(self.norm(h))) + self.cond(c)
        return h + self.fc2(self.drop(torch.nn.functional.silu(z)))


class MLP(nn.Module):
    """Residual MLP ``net(x, t)`` for inputs of shape ``(batch, *event_shape)``.

    Args:
        event_shape: shape of one data point (an int for vectors), e.g. ``(1, 8, 8)`` or ``2``.
        hidden: width of the hidden layers.
        depth: number of residual blocks.
        time: time embedding (default :class:`FourierTime` with 64 features); use
            :class:`FourierLogSNR` to condition on the log-SNR of a Gaussian process.
        out_shape: shape of one output (default ``event_shape``: ``net(x, t)`` returns ``x``'s shape);
            e.g. ``(*event_shape, S)`` for per-dimension logits of a discrete model.
        dropout: dropout rate inside the blocks.

    Integer inputs (counts of a discrete process) are cast to the parameters' dtype. Works on any
    device: move it with ``.to(device)``.
    """

    def __init__(self, event_shape, *, hidden: int = 256, depth: int = 3, time: FourierFeatures | None = None,
                 out_shape=None, dropout: float = 0.0):
        super().__init__()
        self.event_shape = _shape("event_shape", event_shape)
        self.out_shape = self.event_shape if out_shape is None else _shape("out_shape", out_shape)
        hidden, depth = check_positive_int("hidden", hidden), check_positive_int("depth", depth)
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must lie in [0, 1), got {dropout}")
        d_in, d_out = math.prod(self.event_shape), math.prod(self.out_shape)
        weights = hidden * (d_in + d_out + 2) + depth * hidden * (3 * hidden + 6) + 64 * hidden + 2 * hidden ** 2
        check_memory(f"an MLP with hidden={hidden}, depth={depth}, {d_in} inputs and {d_out} outputs",
                     weights * torch.tensor([], dtype=torch.get_default_dtype()).element_size())
        self.time = TimeMLP(time if time is not None else FourierTime(64), hidden)
        self.inp = nn.Linear(d_in, hidden)
        self.blocks = nn.ModuleList(_Block(hidden, hidden, dropout) for _ in range(depth))
        self.norm = nn.LayerNorm(hidden)
        self.out = nn.Linear(hidden, d_out)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def features(self, x: torch.Tensor, t) -> torch.Tensor:
        """The last hidden layer, ``(batch, hidden)``: the network is ``out(features(x, t))`` reshaped to
        ``out_shape`` (the likelihood's lattice trace contracts ``out`` analytically)."""
        if not isinstance(x, torch.Tensor) or tuple(x.shape[1:]) != self.event_shape:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"x must have shape (batch, {', '.join(map(str, self.event_shape))}), got {shape}")
        t = as_time(t, x)
        c = self.time(t)
        h = self.inp(x.reshape(x.shape[0], -1).to(self.inp.weight.dtype))
        for block in self.blocks:
            h = block(h, c)
        return torch.nn.functional.silu(self.norm(h))

    def forward(self, x: torch.Tensor, t) -> torch.Tensor:
        out = self.out(self.features(x, t)).reshape(x.shape[0], *self.out_shape)
        return out.to(x.dtype) if x.is_floating_point() else out


@last_linear.register
def _(net: MLP):
    """The MLP is ``out(features(x, t))``: the lattice trace contracts ``out`` analytically."""
    return net.features, net.out
