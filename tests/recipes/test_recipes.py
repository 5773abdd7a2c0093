"""Recipes: per-family defaults as a Python API, and a core that imports without the ``cli`` extra."""

import subprocess
import sys

import pytest
import torch

import probdiff as pd
from probdiff import data, losses, nn, recipes, solvers


# ==================================================================== dependencies
#: The ``cli`` extra. tqdm is also a requirement of pyro-ppl (``import pyro`` imports it), so it is always
#: installed; probdiff itself imports it only inside the functions that draw progress bars.
EXTRA = ["matplotlib", "PIL", "sklearn", "tqdm"]
BLOCKED = ["matplotlib", "PIL", "sklearn"]

CORE = """
import sys
sys.modules.update(dict.fromkeys({blocked!r}))  # None in sys.modules: importing them raises ImportError
import torch
import probdiff as pd, probdiff.sampling, probdiff.likelihood, probdiff.recipes, probdiff.train, probdiff.data
mix = pd.oracles.GaussianMixture.ring(4, 2.0, 0.1)
model = mix.model(pd.VPSDE())
x = pd.sample(pd.probability_flow(model), (3, 2), solver=pd.solvers.Heun(), grid=pd.grids.Uniform(4),
              generator=torch.Generator().manual_seed(0)).x
assert x.shape == (3, 2) and bool(torch.isfinite(x).all())
lp = pd.log_likelihood(model, x.double(), rtol=1e-4, atol=1e-4)
assert lp.shape == (3,) and bool(torch.isfinite(lp).all())
print("core ok")
"""


def test_core_imports_and_runs_without_the_cli_extra():
    done = subprocess.run([sys.executable, "-c", CORE.format(blocked=BLOCKED)], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0 and "core ok" in done.stdout, done.stderr


def test_the_cli_extra_is_imported_only_inside_functions():
    import ast
    from pathlib import Path

    root = Path(pd.__file__).parent
    found = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.parse(path.read_text()).body:  # module level only
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else [])
            found += [f"{path.relative_to(root)}: {n}" for n in names if n.split(".")[0] in EXTRA]
    assert not found, found


# ==================================================================== processes and the noise floor
def test_noise_floor_sets_t_min_of_gaussian_processes():
    # VP closed form (THEORY.md §1), computed here: log alpha_t = -t^2 (b1 - b0)/4 - t b0/2, sigma^2 = 1 - alpha^2
    import math

    q = recipes.process("vp", 17)
    t = q.t_min
    log_alpha = -0.25 * t**2 * (20.0 - 0.1) - 0.5 * t * 0.1
    ratio = math.sqrt(-math.expm1(2 * log_alpha)) / math.exp(log_alpha)
    assert ratio == pytest.approx(recipes.NOISE_FLOOR * 2 / 17, rel=1e-6)
    assert recipes.process("vp", 17, t_min=0.01).t_min == 0.01
    assert isinstance(recipes.process("absorbing", 17), pd.AbsorbingChain)
    assert recipes.process("absorbing", 17).num_states == 18  # the mask is one more state
    assert recipes.process("blackout", 17).max_count == 16


def test_option_errors_name_the_option():
    with pytest.raises(recipes.OptionError, match="t_min: does not apply to Blackout") as info:
        recipes.process("blackout", 17, t_min=0.1)
    assert info.value.option == "t_min" and isinstance(info.value, ValueError)
    with pytest.raises(recipes.OptionError, match="process: 'nope' is not one of") as info:
        recipes.process("nope", 17)
    with pytest.raises(recipes.OptionError, match="model: lattice needs a Gaussian process") as info:
        recipes.build_model(recipes.process("blackout", 17), (1, 8, 8), levels=17, model="lattice")
    assert info.value.option == "model"
    model = recipes.build_model(recipes.process("vp", 17), (4,), levels=17, model="epsilon")
    with pytest.raises(recipes.OptionError, match="weighting: 'blackout-original' does not apply to EpsilonModel"):
        recipes.loss(model, "blackout-original")


# ==================================================================== family defaults
@pytest.mark.parametrize("process,family,model,solver,grid", [
    (pd.VPSDE(), recipes.GaussianDefaults, "lattice", "heun", "karras"),
    (pd.VESDE(), recipes.GaussianDefaults, "lattice", "heun", "karras"),
    (pd.UniformChain(5), recipes.ChainDefaults, "categorical", "ancestral", "schedule"),    # uniform in alpha_t
    (pd.MarkovChain(pd.UniformChain(3).generator), recipes.ChainDefaults, "categorical", "ancestral", "uniform"),
    (pd.Blackout(max_count=4), recipes.BlackoutDefaults, "blackout", "binomial-bridge", "logit"),
])
def test_defaults_dispatch_on_the_family(process, family, model, solver, grid):
    d = recipes.defaults(process)
    assert type(d) is family and (d.model, d.solver, d.grid) == (model, solver, grid)
    assert isinstance(d.transform(17), data.Dequantize if family is recipes.GaussianDefaults else data.Counts)


def test_a_users_family_registers_its_defaults():
    class Mine(pd.VPSDE):
        pass

    @recipes.defaults.register(Mine)
    def _(process):
        return recipes.GaussianDefaults(model="epsilon", solver="euler", grid="uniform")

    m = recipes.build_model(Mine(), (3,), levels=17, options=recipes.NetOptions(hidden=8, depth=1))
    assert type(m) is pd.EpsilonModel and m.process.__class__ is Mine
    assert type(recipes.defaults(pd.VPSDE())) is recipes.GaussianDefaults and recipes.defaults(pd.VPSDE()).model == "lattice"


def test_unknown_process_family_and_model_are_value_errors():
    class Foreign:
        pass

    with pytest.raises(ValueError, match="no recipe for Foreign"):
        recipes.defaults(Foreign())
    with pytest.raises(ValueError, match="no training loss for Foreign"):
        recipes.loss(Foreign())


# ==================================================================== models and losses
def test_build_model_sizes_the_network_for_the_parameterisation():
    x = torch.zeros(2, 1, 8, 8)
    t = torch.full((2,), 0.5)
    vp = recipes.process("vp", 17)
    lattice = recipes.build_model(vp, (1, 8, 8), levels=17, options=recipes.NetOptions(hidden=8, depth=1))
    assert type(lattice) is pd.DenoiserModel and isinstance(lattice.net, nn.LatticeDenoiser)
    assert lattice.denoise(x, t).shape == x.shape
    chain = recipes.process("uniform", 17)
    cat = recipes.build_model(chain, (1, 8, 8), levels=17, net="unet",
                              options=recipes.NetOptions(base=8, mults=(1,)))
    assert type(cat) is pd.CategoricalModel
    assert cat.net(x.long(), t).shape == (2, 1, 8, 8, 17)  # one logit per state and pixel
    with pytest.raises(recipes.OptionError, match="net: unet needs images"):
        recipes.build_model(vp, (64,), levels=17, net="unet")


def test_loss_dispatches_on_the_model():
    vp = recipes.process("vp", 17)
    eps = recipes.build_model(vp, (4,), levels=17, model="epsilon", options=recipes.NetOptions(hidden=8, depth=1))
    default = recipes.loss(eps, transform=data.Dequantize(17))
    assert isinstance(default, losses.DenoisingScoreMatching)
    assert isinstance(default.weighting, losses.ImportanceSampled)
    q = default.quantization
    assert (q.levels, q.lo, q.hi) == (17, -1.0, 1.0)
    assert recipes.loss(eps, "natural").quantization is None  # no dequantised data: targets as given
    cat = recipes.build_model(pd.UniformChain(5), (4,), levels=5, options=recipes.NetOptions(hidden=8, depth=1))
    assert isinstance(recipes.loss(cat), losses.CategoricalCrossEntropy)
    bo = recipes.build_model(pd.Blackout(max_count=4), (4,), levels=5, options=recipes.NetOptions(hidden=8, depth=1))
    assert isinstance(recipes.loss(bo, "blackout-original").weighting, losses.BlackoutOriginal)


def test_solvers_and_grids_by_name():
    solver, noise = recipes.solver("ddim")
    assert isinstance(solver, solvers.Ancestral) and noise == 0.0
    assert recipes.solver("heun")[1] == 0.0 and recipes.solver("euler-maruyama")[1] == 1.0
    grid = recipes.grid("karras", 7)
    assert isinstance(grid, pd.grids.Karras) and grid.times(pd.VESDE()).shape == (8,)
