"""Fixed-grid mode and the evaluation budget of log_likelihood (issue 15, item 6).

Expected values: the mixture oracle's closed-form log p_t at the time the integration reached.
"""

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import probdiff as pd
from shared import data, mixture

HERE = Path(__file__).resolve().parent


@pytest.mark.parametrize("method, per_step", [("rk4", 4), ("midpoint", 2)])
def test_fixed_grid_nfe_does_not_depend_on_the_input(method, per_step):
    process, mix = pd.VPSDE(), mixture(2)
    model = mix.model(process)
    nfes = set()
    for scale in (1.0, 5.0):
        log_p, stats = pd.log_likelihood(process, model, data(mix, 4) * scale, method=method, steps=24,
                                         return_stats=True)
        nfes.add(stats.nfe)
        assert torch.isfinite(log_p).all()
    assert nfes == {24 * per_step}


def test_fixed_grid_is_accurate():
    process, mix = pd.VESDE(), mixture(2, seed=3)
    x = data(mix, 6)
    _, stats = pd.log_likelihood(process, mix.model(process), x, method="rk4", steps=64, return_stats=True)
    corrected = stats.delta_log_prob + mix.marginal_log_prob(process, stats.endpoint, process.t_max)
    assert (corrected - mix.marginal_log_prob(process, x, process.t_min)).abs().max() / 2 < 1e-3


@pytest.mark.parametrize("method", ["dopri5", "rk4"])
def test_budget_returns_the_state_with_a_flag(method):
    """Out of budget: no exception, NaN log-likelihood, completed False, and the state at t_end is the
    flow's: Delta + log p_{t_end}(endpoint) is still log p_{t_min}(x) (oracle)."""
    process, mix = pd.VPSDE(), mixture(2, seed=1)
    x = data(mix, 5)
    log_p, stats = pd.log_likelihood(process, mix.model(process), x, method=method, steps=32, max_nfe=40,
                                     return_stats=True)
    assert not stats.completed and torch.isnan(log_p).all()
    assert stats.nfe <= 40 and process.t_min < stats.t_end < process.t_max
    reached = stats.delta_log_prob + mix.marginal_log_prob(process, stats.endpoint, stats.t_end)
    assert (reached - mix.marginal_log_prob(process, x, process.t_min)).abs().max() / 2 < 1e-3
    full, done = pd.log_likelihood(process, mix.model(process), x, method=method, steps=32, max_nfe=10_000,
                                   return_stats=True)
    assert done.completed and done.t_end == pytest.approx(process.t_max) and torch.isfinite(full).all()


def test_bad_budget_arguments():
    process, mix = pd.VPSDE(), mixture(2)
    for kwargs in ({"max_nfe": 0}, {"steps": 0}, {"segments": 0}):
        with pytest.raises(ValueError, match=next(iter(kwargs))):
            pd.log_likelihood(process, mix.model(process), data(mix, 2), **kwargs)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_fixed_grid_same_nfe_on_two_ranks():
    """torchrun, gloo, two ranks with very different data: identical NFE on both."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(HERE.parent), str(HERE.parents[1]),
                                                       os.environ.get("PYTHONPATH", "")]),
               OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(_free_port()),
           str(HERE / "distributed_nfe.py"), "rk4"]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    line = [ln for ln in out.stdout.splitlines() if ln.startswith("NFE")][0]
    a, b = (int(v) for v in line.split()[1:])
    assert a == b == 64
