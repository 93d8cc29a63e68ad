"""The exact MNIST-mixture denoiser, dense (Cholesky of 784×784 covariances) against low rank
plus diagonal (Woodbury, r×r solves): wall time per call and the ratio.

Fits the 784-D MNIST mixture (rank 16), then times, on the same n points at one VP level,
building the noised mixture, its score (what the analytic backend's ε̂ is), the posterior mean
E[x0 | x_t] and the tilted target's log_tilt with its gradient (exact guidance), each the best
of ``--repeats``; prints each time and dense / low-rank, and the largest difference.

    TOYCODE_DATA=... python benchmarks/lowrank_denoiser.py [--n 512] [--abar 0.5] [--threads 1]
"""

import argparse
import time

import torch

from toycode.core.diffusion import NoiseLevel
from toycode.mnist.gmm import digit_problem, fit_mnist_mixture


def _best(fn, repeats: int) -> tuple[float, torch.Tensor]:
    times, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return min(times), out


def _cases(mixture, target, x, lv):
    def guidance():
        xg = x.clone().requires_grad_(True)
        return torch.autograd.grad(target.log_tilt(xg, lv).sum(), xg)[0]

    noised = mixture.noised(lv)
    target.log_tilt(x[:2], lv)  # the target's noised pair, memoised as in a run
    return {
        "noised(level)": lambda: mixture.noised(lv).means,
        "score (ε̂ = −σ·score)": lambda: noised.score(x),
        "posterior mean": lambda: mixture.posterior_mean(x, lv, noised),
        "∇ log_tilt (exact guidance)": guidance,
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=512)
    ap.add_argument("--abar", type=float, default=0.5)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    low, _, _ = fit_mnist_mixture()
    dense = low.to_dense()
    lv = NoiseLevel.vp(args.abar)
    x = low.noised(lv).sample(args.n, torch.Generator().manual_seed(0))
    start = time.perf_counter()
    low_target = digit_problem(low).target
    t_low = time.perf_counter() - start
    start = time.perf_counter()
    dense_target = digit_problem(dense).target
    t_dense = time.perf_counter() - start
    print(f"d = {low.dim}, K = {low.num_components}, r = {low.rank}, n = {args.n}, ᾱ = {args.abar}")
    print(f"{'':30s} {'dense s':>10s} {'low-rank s':>11s} {'ratio':>7s} {'max |diff|':>11s}")
    print(f"{'exact tilted target':30s} {t_dense:10.4f} {t_low:11.4f} {t_dense / t_low:7.1f}")
    low_cases = _cases(low, low_target, x, lv)
    dense_cases = _cases(dense, dense_target, x, lv)
    for name in low_cases:
        td, out_d = _best(dense_cases[name], args.repeats)
        tl, out_l = _best(low_cases[name], args.repeats)
        diff = float((out_d - out_l).abs().max())
        print(f"{name:30s} {td:10.4f} {tl:11.4f} {td / tl:7.1f} {diff:11.2e}")


if __name__ == "__main__":
    main()
