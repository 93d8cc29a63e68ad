"""How far the search loops of toycode.core.search land from p* on `between` (docs/methods/dts.md).

Prints, for the analytic backend (T = 20, n = 512 outputs, λ = 2, seed 1), the MMD² to an exact
sample in units of its noise floor and the mean reward in standard errors from E_p*[r], for DTS
at budgets N·T with several maximum children, DTS with a uniform (non-adaptive) descent, and
softmax best-of-N at the same NFE.

    OMP_NUM_THREADS=1 python benchmarks/search_bias.py
"""

import sys
import time
from pathlib import Path

import torch

from toycode import Process, load_problem, sample_blockwise
from toycode.backends import analytic_backend
from toycode.core.search import tree_sample

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from conftest import ExactReference  # noqa: E402


def main():
    torch.set_num_threads(1)
    problem = load_problem("between")
    target, n = problem.target, 512
    exact = ExactReference(target.sample, 2000, torch.Generator().manual_seed(0), n=n, replicates=5)
    be = analytic_backend(problem.prior, Process.make(20))
    print(f"between: λ = {problem.lam}, E_p*[r] = {target.reward_mean:.3f}, n = {n}, T = 20")
    print(
        f"{'run':34s} {'NFE/output':>10s} {'MMD²/floor':>10s} {'reward':>8s} {'(s.e.)':>7s}"
        f" {'s':>6s}"
    )

    def row(label, run):
        start = time.perf_counter()
        res = run(torch.Generator().manual_seed(1))
        se = float(res.rewards.std()) / n**0.5
        r = float(res.rewards.mean())
        print(
            f"{label:34s} {res.nfe_per_sample:10.0f} {exact.floors(res.samples):10.2f} "
            f"{r:8.3f} {(r - target.reward_mean) / se:7.1f} "
            f"{time.perf_counter() - start:6.1f}",
            flush=True,
        )

    for big_n in (16, 128):
        row(
            f"bon-softmax N={big_n}",
            lambda g, big_n=big_n: sample_blockwise(
                be,
                problem.reward,
                n,
                num_candidates=big_n,
                block_size=20,
                selection="softmax",
                lam=problem.lam,
                generator=g,
            ),
        )
    for big_n, k, descent in (
        (16, 16, "boltzmann"),
        (16, 8, "boltzmann"),
        (64, 16, "boltzmann"),
        (128, 16, "boltzmann"),
        (128, 8, "boltzmann"),
        (32, 4, "uniform"),
        (128, 8, "uniform"),
    ):
        row(
            f"dts N={big_n} children={k} {descent}",
            lambda g, big_n=big_n, k=k, descent=descent: tree_sample(
                be,
                problem.reward,
                n,
                num_candidates=big_n,
                children=k,
                lam=problem.lam,
                descent=descent,
                generator=g,
            ),
        )


if __name__ == "__main__":
    main()
