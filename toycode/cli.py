"""The `toycode` command line: reward-guided sampling checked against exact targets.

2-D problems: demo, compare, target, sample, train, tradeoff, plot. All methods against exact
targets: leaderboard. MNIST: train-mnist,
mnist-eval, mnist-demo, mnist-gmm. Stable Diffusion: sd, sd-sweep. Each has a Python counterpart
in toycode.experiments.api, toycode.experiments.demo, toycode.experiments.tradeoff, toycode.mnist,
toycode.sd.run or toycode.sd.sweep.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import torch

from .core.methods import METHODS
from .core.sampler import SELECTIONS
from .exact.problems import load_problem
from .experiments import api
from .sd.run import IMAGE_REWARDS, SD_METHODS
from .utils.io import save_npz


def _demo(args):
    from .experiments.demo import format_table, run_demo
    start = time.time()
    result = run_demo(args.problem, out_dir=args.out_dir, backends=tuple(args.backends), n=args.n,
                      steps=args.steps, num_candidates=args.num_candidates,
                      block_size=args.block_size, seed=args.seed, process=args.process)
    print(f"problem {result['problem'].name}: lam={result['problem'].lam:g}, n={args.n}, "
          f"T={args.steps}, seed={args.seed}, process={args.process}")
    print(format_table(result))
    for path in result["figures"]:
        print(f"wrote {path}")
    print(f"demo took {time.time() - start:.1f} s")


def _compare(args):
    from .exact.problems import builtin_problems
    from .experiments.demo import COMPARE_RUNS, compare, format_table
    for name in args.problems or builtin_problems():
        result = compare(name, COMPARE_RUNS, tuple(args.backends), n=args.n, steps=args.steps,
                         num_candidates=args.num_candidates, block_size=args.block_size,
                         seed=args.seed, process=args.process, value=args.value)
        p = result["problem"]
        print(f"\n## {p.name}: reward {p.reward.to_dict()['type']}, lam={p.lam:g}, n={args.n}, "
              f"T={args.steps}, seed={args.seed}, process={args.process}\n")
        print(format_table(result, gradients=True))


DTYPES = {"auto": None, "float32": torch.float32, "float16": torch.float16,
          "bfloat16": torch.bfloat16}
"""--dtype's choices: the pipeline's weights (auto: float16 on CUDA, else float32)."""


def _add_reward_args(parser, reference_help: str) -> None:
    """The image-reward options of `toycode sd` and `toycode sd-sweep`."""
    parser.add_argument("--reward", default="jpeg", choices=list(IMAGE_REWARDS))
    parser.add_argument("--reward-model", help="hub id or folder of the reward's CLIP model "
                                               "(pickscore: default PickScore_v1; others: "
                                               "--clip-model)")
    parser.add_argument("--reference", help=reference_help)
    parser.add_argument("--clip-model", default="openai/clip-vit-large-patch14")
    parser.add_argument("--aesthetic-head", help="LAION aesthetic predictor weights (.pth)")


def _reward_clip(args, device=None):
    """A function loading the reward's CLIP once: PickScore's own CLIP-H unless --reward-model
    names one, else --reward-model or --clip-model."""
    import functools

    from .sd.rewards import PICKSCORE_MODEL, PICKSCORE_TOKENIZER, Clip, load_clip
    if args.reward == "pickscore":
        model = args.reward_model or PICKSCORE_MODEL
        tokenizer = None if args.reward_model else PICKSCORE_TOKENIZER
    else:
        model, tokenizer = args.reward_model or args.clip_model, None
    return functools.cache(lambda: Clip(*load_clip(model, device, tokenizer)))


def _sd(args):
    from .sd.backend import load_pipeline
    from .sd.run import load_image, make_image_reward, sd_sample, write_outputs
    reference = load_image(args.reference) if args.reference else None
    reward = make_image_reward(args.reward, reference=reference, prompt=args.prompt[0],
                               clip=_reward_clip(args, args.device),
                               aesthetic_head=args.aesthetic_head)
    pipe = load_pipeline(args.model, device=args.device, dtype=DTYPES[args.dtype])
    records = sd_sample(pipe, args.prompt, reward, n=args.n, method=args.method,
                        num_candidates=args.num_candidates, block_size=args.block_size,
                        selection=args.selection, particles=args.particles, lam=args.lam,
                        steps=args.steps,
                        scheduler=args.scheduler, eta=args.eta,
                        guidance_scale=args.guidance_scale, reference=reference,
                        strength=args.strength, seed=args.seed, max_batch=args.max_batch)
    for path in write_outputs(records, args.out):
        print(f"wrote {path}")
    for r in records:
        print(json.dumps({"index": r["index"], "prompt": r["prompt"], "reward": r["reward"],
                          "nfe": r["nfe"], "reward_calls": r["reward_calls"]}))


def _sd_sweep(args):
    from .experiments.tradeoff import parse_grid
    from .sd.backend import load_pipeline
    from .sd.rewards import Clip, load_clip
    from .sd.run import load_image, make_image_reward
    from .sd.score_decoder import check_score_decoder_path, load_score_decoder
    from .sd.sweep import load_prompts, process_shard, run_sd_sweep, sweep_jobs
    # everything a user can get wrong is checked before a model loads or a file is written
    prompts = load_prompts(args.prompts, args.limit_prompts)
    grid = parse_grid(args.grid)
    sweep_jobs(prompts, args.methods, grid, args.seeds)
    if args.score_decoder:
        check_score_decoder_path(args.score_decoder)
    reference = load_image(args.reference) if args.reference else None
    shard = process_shard(args.device)
    clip = _reward_clip(args, shard.device)

    def reward_for(prompt):
        return make_image_reward(args.reward, reference=reference, prompt=prompt, clip=clip,
                                 aesthetic_head=args.aesthetic_head)

    reward_for(prompts[0])
    pipe = load_pipeline(args.model, device=shard.device, dtype=DTYPES[args.dtype])
    decoder = load_score_decoder(args.score_decoder, pipe) if args.score_decoder else None
    fidelity = (Clip(*load_clip(args.fidelity_model, shard.device)) if args.fidelity_model
                else None)
    describe = {"model": args.model, "dtype": str(pipe.dtype).removeprefix("torch."),
                "reward": args.reward, "reward_model": args.reward_model,
                "clip_model": args.clip_model, "aesthetic_head": args.aesthetic_head,
                "reference": args.reference, "fidelity_model": args.fidelity_model,
                "score_decoder": args.score_decoder}
    rows = run_sd_sweep(pipe, prompts, reward_for, args.methods, grid, seeds=args.seeds,
                        steps=args.steps, out=args.out, eta=args.eta,
                        guidance_scale=args.guidance_scale, scheduler=args.scheduler,
                        selection=args.selection, max_batch=args.max_batch, fidelity=fidelity,
                        score_decoder=decoder, describe=describe, shard=shard)
    if shard.index == 0:
        print(f"{len(rows)} rows in {args.out}/results.jsonl ({shard.count} process"
              f"{'es' if shard.count > 1 else ''})")


def _train_mnist(args):
    from .mnist.models import train_classifier, train_unet
    if args.model == "unet":
        ckpt = train_unet(args.out or None, steps=args.steps, seed=args.seed,
                          data_dir=args.data_dir, resume=not args.restart)
        print(json.dumps({"model": "unet", "steps": ckpt["step"], "loss": ckpt["loss"]}))
    else:
        train_classifier(args.out or None, epochs=args.epochs, seed=args.seed,
                         data_dir=args.data_dir)
        _mnist_eval(args, quality=False)


def _mnist_eval(args, quality: bool = True):
    from .backends import load_trained_backend
    from .mnist.eval import base_quality, classifier_accuracy
    from .mnist.models import UNET_PATH, load_classifier
    classifier = load_classifier()
    acc, se, count = classifier_accuracy(classifier, args.data_dir)
    print(f"classifier accuracy on held-out MNIST test[9000:10000]: {100 * acc:.2f} % "
          f"± {100 * se:.2f} (n = {count})")
    if not quality:
        return
    q = base_quality(load_trained_backend(UNET_PATH, steps=args.steps), classifier, n=args.n,
                     seed=args.seed, data_dir=args.data_dir)
    print(f"base DDPM, {q['n']} samples, T = {args.steps}:")
    print(f"  classified with confidence ≥ 0.9: {100 * q['confident']:.1f} %")
    print("  class shares: " + ", ".join(f"{d}: {100 * r:.1f}" for d, r in
                                         enumerate(q["class_rates"])) + " (%)")
    print(f"  Fréchet distance in the classifier's features, 500 samples vs 500 held-out images: "
          f"{q['frechet']:.1f}; the other 500 held-out images vs the same (floor): "
          f"{q['frechet_floor']:.1f}")


def _mnist_demo(args):
    from .mnist.demo import MnistDemoConfig, run_mnist_demo
    start = time.time()
    r = run_mnist_demo(MnistDemoConfig(digit=args.digit, lam=args.lam, n=args.n,
                                       value=args.value, value_samples=args.value_samples,
                                       lookahead_steps=args.lookahead_steps,
                                       steps=args.steps, seed=args.seed, out_dir=args.out_dir))
    print(f"digit {args.digit}, λ = {args.lam:g}: base rate π = {r['pi']:.3f} ± {r['pi_se']:.3f}; "
          f"exact tilted fraction {r['exact']:.3f} ± {r['exact_se']:.3f}; best-of-N softmax "
          f"exact expectation {r['bon_exact']:.3f}")
    print(f"{'method':22s} {'class-c fraction':>18s} {'NFE/sample':>10s} {'grads':>6s}")
    for row in r["rows"]:
        print(f"{row['method']:22s} {row['fraction']:9.3f} ± {row['se']:.3f} {row['nfe']:10.0f} "
              f"{row['reward_grads']:6.0f}")
    for path in r["figures"]:
        print(f"wrote {path}")
    print(f"mnist-demo took {time.time() - start:.1f} s")


def _mnist_gmm(args):
    from .experiments.plots import plot_dimension_sweep, save
    from .mnist.gmm import dimension_sweep
    rows = dimension_sweep(tuple(args.dims), digit=args.digit, n=args.n,
                           num_candidates=args.num_candidates, block_size=args.block_size,
                           steps=args.steps, seed=args.seed, data_dir=args.data_dir)
    print(f"MNIST mixture (one component per digit, rank-16 + diagonal covariances), projected "
          f"on the top-d principal axes; reward −½·0.5‖x − μ_{args.digit}‖², λ = 1; n = {args.n}, "
          f"T = {args.steps}, N = {args.num_candidates}, CoDe B = {args.block_size}, softmax, "
          f"Tweedie values")
    print(f"{'d':>4s} {'method':10s} {'NFE':>5s} {'reward ± s.e.':>17s} {'exact E_p*[r]':>13s} "
          f"{'tilt reached':>12s} {f'w*_{args.digit}':>6s} {'got':>6s} {'mode TV':>7s} "
          f"{'KL(p*‖p)':>8s}")
    for r in rows:
        print(f"{r['d']:4d} {r['method']:10s} {r['nfe']:5.0f} {r['reward']:8.3f} ± "
              f"{r['reward_se']:6.3f} {r['exact_reward']:13.3f} {100 * r['tilt_achieved']:11.0f}% "
              f"{r['exact_digit_weight']:6.3f} {r['digit_weight']:6.3f} {r['mode_tv']:7.3f} "
              f"{r['kl_target_base']:8.2f}")
    print(f"wrote {save(plot_dimension_sweep(rows), args.out_dir + '/mnist_gmm_dims.png')}")


def _tradeoff(args):
    from .experiments.tradeoff import parse_grid, run_sweep
    rows = run_sweep(args.problem, args.methods, parse_grid(args.grid), seeds=args.seeds,
                     out=args.out, n=args.n, process=args.process, value=args.value)
    print(f"{len(rows)} rows in {args.out}/results.jsonl")


def _leaderboard(args):
    from .experiments.plots import save
    from .leaderboard.board import BENCHES, plot_leaderboard, run_leaderboard, table
    rows = run_leaderboard(args.out, benches=args.benches or BENCHES, methods=args.methods,
                           size="fast" if args.fast else "default",
                           progress=not args.no_progress)
    text = table(rows)
    (Path(args.out) / "leaderboard.md").write_text(text + "\n")
    print(text)
    figure = args.figure or str(Path(args.out) / "leaderboard.png")
    saved = save(plot_leaderboard(rows), figure)
    print(f"{len(rows)} rows in {args.out}/results.jsonl; wrote {saved}")


def _values(args):
    from .experiments.plots import plot_value_errors, save
    from .experiments.value_study import DEFAULT_ESTIMATORS, format_value_errors, value_errors
    estimators = [e for e in DEFAULT_ESTIMATORS if not args.only or e[0] in args.only]
    rows = value_errors(args.problem, estimators, steps=args.steps, n=args.n, seed=args.seed,
                        process=args.process)
    name = load_problem(args.problem).name
    print(f"problem {name}: value estimators against the exact soft value V_t, n = {args.n} "
          f"states per level, analytic denoiser, T = {args.steps}, {args.process}")
    print(format_value_errors(rows))
    out = args.out or f"figures/values_{name}.png"
    fig = plot_value_errors(rows, f"{name}: value estimators against the exact V_t")
    print(f"wrote {save(fig, out)}")


def _train_value(args):
    from .training.learned_value import train_value
    ckpt = train_value(load_problem(args.problem), args.out, process=args.process,
                       steps=args.steps, seed=args.seed)
    print(json.dumps({"steps": ckpt["train"]["steps"], "loss": ckpt["loss"],
                      "process": ckpt["process"]}))


def _plot(args):
    from .exact.problems import load_problem
    from .experiments.plots import plot_genealogy, plot_sweep, save
    from .experiments.tradeoff import read_results
    rows = read_results(args.results)
    if not rows:
        raise ValueError(f"no results in {args.results}/results.jsonl; run `toycode tradeoff` "
                         f"first")
    if "prompt" in rows[0]:   # an sd-sweep table
        kind = args.kind or "reward-nfe"
        if kind == "reward-fidelity" and all(r.get("fidelity") is None for r in rows):
            raise ValueError(f"{args.results} has no prompt fidelity: run sd-sweep with "
                             f"--fidelity-model")
        out = args.out or str(Path(args.results) / f"sd_{kind}.png")
        print(f"wrote {save(plot_sweep(rows, kind), out)}")
        return
    args.kind = args.kind or "frontier"
    problem = load_problem(rows[0]["problem"])
    out = args.out or str(Path(args.results) / f"{problem.name}_{args.kind}.png")
    if args.kind == "genealogy":
        blocks = []
        api.sample(problem, method="code", num_candidates=16, block_size=10,
                   selection="softmax", n=64, seed=0, callback=blocks.append)
        fig = plot_genealogy(blocks)
    else:
        fig = plot_sweep(rows, args.kind, problem)
    print(f"wrote {save(fig, out)}")


def _target(args):
    samples, summary = api.target(args.problem, args.n, args.seed)
    if args.out:
        save_npz(args.out, samples=samples.numpy())
    print(json.dumps(summary))


def _sample(args):
    res = api.sample(args.problem, backend=args.backend, method=args.method,
                     num_candidates=args.num_candidates, block_size=args.block_size,
                     selection=args.selection, lam=args.lam, value=args.value, steps=args.steps,
                     n=args.n, seed=args.seed, particles=args.particles,
                     ess_threshold=args.ess_threshold, scale=args.scale,
                     backward_steps=args.backward_steps, backward_lr=args.backward_lr,
                     recurrence=args.recurrence, progress=True, process=args.process,
                     eta=args.eta, value_samples=args.value_samples,
                     lookahead_steps=args.lookahead_steps)
    if args.out:
        save_npz(args.out, samples=torch.as_tensor(res.samples).double().numpy(),
                 rewards=res.rewards.numpy(), nfe=res.nfe, reward_calls=res.reward_calls,
                 reward_grads=res.reward_grads,
                 settings=json.dumps(res.settings))
    mean, se = float(res.rewards.mean()), float(res.rewards.std() / res.n ** 0.5)
    print(json.dumps({"reward_mean": mean, "reward_se": se, "nfe": res.nfe,
                      "nfe_per_sample": res.nfe_per_sample, "reward_calls": res.reward_calls,
                      "reward_grads": res.reward_grads, "backprops": res.backprops,
                      **res.settings}))


def _train(args):
    ckpt = api.train(args.problem, args.out, steps=args.steps, seed=args.seed,
                     batch_size=args.batch_size, resume=not args.restart, process=args.process)
    print(json.dumps({"out": args.out, "steps": ckpt["step"], "loss": ckpt["loss"],
                      "process": ckpt["process"]}))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="toycode", description=__doc__)
    p.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser("demo", help="compare base, BoN, SVDD and CoDe against the exact target")
    d.add_argument("--problem", default="between")
    c = sub.add_parser("compare", help="every method (CoDe, SMC, guidance) on the built-in "
                                       "problems, against the exact targets")
    c.add_argument("--problems", nargs="+", help="built-in names or files (default: all built-ins)")
    c.add_argument("--value", default="tweedie", choices=api.VALUES,
                   help="value estimator of every run that does not name its own")
    c.set_defaults(func=_compare)
    for q, backends in ((d, ["analytic", "trained"]), (c, ["analytic"])):
        q.add_argument("--n", type=int, default=1024)
        q.add_argument("--steps", type=int, default=100)
        q.add_argument("--num-candidates", type=int, default=16)
        q.add_argument("--block-size", type=int, default=10)
        q.add_argument("--seed", type=int, default=0)
        q.add_argument("--backends", nargs="+", default=backends)
    d.add_argument("--out-dir", default="figures")
    d.set_defaults(func=_demo)

    t = sub.add_parser("target", help="exact samples of the tilted target and its log Z")
    t.add_argument("--problem", required=True, help="built-in name or problem .json")
    t.add_argument("--n", type=int, default=1000)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--out", help="write samples to this .npz")
    t.set_defaults(func=_target)

    s = sub.add_parser("sample", help="sample a problem with any method (CoDe family, SMC, "
                                      "gradient guidance)")
    s.add_argument("--problem", required=True)
    s.add_argument("--backend", default="analytic", help="analytic | trained | PATH.pt")
    s.add_argument("--method", default="code", choices=list(METHODS))
    s.add_argument("--num-candidates", type=int, default=16)
    s.add_argument("--block-size", type=int, default=None, help="default 10 (CoDe), 1 (SMC)")
    s.add_argument("--selection", default=None, choices=sorted(SELECTIONS),
                   help="default argmax (CoDe family), systematic (SMC)")
    s.add_argument("--lam", type=float, default=None, help="softmax λ (default: the problem's)")
    s.add_argument("--value", default="tweedie", choices=api.VALUES,
                   help="value estimator at block ends (see toycode.core.values)")
    s.add_argument("--particles", type=int, default=32, help="SMC population size K")
    s.add_argument("--ess-threshold", type=float, default=0.5, help="SMC resamples at ESS < this·K")
    s.add_argument("--scale", type=float, default=None, help="guidance scale (default λ)")
    s.add_argument("--backward-steps", type=int, default=0, help="universal guidance m")
    s.add_argument("--backward-lr", type=float, default=0.1, help="universal guidance step size")
    s.add_argument("--recurrence", type=int, default=1, help="universal guidance r")
    s.add_argument("--steps", type=int, default=100)
    s.add_argument("--n", type=int, default=1024)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--eta", type=float, default=1.0, help="DDIM η in [0, 1] (selection needs "
                                                          "η > 0)")
    s.add_argument("--out", help="write samples, rewards, nfe, reward_calls to this .npz")
    s.set_defaults(func=_sample)

    sd = sub.add_parser("sd", help="CoDe / best-of-N / SVDD on a Stable Diffusion pipeline")
    sd.add_argument("--model", required=True, help="hub id or local folder of an SD 1.x/2.x, "
                                                   "SDXL, SD3 or FLUX pipeline, or tiny:sd, "
                                                   "tiny:sd-v, tiny:sdxl, tiny:sd3, tiny:flux "
                                                   "(random weights, offline)")
    sd.add_argument("--prompt", nargs="+", required=True, help="one prompt, or one per image")
    sd.add_argument("--n", type=int, default=1, help="images to generate")
    _add_reward_args(sd, "reference image (clip-image reward; CoDe(η) start)")
    sd.add_argument("--method", default="code", choices=list(SD_METHODS),
                    help="gradient-free methods (image rewards have no gradient here)")
    sd.add_argument("--num-candidates", type=int, default=8)
    sd.add_argument("--block-size", type=int, default=5)
    sd.add_argument("--selection", default=None, choices=sorted(SELECTIONS),
                    help="default: the method's (argmax; systematic for SMC)")
    sd.add_argument("--particles", type=int, default=4, help="SMC population size K")
    sd.add_argument("--lam", type=float, default=1.0, help="softmax selection's λ")
    sd.add_argument("--steps", type=int, default=50)
    sd.add_argument("--scheduler", default=None, choices=["ddim", "ddpm", "euler"],
                    help="the timestep grid (the step is always DDIM(η)); default: Euler's for "
                         "a pipeline that ships EulerDiscreteScheduler (SDXL), else DDIM's")
    sd.add_argument("--eta", type=float, default=1.0, help="DDIM η (selection needs η > 0)")
    sd.add_argument("--strength", type=float, default=None,
                    help="CoDe(η): start from --reference noised to this strength in (0, 1]")
    sd.add_argument("--guidance-scale", type=float, default=7.5)
    sd.add_argument("--seed", type=int, default=0)
    sd.add_argument("--max-batch", type=int, default=8, help="latents per UNet/VAE call")
    sd.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    sd.add_argument("--dtype", default="auto", choices=list(DTYPES))
    sd.add_argument("--out", required=True, help="output folder")
    sd.set_defaults(func=_sd)

    sw = sub.add_parser("sd-sweep", help="methods × settings × prompts × seeds on a Stable "
                                         "Diffusion pipeline: a resumable table of rows and "
                                         "their images (accelerate launch shards the rows)")
    sw.add_argument("--model", required=True, help="as for `toycode sd`")
    sw.add_argument("--prompts", default="animals",
                    help="a shipped prompt set (animals) or a file with one prompt a line")
    sw.add_argument("--limit-prompts", type=int, default=None, help="only the first L prompts")
    sw.add_argument("--methods", nargs="+", default=["base", "bon", "code", "smc"],
                    help=f"any of {', '.join(SD_METHODS)}")
    sw.add_argument("--grid", default="N=4;B=5;K=4",
                    help='knobs N, B, K, lam, T, e.g. "N=1,4,8;B=5,10;K=4" (a knob a method '
                         'reads but the grid omits: N=8, B=5, K=4, lam=1, T=--steps)')
    sw.add_argument("--seeds", type=int, default=2, help="seeds per prompt and setting")
    sw.add_argument("--fidelity-model", help="hub id or folder of a CLIP model: each row's "
                                             "prompt fidelity (text–image cosine)")
    sw.add_argument("--score-decoder", help="folder of a diffusers AutoencoderTiny (TAESD) that "
                                            "decodes block-end candidates for scoring")
    sw.add_argument("--out", required=True, help="output folder (results.jsonl, images/)")
    _add_reward_args(sw, "reference image (clip-image reward)")
    sw.add_argument("--selection", default=None, choices=sorted(SELECTIONS),
                    help="bon, svdd and code's (default argmax); SMC and the search methods "
                         "keep their own")
    sw.add_argument("--steps", type=int, default=50, help="T, unless the grid varies it")
    sw.add_argument("--scheduler", default=None,
                    help="the backend's timestep grid (ddim, ddpm, ...); default: the backend's")
    sw.add_argument("--eta", type=float, default=1.0, help="DDIM η (selection needs η > 0)")
    sw.add_argument("--guidance-scale", type=float, default=7.5)
    sw.add_argument("--max-batch", type=int, default=8, help="latents per UNet/VAE call")
    sw.add_argument("--device", default=None, help="default: accelerate's device for this "
                                                   "process (cuda if available, else cpu)")
    sw.add_argument("--dtype", default="auto", choices=list(DTYPES))
    sw.set_defaults(func=_sd_sweep)

    tm = sub.add_parser("train-mnist", help="train the MNIST UNet DDPM or the CNN classifier")
    tm.add_argument("--model", required=True, choices=["unet", "classifier"])
    tm.add_argument("--out", help="checkpoint path (default: the committed one)")
    tm.add_argument("--steps", type=int, default=12000, help="UNet optimisation steps")
    tm.add_argument("--epochs", type=int, default=80, help="classifier epochs")
    tm.add_argument("--seed", type=int, default=0)
    tm.add_argument("--restart", action="store_true", help="ignore an existing checkpoint")
    tm.set_defaults(func=_train_mnist)

    me = sub.add_parser("mnist-eval", help="classifier accuracy and base DDPM quality")
    me.add_argument("--n", type=int, default=1000)
    me.add_argument("--steps", type=int, default=50)
    me.add_argument("--seed", type=int, default=0)
    me.set_defaults(func=_mnist_eval)

    md = sub.add_parser("mnist-demo", help="best-of-N, CoDe, SMC, DPS on MNIST against the "
                                           "exact tilted class fraction")
    md.add_argument("--digit", type=int, default=3)
    md.add_argument("--lam", type=float, default=2.0)
    md.add_argument("--n", type=int, default=64)
    md.add_argument("--steps", type=int, default=50)
    md.add_argument("--seed", type=int, default=0)
    md.add_argument("--out-dir", default="figures")
    md.add_argument("--value", default="tweedie", choices=["tweedie", "lookahead"],
                    help="block-end value of best-of-N, CoDe and SMC")
    md.add_argument("--value-samples", "--lookahead-samples", dest="value_samples", type=int,
                    default=4, help="look-ahead M")
    md.add_argument("--lookahead-steps", type=int, default=4, help="look-ahead k")
    md.set_defaults(func=_mnist_demo)
    mg = sub.add_parser("mnist-gmm", help="best-of-N vs CoDe against exact targets of an "
                                          "MNIST-fitted mixture, as the dimension grows")
    mg.add_argument("--dims", type=int, nargs="+", default=[2, 16, 64, 784])
    mg.add_argument("--digit", type=int, default=3)
    mg.add_argument("--n", type=int, default=256)
    mg.add_argument("--num-candidates", type=int, default=16)
    mg.add_argument("--block-size", type=int, default=5)
    mg.add_argument("--steps", type=int, default=30)
    mg.add_argument("--seed", type=int, default=0)
    mg.add_argument("--out-dir", default="figures")
    mg.set_defaults(func=_mnist_gmm)
    for q in (tm, me, md, mg):
        q.add_argument("--data-dir", help="MNIST cache root (default $TOYCODE_DATA or "
                                          "~/.cache/toycode)")

    to = sub.add_parser("tradeoff", help="sweep methods × settings × seeds into a resumable "
                                         "table (results.jsonl)")
    to.add_argument("--problem", required=True)
    to.add_argument("--methods", nargs="+", required=True)
    to.add_argument("--grid", default="", help='e.g. "N=1,2,4,8;B=5;lam=2;scale=1;K=8,32"')
    to.add_argument("--seeds", type=int, default=5)
    to.add_argument("--n", type=int, default=512, help="samples per row")
    to.add_argument("--out", default="results")
    to.add_argument("--value", default="tweedie", choices=api.VALUES,
                    help="value estimator of every row (grid knobs M, k set its options)")
    to.set_defaults(func=_tradeoff)

    lb = sub.add_parser("leaderboard", help="every method × budgets × seeds against the exact "
                                            "targets, at equal compute (resumable table + figure)")
    lb.add_argument("--out", default="leaderboard", help="folder of results.jsonl, "
                                                         "leaderboard.md and the figure")
    lb.add_argument("--benches", nargs="+", help="between box ring mnist-class mnist-gmm "
                                                 "(default: all)")
    lb.add_argument("--methods", nargs="+", help="method records or variants (default: all)")
    lb.add_argument("--fast", action="store_true", help="the tests' size (minutes → seconds)")
    lb.add_argument("--figure", help="PNG path (default OUT/leaderboard.png)")
    lb.add_argument("--no-progress", action="store_true")
    lb.set_defaults(func=_leaderboard)

    va = sub.add_parser("values", help="each value estimator's error against the exact V_t, "
                                       "by noise level (table and figure)")
    va.add_argument("--problem", required=True)
    va.add_argument("--only", nargs="+", choices=[v for v in api.VALUES if v != "exact"],
                    help="estimators to compare (default: all)")
    va.add_argument("--n", type=int, default=1000, help="states per noise level")
    va.add_argument("--steps", type=int, default=100)
    va.add_argument("--seed", type=int, default=0)
    va.add_argument("--out", help="PNG path (default figures/values_PROBLEM.png)")
    va.set_defaults(func=_values)

    tv = sub.add_parser("train-value", help="train the learned soft value of a toy problem")
    tv.add_argument("--problem", required=True)
    tv.add_argument("--out", help="checkpoint (default toycode/checkpoints/value_P_PROCESS.pt)")
    tv.add_argument("--steps", type=int, default=1500)
    tv.add_argument("--seed", type=int, default=0)
    tv.set_defaults(func=_train_value)

    pl = sub.add_parser("plot", help="plots from a tradeoff or sd-sweep table")
    pl.add_argument("results", help="the folder holding results.jsonl")
    pl.add_argument("--kind", default=None,
                    choices=["frontier", "distance-nfe", "reward-nfe", "genealogy",
                             "reward-fidelity"],
                    help="default: frontier (tradeoff), reward-nfe (sd-sweep); sd-sweep tables "
                         "have reward-nfe and reward-fidelity")
    pl.add_argument("--out", help="PNG path (default: in the results folder)")
    pl.set_defaults(func=_plot)

    tr = sub.add_parser("train", help="train the MLP denoiser on a problem's prior")
    tr.add_argument("--problem", required=True)
    tr.add_argument("--out", required=True, help="checkpoint path (.pt)")
    tr.add_argument("--steps", type=int, default=8000)
    tr.add_argument("--batch-size", type=int, default=2048)
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument("--restart", action="store_true", help="ignore an existing checkpoint")
    tr.set_defaults(func=_train)
    for q in (s,):
        q.add_argument("--value-samples", "--lookahead-samples", dest="value_samples", type=int,
                       default=4, help="M: look-ahead rollouts or posterior draws per candidate")
        q.add_argument("--lookahead-steps", type=int, default=4,
                       help="k: coarse model steps of each look-ahead rollout")
    for q in (d, c, s, to, tr, va, tv):   # validated by the API: a bad value is a one-line error
        q.add_argument("--process", default="vp",
                       help="vp (variance-preserving, ε-prediction) | flow (rectified flow)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # commands only write figures to files; library modules leave the backend alone so that a
    # notebook keeps its inline backend
    import matplotlib
    matplotlib.use("Agg")
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        args.func(args)
    except ValueError as err:
        print(f"toycode {args.command}: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
