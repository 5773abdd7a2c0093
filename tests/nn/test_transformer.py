"""The sequence transformer: shapes, time conditioning, bidirectional attention, permutation behaviour set by the
rotary position embeddings, gradients, empty batch, argument checks, and use as the network of the chain models."""

import math

import pytest
import torch

import probdiff as pd
from probdiff.losses import ChainELBOLoss
from probdiff.nn import FourierTime, Transformer
from probdiff.processes.schedules import Linear
from probdiff.train import EMA, AdamW, Run, Trainer, WarmupCosine


def small(**kw):
    torch.manual_seed(0)
    options = dict(width=16, depth=2, heads=2)
    options.update(kw)
    return Transformer(5, 12, **options)


@pytest.mark.parametrize("event", [(12,), (3, 4), (7,)])
def test_logits_per_token_for_any_event_shape(event):
    net = small()
    x = torch.randint(0, 5, (3, *event))
    out = net(x, torch.rand(3))
    assert out.shape == (3, *event, 5) and out.dtype == torch.float32 and torch.isfinite(out).all()
    # float inputs holding integers (as the chain models pass them) give the same logits, in the input's dtype
    torch.testing.assert_close(net(x.float(), 0.3), net(x, 0.3))
    assert net(x.double(), 0.3).dtype == torch.float64


def test_time_changes_the_output():
    net = small()
    x = torch.randint(0, 5, (2, 12))
    a, b = net(x, torch.tensor([0.1, 0.1])), net(x, torch.tensor([0.1, 0.9]))
    torch.testing.assert_close(a[0], b[0])            # the same time gives the same logits
    assert (a[1] - b[1]).abs().max() > 1e-3


def test_attention_is_bidirectional():
    net = small()
    x = torch.randint(0, 5, (1, 12))
    y = x.clone()
    y[0, -1] = (x[0, -1] + 1) % 5
    # changing the last token changes the logits at the first position: no causal mask
    assert (net(x, 0.5)[0, 0] - net(y, 0.5)[0, 0]).abs().max() > 1e-4


def test_permutation_equivariant_without_positions_and_not_with_them():
    perm = torch.randperm(12, generator=torch.Generator().manual_seed(1))
    x = torch.randint(0, 5, (2, 12), generator=torch.Generator().manual_seed(2))
    t = torch.tensor([0.2, 0.7])
    free = small(positional=False)
    torch.testing.assert_close(free(x[:, perm], t), free(x, t)[:, perm], rtol=1e-5, atol=1e-5)
    placed = small()
    assert (placed(x[:, perm], t) - placed(x, t)[:, perm]).abs().max() > 1e-3
    # rotary positions shape where a token looks, not what it reads: a constant sequence has nothing to tell
    # apart, so every position gets the same logits, with or without positions
    c = torch.full((1, 12), 3)
    torch.testing.assert_close(placed(c, 0.5)[0], placed(c, 0.5)[0, :1].expand(12, 5))
    torch.testing.assert_close(free(c, 0.5)[0], free(c, 0.5)[0, :1].expand(12, 5))


def test_rotary_scores_depend_on_the_offset_only():
    from probdiff.nn.transformer import _rotary
    g = torch.Generator().manual_seed(3)
    q, k = torch.randn(8, generator=g, dtype=torch.float64), torch.randn(8, generator=g, dtype=torch.float64)
    seq_q, seq_k = q.expand(1, 1, 20, 8), k.expand(1, 1, 20, 8)
    scores = _rotary(seq_q)[0, 0] @ _rotary(seq_k)[0, 0].T                 # scores[n, m] = <R_n q, R_m k>
    for offset in (-5, 0, 3):
        diagonal = torch.diagonal(scores, offset)
        torch.testing.assert_close(diagonal, diagonal[:1].expand_as(diagonal))
    assert (scores[0, 1] - scores[0, 4]).abs() > 1e-3                   # and the offset matters
    # each rotation keeps the norm: a rotation of coordinate pairs
    torch.testing.assert_close(_rotary(seq_q).norm(dim=-1), q.norm().expand(1, 1, 20))


def test_gradients_reach_every_parameter():
    net = small(dropout=0.1)
    x = torch.randint(0, 5, (4, 12))
    out = net(x, torch.rand(4))
    torch.nn.functional.cross_entropy(out.reshape(-1, 5), torch.randint(0, 5, (48,))).backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_empty_batch_and_shorter_sequences():
    net = small()
    assert net(torch.zeros(0, 12, dtype=torch.long), torch.zeros(0)).shape == (0, 12, 5)
    assert net(torch.zeros(2, 5, dtype=torch.long), 0.5).shape == (2, 5, 5)       # up to `length` tokens


@pytest.mark.parametrize("kwargs, match", [
    (dict(num_states=1, length=4), "num_states"), (dict(num_states=5, length=0), "length"),
    (dict(num_states=5, length=4, width=10, heads=4), "divisible by heads"),
    (dict(num_states=5, length=4, depth=0), "depth"), (dict(num_states=5, length=4, dropout=1.0), "dropout"),
    (dict(num_states=5, length=4, positional=1), "positional"), (dict(num_states=5, length=4, time="t"), "time"),
    (dict(num_states=5, length=4, width=2.5), "width"),
    (dict(num_states=5, length=4, width=6, heads=2), "even head width"),
])
def test_bad_arguments_are_named(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        Transformer(**kwargs)


def test_bad_inputs_are_named():
    net = small()
    with pytest.raises(ValueError, match="more than length"):
        net(torch.zeros(1, 13, dtype=torch.long), 0.5)
    with pytest.raises(ValueError, match="states in 0 .. 4"):
        net(torch.full((1, 12), 5), 0.5)
    with pytest.raises(ValueError, match="integer"):
        net(torch.full((1, 12), 0.5), 0.5)
    with pytest.raises(ValueError, match="at least one event dimension"):
        net(torch.zeros(3, dtype=torch.long), 0.5)
    with pytest.raises(ValueError, match="t must be"):
        net(torch.zeros(2, 12, dtype=torch.long), torch.rand(3))


def test_network_of_the_chain_models():
    chain = pd.AbsorbingChain(5, schedule=Linear())
    x = torch.randint(0, 5, (3, 12))
    for model in (pd.CategoricalModel(small(), chain), pd.SUBSModel(small(), chain)):
        probs = model.x0_probs(x, torch.rand(3))
        assert probs.shape == (3, 12, 5)
        torch.testing.assert_close(probs.sum(-1), torch.ones(3, 12))
    uniform = pd.UniformChain(5, t_max=4.0)
    model = pd.CategoricalModel(small(time=FourierTime(16, t_max=4.0)), uniform)
    assert torch.isfinite(pd.elbo(uniform, model, torch.randint(0, 5, (2, 12)))).all()


@pytest.mark.parametrize("make, wrap, steps", [
    pytest.param(lambda: pd.AbsorbingChain(4, schedule=Linear()), pd.SUBSModel, 150, marks=pytest.mark.slow),
    pytest.param(lambda: pd.UniformChain(4, t_max=6.0), pd.CategoricalModel, 300, marks=pytest.mark.slow)])
def test_a_few_hundred_steps_raise_the_chain_elbo_of_a_toy_sequence_law(make, wrap, steps):
    # the toy law: a constant sequence of length 6 over symbols 0..2, the symbol uniform (entropy log 3 nats)
    chain = make()
    g = torch.Generator().manual_seed(0)
    data = torch.randint(0, 3, (512, 1), generator=g).expand(512, 6).clone()
    test = torch.arange(3).repeat_interleave(40)[:, None].expand(120, 6).clone()
    torch.manual_seed(0)
    net = Transformer(4, 6, width=32, depth=2, heads=2, time=FourierTime(16, t_max=chain.t_max))
    model = wrap(net, chain)

    def score():
        with torch.no_grad():
            e = pd.elbo(chain, model, test, num_samples=8, generator=torch.Generator().manual_seed(1))
        return float(-e.mean()), float(e.std() / math.sqrt(len(e)))

    before, _ = score()
    trainer = Trainer(model, ChainELBOLoss(chain), data, steps=steps, batch_size=32, optimizer=AdamW(lr=3e-3),
                      scheduler=WarmupCosine(warmup=20), ema=EMA(0.0), run=Run(seed=0, device="cpu"))
    for _ in range(steps):
        trainer.train_step()
    net.eval()
    after, se_after = score()
    # untrained: several nats per token (the untrained bound of the uniform chain is heavy-tailed); trained:
    # close to the law's entropy log 3 = 1.10 nats per sequence (a bound, so above it up to Monte-Carlo noise)
    assert after < 0.5 * before
    assert math.log(3) - 4 * se_after < after < math.log(3) + 0.5
