"""Chains at vocabulary scale: the closed forms of the interpolating chains against the generic chain.

Setup:

* Chains: ``UniformChain``, ``AbsorbingChain`` (masking) and ``UniformAbsorbingChain`` (their mixture), each
  with its closed forms (:mod:`probdiff.processes.interpolating`), and the *generic* chain
  ``pd.MarkovChain(chain.generator)`` with the same rates (matrix exponentials and dense ``S x S`` rows).
* Data: a batch of 8 sequences x 1024 tokens drawn uniformly over the data states; ``x_t`` from the chain's
  marginal; a model output ``p(x_0 | x_t)`` = softmax of Gaussian logits, float32, ``(8, 1024, S)``.
* Queries, each timed on its own (best of ``--repeat`` runs, ``torch.set_num_threads(1)``):
  marginal (build + ``log_prob``), ``sample_marginal``, transition (``log_prob``), posterior (``log_prob``
  and ``sample``), ``reverse_rates``, ``reverse_kernel_log_probs``, ``prior_kl``, ``sample_prior`` and one
  ancestral step (the dense mixture-of-posteriors kernel and a categorical draw, ``ChainReverse``).
* Table 1: small ``S`` (8, 64, 256), closed form vs generic, ratio = generic / closed form.
* Table 2: ``S`` = 1024 ... 50,257 (GPT-2's vocabulary), closed forms only, with time / S to show that the cost
  grows at most linearly in ``S``; the goal is every query under 0.5 s at S = 50,257. Two floors are timed in
  the same run: writing one fresh ``(8, 1024, S)`` float32 tensor (the least a query with a dense output can
  cost), writing into one allocated before the timing (the floor of the ``out=`` forms, which write the dense
  result into a buffer a sampler reuses) and reading one (``sum(-1)``, the least a query that reads the model's
  output can cost).
* ``kernel.log_prob`` and ``kernel.draw`` score and draw the step's law given the dense model output without
  forming a dense result (:class:`probdiff.processes.posterior_mixture.PosteriorMixture`); the ancestral step
  uses the same law.

Run: ``python benchmarks/chains.py [--quick] [--threads N]`` (``--quick``: fewer sizes, one repeat). A dense
``(8, 1024, 50257)`` float32 output is 1.6 GB: on 4 kB pages most of the time of writing it is the kernel's
first-touch page faults, which PyTorch (>= 2.2) avoids for tensors of 2 MB and more with
``THP_MEM_ALLOC_ENABLE=1`` (transparent huge pages; the variable must be set before ``import torch``); the
header says whether it was set.
"""

from __future__ import annotations

import argparse
import gc
import os
import time

import torch

import probdiff as pd

BATCH, LENGTH = 8, 1024


VALIDATE = None      # the chains' argument checks: None = probdiff's default (on); --no-validate turns them off


def chains(s: int):
    v = VALIDATE
    return {"uniform": pd.UniformChain(s, validate_args=v), "masking": pd.AbsorbingChain(s, validate_args=v),
            "mixture": pd.UniformAbsorbingChain(s, uniform_rate=0.2, mask_rate=0.8, validate_args=v)}


class Probs(pd.CategoricalModel):
    """A fixed model output, so that the ancestral step times the chain, not a network."""

    def __init__(self, process, probs):
        super().__init__(None, process)
        self.probs = probs

    def x0_probs(self, x, t):
        return self.probs


#: Queries whose output is a dense (batch, length, S) tensor (floor: writing one such tensor); "(out=)": written
#: into a buffer allocated once, outside the timing, as a sampler's loop would reuse it.
FRESH = ("reverse_rates", "reverse_kernel")
INTO = ("reverse_rates (out=)", "reverse_kernel (out=)")
DENSE_OUT = FRESH + INTO
#: Queries that read the model's dense (batch, length, S) output but write O(1) per token (floor: reading it).
DENSE_IN = ("kernel.log_prob", "kernel.draw", "ancestral step")


def queries(chain, data, probs):
    g = torch.Generator().manual_seed(1)
    b = data.shape[0]
    t, s = torch.full((b,), 2.0), torch.full((b,), 1.0)
    xt = chain.sample_marginal(data, t, generator=g)
    xs = chain.sample_marginal(data, s, generator=g)
    rev = pd.reverse(Probs(chain, probs))
    buf = torch.empty_like(probs)
    return {
        "marginal.log_prob": lambda: chain.marginal(data, t).log_prob(xt),
        "sample_marginal": lambda: chain.sample_marginal(data, t, generator=g),
        "transition.log_prob": lambda: chain.transition(data, s, t).log_prob(xt),
        "posterior.log_prob": lambda: chain.posterior(data, xt, s, t).log_prob(xs),
        "posterior.sample": lambda: chain.posterior(data, xt, s, t).sample(),
        "reverse_rates": lambda: chain.reverse_rates(probs, xt, t),
        "reverse_kernel": lambda: chain.reverse_kernel_log_probs(probs, xt, s, t),
        "reverse_rates (out=)": lambda: chain.reverse_rates(probs, xt, t, out=buf),
        "reverse_kernel (out=)": lambda: chain.reverse_kernel_log_probs(probs, xt, s, t, out=buf),
        # the step's law given the dense model output, without forming (8, 1024, S): structured for the
        # interpolating chains (PosteriorMixture), the dense categorical for the generic chain
        "kernel.log_prob": lambda: kernel_law(chain, probs, xt, s, t).log_prob(xs),
        "kernel.draw": lambda: chain.sample_reverse_kernel(probs, xt, s, t, generator=g),
        "prior_kl": lambda: chain.prior_kl(data),
        "sample_prior": lambda: chain.sample_prior(b, data.shape[1:], generator=g),
        "ancestral step": lambda: rev.ancestral_step(xt, t, s, 1.0, g),
    }


def kernel_law(chain, probs, xt, s, t):
    if isinstance(chain, pd.InterpolatingChain):
        return chain.reverse_kernel(probs, xt, s, t)
    return torch.distributions.Categorical(logits=chain.reverse_kernel_log_probs(probs, xt, s, t))


def best_time(fn, repeat: int) -> float:
    fn()                                                   # warm-up: first calls pay for lazy initialisation
    out = []
    for _ in range(repeat):
        gc.collect()
        t0 = time.perf_counter()
        r = fn()
        out.append(time.perf_counter() - t0)
        del r
    return min(out)


def inputs(chain, batch, length, seed=0):
    g = torch.Generator().manual_seed(seed)
    masked = isinstance(chain, (pd.AbsorbingChain, pd.UniformAbsorbingChain))
    n_data = chain.num_states - 1 if masked else chain.num_states
    data = torch.randint(0, n_data, (batch, length), generator=g)
    probs = torch.softmax(torch.randn(batch, length, chain.num_states, generator=g), -1)
    return data, probs


def small_table(sizes, repeat):
    print("Table 1: closed form vs generic chain (8 x 1024 tokens), seconds; ratio = generic / closed form")
    print(f"{'chain':8s} {'S':>5s} {'query':22s} {'closed':>9s} {'generic':>9s} {'ratio':>8s}")
    for s in sizes:
        for name, chain in chains(s).items():
            generic = pd.MarkovChain(chain.generator, t_max=chain.t_max)
            data, probs = inputs(chain, BATCH, LENGTH)
            fast, slow = queries(chain, data, probs), queries(generic, data, probs)
            for q in fast:
                a, b = best_time(fast[q], repeat), best_time(slow[q], repeat)
                print(f"{name:8s} {s:5d} {q:22s} {a:9.4f} {b:9.4f} {b / a:8.1f}")


def large_table(sizes, repeat):
    print("\nTable 2: closed forms at vocabulary scale (8 x 1024 tokens), seconds; ns/S = time / (tokens x S)")
    header = f"{'chain':8s} {'query':22s}" + "".join(f" {s:>9d}" for s in sizes) + "   ns/S at the sizes"
    print(header)
    rows = {}
    for s in sizes:
        for name, chain in chains(s).items():
            data, probs = inputs(chain, BATCH, LENGTH)
            if name == "uniform":       # the floors of a dense query: writing one (8, 1024, S) output, reading one
                rows.setdefault(("(floor)", "write one output"), []).append(
                    best_time(lambda p=probs: torch.empty_like(p).fill_(1.0), repeat))
                reused = torch.empty_like(probs)
                rows.setdefault(("(floor)", "write into a buffer"), []).append(
                    best_time(lambda b=reused: b.fill_(1.0), repeat))
                del reused
                rows.setdefault(("(floor)", "read one input"), []).append(
                    best_time(lambda p=probs: p.sum(-1), repeat))
            for q, fn in queries(chain, data, probs).items():
                rows.setdefault((name, q), []).append(best_time(fn, repeat))
            del data, probs
            gc.collect()
    floor, read = rows[("(floor)", "write one output")], rows[("(floor)", "read one input")]
    floor_out = rows[("(floor)", "write into a buffer")]
    worst, worst_in, worst_sparse = 0.0, 0.0, 0.0
    for (name, q), times in rows.items():
        per = [1e9 * tm / (BATCH * LENGTH * s) for tm, s in zip(times, sizes)]
        note = ""
        if q in FRESH:
            worst = max(worst, times[-1] / floor[-1])
            note = f"   x write floor {times[-1] / floor[-1]:.2f}"
        elif q in DENSE_OUT:
            note = f"   x buffer floor {times[-1] / floor_out[-1]:.2f}"
        elif q in DENSE_IN:
            worst_in = max(worst_in, times[-1])
            note = f"   x read floor {times[-1] / read[-1]:.2f}"
        elif name != "(floor)":
            worst_sparse = max(worst_sparse, times[-1])
        print(f"{name:8s} {q:22s}" + "".join(f" {tm:9.4f}" for tm in times) + "   " +
              " ".join(f"{p:.3g}" for p in per) + note)
    print()
    for label, skip in (("fresh dense outputs", INTO), ("dense outputs into a reused buffer (out=)", FRESH)):
        slow = [f"{name} {q} {times[-1]:.3f} s" for (name, q), times in rows.items()
                if name != "(floor)" and q not in skip and times[-1] >= 0.5]
        verdict = "yes" if not slow else "no (" + "; ".join(slow) + ")"
        print(f"S = {sizes[-1]}: every query under 0.5 s, {label}: {verdict}")
    print(f"S = {sizes[-1]}: slowest O(1)-per-token query {worst_sparse:.3f} s; slowest query reading the dense "
          f"model output {worst_in:.3f} s (goal < 0.5 s); dense outputs (reverse_rates, reverse_kernel: the model's "
          f"(8, 1024, S) output in, one such tensor out) at most {worst:.2f} x the floor of writing one output "
          f"({floor[-1]:.3f} s, itself {'above' if floor[-1] > 0.5 else 'below'} 0.5 s)")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--large-only", type=int, nargs="*", default=None,
                        help="only Table 2, at these sizes (e.g. --large-only 50257)")
    parser.add_argument("--no-validate", action="store_true", help="chains built with validate_args=False")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1: steadiest on a shared CPU)")
    args = parser.parse_args()
    global VALIDATE
    VALIDATE = False if args.no_validate else None
    torch.set_num_threads(args.threads)
    thp = os.environ.get("THP_MEM_ALLOC_ENABLE", "") not in ("", "0")
    print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, torch {torch.__version__}, "
          f"{args.threads} thread{'s' if args.threads > 1 else ''} (of {os.cpu_count()} cores), "
          f"THP_MEM_ALLOC_ENABLE={'1: large tensors on 2 MB pages' if thp else 'unset: 4 kB pages'}")
    repeat = 1 if args.quick else args.repeat
    print(f"argument validation: {'off' if args.no_validate else 'on (the default)'}")
    if args.large_only:
        return large_table(tuple(args.large_only), repeat)
    small_table((8, 64) if args.quick else (8, 64, 256), repeat)
    large_table((1024, 50_257) if args.quick else (1024, 4096, 16_384, 50_257), repeat)


if __name__ == "__main__":
    main()
