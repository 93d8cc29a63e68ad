"""What CoDe's selection machinery costs on top of its denoiser work (trained 2-D MLP backend).

Times, in one run and interleaved, CoDe (N = 16, B = 10, Tweedie values, argmax) for n samples
against the base model for 16·n samples — the same denoiser work up to 1 − 1/T — and prints
the wall-time ratio and the ratio per denoiser evaluation. Target: overhead under 10 %.

    python benchmarks/code_overhead.py [--n 256] [--repeats 5]
"""

import argparse
import statistics
import time

import torch

from toycode import load_problem, sample_blockwise
from toycode.experiments.api import make_toy_backend


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=256)
    ap.add_argument("--num-candidates", type=int, default=16)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(2)
    problem = load_problem("between")
    backend = make_toy_backend(problem, "trained", steps=args.steps)
    big_n = args.num_candidates

    def code():
        return sample_blockwise(
            backend,
            problem.reward,
            args.n,
            num_candidates=big_n,
            block_size=10,
            generator=torch.Generator().manual_seed(0),
        )

    def base():
        return sample_blockwise(
            backend, problem.reward, big_n * args.n, generator=torch.Generator().manual_seed(0)
        )

    times = {"code": [], "base": []}
    nfe = {}
    for fn in (code, base):  # warm-up
        nfe[fn.__name__] = fn().nfe
    for _ in range(args.repeats):
        for fn in (code, base):
            start = time.perf_counter()
            fn()
            times[fn.__name__].append(time.perf_counter() - start)
    t_code, t_base = statistics.median(times["code"]), statistics.median(times["base"])
    ratio = t_code / t_base
    per_nfe = (t_code / nfe["code"]) / (t_base / nfe["base"])
    print(
        f"backend {backend}, n={args.n}, N={big_n}, B=10, T={args.steps}, median of {args.repeats}"
    )
    print(f"{'run':28s} {'NFE':>9s} {'seconds':>8s}")
    print(f"{'CoDe, n samples':28s} {nfe['code']:9d} {t_code:8.3f}")
    print(f"{'base, N·n samples':28s} {nfe['base']:9d} {t_base:8.3f}")
    print(f"wall-time ratio CoDe / base(N·n) = {ratio:.3f}")
    print(
        f"time per NFE ratio               = {per_nfe:.3f}  "
        f"(selection overhead {100 * (per_nfe - 1):+.1f} %; target < +10 %)"
    )


if __name__ == "__main__":
    main()
