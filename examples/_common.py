"""Scaffolding shared by the example scripts (not an example itself).

Every example takes ``--out DIR`` (where its figure goes), ``--quick``/``--smoke`` (reduced size, for CI)
and ``--seed``; the 2-D examples share the sliced Wasserstein distance (their 8-mode ring is
``pd.oracles.GaussianMixture.ring()``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch


def example_args(doc: str, argv=None) -> argparse.Namespace:
    """Parse the examples' common options; the first line of ``doc`` is the description. Creates ``--out``."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("out"), help="directory for the figures")
    parser.add_argument("--quick", "--smoke", action="store_true", help="reduced size, for CI")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    return args


def sliced_wasserstein(x: torch.Tensor, y: torch.Tensor, projections: int = 256, seed: int = 0) -> float:
    """Sliced 2-Wasserstein distance between two equal-size samples (random directions, sorted projections)."""
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(x.shape[1], projections, generator=g, dtype=x.dtype)
    u = u / u.norm(dim=0)
    px, py = (x @ u).sort(0).values, (y @ u).sort(0).values
    return float((px - py).pow(2).mean().sqrt())
