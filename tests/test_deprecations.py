"""Public names that moved in the layered layout keep their old import path for one release, with a warning."""

import importlib
import sys

import pytest
import torch

import probdiff as pd
from probdiff.reverse import BlackoutReverse, ChainReverse, GaussianReverse

OLD_PATHS = {
    "probdiff.processes.discrete": {"MarkovChain": pd.MarkovChain, "UniformChain": pd.UniformChain},
    "probdiff.models.discrete": {"CategoricalModel": pd.CategoricalModel, "BlackoutModel": pd.BlackoutModel},
    "probdiff.losses.discrete": {"BlackoutLoss": pd.losses.BlackoutLoss, "LogitTime": pd.LogitTime},
    "probdiff.likelihood.discrete": {"chain_elbo": pd.likelihood.chain_elbo, "prior_kl": pd.likelihood.prior_kl},
    "probdiff.likelihood.timechange": {"LogSNRTime": pd.LogSNRTime, "PhysicalTime": pd.PhysicalTime},
    "probdiff.likelihood.gaussian_elbo": {"gaussian_elbo": pd.likelihood.gaussian_elbo},
    "probdiff.solvers.discrete": {"TauLeaping": pd.solvers.TauLeaping, "BinomialBridge": pd.solvers.BinomialBridge},
    "probdiff.solvers.gaussian": {"GaussianReverse": GaussianReverse},
    "probdiff.grids.base": {"Grid": pd.grids.Grid, "Uniform": pd.grids.Uniform, "Explicit": pd.grids.Explicit},
    "probdiff.grids.gaussian": {"Karras": pd.grids.Karras, "LogSNR": pd.grids.LogSNR,
                                "ScoreOptimal": pd.grids.ScoreOptimal},
    "probdiff.grids.endpoint": {"EndpointOptimal": pd.grids.EndpointOptimal},
    "probdiff.grids.discrete": {"LogitObservation": pd.grids.LogitObservation},
    "probdiff.reverse_discrete": {"ChainReverse": ChainReverse, "BlackoutReverse": BlackoutReverse},
    "probdiff.oracles_discrete": {"EmpiricalChainModel": pd.oracles.EmpiricalChainModel},
}


@pytest.mark.parametrize("path", sorted(OLD_PATHS))
def test_old_module_path_warns_and_gives_the_same_objects(path):
    sys.modules.pop(path, None)
    with pytest.warns(DeprecationWarning, match=path.replace(".", r"\.") + " is deprecated"):
        module = importlib.import_module(path)
    for name, obj in OLD_PATHS[path].items():
        assert getattr(module, name) is obj
    assert set(module.__all__) >= set(OLD_PATHS[path])


@pytest.mark.parametrize("old, new", [
    (lambda: pd.likelihood.UniformLogSNR(), pd.LogSNRTime),
    (lambda: pd.likelihood.UniformTime(), pd.PhysicalTime),
    (lambda: pd.models.DiscreteModel(None, pd.UniformChain(3)), pd.ChainModel),
], ids=["UniformLogSNR", "UniformTime", "DiscreteModel"])
def test_deprecated_aliases_warn_and_behave_as_the_new_class(old, new):
    with pytest.warns(DeprecationWarning, match="deprecated; use probdiff"):
        obj = old()
    assert isinstance(obj, new)


def test_deprecated_sampler_alias_draws_as_the_time_variable():
    p = pd.VPSDE()
    with pytest.warns(DeprecationWarning):
        old = pd.likelihood.UniformLogSNR()
    a = old.sample(p, (4, 3), generator=torch.Generator().manual_seed(0), stratified=True)[0]
    b = pd.LogSNRTime().sample(p, (4, 3), generator=torch.Generator().manual_seed(0), stratified=True)[0]
    assert torch.equal(a, b)
