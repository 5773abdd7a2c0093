"""The Pyro view: Trace_ELBO on the forward/reverse programs estimates the bound of pd.elbo(grid=...)."""

import math

import pyro
import pyro.poutine as poutine
import pytest
import torch
from pyro.infer import Trace_ELBO

import probdiff as pd
from probdiff.likelihood import DiscretizedGaussian, Quantization

from shared import data, mixture


def _programs(process, model, grid, **kwargs):
    return pd.ppl.reverse_model(process, model, grid, **kwargs), pd.ppl.forward_model(process, grid)


@pytest.mark.parametrize("name", ["ve", "vp"])
def test_trace_elbo_matches_pd_elbo(name):
    """Same bound, two estimators: Trace_ELBO samples the whole chain from the guide, pd.elbo uses the
    analytic per-step KLs. 20 independent blocks of 100 copies give Trace_ELBO's standard error."""
    process = pd.VESDE() if name == "ve" else pd.VPSDE(beta_max=40.0)
    grid = pd.grids.Uniform(6) if name == "ve" else pd.grids.LogSNR(6)
    mix = mixture(2, seed=12)
    model = mix.model(process)
    x = data(mix, 1)
    program, guide = _programs(process, model, grid)
    pyro.set_rng_seed(0)
    blocks = torch.stack([-Trace_ELBO().differentiable_loss(program, guide, x.repeat(100, 1)).detach() / 100
                          for _ in range(20)])
    ref = pd.elbo(process, model, x.repeat(2000, 1), grid=grid, generator=torch.Generator().manual_seed(1))
    se = math.hypot(float(blocks.std()) / math.sqrt(20), float(ref.std()) / math.sqrt(ref.shape[0]))
    assert abs(float(blocks.mean()) - float(ref.mean())) < 3.5 * se


def test_trace_elbo_with_discretized_decoder():
    q = Quantization(32, (-4.0, 4.0))
    process, grid = pd.VESDE(), pd.grids.Uniform(4)
    mix = mixture(2, seed=13)
    model = mix.model(process)
    x = q.centers(((data(mix, 1) - q.lo) / q.width).floor().clamp(0, 31).long(), dtype=torch.float64)
    decoder = DiscretizedGaussian(q)
    program, guide = _programs(process, model, grid, decoder=decoder)
    pyro.set_rng_seed(2)
    blocks = torch.stack([-Trace_ELBO().differentiable_loss(program, guide, x.repeat(100, 1)).detach() / 100
                          for _ in range(20)])
    ref = pd.elbo(process, model, x.repeat(2000, 1), grid=grid, decoder=decoder,
                  generator=torch.Generator().manual_seed(3))
    se = math.hypot(float(blocks.std()) / math.sqrt(20), float(ref.std()) / math.sqrt(ref.shape[0]))
    assert abs(float(blocks.mean()) - float(ref.mean())) < 3.5 * se


def test_effect_handlers():
    process, grid = pd.VESDE(), pd.grids.Uniform(3)
    mix = mixture(2, seed=14)
    program, guide = _programs(process, mix.model(process), grid)
    x = data(mix, 5)
    # scale: the loss scales exactly (same random numbers)
    pyro.set_rng_seed(3)
    loss = Trace_ELBO().differentiable_loss(program, guide, x)
    pyro.set_rng_seed(3)
    scaled = Trace_ELBO().differentiable_loss(poutine.scale(program, 0.25), poutine.scale(guide, 0.25), x)
    assert torch.allclose(scaled, 0.25 * loss)
    # condition: a latent becomes observed at the given value
    z0 = torch.zeros(5, 2, dtype=torch.float64)
    tr = poutine.trace(poutine.condition(program, data={"x_0": z0})).get_trace(x)
    assert tr.nodes["x_0"]["is_observed"] and torch.equal(tr.nodes["x_0"]["value"], z0)
    assert tr.nodes["data"]["is_observed"] and torch.equal(tr.nodes["data"]["value"], x)
    # sites: x_0 .. x_N in the batch plate, guide and model share latent names
    gtr = poutine.trace(guide).get_trace(x)
    latents = [f"x_{i}" for i in range(4)]
    assert all(n in gtr.nodes for n in latents) and all(n in tr.nodes for n in latents)
    assert tr.nodes["x_2"]["cond_indep_stack"][0].name == "batch"
    # sampling from the model: shapes and data site
    sample_tr = poutine.trace(program).get_trace(None, batch_size=7, event_shape=(2,))
    assert sample_tr.nodes["data"]["value"].shape == (7, 2)


def test_bad_arguments():
    process, mix = pd.VPSDE(), mixture(2)
    with pytest.raises(ValueError, match="grid"):
        pd.ppl.forward_model(process, 8)
    with pytest.raises(ValueError, match="process"):
        pd.ppl.reverse_model(object(), mix.model(process), pd.grids.Uniform(2))
    with pytest.raises(ValueError, match="decoder"):
        pd.ppl.reverse_model(process, mix.model(process), pd.grids.Uniform(2), decoder="gaussian")
    program = pd.ppl.reverse_model(process, mix.model(process), pd.grids.Uniform(2))
    with pytest.raises(ValueError, match="batch_size"):
        program(None)
