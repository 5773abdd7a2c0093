r"""Uniform noise, masking and their mixture: the built-in :class:`~probdiff.InterpolatingChain` s.

Each is an interpolating chain with its own law :math:`\pi` (uniform, a point mass on the mask, or a mix), so
every query has the closed forms of :mod:`probdiff.processes.interpolating`, O(S) per token at most
(Austin et al., "Structured Denoising Diffusion Models in Discrete State-Spaces", NeurIPS 2021, App. A.2).
"""

from __future__ import annotations

import torch

from .._util import check_positive
from .interpolating import InterpolatingChain

__all__ = ["UniformChain", "AbsorbingChain", "UniformAbsorbingChain"]


class UniformChain(InterpolatingChain):
    r"""Uniform noise: each dimension jumps at rate ``rate`` to a state drawn uniformly from all ``S``.

    :math:`R = \text{rate}\,(\tfrac1S\mathbf 1\mathbf 1^\top - I)`, so
    :math:`P(s,t) = e^{-\Delta}I + (1 - e^{-\Delta})\tfrac1S\mathbf 1\mathbf 1^\top`,
    :math:`\Delta = \text{rate}\,(t - s)`; the stationary law is uniform (Austin et al. 2021, App. A.2).
    Closed forms at O(S) per token (:class:`InterpolatingChain`).
    """

    def __init__(self, num_states: int, *, rate: float = 1.0, t_min: float = 0.0, t_max: float | None = None,
                 validate_args: bool | None = None, **schedule):
        n = _check_num_states(num_states)
        super().__init__(torch.full((n,), 1.0 / n, dtype=torch.float64), rate=rate, t_min=t_min, t_max=t_max,
                         validate_args=validate_args, **schedule)


class AbsorbingChain(InterpolatingChain):
    r"""Masking: each dimension jumps at rate ``rate`` to the absorbing mask state ``S - 1`` and stays.

    ``num_states`` counts the mask; data use ``0 .. S-2``. :math:`P(s,t)[i,i] = e^{-\Delta}`,
    :math:`P(s,t)[i, S-1] = 1 - e^{-\Delta}` for ``i < S-1``, and the mask row is a point mass
    (Austin et al. 2021, App. A.2.2; MD4 and MDLM). Closed forms at O(S) per token
    (:class:`InterpolatingChain`).
    """

    def __init__(self, num_states: int, *, rate: float = 1.0, t_min: float = 0.0, t_max: float | None = None,
                 validate_args: bool | None = None, **schedule):
        n = _check_num_states(num_states)
        pi = torch.zeros(n, dtype=torch.float64)
        pi[-1] = 1.0
        super().__init__(pi, rate=rate, t_min=t_min, t_max=t_max, validate_args=validate_args, **schedule)

    @property
    def mask_state(self) -> int:
        """The absorbing mask state, ``S - 1``."""
        return self.num_states - 1


class UniformAbsorbingChain(InterpolatingChain):
    r"""Uniform noise plus masking: a token is masked at rate ``mask_rate`` and replaced by a uniformly drawn
    data state at rate ``uniform_rate``.

    The generator is the sum of the two, :math:`R = r_u(\mathbf 1 u^\top - I) + r_m(\mathbf 1 e_m^\top - I)`
    with :math:`u` uniform on the data states ``0 .. S-2`` and :math:`e_m` the mask ``S - 1``, i.e. an
    :class:`InterpolatingChain` of rate :math:`r_u + r_m` and :math:`\pi = (r_u u + r_m e_m)/(r_u + r_m)` (the
    uniform-plus-mask interpolation of von Rütte et al., "Generalized Interpolating Discrete Diffusion",
    ICML 2025, with a constant mixing ratio). The mask is not absorbing here: a masked token may still be
    replaced by a data state.
    """

    def __init__(self, num_states: int, *, uniform_rate: float = 0.5, mask_rate: float = 0.5, t_min: float = 0.0,
                 t_max: float | None = None, validate_args: bool | None = None, **schedule):
        n = _check_num_states(num_states)
        check_positive("uniform_rate", uniform_rate)
        check_positive("mask_rate", mask_rate)
        total = float(uniform_rate) + float(mask_rate)
        pi = torch.full((n,), float(uniform_rate) / total / (n - 1), dtype=torch.float64)
        pi[-1] = float(mask_rate) / total
        self.uniform_rate, self.mask_rate = float(uniform_rate), float(mask_rate)
        super().__init__(pi, rate=total, t_min=t_min, t_max=t_max, validate_args=validate_args, **schedule)

    @property
    def mask_state(self) -> int:
        """The mask state, ``S - 1``."""
        return self.num_states - 1


def _check_num_states(num_states) -> int:
    if isinstance(num_states, bool) or not isinstance(num_states, (int, float)):
        raise TypeError(f"num_states must be an integer >= 2, got {type(num_states).__name__} {num_states!r}")
    if int(num_states) != num_states or num_states < 2:
        raise ValueError(f"num_states must be an integer >= 2, got {num_states!r}")
    return int(num_states)

