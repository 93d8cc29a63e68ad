"""Why the MNIST UNet and classifier run their batches in chunks: time per image by chunk size.

A CoDe block hands the denoiser N candidates × n outputs at once (thousands of 28×28 images on
the leaderboard's MNIST class column). On a CPU these small convolutional networks are
memory-bound, so one call on the whole batch spills out of cache; this times, in one run, the
committed UNet and classifier on ``--images`` images split into chunks of each size, and prints
each chunk's time per image as a ratio to one unchunked call. ``ModuleEps`` (UNet) and the MNIST
rewards (classifier) use the chunk sizes chosen from this table.

    python benchmarks/bench_chunks.py [--images 4096] [--threads 2]
"""

import argparse
import time

import torch

from toycode.backends.trained import load_trained_backend
from toycode.mnist.models import UNET_PATH, load_classifier


def _per_image(fn, x: torch.Tensor, chunk: int, repeats: int) -> float:
    with torch.no_grad():
        fn(x[:chunk])  # warm-up
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            for c in x.split(chunk):
                fn(c)
            best = min(best, time.perf_counter() - start)
    return best / len(x)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=4096)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    unet = load_trained_backend(UNET_PATH, steps=10).eps_model.module
    classifier = load_classifier()
    x = torch.randn(args.images, 1, 28, 28, generator=torch.Generator().manual_seed(0))

    def unet_call(c):
        return unet(c, torch.full((len(c),), 500))

    print(f"{args.images} images, {args.threads} threads, best of {args.repeats}")
    print(
        f"{'chunk':>6s} {'UNet ms/img':>12s} {'ratio':>6s} {'classifier ms/img':>18s} {'ratio':>6s}"
    )
    whole = {
        name: _per_image(f, x, len(x), args.repeats)
        for name, f in (("unet", unet_call), ("clf", classifier))
    }
    for chunk in (32, 64, 128, 256, 512, 1024, args.images):
        u = _per_image(unet_call, x, chunk, args.repeats)
        c = _per_image(classifier, x, chunk, args.repeats)
        print(
            f"{chunk:6d} {1e3 * u:12.3f} {u / whole['unet']:6.2f} "
            f"{1e3 * c:18.3f} {c / whole['clf']:6.2f}"
        )


if __name__ == "__main__":
    main()
