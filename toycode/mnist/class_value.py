"""The MNIST UNet's learned class value (:mod:`toycode.training.class_value`): data, fit, check.

``python -m toycode.mnist.class_value train`` draws base samples from the committed UNet (the
base sampler at T = 10, as the leaderboard's mnist-class bench runs it), labels them with the
committed classifier and fits the noisy classifier q_θ on their forward-noised copies (no reverse
rollouts); ``python -m toycode.mnist.class_value check`` prints the class tilt's fractions with the
learned value and with Tweedie's r(x̂0), and the two values' log-losses on held-out pairs.

The pairs come from the T = 10 sampler's outputs noised by the forward process, so q_θ is the
class posterior of that sampler's output distribution under the forward process; the sampler's
own intermediate states follow its reverse chain instead, which is the one approximation left.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import torch

from ..backends.trained import load_trained_backend
from ..core.sampler import sample_blockwise
from ..training.class_value import ClassValue, load_class_value, train_class_value
from ..training.train import CHECKPOINT_DIR
from ..utils.checks import check_choice
from .eval import class_rates, tilted_fraction
from .models import UNET_PATH, ClassIndicator, load_classifier

__all__ = [
    "CLASS_VALUE_PATH",
    "base_pairs",
    "train_mnist_class_value",
    "load_mnist_class_value",
    "tilt_fractions",
    "heldout_logloss",
]

CLASS_VALUE_PATH = CHECKPOINT_DIR / "class_value_mnist.pt"


def _zero(x):
    return torch.zeros(len(x), dtype=torch.float64)


def base_pairs(n: int, *, steps: int = 10, seed: int = 0, classifier=None):
    """n base samples of the UNet at T = ``steps`` and their classifier labels."""
    backend = load_trained_backend(UNET_PATH, steps=steps)
    classifier = classifier or load_classifier()
    gen = torch.Generator().manual_seed(seed)
    x0 = sample_blockwise(backend, _zero, n, generator=gen).samples.float()
    with torch.no_grad():
        labels = torch.cat([classifier(c).argmax(1) for c in x0.split(1024)])
    return x0, labels


def train_mnist_class_value(
    out: str | Path = CLASS_VALUE_PATH,
    *,
    n: int = 4096,
    sample_steps: int = 10,
    steps: int = 1500,
    seed: int = 0,
    progress: bool = True,
) -> dict:
    """Draw n base samples (seed ``seed``), label them, fit q_θ; writes ``out``."""
    start = time.perf_counter()
    classifier = load_classifier()
    x0, labels = base_pairs(n, steps=sample_steps, seed=seed, classifier=classifier)
    sampled = time.perf_counter() - start
    sched = torch.load(UNET_PATH, map_location="cpu", weights_only=True)["schedule"]
    meta = {"data": f"mnist_unet.pt base samples, T = {sample_steps}, seed {seed}"}
    ckpt = train_class_value(
        x0,
        labels,
        out,
        classifier=classifier,
        schedule=sched["name"],
        num_train_steps=sched["num_train_steps"],
        steps=steps,
        batch_size=128,
        seed=seed,
        meta=meta,
        progress=progress,
    )
    ckpt["seconds"] = {"sampling": sampled, "total": time.perf_counter() - start}
    return ckpt


def load_mnist_class_value(digit: int = 3, lam: float = 2.0, path=CLASS_VALUE_PATH) -> ClassValue:
    """The committed MNIST class value for ``digit`` at ``lam``."""
    return load_class_value(path, digit, lam, load_classifier())


def _exact(backend, classifier, digit: int, lam: float, *, n_base: int, seed: int):
    """P*(c) from π_c measured on n_base fresh base samples, with π's s.e. propagated."""
    base = sample_blockwise(backend, _zero, n_base, generator=torch.Generator().manual_seed(seed))
    rates, se = class_rates(classifier, base.samples)
    pi, pi_se = float(rates[digit]), float(se[digit])
    exact = tilted_fraction(pi, lam)
    return exact, pi_se * math.exp(lam) / (pi * math.exp(lam) + 1 - pi) ** 2, pi


def tilt_fractions(
    n: int = 256,
    *,
    digit: int = 3,
    lam: float = 2.0,
    steps: int = 10,
    num_candidates: int = 4,
    block_size: int = 1,
    particles: int = 8,
    n_base: int = 4096,
    seed: int = 0,
    methods: tuple[str, ...] = ("code-softmax", "smc"),
    values: tuple[str, ...] = ("learned", "tweedie"),
) -> dict:
    """The class-c fraction of CoDe-softmax (N, B) and SMC (K, B = 1) with the learned value and
    with Tweedie's, each against P*(c): fraction, s.e. and |fraction − P*| / s.e. (both s.e.s)."""
    runs = {
        "code-softmax": dict(num_candidates=num_candidates, block_size=block_size),
        "smc": dict(particles=particles, block_size=1, selection="systematic"),
    }
    known = {"learned": lambda: load_mnist_class_value(digit, lam), "tweedie": lambda: "tweedie"}
    for key, options in (("method", runs), ("value", known)):
        for name in methods if key == "method" else values:
            check_choice(key, name, tuple(options))
    classifier = load_classifier()
    backend = load_trained_backend(UNET_PATH, steps=steps)
    reward = ClassIndicator(digit, classifier)
    exact, exact_se, pi = _exact(backend, classifier, digit, lam, n_base=n_base, seed=seed + 999)
    rows = {}
    for name in methods:
        kw = {"selection": "softmax", **runs[name]}
        for vname in values:
            value = known[vname]()
            gen = torch.Generator().manual_seed(seed)
            res = sample_blockwise(backend, reward, n, lam=lam, value=value, generator=gen, **kw)
            frac = float(res.rewards.mean())
            se = math.sqrt(max(frac * (1 - frac), 1.0 / n) / n)
            rows[f"{name}/{vname}"] = {
                "fraction": frac,
                "se": se,
                "distance": abs(frac - exact) / math.hypot(se, exact_se),
                "nfe": float(res.nfe),
            }
    return {"exact": exact, "exact_se": exact_se, "pi": pi, "n": n, "rows": rows}


def heldout_logloss(
    n: int = 1024, *, steps: int = 10, level: int = 2, seed: int = 12345, digit: int = 3
) -> dict:
    """Log-losses on held-out pairs (fresh base samples x0 noised to grid index ``level``): the
    learned q_θ(label | x_t) vs the Tweedie classifier-of-x̂0 softmax(classifier(x̂0(x_t))), 10-way
    and for the one-vs-rest indicator of ``digit``; means with their s.e.s."""
    classifier = load_classifier()
    backend = load_trained_backend(UNET_PATH, steps=steps)
    x0, labels = base_pairs(n, steps=steps, seed=seed, classifier=classifier)
    gen = torch.Generator().manual_seed(seed + 1)
    xt = backend.process.noise_to(x0, level, gen)
    lv = backend.process.level(level)
    q_learned = load_mnist_class_value(digit).probs_at(xt, lv.alpha, lv.sigma)
    with torch.no_grad():
        x0_hat = backend.predict(xt, level).x0
        q_tweedie = torch.softmax(classifier(x0_hat.float()).double(), 1)
    out = {"n": n, "level": level, "alpha": lv.alpha, "sigma": lv.sigma}
    losses = {}
    for name, q in (("learned", q_learned), ("tweedie", q_tweedie)):
        q = q.clamp(1e-12, 1.0)
        qc = q[:, digit].clamp(1e-12, 1 - 1e-12)
        losses[name, "10way"] = -q.gather(1, labels[:, None]).log()[:, 0]
        losses[name, "digit"] = -torch.where(labels == digit, qc.log(), (1 - qc).log())
    for (name, key), loss in losses.items():
        out[f"{name}/{key}"] = (float(loss.mean()), float(loss.std() / math.sqrt(n)))
    for key in ("10way", "digit"):
        # the same pairs feed both: the paired gap's s.e. is the one that decides
        gap = losses["tweedie", key] - losses["learned", key]
        out[f"gap/{key}"] = (float(gap.mean()), float(gap.std() / math.sqrt(n)))
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m toycode.mnist.class_value")
    sub = parser.add_subparsers(dest="cmd", required=True)
    tr = sub.add_parser("train", help="write toycode/checkpoints/class_value_mnist.pt")
    tr.add_argument("--n", type=int, default=4096)
    tr.add_argument("--steps", type=int, default=1500)
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument("--out", default=str(CLASS_VALUE_PATH))
    ck = sub.add_parser("check", help="fractions vs P* and held-out log-losses")
    ck.add_argument("--n", type=int, default=256)
    ck.add_argument("--particles", type=int, default=8)
    ck.add_argument("--candidates", type=int, default=4)
    args = parser.parse_args(argv)
    if args.cmd == "train":
        ckpt = train_mnist_class_value(args.out, n=args.n, steps=args.steps, seed=args.seed)
        print(f"wrote {args.out}: final loss {ckpt['loss']:.4f}, {ckpt['seconds']}")
        return
    res = tilt_fractions(args.n, particles=args.particles, num_candidates=args.candidates)
    print(f"P* = {res['exact']:.4f} ± {res['exact_se']:.4f} (π = {res['pi']:.4f}), n = {args.n}")
    for key, row in res["rows"].items():
        print(
            f"{key:22s} fraction {row['fraction']:.4f} ± {row['se']:.4f}  "
            f"|f − P*|/s.e. {row['distance']:.2f}  NFE {row['nfe']:.0f}"
        )
    for level in (2, 5, 8):
        res = heldout_logloss(512, level=level)
        print(f"held-out pairs at grid index {level} (α = {res['alpha']:.3f}), n = {res['n']}:")
        for key in (
            "learned/10way",
            "tweedie/10way",
            "gap/10way",
            "learned/digit",
            "tweedie/digit",
            "gap/digit",
        ):
            print(f"  log-loss {key:14s} {res[key][0]:.3f} ± {res[key][1]:.3f}")


if __name__ == "__main__":
    main()
