r"""A small U-Net for images ``(batch, C, H, W)`` with a time embedding.

The architecture of Ho et al. 2020 ("Denoising Diffusion Probabilistic Models", App. B), shrunk for small
images: residual blocks (GroupNorm, SiLU, 3×3 convolutions, the embedded noise level added per channel),
one down-sampling per level, skip connections, and self-attention at the coarsest resolution. Images whose
sides are not divisible by ``2**(levels-1)`` are padded by reflection and cropped back, so 8×8 digits and
28×28 MNIST both work.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from .embedding import FourierFeatures, FourierTime
from .._util import check_memory, check_positive_int
from .mlp import TimeMLP, as_time

__all__ = ["UNet"]


def _groups(channels: int) -> int:
    for g in (8, 4, 2, 1):
        if channels % g == 0:
            return g
    return 1


class _ResBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, cond: int, dropout: float):
        super().__init__()
        self.norm1 = nn.GroupNorm(_groups(c_in), c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.cond = nn.Linear(cond, c_out)
        self.norm2 = nn.GroupNorm(_groups(c_out), c_out)
        self.drop = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x, c):
        h = self.conv1(F.silu(self.norm1(x))) + self.cond(c)[:, :, None, None]
        h = self.conv2(self.drop(F.silu(self.norm2(h))))
        return self.skip(x) + h


class _Attention(nn.Module):
    """Single-head self-attention over pixels (Ho et al. 2020 use it at 16×16)."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm = nn.GroupNorm(_groups(channels), channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = nn.Conv2d(channels, channels, 1)

    def forward(self, x):
        b, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(b, 3, c, h * w).unbind(1)
        out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
        return x + self.proj(out.transpose(1, 2).reshape(b, c, h, w))


class UNet(nn.Module):
    """U-Net ``net(x, t)`` for images of shape ``(batch, channels, H, W)``; returns ``x``'s shape.

    Args:
        channels: image channels C (1 for digits and MNIST).
        base: channels of the first level.
        mults: channel multiplier per level; ``len(mults)`` levels, halving the resolution between them.
        blocks: residual blocks per level.
        attention: add self-attention at the coarsest level.
        time: time embedding (default :class:`FourierTime` with 64 features).
        out_channels: output channels (default ``channels``).
        dropout: dropout rate inside the residual blocks.
    """

    def __init__(self, channels: int = 1, *, base: int = 32, mults=(1, 2), blocks: int = 1, attention: bool = True,
                 time: FourierFeatures | None = None, out_channels: int | None = None, dropout: float = 0.0):
        super().__init__()
        self.channels = check_positive_int("channels", channels)
        base, blocks = check_positive_int("base", base), check_positive_int("blocks", blocks)
        self.out_channels = self.channels if out_channels is None else check_positive_int("out_channels", out_channels)
        mults = tuple(mults)
        if not mults:
            raise ValueError("mults must name at least one level, e.g. (1, 2)")
        widths = [base * check_positive_int("mults entries", m) for m in mults]
        # weights: about 3x3 convolutions of each level's width squared per block (and the stem and head)
        weights = (9 * sum(w * w * (2 * blocks + 3) * 2 for w in widths) + 9 * widths[0] * (self.channels
                   + self.out_channels) + 4 * base * (64 + 4 * base))
        check_memory(f"a U-Net with base={base}, mults={mults}, blocks={blocks}, out_channels={self.out_channels}",
                     4 * weights)
        cond = 4 * base
        self.time = TimeMLP(time if time is not None else FourierTime(64), cond)
        self.inp = nn.Conv2d(self.channels, widths[0], 3, padding=1)
        self.down = nn.ModuleList()
        self.pool = nn.ModuleList()
        skips, c = [widths[0]], widths[0]
        for i, w in enumerate(widths):
            for _ in range(blocks):
                self.down.append(_ResBlock(c, w, cond, dropout))
                c = w
                skips.append(c)
            if i < len(widths) - 1:
                self.pool.append(nn.Conv2d(c, c, 3, stride=2, padding=1))
                skips.append(c)
        self.mid1 = _ResBlock(c, c, cond, dropout)
        self.attn = _Attention(c) if attention else nn.Identity()
        self.mid2 = _ResBlock(c, c, cond, dropout)
        self.up = nn.ModuleList()
        self.upsample = nn.ModuleList()
        for i, w in reversed(list(enumerate(widths))):
            for _ in range(blocks + 1):
                self.up.append(_ResBlock(c + skips.pop(), w, cond, dropout))
                c = w
            if i > 0:
                self.upsample.append(nn.Conv2d(c, c, 3, padding=1))
        self.norm = nn.GroupNorm(_groups(c), c)
        self.out = nn.Conv2d(c, self.out_channels, 3, padding=1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)
        self._levels, self._blocks = len(widths), blocks

    def forward(self, x: torch.Tensor, t) -> torch.Tensor:
        if not isinstance(x, torch.Tensor) or x.dim() != 4 or x.shape[1] != self.channels:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"x must have shape (batch, {self.channels}, H, W), got {shape}")
        t = as_time(t, x)
        dtype = self.inp.weight.dtype
        c = self.time(t)
        h0, w0 = x.shape[-2:]
        m = 2 ** (self._levels - 1)
        pad_h, pad_w = (-h0) % m, (-w0) % m
        h = x.to(dtype)
        if pad_h or pad_w:  # replicate the border: zero padding would look like data
            h = F.pad(h, (0, pad_w, 0, pad_h), mode="replicate")
        h = self.inp(h)
        hs = [h]
        blocks = iter(self.down)
        for i in range(self._levels):
            for _ in range(self._blocks):
                h = next(blocks)(h, c)
                hs.append(h)
            if i < self._levels - 1:
                h = self.pool[i](h)
                hs.append(h)
        h = self.mid2(self.attn(self.mid1(h, c)), c)
        blocks = iter(self.up)
        for j, i in enumerate(reversed(range(self._levels))):
            for _ in range(self._blocks + 1):
                h = next(blocks)(torch.cat([h, hs.pop()], dim=1), c)
            if i > 0:
                h = self.upsample[j](F.interpolate(h, scale_factor=2.0, mode="nearest"))
        out = self.out(F.silu(self.norm(h)))[..., :h0, :w0]
        return out.to(x.dtype) if x.is_floating_point() else out
