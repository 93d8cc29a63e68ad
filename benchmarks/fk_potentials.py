"""FK-steering potentials × weight bookkeepings against the exact target (issue 15).

Runs SMC on `between` with exact soft values for each potential (diff, max, add), bookkeeping
(incremental, reset), resampling interval B and particle count K, and prints the reward-mean
gap to E_p*[r] and that gap in standard errors across populations (adaptive resampling at
ESS < K/2; a consistent sampler's gap shrinks towards 0 as K grows). TDS and DAS rows follow
(exact twist / values, T = 50 and 100), then TDS with DAS's tempering (Tweedie twist, T = 100);
between them every potential and bookkeeping on a 6-step grid, where K = 8192 is cheap and the
consistent variants agree. A few minutes on one core.

    python benchmarks/fk_potentials.py [--steps 50] [--seed 2]
"""

import argparse

import torch

from toycode import ExactValue, Process, load_problem, sample_blockwise
from toycode.backends import analytic_backend
from toycode.experiments import api

SIZES = ((16, 128), (128, 64), (1024, 16))  # (K, populations)


def gap(res, target, k):
    per_pop = res.rewards.view(-1, k).mean(1)
    g = float(res.rewards.mean()) - target.reward_mean
    return g, g / (float(per_pop.std()) / len(per_pop) ** 0.5)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--seed", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(1)
    problem = load_problem("between")
    target = problem.target
    backend = analytic_backend(problem.prior, Process.make(args.steps))
    print(f"between, T = {args.steps}, exact values, E_p*[r] = {target.reward_mean:.4f}")
    print("potential  weights      B     K   gap      gap/se")
    for potential in ("diff", "max", "add"):
        for weights in ("incremental", "reset"):
            for block in (1, 5):
                for k, pops in SIZES:
                    res = sample_blockwise(
                        backend,
                        problem.reward,
                        k * pops,
                        particles=k,
                        block_size=block,
                        selection="systematic",
                        lam=problem.lam,
                        ess_threshold=0.5,
                        value=ExactValue(target),
                        potential=potential,
                        weight_mode=weights,
                        generator=torch.Generator().manual_seed(args.seed),
                    )
                    g, z = gap(res, target, k)
                    print(
                        f"{potential:9s}  {weights:11s} {block:2d} {k:5d}  {g:+.4f}  {z:+6.1f}",
                        flush=True,
                    )
    coarse = analytic_backend(problem.prior, Process.make(6))
    print("T = 6 (cheap large K): reward mean at K = 8192, 8 populations, B = 1")
    for potential in ("diff", "max", "add"):
        for weights in ("incremental", "reset"):
            res = sample_blockwise(
                coarse,
                problem.reward,
                8192 * 8,
                particles=8192,
                block_size=1,
                selection="systematic",
                lam=problem.lam,
                ess_threshold=0.5,
                value=ExactValue(target),
                potential=potential,
                weight_mode=weights,
                generator=torch.Generator().manual_seed(args.seed),
            )
            se = float(res.rewards.view(8, -1).mean(1).std()) / 8**0.5
            print(
                f"{potential:9s}  {weights:11s} {float(res.rewards.mean()):+.4f} ± {se:.4f}",
                flush=True,
            )
    print("method        value    T    K   gap      gap/se")
    for method, value, steps, options in (
        ("tds", "exact", 50, None),
        ("das", "exact", 100, None),
        ("tds", "tweedie", 100, {"tempering": 0.008}),
    ):
        for k, pops in ((64, 32), (512, 8)):
            res = api.sample(
                problem,
                method=method,
                particles=k,
                n=k * pops,
                steps=steps,
                value=value,
                seed=args.seed,
                options=options,
            )
            g, z = gap(res, target, k)
            name = method + ("+tempering" if options else "")
            print(f"{name:13s} {value:7s} {steps:4d} {k:4d}  {g:+.4f}  {z:+6.1f}", flush=True)


if __name__ == "__main__":
    main()
