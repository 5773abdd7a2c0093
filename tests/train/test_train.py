"""Trainer: training reduces the loss, exact resume, checkpoint errors, EMA, torchrun with gloo."""

import json
import os
import subprocess
import sys

import pytest
import torch

import probdiff as pd
from probdiff.losses import DenoisingScoreMatching
from probdiff.nn import MLP
from probdiff.train import EMA, AdamW, CheckpointError, Run, Trainer, WarmupCosine, distributed_map

MIX = dict(weights=torch.tensor([0.5, 0.5]), means=torch.tensor([[1.0, 1.0], [-1.0, -1.0]]),
           covs=0.05 * torch.eye(2).expand(2, 2, 2).clone())


def make(checkpoint=None, *, steps=40, accumulate=1, hidden=32, seed=0, ema_decay=0.999, autocast=None):
    torch.manual_seed(0)
    process = pd.VPSDE(t_min=1e-3)
    data = pd.oracles.GaussianMixture(**MIX).sample(512, generator=torch.Generator().manual_seed(0)).float()
    model = pd.EpsilonModel(MLP(2, hidden=hidden, depth=2), process)
    return Trainer(model, DenoisingScoreMatching(process), data, steps=steps, batch_size=64,
                   optimizer=AdamW(lr=3e-3), scheduler=WarmupCosine(warmup=5), ema=EMA(ema_decay),
                   run=Run(seed=seed, accumulate=accumulate, checkpoint=checkpoint, checkpoint_every=10,
                           device="cpu", autocast=autocast))


def fixed_eval(trainer, n=4000):
    """Loss at fixed (x0, t, eps): the model's, and the exact oracle's (the irreducible value)."""
    g = torch.Generator().manual_seed(7)
    process = trainer.model.process
    mix = pd.oracles.GaussianMixture(**MIX)
    x0 = mix.sample(n, generator=g).float()
    t = process.t_min + (process.t_max - process.t_min) * torch.rand(n, generator=g)
    eps = torch.randn(n, 2, generator=g)
    loss = trainer.loss
    oracle = pd.EpsilonModel(mix.model(process).epsilon, process)  # same parameterisation as trained
    with torch.no_grad():
        return float(loss.evaluate(trainer.model, x0, t, eps).mean()), float(loss.evaluate(oracle, x0, t, eps).mean())


def test_training_reduces_the_loss_towards_the_oracle():
    trainer = make(steps=300)
    before, oracle = fixed_eval(trainer)
    trainer.fit()
    with trainer.ema_weights():
        after, _ = fixed_eval(trainer)
    # the untrained epsilon model predicts 0, loss = E|eps|^2 = 2; the oracle's loss is the floor
    assert before == pytest.approx(2.0, rel=0.05)
    assert oracle < after < oracle + 0.35 * (before - oracle), (before, after, oracle)


def test_bfloat16_autocast_trains_in_mixed_precision_reproducibly(tmp_path):
    seen = []
    trainer = make(steps=300, autocast=torch.bfloat16)
    linear = next(m for m in trainer.net.modules() if isinstance(m, torch.nn.Linear))
    hook = linear.register_forward_hook(lambda module, inputs, out: seen.append(out.dtype))
    trainer.fit(until=1)
    hook.remove()
    assert seen == [torch.bfloat16]                    # the products ran in bfloat16 ...
    assert all(p.dtype == torch.float32 and p.grad.dtype == torch.float32 for p in trainer.net.parameters())
    assert all(v.dtype == torch.float32 for v in trainer.ema.values())            # ... the state stays float32
    before, oracle = fixed_eval(make())
    trainer.fit()
    with trainer.ema_weights():
        after, _ = fixed_eval(trainer)                 # evaluated in full precision
    assert oracle < after < oracle + 0.35 * (before - oracle), (before, after, oracle)
    again = make(steps=300, autocast=torch.bfloat16)
    assert again.fit() == trainer.losses            # bit-identical with the same seed
    plain = make(steps=300)
    assert plain.fit(until=5) != trainer.losses[:5]   # and not the full-precision run
    path = tmp_path / "ck.pt"
    make(path, autocast=torch.bfloat16).fit(until=10)
    with pytest.raises(CheckpointError, match="other settings.*autocast"):
        make(path).resume()
    assert make(path).resume(allow_change={"autocast"}).step == 10
    for bad in (torch.float16, torch.float32, "bfloat16"):
        with pytest.raises(ValueError, match="autocast must be None or torch.bfloat16"):
            Run(autocast=bad)


def test_resume_continues_with_identical_losses(tmp_path):
    full = make().fit()
    interrupted = make(tmp_path / "ck.pt")
    interrupted.fit(until=25)  # "killed" at step 25: the last checkpoint is at step 20
    resumed = make(tmp_path / "ck.pt").resume()
    assert resumed.step == 20
    assert resumed.fit() == full[20:]
    assert [p.name for p in tmp_path.iterdir()] == ["ck.pt"]  # no temporary files left behind
    final = torch.load(tmp_path / "ck.pt", weights_only=True)
    assert final["step"] == 40 and final["losses"].tolist() == full


def test_bad_checkpoints_are_errors_not_restarts(tmp_path):
    path = tmp_path / "ck.pt"
    make(path).fit(until=10)
    with pytest.raises(CheckpointError, match="does not exist"):
        make(tmp_path / "missing.pt").resume()
    with pytest.raises(CheckpointError, match="does not fit this model"):
        make(path, hidden=16).resume()
    with pytest.raises(CheckpointError, match="other settings"):
        make(path, seed=1).resume()
    raw = path.read_bytes()
    (tmp_path / "cut.pt").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(CheckpointError, match="corrupt"):
        make(tmp_path / "cut.pt").resume()
    torch.save({"weights": torch.zeros(2)}, tmp_path / "foreign.pt")
    with pytest.raises(CheckpointError, match="not a probdiff checkpoint"):
        make(tmp_path / "foreign.pt").resume()


def test_ema_follows_its_definition():
    a = make(ema_decay=0.0)
    a.fit(until=5)
    for k, v in a.net.state_dict().items():
        torch.testing.assert_close(a.ema[k], v)  # decay 0: the EMA is the weights
    b = make(ema_decay=0.5)
    before = {k: v.clone() for k, v in b.net.state_dict().items()}
    b.fit(until=1)
    decay = min(0.5, (1 + 0) / (10 + 0))  # the warm-up ramp at step 0
    for k, v in b.net.state_dict().items():
        torch.testing.assert_close(b.ema[k], decay * before[k] + (1 - decay) * v)
    with b.ema_weights():
        for k, v in b.net.state_dict().items():
            torch.testing.assert_close(v, b.ema[k])
    assert not all(torch.equal(v, b.ema[k]) for k, v in b.net.state_dict().items())  # restored on exit


def test_bad_arguments():
    with pytest.raises(ValueError, match="batch_size"):
        make(accumulate=3)
    with pytest.raises(ValueError, match="model.net"):
        Trainer(pd.oracles.GaussianMixture(**MIX).model(pd.VPSDE()), lambda *a, **k: 0, torch.zeros(4, 2))
    with pytest.raises(ValueError, match="until"):
        make().fit(until=41)


def test_at_most_ten_parameters_and_user_optimizer_schedule_ema():
    import dataclasses
    import inspect

    from probdiff.train import Constant, Optimizer, Schedule

    assert len(inspect.signature(Trainer).parameters) <= 10

    @dataclasses.dataclass(frozen=True)
    class SGD(Optimizer):
        lr: float = 0.05
        clip: float | None = None

        def build(self, params):
            return torch.optim.SGD(params, lr=self.lr)

    class Halving(Schedule):
        def __call__(self, lr, step, steps):
            return lr * 0.5 ** step

    trainer = make()
    net = trainer.net
    before = {k: v.clone() for k, v in net.state_dict().items()}
    custom = Trainer(trainer.model, trainer.loss, trainer.data, steps=3, batch_size=64, optimizer=SGD(),
                     scheduler=Halving(), ema=EMA(0.0), run=Run(device="cpu"))
    assert isinstance(custom.optimizer, torch.optim.SGD)
    assert [custom.learning_rate(k) for k in range(3)] == [0.05, 0.025, 0.0125]
    # one plain SGD step by hand, on the same batch and randomness: w - lr * grad
    g = custom._generator(0, 0)
    torch.manual_seed(0)
    custom.loss(custom.model, custom.data[custom.batch_indices(0)], generator=g).mean().backward()
    expected = {n: p.detach() - 0.05 * p.grad for n, p in net.named_parameters()}
    net.zero_grad(set_to_none=True)
    net.load_state_dict(before)
    custom.train_step()
    for n, p in net.named_parameters():
        torch.testing.assert_close(p.detach(), expected[n])
    assert Constant()(1e-3, 5, 10) == 1e-3
    with pytest.raises(ValueError, match="optimizer must be a probdiff.train.Optimizer"):
        Trainer(trainer.model, trainer.loss, trainer.data, optimizer=torch.optim.SGD)
    with pytest.raises(ValueError, match="lr must be > 0"):
        AdamW(lr=0.0)
    with pytest.raises(ValueError, match="decay must lie in"):
        EMA(1.0)


def test_distributed_map_single_process():
    x = torch.arange(10.0)[:, None]
    torch.testing.assert_close(distributed_map(lambda b: b[:, 0] ** 2, x, batch_size=3), x[:, 0] ** 2)


SCRIPT = """
import json, sys, torch
sys.path.insert(0, {tests!r})
import test_train as tt
from probdiff.train import init_distributed, distributed_map
rank, size = init_distributed()
trainer = tt.make(steps={steps})
losses = trainer.fit()
squares = distributed_map(lambda b: b[:, 0] ** 2, torch.arange(11.0)[:, None], batch_size=2)
if rank == 0:
    with torch.no_grad():
        ev = tt.fixed_eval(trainer)[0]
    json.dump({{"losses": losses, "squares": squares.tolist(), "eval": ev}}, open({out!r}, "w"))
"""


def torchrun(tmp_path, steps):
    out = tmp_path / "out.json"
    script = tmp_path / "run.py"
    script.write_text(SCRIPT.format(tests=os.path.dirname(__file__), steps=steps, out=str(out)))
    env = dict(os.environ, OMP_NUM_THREADS="1")
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           str(script)], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]  # the workers' tracebacks, which torchrun only prints
    return json.loads(out.read_text())


def check_matches_single_process(tmp_path, steps):
    result = torchrun(tmp_path, steps)
    single = make(steps=steps, accumulate=2)  # same global batch, cut into the same two shards
    expected = single.fit()
    assert result["squares"] == [float(i * i) for i in range(11)]
    torch.testing.assert_close(torch.tensor(result["losses"]), torch.tensor(expected), rtol=1e-4, atol=1e-5)
    with torch.no_grad():
        assert result["eval"] == pytest.approx(fixed_eval(single)[0], rel=1e-3)


def test_torchrun_two_processes_matches_single_process(tmp_path):
    check_matches_single_process(tmp_path, steps=10)


@pytest.mark.slow
def test_torchrun_two_processes_matches_single_process_full(tmp_path):
    check_matches_single_process(tmp_path, steps=300)
