"""What every model shares: a network ``net(x, t)`` bound to the process it models."""

from __future__ import annotations

import torch

from .._util import check_network_output
from ..processes.base import ForwardProcess

__all__ = ["Model", "bind"]


class Model:
    """Base of every model: holds ``net`` and ``process`` and validates both.

    Subclasses set :attr:`process_type` (the family they model) and add their parameterisations.

    Args:
        net: callable ``net(x, t)`` (``None`` for exact oracles, which compute without a network).
        process: the forward process the model belongs to (an instance of :attr:`process_type`).
    """

    process_type: type = ForwardProcess

    def __init__(self, net, process):
        if not isinstance(process, self.process_type):
            raise ValueError(f"process must be a {self.process_type.__name__}, got {type(process).__name__}")
        if net is not None and not callable(net):
            raise ValueError(f"net must be callable as net(x, t), got {type(net).__name__}")
        self.net = net
        self.process = process

    @staticmethod
    def _check_batch(x: torch.Tensor) -> None:
        """Raise unless ``x`` is a tensor of shape ``(batch, *event)``."""
        if not isinstance(x, torch.Tensor) or x.dim() < 2:
            raise ValueError(f"x must be a tensor of shape (batch, *event), got "
                             f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}")

    def _checked(self, out, shape, *, floating: bool = True, logits: bool = False):
        """What the network returned, checked (shape, dtype, finiteness) when the process validates; the
        message names the network (:func:`probdiff._util.check_network_output`)."""
        if self.process.validate_args:
            what = f"{type(self).__name__}.net = {_name(self.net)}: net(x, t)"
            check_network_output(out, shape, what=what, floating=floating, logits=logits)
        return out

    def __repr__(self) -> str:
        return f"{type(self).__name__}(net={self.net!r}, process={self.process!r})"


def _name(net) -> str:
    """A short name of a network for messages: its class, or a function's name."""
    if isinstance(net, torch.nn.Module):
        return type(net).__name__
    return getattr(net, "__qualname__", type(net).__name__)


def bind(process_or_model, model=None, *, entry: str):
    """``(process, model)`` for an entry point that takes a model alone or a process and its model.

    The model carries its process: ``entry(model, ...)`` uses ``model.process``; ``entry(process, model,
    ...)`` must give the very process the model was built with.

    Raises:
        ValueError: no model, an object that is not a :class:`Model`, or a process that is not the
            model's (the message names both).
    """
    if isinstance(process_or_model, Model):
        if model is not None:
            raise ValueError(f"{entry}: give a model alone ({entry}(model, ...)) or a process and its model "
                             f"({entry}(process, model, ...)), got two models")
        return process_or_model.process, process_or_model
    process = process_or_model
    if not isinstance(process, ForwardProcess):
        raise ValueError(f"process must be a ForwardProcess (a process family registered with probdiff) or a model "
                         f"alone ({entry}(model, ...)), got {type(process).__name__}")
    if not isinstance(model, Model):
        raise ValueError(f"model must be a probdiff Model (DenoiserModel, EpsilonModel, ScoreModel, VelocityModel, "
                         f"CategoricalModel, BlackoutModel or an oracle's model), got {type(model).__name__}")
    if model.process is not process:
        raise ValueError(f"process {process!r} is not the model's process {model.process!r}: the model was built "
                         f"for another process; pass the model alone ({entry}(model, ...)) or the process it was "
                         "built with")
    return process, model
