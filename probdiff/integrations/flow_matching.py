r"""Flow-matching velocity networks as probdiff models (no dependency: the ``flow_matching`` package is not needed).

Flow matching (Lipman et al., "Flow Matching for Generative Modeling", ICLR 2023; Lipman et al., "Flow Matching
Guide and Code", 2024, §4.8 for affine paths, as in the ``flow_matching`` package) runs its time *from noise to
data*: :math:`X_t = \alpha_t X_1 + \sigma_t X_0`, :math:`X_0 \sim \mathcal N(0, I)` (source) at :math:`t = 0`,
data :math:`X_1` at :math:`t = 1`, and the network learns :math:`u_t(x) = E[\dot\alpha_t X_1 + \dot\sigma_t X_0
\mid X_t = x]`. probdiff's time runs the other way, :math:`s = 1 - t`, with :math:`\alpha^{pd}_s = \alpha_{1-s}`,
:math:`\sigma^{pd}_s = \sigma_{1-s}`, so its velocity :math:`v = dx/ds` is :math:`v(x, s) = -u(x, 1 - s)`:

.. list-table::
   :header-rows: 1

   * - flow_matching scheduler (path)
     - probdiff process
   * - ``CondOTScheduler``: :math:`\alpha_t = t`, :math:`\sigma_t = 1-t`
     - ``pd.LinearBlend()`` (rectified flow, IADB)
   * - ``CosineScheduler``: :math:`\alpha_t = \sin\tfrac{\pi t}{2}`, :math:`\sigma_t = \cos\tfrac{\pi t}{2}`
     - ``pd.CosineVP(offset=0.0)``
   * - ``VPScheduler(beta_min, beta_max)``
     - ``pd.VPSDE(beta_min, beta_max)``

The likelihood of the model, ``pd.log_likelihood(model, x)``, is then what ``ODESolver.compute_likelihood``
computes (from data at :math:`t = 1` back to the source), on probdiff's domain ``[t_min, t_max]``: take
``pd.LinearBlend(t_min=..., t_max=1.0)`` for the whole path up to a tiny ``t_min``.
"""

from __future__ import annotations

from ..models.gaussian import VelocityModel
from ..processes.gaussian import GaussianProcess, LinearBlend, as_gaussian

__all__ = ["FlowMatchingVelocity", "wrap"]


class FlowMatchingVelocity:
    """``net(x, s)`` for probdiff from a flow-matching velocity ``velocity(x, t, **extras)``:
    :math:`-u(x, 1 - s)` (``t`` of shape ``(batch,)``)."""

    def __init__(self, velocity, **extras):
        if not callable(velocity):
            raise ValueError(f"velocity must be callable as velocity(x, t), got {type(velocity).__name__}")
        self.velocity, self.extras = velocity, extras

    def __call__(self, x, s):
        return -self.velocity(x, 1.0 - s, **self.extras)

    def __repr__(self) -> str:
        return f"FlowMatchingVelocity({self.velocity!r})"


def wrap(velocity, process: GaussianProcess | None = None, **extras):
    r"""``(process, model)`` for a flow-matching velocity :math:`u(x, t)` (time from noise 0 to data 1).

    Args:
        velocity: called as ``velocity(x, t, **extras)`` (a ``flow_matching.utils.ModelWrapper`` works).
        process: the probdiff process of the path, mirrored in time (table in the module docstring);
            default ``pd.LinearBlend()``, the conditional-OT path.
        extras: passed to every call (e.g. class labels).

    Returns:
        ``(process, VelocityModel)`` with probdiff velocity :math:`v(x, s) = -u(x, 1 - s)`.
    """
    process = LinearBlend() if process is None else as_gaussian(process, needed_for="an affine probability path")
    return process, VelocityModel(FlowMatchingVelocity(velocity, **extras), process)
