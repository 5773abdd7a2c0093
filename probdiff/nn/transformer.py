r"""A bidirectional transformer ``net(x, t)`` for token sequences: the network of the chain models.

Tokens :math:`x \in \{0, \dots, S-1\}^L` (any event shape, flattened in row-major order) are embedded and
passed through pre-norm transformer blocks (Vaswani et al. 2017, "Attention Is All You Need") with full,
non-causal self-attention: a denoiser sees every position. Positions enter through rotary embeddings (Su et
al. 2021, "RoFormer", §3.4, as in MDLM's backbone): in each head, the query and key of token :math:`n` are
rotated pairwise, coordinates :math:`(j, j + d/2)` by the angle :math:`n\,\theta_j` with
:math:`\theta_j = 10000^{-2j/d}`, so that the score :math:`\langle R_n q, R_m k\rangle` depends on the
positions only through the offset :math:`n - m`. A denoiser of masked text mostly needs its neighbours, and
relative positions give it them from the first step; learned absolute embeddings left a byte-level model at
the bytes' unigram entropy for its whole CPU budget.
The noise level enters through its embedding :math:`c = e(t)` (:mod:`probdiff.nn.embedding`, through a small
MLP), which modulates each block (adaptive layer norm, Peebles & Xie 2023, "Scalable Diffusion Models with
Transformers", §3.2, the DiT backbone MDLM uses):

.. math::

    h \leftarrow h + (1 + g_1(c))\,\mathrm{Attn}\big(\mathrm{LN}(h)(1 + a_1(c)) + b_1(c)\big), \qquad
    h \leftarrow h + (1 + g_2(c))\,\mathrm{MLP}\big(\mathrm{LN}(h)(1 + a_2(c)) + b_2(c)\big),

with :math:`a, b, g` linear in :math:`c` and small at initialisation (so the blocks start close to a plain
pre-norm transformer). The head returns logits over the ``S`` states per token, shape ``(batch, *event, S)``, as
:class:`~probdiff.CategoricalModel` and :class:`~probdiff.SUBSModel` expect.

Without rotary embeddings (``positional=False``) the network is permutation equivariant: permuting the
tokens permutes the logits the same way.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .._util import check_memory, check_positive_int
from .embedding import FourierFeatures, FourierTime
from .mlp import TimeMLP, as_time

__all__ = ["Transformer"]


def _rotary(q: torch.Tensor) -> torch.Tensor:
    """Rotary position embedding of queries or keys ``(batch, heads, tokens, d)`` (``d`` even, see the module)."""
    n, d = q.shape[-2], q.shape[-1]
    half = d // 2
    theta = 10000.0 ** (-torch.arange(half, dtype=torch.float64, device=q.device) / half)
    angle = torch.arange(n, dtype=torch.float64, device=q.device)[:, None] * theta
    cos, sin = angle.cos().to(q.dtype), angle.sin().to(q.dtype)
    first, second = q[..., :half], q[..., half:]
    return torch.cat([first * cos - second * sin, first * sin + second * cos], dim=-1)


class _Block(nn.Module):
    """One pre-norm block: self-attention and an MLP, each modulated by the time (adaptive layer norm)."""

    def __init__(self, width: int, heads: int, hidden: int, dropout: float, positional: bool):
        super().__init__()
        self.heads, self.dropout, self.positional = heads, dropout, positional
        self.norm1 = nn.LayerNorm(width, elementwise_affine=False)
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.norm2 = nn.LayerNorm(width, elementwise_affine=False)
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Linear(hidden, width))
        self.drop = nn.Dropout(dropout)
        self.mod = nn.Linear(width, 6 * width)
        nn.init.normal_(self.mod.weight, std=0.02)
        nn.init.zeros_(self.mod.bias)

    def forward(self, h: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        b, n, w = h.shape
        a1, b1, g1, a2, b2, g2 = self.mod(c)[:, None, :].chunk(6, dim=-1)
        z = self.norm1(h) * (1 + a1) + b1
        q, k, v = self.qkv(z).reshape(b, n, 3, self.heads, w // self.heads).permute(2, 0, 3, 1, 4)
        if self.positional:
            q, k = _rotary(q), _rotary(k)
        att = torch.nn.functional.scaled_dot_product_attention(
            q, k, v, dropout_p=self.dropout if self.training else 0.0)
        h = h + (1 + g1) * self.drop(self.proj(att.transpose(1, 2).reshape(b, n, w)))
        z = self.norm2(h) * (1 + a2) + b2
        return h + (1 + g2) * self.drop(self.mlp(z))


class Transformer(nn.Module):
    """Bidirectional transformer ``net(x, t)``: states ``(batch, *event)`` -> logits ``(batch, *event, S)``.

    Args:
        num_states: ``S``, the number of states of the chain (the mask included for masking chains); the
            inputs must lie in ``0 .. S-1`` and the output has ``S`` logits per token.
        length: the largest number of tokens per sequence (``prod(event)``) the network accepts.
        width: the model width (divisible by ``heads``).
        depth: the number of transformer blocks.
        heads: attention heads per block.
        mlp_ratio: hidden width of each block's MLP over ``width``.
        time: time embedding (default :class:`~probdiff.nn.FourierTime` with 64 features and ``t_max=1``:
            pass ``FourierTime(t_max=process.t_max)`` for a chain with another horizon).
        positional: rotary position embeddings (``False``: permutation equivariant); needs an even
            ``width // heads``.
        dropout: dropout rate on attention weights and residual branches.

    Float inputs (the chain models pass the states in the time's dtype) must hold integer values. Works on
    any device: move it with ``.to(device)``.
    """

    def __init__(self, num_states: int, length: int, *, width: int = 128, depth: int = 4, heads: int = 4,
                 mlp_ratio: int = 4, time: FourierFeatures | None = None, positional: bool = True,
                 dropout: float = 0.0):
        super().__init__()
        self.num_states = check_positive_int("num_states", num_states)
        if self.num_states < 2:
            raise ValueError(f"num_states must be >= 2, got {num_states!r}")
        self.length = check_positive_int("length", length)
        width, depth = check_positive_int("width", width), check_positive_int("depth", depth)
        heads, mlp_ratio = check_positive_int("heads", heads), check_positive_int("mlp_ratio", mlp_ratio)
        if width % heads:
            raise ValueError(f"width must be divisible by heads, got width={width}, heads={heads}")
        if not isinstance(positional, bool):
            raise TypeError(f"positional must be True or False, got {positional!r}")
        if positional and (width // heads) % 2:
            raise ValueError(f"rotary positions need an even head width, got width // heads = {width // heads}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must lie in [0, 1), got {dropout}")
        weights = 2 * self.num_states * width + depth * (12 + 2 * mlp_ratio) * width ** 2
        check_memory(f"a Transformer with width={width}, depth={depth}, num_states={self.num_states} and "
                     f"length={self.length}", weights * torch.tensor([]).element_size())
        self.positional = positional
        self.time = TimeMLP(time if time is not None else FourierTime(64), width)
        self.embed = nn.Embedding(self.num_states, width)
        nn.init.normal_(self.embed.weight, std=0.02)
        self.blocks = nn.ModuleList(_Block(width, heads, mlp_ratio * width, dropout, positional)
                                    for _ in range(depth))
        self.norm = nn.LayerNorm(width)
        self.out = nn.Linear(width, self.num_states)

    def _tokens(self, x) -> torch.Tensor:
        if not isinstance(x, torch.Tensor) or x.dim() < 2:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"x must have shape (batch, *event) with at least one event dimension, got {shape}")
        n = math.prod(x.shape[1:])
        if n > self.length:
            raise ValueError(f"x has {n} tokens per sequence, more than length={self.length}")
        tokens = x.reshape(x.shape[0], n)
        if tokens.is_floating_point():
            if not bool(torch.all(tokens == torch.round(tokens))):
                raise ValueError("x must hold integer states (float inputs must be integer-valued)")
            tokens = tokens.long()
        if tokens.numel() and not bool(((tokens >= 0) & (tokens < self.num_states)).all()):
            raise ValueError(f"x must hold states in 0 .. {self.num_states - 1}, got values in "
                             f"[{int(tokens.min())}, {int(tokens.max())}]")
        return tokens.long()

    def forward(self, x: torch.Tensor, t) -> torch.Tensor:
        tokens = self._tokens(x)
        t = as_time(t, x)
        c = self.time(t)
        h = self.embed(tokens)
        for block in self.blocks:
            h = block(h, c)
        out = self.out(self.norm(h)).reshape(*x.shape, self.num_states)
        return out.to(x.dtype) if x.is_floating_point() else out
