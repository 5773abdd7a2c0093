"""Networks, model parameterisations and training losses by name (see :mod:`probdiff.recipes`)."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Callable

import torch

from ..losses import (BlackoutLikelihood, BlackoutLoss, BlackoutOriginal, CategoricalCrossEntropy, DenoisingScoreMatching,
                      ImportanceSampled, LikelihoodWeighting, Natural)
from ..data import Dequantize
from ..lattice import Quantization
from ..models import BlackoutModel, CategoricalModel, DenoiserModel, EpsilonModel, ScoreModel, VelocityModel
from ..models.gaussian import GaussianModel
from ..nn import MLP, LatticeDenoiser, UNet
from ..processes import ForwardProcess
from .families import OptionError, defaults, lookup

__all__ = ["NetOptions", "NETS", "Parameterisation", "LevelLogits", "MODELS", "build_model", "WEIGHTINGS", "loss"]


# ==================================================================== networks and models
@dataclass(frozen=True)
class NetOptions:
    """Sizes of the built-in networks (each network reads the fields that concern it).

    ``hidden``, ``depth``: width and residual blocks of the MLP; ``base``, ``mults``: channels at the first
    level and multipliers per level of the U-Net; ``dropout``: dropout rate inside the blocks.
    """

    hidden: int = 256
    depth: int = 3
    base: int = 32
    mults: tuple[int, ...] = (1, 2)
    dropout: float = 0.0


class _StateLogits(torch.nn.Module):
    """A U-Net with ``C·S`` output channels seen as per-pixel logits ``(batch, C, H, W, S)``."""

    def __init__(self, unet: UNet, states: int):
        super().__init__()
        self.unet, self.states = unet, states

    def forward(self, x, t):
        out = self.unet(x, t)
        b, _, h, w = out.shape
        return out.reshape(b, -1, self.states, h, w).permute(0, 1, 3, 4, 2)


def _mlp(shape, states, time, o: NetOptions) -> torch.nn.Module:
    return MLP(shape, hidden=o.hidden, depth=o.depth, time=time, dropout=o.dropout,
               out_shape=None if states is None else (*shape, states))


def _unet(shape, states, time, o: NetOptions) -> torch.nn.Module:
    if len(shape) != 3:
        raise OptionError("net", f"unet needs images of shape (C, H, W), the data have shape {tuple(shape)}; "
                                 "use mlp")
    if states is None:
        return UNet(shape[0], base=o.base, mults=tuple(o.mults), time=time, dropout=o.dropout)
    return _StateLogits(UNet(shape[0], base=o.base, mults=tuple(o.mults), time=time,
                             out_channels=shape[0] * states, dropout=o.dropout), states)


#: Networks by name — ``f(event_shape, out_states, time_embedding, options) -> nn.Module``.
NETS: dict[str, Callable] = {"mlp": _mlp, "unet": _unet}


class Parameterisation:
    """What the network predicts: sizes its outputs and wraps it as a model (``cls(net, process)``)."""

    def __init__(self, cls):
        self.cls = cls

    def output_states(self, process: ForwardProcess, transform) -> int | None:
        """Outputs per data dimension: the family's (:meth:`~probdiff.recipes.families.Defaults.output_states`)."""
        return defaults(process).output_states(process)

    def __call__(self, net, process, transform):
        return self.cls(net, process)


class LevelLogits(Parameterisation):
    """``model="lattice"``: a :class:`~probdiff.DenoiserModel` whose network is a
    :class:`~probdiff.nn.LatticeDenoiser` head — the network outputs one logit per data level and dimension,
    and the posterior within each bin of the dequantised data is exact (:mod:`probdiff.nn.lattice`)."""

    def __init__(self):
        super().__init__(DenoiserModel)

    def output_states(self, process, transform) -> int:
        """Logits per dimension: the number of data levels."""
        return self._lattice(transform).levels

    def __call__(self, net, process, transform) -> DenoiserModel:
        return DenoiserModel(LatticeDenoiser(net, process, self._lattice(transform)), process)

    @staticmethod
    def _lattice(transform) -> Quantization:
        if not isinstance(transform, Dequantize):
            raise OptionError("model", "lattice needs a Gaussian process on dequantised data (process vp, "
                                       "subvp, ve, cosine or blend)")
        return transform.lattice


#: Model parameterisations by name.
MODELS: dict[str, Parameterisation] = {
    "denoiser": Parameterisation(DenoiserModel),
    "epsilon": Parameterisation(EpsilonModel),
    "score": Parameterisation(ScoreModel),
    "velocity": Parameterisation(VelocityModel),
    "lattice": LevelLogits(),
    "blackout": Parameterisation(BlackoutModel),
    "categorical": Parameterisation(CategoricalModel),
}


def build_model(process: ForwardProcess, event_shape, *, levels: int, model: str | None = None, net: str = "mlp",
                options: NetOptions = NetOptions()):
    """A fresh model for ``process`` on K-level data of shape ``event_shape``.

    Args:
        process: the forward process (the model carries it).
        event_shape: shape of one data point, e.g. ``(1, 8, 8)``.
        levels: K, the number of data levels (sizes the lattice head and the data transform).
        model: parameterisation, a key of :data:`MODELS` (default: the family's, :func:`defaults`).
        net: network, a key of :data:`NETS`.
        options: the network's sizes.
    """
    family = defaults(process)
    maker = lookup("model", model or family.model, MODELS)
    transform = family.transform(levels)
    states = maker.output_states(process, transform)
    network = lookup("net", net, NETS)(tuple(event_shape), states, family.time_embedding(process), options)
    return maker(network, process, transform)


# ==================================================================== losses
#: Loss weightings by name (which apply to which model — :func:`loss`).
WEIGHTINGS: dict[str, Callable] = {
    "natural": Natural,
    "likelihood": LikelihoodWeighting,
    "importance": ImportanceSampled,
    "blackout-likelihood": BlackoutLikelihood,
    "blackout-original": BlackoutOriginal,
}


def _weighting(model, name: str | None, allowed: tuple[str, ...]):
    """The weighting called ``name`` (default: ``allowed[0]``), if it applies to ``model``."""
    name = allowed[0] if name is None else name
    if name not in allowed:
        raise OptionError("weighting", f"{name!r} does not apply to {type(model).__name__}; allowed: "
                                       f"{', '.join(allowed)}")
    return WEIGHTINGS[name]()


@functools.singledispatch
def loss(model, weighting: str | None = None, transform=None):
    """The training loss of ``model`` (dispatch on the model class; register your own model's).

    Args:
        model: the model to train (it carries its process).
        weighting: a key of :data:`WEIGHTINGS` (default: the model's).
        transform: the data transform the trainer applies (:meth:`Defaults.transform`).
    """
    raise ValueError(f"no training loss for {type(model).__name__}; register one with "
                     f"@probdiff.recipes.loss.register({type(model).__name__})")


@loss.register
def _(model: GaussianModel, weighting=None, transform=None):
    # Default: the ELBO with t importance-sampled. On dequantised data the model regresses on the
    # Rao-Blackwellised targets (quantization=): the same minimiser without the within-bin variance of the
    # dequantisation noise.
    w = _weighting(model, weighting, ("importance", "natural", "likelihood"))
    lattice = transform.lattice if isinstance(transform, Dequantize) else None
    return DenoisingScoreMatching(model.process, w, quantization=lattice)


@loss.register
def _(model: BlackoutModel, weighting=None, transform=None):
    return BlackoutLoss(model.process, _weighting(model, weighting, ("blackout-likelihood", "blackout-original")))


@loss.register
def _(model: CategoricalModel, weighting=None, transform=None):
    _weighting(model, weighting, ("natural",))  # the cross-entropy is the chain's ELBO: no other weighting
    return CategoricalCrossEntropy(model.process)
