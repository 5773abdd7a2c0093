r"""Time embeddings: Fourier features of the time, or of the process' log-SNR.

A scalar noise level :math:`c` is mapped to :math:`[\sin(\omega_k c), \cos(\omega_k c)]_{k=1}^{n/2}` with
geometrically spaced frequencies :math:`\omega_k` (the sinusoidal embedding of Vaswani et al. 2017 used
by Ho et al. 2020, "Denoising Diffusion Probabilistic Models", App. B). Two choices of :math:`c`:

* :class:`FourierTime` — the time normalised to ``t / t_max`` (any process, chains included);
* :class:`FourierLogSNR` — the log-SNR :math:`\lambda_t` of a Gaussian process, so that the network sees
  the noise level itself whatever the schedule (Kingma et al. 2021, "Variational Diffusion Models", §3.4).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..processes.gaussian import GaussianProcess

__all__ = ["FourierFeatures", "FourierTime", "FourierLogSNR"]


class FourierFeatures(nn.Module):
    r"""Sinusoidal features of a scalar: :math:`[\sin(\omega_k c), \cos(\omega_k c)]`.

    Args:
        dim: number of features (even, >= 2).
        min_freq, max_freq: range of the geometric frequency ladder :math:`\omega_k`.
    """

    def __init__(self, dim: int, min_freq: float, max_freq: float):
        super().__init__()
        if isinstance(dim, bool) or int(dim) != dim or dim < 2 or dim % 2:
            raise ValueError(f"dim must be an even integer >= 2, got {dim!r}")
        if not 0 < min_freq <= max_freq:
            raise ValueError(f"need 0 < min_freq <= max_freq, got min_freq={min_freq}, max_freq={max_freq}")
        self.dim = int(dim)
        freqs = torch.exp(torch.linspace(math.log(min_freq), math.log(max_freq), self.dim // 2))
        self.register_buffer("freqs", freqs, persistent=False)

    def features(self, c: torch.Tensor) -> torch.Tensor:
        """Features of ``c`` of shape ``(batch,)`` -> ``(batch, dim)``."""
        arg = c.to(self.freqs.dtype)[:, None] * self.freqs[None, :]
        return torch.cat([torch.sin(arg), torch.cos(arg)], dim=-1)


class FourierTime(FourierFeatures):
    """Fourier features of the normalised time ``t / t_max`` (frequencies 1 to 1000 by default).

    Args:
        dim: number of features.
        t_max: the process' ``t_max`` (1 for most Gaussian processes, 15 for Blackout).
    """

    def __init__(self, dim: int = 64, *, t_max: float = 1.0, min_freq: float = 1.0, max_freq: float = 1000.0):
        super().__init__(dim, min_freq, max_freq)
        if not t_max > 0:
            raise ValueError(f"t_max must be > 0, got {t_max}")
        self.t_max = float(t_max)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return self.features(t / self.t_max)


class FourierLogSNR(FourierFeatures):
    r"""Fourier features of the log-SNR :math:`\lambda_t` of a Gaussian process.

    :math:`\lambda_t` is clamped to ``[-clamp, clamp]`` (it diverges at the ends of some schedules); the
    default frequencies (1/64 to 16) resolve log-SNR differences of about 0.1.

    Args:
        process: a :class:`~probdiff.GaussianProcess`.
        dim: number of features.
    """

    def __init__(self, process: GaussianProcess, dim: int = 64, *, clamp: float = 30.0,
                 min_freq: float = 1.0 / 64, max_freq: float = 16.0):
        super().__init__(dim, min_freq, max_freq)
        if not isinstance(process, GaussianProcess):
            raise ValueError(f"process must be a GaussianProcess (log-SNR embedding), got {type(process).__name__}; "
                             "use FourierTime for other processes")
        self.process = process
        self.clamp = float(clamp)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        lam = self.process.log_snr(t.to(torch.get_default_dtype()) if not t.is_floating_point() else t)
        return self.features(lam.clamp(-self.clamp, self.clamp))
