"""Inputs shared by the tests: the Gaussian processes and mixture oracles they use.

Importable from every test module (``tests/`` is on ``sys.path`` through its conftest).
"""


import torch

import probdiff as pd
from probdiff.oracles import GaussianMixture

PROCESSES = {
    "vp": lambda: pd.VPSDE(),
    "ve": lambda: pd.VESDE(),
    "subvp": lambda: pd.SubVPSDE(),
    "blend": lambda: pd.LinearBlend(),
}


def mixture(dim, k=3, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    means = 1.5 * torch.randn(k, dim, generator=g, dtype=dtype)
    a = 0.4 * torch.randn(k, dim, dim, generator=g, dtype=dtype)
    covs = a @ a.transpose(-1, -2) + 0.1 * torch.eye(dim, dtype=dtype)
    weights = torch.softmax(torch.randn(k, generator=g, dtype=dtype), 0)
    return GaussianMixture(weights, means, covs)


def data(mix, n, seed=1):
    return mix.sample(n, generator=torch.Generator().manual_seed(seed))


def mixture16():
    """The 16-D, 4-component mixture of the samplers' and schedules' tests and benchmarks."""
    return GaussianMixture.correlated()
