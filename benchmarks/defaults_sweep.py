"""The measurements behind the defaults of the guidance scale and the SMC particle count.

Prints, for the built-in problem `between` (analytic backend, T = 100, n = 1024, seed 0), the
MMD² to the exact target in units of its noise floor, and the mean reward against E_{p*}[r]:
- DPS and DPS-detached over scale s ∈ {λ/4, λ/2, λ, 2λ};
- SMC (systematic resampling at ESS < K/2, Tweedie and exact values) over K ∈ {4, 8, 16, 32, 64}.

    python benchmarks/defaults_sweep.py
"""

import torch

from toycode import load_problem
from toycode.exact.metrics import median_bandwidth, mmd2
from toycode.experiments import api


def main():
    torch.set_num_threads(2)
    problem = load_problem("between")
    target = problem.target
    n, gen = 1024, torch.Generator().manual_seed(0)
    ref = target.sample(n, gen)
    bw = median_bandwidth(ref)
    floor = sum(mmd2(target.sample(n, gen), ref, bw) for _ in range(10)) / 10
    print(f"between: λ = {problem.lam}, E_p*[r] = {target.reward_mean:.3f}, n = {n}, T = 100")
    print(f"{'method':14s} {'setting':22s} {'MMD²/floor':>10s} {'reward':>8s}")

    def row(method, label, **kw):
        res = api.sample(problem, method=method, n=n, seed=0, **kw)
        print(
            f"{method:14s} {label:22s} {mmd2(res.samples, ref, bw) / floor:10.2f} "
            f"{float(res.rewards.mean()):8.3f}"
        )

    for method in ("dps", "dps-detached"):
        for frac, label in ((0.25, "λ/4"), (0.5, "λ/2"), (1.0, "λ"), (2.0, "2λ")):
            row(method, f"scale = {label}", scale=frac * problem.lam)
    for value in ("tweedie", "exact"):
        for k in (4, 8, 16, 32, 64):
            row(
                "smc",
                f"K = {k:2d}, {value}",
                particles=k,
                block_size=1,
                value=value,
                selection="systematic",
            )


if __name__ == "__main__":
    main()
