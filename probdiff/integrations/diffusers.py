r"""Hugging Face diffusers models as probdiff models (optional dependency ``diffusers``, imported lazily).

:func:`wrap` turns a ``UNet2DModel``-like network (anything called as ``unet(x, timestep).sample``) and a
DDPM-family scheduler (anything with ``alphas_cumprod`` and ``config.prediction_type``: DDPM, DDIM, PNDM,
DPM-Solver, ...) into a :class:`~probdiff.DiscreteVP` and a Gaussian model of it. Time conventions:

.. list-table::
   :header-rows: 1

   * - diffusers
     - probdiff (:class:`~probdiff.DiscreteVP`)
     - relation
   * - timestep ``k = 0..N-1``
     - time :math:`t_k = (k+1)/N`
     - ``process.time_of_step(k)``, ``process.step_of_time(t) = tN - 1``
   * - ``alphas_cumprod[k]``
     - :math:`\alpha_{t_k}^2`
     - exact at the N steps (log-SNR interpolated in between)
   * - ``add_noise(x0, eps, k)``
     - ``marginal(x0, t_k)``
     - :math:`\sqrt{\bar\alpha_k}x_0 + \sqrt{1-\bar\alpha_k}\epsilon`
   * - ``epsilon``
     - :class:`~probdiff.EpsilonModel`
     - :math:`\epsilon`
   * - ``v_prediction``
     - :class:`~probdiff.EpsilonModel`
     - :math:`\epsilon = \sigma_t x + \alpha_t v` (Salimans & Ho 2022, §4: :math:`v = \alpha_t\epsilon - \sigma_t x_0`)
   * - ``sample``
     - :class:`~probdiff.DenoiserModel`
     - :math:`\hat x_0`

Between the training steps the network is called with the *fractional* timestep ``tN - 1`` (its sinusoidal
embedding is defined for any real number); probdiff's solvers and likelihoods call it there unless they use
``process.native_grid()``. Nothing is downloaded: :func:`load` reads a local ``save_pretrained`` directory.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..models.gaussian import DenoiserModel, EpsilonModel
from ..processes.discrete_vp import DiscreteVP

__all__ = ["DiffusersNet", "wrap", "load", "PREDICTION_TYPES"]

#: The scheduler ``prediction_type`` values :func:`wrap` accepts.
PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")


def _module_dtype(net):
    """The floating dtype of an ``nn.Module``'s parameters, or None (a plain callable)."""
    if isinstance(net, torch.nn.Module):
        for param in net.parameters():
            if param.is_floating_point():
                return param.dtype
    return None


class DiffusersNet:
    r"""``net(x, t)`` for probdiff from a diffusers network ``unet(x, timestep).sample``.

    Calls ``unet(x, process.step_of_time(t))`` (the fractional timestep :math:`tN - 1`, float32 or float64) with
    ``x`` in the network's dtype
    and returns its output in ``x``'s dtype; for ``v_prediction`` it returns the epsilon
    :math:`\sigma_t x + \alpha_t v` instead (the network's :math:`v = \alpha_t\epsilon - \sigma_t x_0`).

    Args:
        unet: a ``UNet2DModel`` or any callable returning an object with a ``.sample`` tensor.
        process: the :class:`~probdiff.DiscreteVP` of the scheduler.
        prediction_type: one of :data:`PREDICTION_TYPES`.
    """

    def __init__(self, unet, process: DiscreteVP, prediction_type: str):
        if prediction_type not in PREDICTION_TYPES:
            raise ValueError(f"prediction_type must be one of {PREDICTION_TYPES}, got {prediction_type!r}")
        self.unet, self.process, self.prediction_type = unet, process, prediction_type
        self.dtype = _module_dtype(unet)

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        dtype = self.dtype or x.dtype
        # the timestep in float32 at least (float16 cannot hold 999.5; diffusers embeds timesteps in float32)
        step = self.process.step_of_time(t).to(torch.float64 if dtype == torch.float64 else torch.float32)
        out = self.unet(x.to(dtype), step).sample.to(x.dtype)
        if self.prediction_type == "v_prediction":
            shape = (-1,) + (1,) * (x.dim() - 1)
            alpha, sigma = self.process.alpha(t).reshape(shape), self.process.sigma(t).reshape(shape)
            return sigma * x + alpha * out
        return out

    def __repr__(self) -> str:
        return f"DiffusersNet({type(self.unet).__name__}, prediction_type={self.prediction_type!r})"


def wrap(unet, scheduler, *, t_min: float | None = None):
    """``(process, model)`` for a diffusers network and its DDPM-family scheduler.

    The process is ``DiscreteVP(scheduler.alphas_cumprod)`` (the scheduler's own table, so
    ``process.marginal(x0, process.time_of_step(k))`` is ``scheduler.add_noise`` at timestep ``k``); the model
    is an :class:`~probdiff.EpsilonModel` (``epsilon``, ``v_prediction``) or a :class:`~probdiff.DenoiserModel`
    (``sample``) of a :class:`DiffusersNet`. Sampling-only scheduler options (``clip_sample``, thresholding,
    timestep spacing) are not part of the process.

    Args:
        unet: called as ``unet(x, timestep).sample``.
        scheduler: has ``alphas_cumprod`` and ``config.prediction_type``.
        t_min: the process' data time (see :class:`~probdiff.DiscreteVP`).

    Raises:
        ValueError: the scheduler has no beta table or an unknown prediction type, or its table does not
            decrease strictly inside (0, 1) (e.g. ``rescale_betas_zero_snr``, whose last step is pure noise).
    """
    try:
        table, prediction_type = scheduler.alphas_cumprod, scheduler.config.prediction_type
    except AttributeError:
        raise ValueError(f"scheduler must be a DDPM-family diffusers scheduler (with alphas_cumprod and "
                         f"config.prediction_type), got {type(scheduler).__name__}") from None
    if prediction_type not in PREDICTION_TYPES:
        raise ValueError(f"scheduler.config.prediction_type must be one of {PREDICTION_TYPES}, got {prediction_type!r}")
    try:
        process = DiscreteVP(torch.as_tensor(table), t_min=t_min)
    except ValueError as err:
        raise ValueError(f"the scheduler's alphas_cumprod is not a usable table: {err} (a zero terminal SNR "
                         "has no Gaussian prior)") from None
    net = DiffusersNet(unet, process, prediction_type)
    model_type = DenoiserModel if prediction_type == "sample" else EpsilonModel
    return process, model_type(net, process)


def load(path, *, t_min: float | None = None, torch_dtype=None):
    """``(process, model)`` from a local ``save_pretrained`` directory; nothing is downloaded.

    Accepts a pipeline directory (``model_index.json`` with ``unet/`` and ``scheduler/``, as
    ``DDPMPipeline.save_pretrained`` writes) or a directory holding ``unet/`` and ``scheduler/`` alone. The
    network must be a ``UNet2DModel``; the scheduler is read as a ``DDPMScheduler`` (only its table and
    prediction type matter to the process).

    Raises:
        ValueError: the path does not exist, is not a directory, or holds no diffusers UNet2DModel and
            scheduler (the message lists what was expected).
        ImportError: diffusers is not installed (``pip install "probdiff[diffusers]"``).
    """
    root = Path(path)
    if not root.exists():
        raise ValueError(f"no such directory: {str(root)!r} (load reads a local save_pretrained directory; "
                         "nothing is downloaded)")
    if not root.is_dir():
        raise ValueError(f"{str(root)!r} is not a directory (expected a diffusers save_pretrained directory)")
    unet_dir, sched_dir = root / "unet", root / "scheduler"
    missing = [str(p.relative_to(root)) for p in (unet_dir / "config.json", sched_dir / "scheduler_config.json")
               if not p.is_file()]
    if missing:
        raise ValueError(f"{str(root)!r} is not a diffusers save_pretrained directory: missing {', '.join(missing)} "
                         "(expected unet/ with a UNet2DModel and scheduler/ with a DDPM-family scheduler)")
    import json

    class_name = json.loads((unet_dir / "config.json").read_text()).get("_class_name")
    if class_name != "UNet2DModel":
        raise ValueError(f"{str(unet_dir)!r} holds a {class_name!r}; only UNet2DModel (called as unet(x, t)) is "
                         "supported")
    diffusers = _import_diffusers()
    kwargs = {"local_files_only": True}
    if torch_dtype is not None:
        kwargs["torch_dtype"] = torch_dtype
    unet = diffusers.UNet2DModel.from_pretrained(str(unet_dir), **kwargs).eval()
    scheduler = diffusers.DDPMScheduler.from_pretrained(str(sched_dir), local_files_only=True)
    return wrap(unet, scheduler, t_min=t_min)


def _import_diffusers():
    try:
        import diffusers
    except ImportError as err:
        raise ImportError('probdiff.integrations.diffusers.load needs diffusers: pip install "probdiff[diffusers]"') \
            from err
    return diffusers
