"""False alarms and detections of probdiff.testing.check_process (issue 18).

False alarms: ``check_process`` over hypothesis draws of every built-in strategy of
``probdiff.testing.strategies`` (every identity; ``--skip-simulation`` for the documented pattern), counting
draws with any failure. Detections: every planted error of ``tests/testing/test_planted_errors.py``, checked by
the identity it plants into. Prints one table row per strategy as it finishes.

    python benchmarks/false_alarms.py --draws 200 [--strategies ve_sdes,vp_sdes] [--skip-simulation]
"""

from __future__ import annotations

import argparse
import time

import torch
from hypothesis import HealthCheck, Phase, given, seed, settings

from probdiff import testing as pt
from probdiff.testing import strategies as pst

STRATEGIES = ["vp_sdes", "subvp_sdes", "ve_sdes", "cosine_vps", "linear_blends", "linear_sdes",
              "uniform_chains", "absorbing_chains", "blackouts", "random_chains"]


def sweep(name: str, draws: int, skip, budget: float, hypothesis_seed=None) -> tuple[int, int, list, float]:
    results = []
    start = time.perf_counter()

    @settings(max_examples=draws, derandomize=hypothesis_seed is None, database=None, deadline=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(getattr(pst, name)())
    def run(process):
        if time.perf_counter() - start > budget:
            return
        report = pt.check_process(process, skip=skip, raise_on_failure=False)
        results.append((repr(process), [r.identity.name for r in report.failures], report))

    (run if hypothesis_seed is None else seed(hypothesis_seed)(run))()
    alarms = [(p, f) for p, f, _ in results if f]
    return len(results), len(alarms), alarms, time.perf_counter() - start


def plants(seeds: int) -> None:
    """Detection rate of every planted error of tests/testing/test_planted_errors.py over ``seeds`` seeds."""
    import importlib.util
    import pathlib

    path = pathlib.Path(__file__).resolve().parents[1] / "tests" / "testing" / "test_planted_errors.py"
    spec = importlib.util.spec_from_file_location("planted", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    cases = [(name, make, check) for name, (make, check) in mod.PLANTED.items()]
    cases += [("posterior variance +0.1 %", mod.PosteriorVarianceOffByTenthOfAPercent, pt.assert_bayes),
              ("drift +0.1 % on a tenth of [t_min, t_max]", mod.DriftOffOnATenth, pt.assert_coefficients),
              ("chain rate +1 %", lambda: mod.RateOffByOnePercent(3), pt.assert_generator)]
    print(f"{'planted error':44s} {'caught':>8s}", flush=True)
    for name, make, check in cases:
        caught = 0
        for k in range(seeds):
            try:
                check(make(), seed=k)
            except pt.IdentityError:
                caught += 1
        print(f"{name:44s} {caught:3d} of {seeds}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--draws", type=int, default=200)
    parser.add_argument("--strategies", default=",".join(STRATEGIES))
    parser.add_argument("--skip-simulation", action="store_true")
    parser.add_argument("--budget", type=float, default=1e9, help="seconds per strategy")
    parser.add_argument("--seed", type=int, default=None, help="hypothesis seed (default: derandomised draws)")
    parser.add_argument("--plants", type=int, default=0, help="only the planted errors, over this many seeds")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.plants:
        plants(args.plants)
        return
    skip = [pt.SIMULATION] if args.skip_simulation else []
    print(f"{'strategy':18s} {'draws':>6s} {'false alarms':>13s} {'seconds':>8s}", flush=True)
    for name in args.strategies.split(","):
        n, bad, alarms, secs = sweep(name, args.draws, skip, args.budget, args.seed)
        print(f"{name:18s} {n:6d} {bad:13d} {secs:8.0f}", flush=True)
        for process, failed in alarms:
            print(f"    {process}: {failed}", flush=True)


if __name__ == "__main__":
    main()
