"""Seconds per image on Stable Diffusion: the diffusers pipeline, best-of-N and CoDe, in one run.

SD-1.5's architecture with random weights (cost does not depend on weight values; nothing is
downloaded), T = 50 DDIM steps (η = 1), CFG 7.5, N = 8, B = 5, JPEG-compressibility reward.
Prints seconds per image for each method, CoDe's time over N × base, where CoDe's time goes
(UNet, VAE decode, reward, the rest), UNet calls, and peak GPU memory.

    python benchmarks/sd_speed.py                 # SD-1.5 architecture, on the GPU if there is one
    python benchmarks/sd_speed.py --tiny          # diffusers' dummy pipeline (CPU-sized)
"""

import argparse
import time
from collections import defaultdict

import torch

from toycode import sample_blockwise
from toycode.sd.backend import StableDiffusionBackend
from toycode.sd.tiny import sd15_random_pipeline, tiny_pipeline
from toycode.utils.images import Compressibility

PROMPT = "a photograph of an astronaut riding a horse"


class Timed:
    """Backend wrapper adding up wall time in predict (UNet) and decode (VAE)."""

    def __init__(self, inner, clock):
        self.inner, self.clock = inner, clock

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def _timed(self, key, fn, *args):
        self.clock.sync()
        start = time.perf_counter()
        out = fn(*args)
        self.clock.sync()
        self.clock.total[key] += time.perf_counter() - start
        return out

    def predict(self, x, i):
        return self._timed("unet", self.inner.predict, x, i)

    def decode(self, x0):
        return self._timed("vae decode", self.inner.decode, x0)


class Clock:
    def __init__(self, device):
        self.device, self.total = device, defaultdict(float)

    def sync(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiny", action="store_true", help="the tiny dummy pipeline instead")
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--num-candidates", type=int, default=8)
    ap.add_argument("--block-size", type=int, default=5)
    ap.add_argument("--images", type=int, default=2, help="images per method")
    ap.add_argument("--max-batch", type=int, default=8)
    args = ap.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    pipe = tiny_pipeline() if args.tiny else sd15_random_pipeline()
    pipe = pipe.to(device) if dtype == torch.float32 else pipe.to(device, dtype)
    reward = Compressibility()
    big_n, steps = args.num_candidates, args.steps
    clock = Clock(device)

    def run_pipe():
        pipe(
            PROMPT,
            num_inference_steps=steps,
            eta=1.0,
            guidance_scale=7.5,
            generator=torch.Generator(device).manual_seed(0),
            output_type="pt",
        )

    def run(n_cand, block):
        be = Timed(
            StableDiffusionBackend(pipe, PROMPT, steps=steps, eta=1.0, max_batch=args.max_batch),
            clock,
        )
        timed_reward = lambda x: be._timed("reward", reward, x)  # noqa: E731
        return sample_blockwise(
            be,
            timed_reward,
            1,
            num_candidates=n_cand,
            block_size=block,
            generator=torch.Generator().manual_seed(0),
        )

    run_pipe()
    run(2, args.block_size)  # warm-up: kernels, allocator
    rows, breakdown = {}, {}
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    for label, fn in (
        ("diffusers pipeline (base)", run_pipe),
        ("toycode base (N = 1)", lambda: run(1, steps)),
        (f"best-of-N (N = {big_n})", lambda: run(big_n, steps)),
        (f"CoDe (N = {big_n}, B = {args.block_size})", lambda: run(big_n, args.block_size)),
    ):
        clock.total.clear()
        clock.sync()
        start = time.perf_counter()
        nfe = 0
        for _ in range(args.images):
            out = fn()
            nfe += getattr(out, "nfe", steps)
        clock.sync()
        rows[label] = ((time.perf_counter() - start) / args.images, nfe / args.images)
        breakdown[label] = {k: v / args.images for k, v in clock.total.items()}
    name = "tiny dummy pipeline" if args.tiny else "SD-1.5 architecture, random weights"
    card = torch.cuda.get_device_name() if device.type == "cuda" else "CPU"
    print(
        f"{name} on {card} ({dtype}), T = {steps}, CFG 7.5, DDIM η = 1, "
        f"{args.images} image(s) per method, JPEG reward"
    )
    print(
        f"{'method':32s} {'s / image':>10s} {'UNet calls':>10s} {'UNet s':>8s} "
        f"{'VAE s':>7s} {'reward s':>8s}"
    )
    for label, (sec, nfe) in rows.items():
        b = breakdown[label]
        print(
            f"{label:32s} {sec:10.3f} {nfe:10.0f} {b.get('unet', float('nan')):8.3f} "
            f"{b.get('vae decode', float('nan')):7.3f} {b.get('reward', float('nan')):8.3f}"
        )
    base = rows["diffusers pipeline (base)"][0]
    code = rows[f"CoDe (N = {big_n}, B = {args.block_size})"][0]
    print(f"CoDe / (N × base) = {code / (big_n * base):.3f}   (target ≤ 1.05)")
    b = breakdown[f"CoDe (N = {big_n}, B = {args.block_size})"]
    print(
        f"CoDe time outside the UNet: {100 * (code - b['unet']) / code:.1f} % "
        f"(VAE decodes of the scored candidates {100 * b['vae decode'] / code:.1f} %, "
        f"reward {100 * b['reward'] / code:.1f} %)"
    )
    if device.type == "cuda":
        print(f"peak GPU memory: {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB")


if __name__ == "__main__":
    main()
