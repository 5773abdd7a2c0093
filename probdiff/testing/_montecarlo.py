"""Monte-Carlo comparisons of simulated moments with their closed forms, with an error budget.

A simulation's statistic differs from the exact one by Monte-Carlo noise *and* by the discretisation error
of its time steps. :func:`simulate_adaptively` runs every simulation on two nested grids (steps h and h/2,
the same random numbers), refines while the step-halving (Richardson) estimate of the discretisation error
exceeds half the Monte-Carlo tolerance, and :func:`moment_check` allows both in its tolerance and reports
both on failure: a wrong identity leaves a difference that does not shrink with the step.
"""

from __future__ import annotations

import math

import torch

from ._config import CheckConfig
from ._core import fail_worst
from ._numerics import halving_error, refine

__all__ = ["moment_check", "discretisation_ratio", "simulate_adaptively"]


# ==================================================================== Monte-Carlo moments
def _sample_moments(samples: torch.Tensor):
    n = samples.shape[0]
    m_hat = samples.mean(0)
    centred = samples - m_hat
    v_hat = centred.pow(2).mean(0) * n / (n - 1)
    return m_hat, v_hat, samples.std(0) / math.sqrt(n), centred.pow(2).std(0) / math.sqrt(n)


def moment_check(identity, process, what: str, samples: torch.Tensor, mean: torch.Tensor, var: torch.Tensor,
                 config: CheckConfig, context: dict, *, coarse: torch.Tensor | None = None,
                 order: float = 1.0) -> None:
    """Compare the per-coordinate mean and variance of ``samples`` (shape ``(n, d)``) with the expected
    ``mean`` and ``var`` (shape ``(d,)``).

    The tolerance is ``z`` empirical standard errors, plus the discretisation error estimated by step
    halving when ``coarse`` (the same simulation with twice the step, on the same random numbers) is given
    (:func:`~probdiff.testing._numerics.halving_error`, weak ``order``), plus ``mc_bias`` of the statistic's
    scale as a floor. A failure reports both the Monte-Carlo standard error and the discretisation error
    estimate, so that a wrong identity (a difference that does not shrink with the step) is told apart from
    a too coarse simulation.
    """
    m_hat, v_hat, se_m, se_v = _sample_moments(samples)
    disc_m = torch.zeros_like(m_hat)
    disc_v = torch.zeros_like(v_hat)
    if coarse is not None:
        m_c, v_c, _, _ = _sample_moments(coarse)
        disc_m, disc_v = halving_error(m_hat, m_c, order), halving_error(v_hat, v_c, order)
    sd = var.sqrt()
    for stat, observed, expected, se, disc, scale in (("mean", m_hat, mean, se_m, disc_m, sd),
                                                      ("variance", v_hat, var, se_v, disc_v, var)):
        ctx = dict(context)
        ctx[f"Monte-Carlo standard error of the {stat}"] = se
        if coarse is not None:
            ctx[f"discretisation error estimate of the {stat} (step halving)"] = disc
        fail_worst(identity, process, f"{what}: sample {stat} vs expected {stat}", observed[None], expected[None],
                   (config.z * se + disc + config.mc_bias * scale)[None], ctx)


def discretisation_ratio(samples: torch.Tensor, coarse: torch.Tensor, config: CheckConfig, order: float) -> float:
    """Largest ratio of the step-halving error estimate of the mean and variance to their Monte-Carlo
    tolerance ``z`` standard errors: above 1/2 the simulation's own error dominates and the grid is refined."""
    m_hat, v_hat, se_m, se_v = _sample_moments(samples)
    m_c, v_c, _, _ = _sample_moments(coarse)
    r_m = halving_error(m_hat, m_c, order) / (config.z * se_m).clamp_min(1e-300)
    r_v = halving_error(v_hat, v_c, order) / (config.z * se_v).clamp_min(1e-300)
    return float(torch.cat([r_m, r_v]).max())


def simulate_adaptively(simulate, ts: torch.Tensor, config: CheckConfig, order: float, *, max_refinements: int = 3):
    """Run ``simulate(fine_nodes) -> {t_out: (fine_samples, coarse_samples)}`` on ``refine(ts)`` (the coarse run
    on ``ts``, the same random numbers), refining the grid while the step-halving error estimate exceeds
    half the Monte-Carlo tolerance, at most ``max_refinements`` times. Returns ``(outputs, fine_nodes)``."""
    fine = refine(ts)
    for level in range(max_refinements + 1):
        out = simulate(fine)
        worst = max(discretisation_ratio(a, b, config, order) for a, b in out.values())
        if worst <= 0.5 or level == max_refinements:
            return out, fine
        fine = refine(fine)
    return out, fine
