"""Run under ``torchrun --nproc_per_node 2``: each rank scores its own data; prints the gathered NFEs.

Used by tests/likelihood/test_budget.py (fixed-grid mode: every rank makes the same number of evaluations).
"""

import sys

import torch
import torch.distributed as dist

import probdiff as pd
from shared import data, mixture

dist.init_process_group("gloo")
rank = dist.get_rank()
method = sys.argv[1]
process, mix = pd.VPSDE(), mixture(2, seed=rank)
x = data(mix, 3, seed=10 + rank) * (1 + 3 * rank)               # very different inputs per rank
_, stats = pd.log_likelihood(process, mix.model(process), x, method=method, steps=16, return_stats=True)
nfe = torch.tensor([stats.nfe])
gathered = [torch.zeros(1, dtype=nfe.dtype) for _ in range(dist.get_world_size())]
dist.all_gather(gathered, nfe)
if rank == 0:
    print("NFE", *[int(g) for g in gathered])
dist.destroy_process_group()
