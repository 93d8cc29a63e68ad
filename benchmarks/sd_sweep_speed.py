"""Images per second of `toycode sd-sweep` on SD 1.5's architecture, with and without a TAESD
score decoder, and the share of the time spent decoding.

Random weights (cost does not depend on them; nothing is downloaded): SD 1.5's UNet, VAE and
text encoder (fp16 on the GPU, fp32 on the CPU) and a TAESD-architecture ``AutoencoderTiny``
(diffusers' default config) saved to a temporary folder. The sweep: the first P animals × S
seeds × CoDe with N ∈ {1, 4, 8}, B = 5, T = 50, CFG 7.5, JPEG reward — the issue's check is
P = 4, S = 2. Decode time is measured by hooks on the VAE's and TAESD's decoder modules.

    python benchmarks/sd_sweep_speed.py                      # the sweep (a GPU check)
    python benchmarks/sd_sweep_speed.py --per-call --height 256 --repeats 2
        # seconds per CFG UNet call, VAE decode and TAESD decode of one latent, and the decode
        # share CoDe's formula implies (1 + (T − 1)·N UNet calls, N·⌈T/B⌉ decodes per image)
"""

import argparse
import math
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import torch

from toycode.sd.backend import make_sd_backend
from toycode.sd.score_decoder import load_score_decoder
from toycode.sd.sweep import load_prompts, run_sd_sweep
from toycode.sd.tiny import sd15_random_pipeline
from toycode.utils.images import Compressibility


class Clock:
    """Seconds spent inside modules, by name (forward hooks, synchronised on CUDA)."""

    def __init__(self, device):
        self.device, self.total, self.start = device, defaultdict(float), {}

    def sync(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize()

    def watch(self, name, module):
        def pre(mod, args):
            self.sync()
            self.start[name] = time.perf_counter()

        def post(mod, args, out):
            self.sync()
            self.total[name] += time.perf_counter() - self.start[name]

        return [module.register_forward_pre_hook(pre), module.register_forward_hook(post)]


def _taesd(folder, pipe):
    from diffusers import AutoencoderTiny

    torch.manual_seed(0)
    AutoencoderTiny().save_pretrained(folder)  # diffusers' defaults are TAESD's architecture
    return load_score_decoder(folder, pipe)


def per_call(pipe, taesd, clock, args):
    be = make_sd_backend(
        pipe,
        "a cat",
        steps=args.steps,
        max_batch=args.max_batch,
        height=args.height,
        width=args.height,
    )
    x = be.prior_sample(1, torch.Generator().manual_seed(0))
    with torch.no_grad():
        for _ in range(1 + args.repeats):  # the first round warms up
            clock.total.clear()
            be.predict(x, 0)
            be.decode(x)
            taesd.decode(x / taesd.config.scaling_factor)
    u, d, t = clock.total["unet"], clock.total["vae"], clock.total["taesd"]
    print(
        f"one latent, {args.height}×{args.height}: CFG UNet call {u:.3f} s, VAE decode "
        f"{d:.3f} s, TAESD decode {t:.4f} s (last of {args.repeats} rounds)"
    )
    for n in args.N:
        if n == 1:
            continue
        blocks = math.ceil(args.steps / args.block_size)
        calls = 1 + (args.steps - 1) * n
        full = calls * u + n * blocks * d
        cheap = calls * u + n * d + n * (blocks - 1) * t
        print(
            f"CoDe N = {n}, B = {args.block_size}, T = {args.steps}: decode share "
            f"{100 * n * blocks * d / full:.1f} % with the VAE, "
            f"{100 * (n * d + n * (blocks - 1) * t) / cheap:.1f} % with TAESD; time "
            f"× {cheap / full:.3f}"
        )


def sweep(pipe, taesd, clock, args, tmp):
    prompts = load_prompts("animals", args.prompts)
    grid = {"N": args.N, "B": [args.block_size]}
    run = dict(seeds=args.seeds, steps=args.steps, max_batch=args.max_batch, progress=False)
    run_sd_sweep(
        pipe,
        prompts[:1],
        lambda p: Compressibility(),
        ["code"],
        {"N": [2], "B": [2]},
        out=Path(tmp) / "warm-up",
        **{**run, "seeds": 1, "steps": 4},
    )
    for label, decoder in (("VAE scores", None), ("TAESD scores", taesd)):
        clock.total.clear()
        clock.sync()
        start = time.perf_counter()
        rows = run_sd_sweep(
            pipe,
            prompts,
            lambda p: Compressibility(),
            ["code"],
            grid,
            out=Path(tmp) / label.split()[0],
            score_decoder=decoder,
            **run,
        )
        clock.sync()
        wall = time.perf_counter() - start
        dec = clock.total["vae"] + clock.total["taesd"]
        print(
            f"{label:13s} {len(rows)} images in {wall:.1f} s: {len(rows) / wall:.3f} "
            f"images/s; UNet {100 * clock.total['unet'] / wall:.1f} %, VAE decodes "
            f"{100 * clock.total['vae'] / wall:.1f} %, TAESD decodes "
            f"{100 * clock.total['taesd'] / wall:.1f} % (decodes {100 * dec / wall:.1f} %)"
        )
        for n in args.N:
            sel = [r for r in rows if r["settings"]["N"] == n]
            print(
                f"    N = {n}: {sum(r['wall_s'] for r in sel) / len(sel):.2f} s/image, "
                f"reward {sum(r['reward'] for r in sel) / len(sel):.3f}"
            )


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", type=int, default=4, help="the first P animals")
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--N", type=int, nargs="+", default=[1, 4, 8])
    ap.add_argument("--block-size", type=int, default=5)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--max-batch", type=int, default=8)
    ap.add_argument("--height", type=int, default=512, help="--per-call image size")
    ap.add_argument("--repeats", type=int, default=3, help="--per-call timed rounds")
    ap.add_argument("--per-call", action="store_true", help="time single calls, no sweep")
    args = ap.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    pipe = sd15_random_pipeline().to(device, dtype)
    pipe.set_progress_bar_config(disable=True)
    clock = Clock(device)
    with tempfile.TemporaryDirectory() as tmp:
        taesd = _taesd(Path(tmp) / "taesd", pipe)
        for name, module in (
            ("unet", pipe.unet),
            ("vae", pipe.vae.decoder),
            ("taesd", taesd.decoder),
        ):
            clock.watch(name, module)
        card = torch.cuda.get_device_name() if device.type == "cuda" else "CPU"
        print(
            f"SD-1.5 architecture, random weights, on {card} ({dtype}), torch "
            f"{torch.__version__}, {torch.get_num_threads()} CPU threads"
        )
        if args.per_call:
            per_call(pipe, taesd, clock, args)
        else:
            sweep(pipe, taesd, clock, args, tmp)


if __name__ == "__main__":
    main()
