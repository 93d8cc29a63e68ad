"""A learned soft value for a class-indicator reward on a trained image model.

For r(x0) = 1[classifier(x0) = c] the soft value needs only one probability:

    E[e^{λ r(x0)} | x_t] = 1 + (e^λ − 1)·q_c(x_t),   q_c(x_t) = P(classifier(x0) = c | x_t),

the probability under the base model, so V_t(x_t) = (1/λ) log(1 + (e^λ − 1) q_c(x_t)) exactly, and
learning the value is learning q. toycode fits q_θ with a small noisy classifier trained by cross-
entropy on pairs (x_t = α x0 + σ ε, label = classifier(x0)), x0 base-model samples drawn once with
the base sampler: the forward noising needs no reverse rollouts, and cross-entropy is minimised,
pointwise, at the posterior class probabilities q(x_t). The network also sees the reward
classifier's log-probabilities at clamp(x_t/α, −1, 1) (:func:`classifier_hint`), exact at the
clean end, so it has to learn only how far to trust them at each noise level. One 10-way
network serves every class (q_c is its softmax output c) and every λ; it sees the noise level
(α, σ) rather than a timestep, like :class:`~toycode.training.learned_value.ValueNet`, so one
checkpoint serves every grid of the schedule it was trained on (levels drawn uniformly over the
schedule's training steps: the nearly clean ones are therefore rare in training, which is where
the committed MNIST fit is weakest, docs/results.md).

Its network call is a small CNN plus the reward classifier per candidate, a few per cent of a
UNet call; like the toys' :class:`~toycode.training.learned_value.LearnedValue` it is counted
nowhere in NFE.

``python -m toycode.mnist.class_value`` draws the MNIST UNet's base samples, labels them and writes
``toycode/checkpoints/class_value_mnist.pt`` (:func:`train_class_value` is the data-agnostic part).
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from ..core.diffusion import Process
from ..utils.checks import check_range
from ..utils.io import atomic_save
from ..utils.seeding import seeded

__all__ = [
    "NoisyClassifier",
    "ClassValue",
    "classifier_hint",
    "train_class_value",
    "train_levels",
    "load_class_value",
]


def _level_features(alpha: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """[α, σ, log-SNR / 10]: the log-SNR spreads the nearly clean and nearly pure-noise levels."""
    a, s = alpha.float(), sigma.float()
    snr = torch.log(a.clamp_min(1e-6) ** 2 / s.clamp_min(1e-6) ** 2) / 10
    return torch.stack([a, s, snr], 1)


def _downsampled(size: int) -> int:
    """The side after two 3×3, stride-2, padding-1 convs (28 → 7, 8 → 2)."""
    for _ in range(2):
        size = (size + 1) // 2
    return size


class NoisyClassifier(nn.Module):
    """Logits for q(class | x_t) on (n, channels, size, size) states x_t at noise level (α, σ).

    Three conv blocks (the two strided ones halve the side: 28 → 14 → 7 for MNIST's pixels,
    8 → 4 → 2 for Fashion's 4×8×8 latents) whose channels get a per-level bias from (α, σ) (a
    FiLM-style shift), then a small head that sees the level features again. ``hint``, when
    given, is a denoiser-free guess at the clean label's log-probabilities (MNIST: the reward
    classifier at clamp(x_t/α, −1, 1), exact at the clean end, the role the Gaussian baseline
    plays for the toys' ValueNet): it enters the head's input and, through a per-level gate, the
    logits themselves. Without it a net fitted on a few thousand MNIST base samples stays far
    from the classifier at low noise."""

    def __init__(
        self,
        width: int = 32,
        hidden: int = 64,
        classes: int = 10,
        channels: int = 1,
        size: int = 28,
    ):
        super().__init__()
        self.config = {"width": width, "hidden": hidden, "classes": classes}
        # MNIST's checkpoint predates these keys: store them only when they differ, so its
        # config (and anything comparing configs) is unchanged
        if (channels, size) != (1, 28):
            self.config.update(channels=channels, size=size)
        w = width
        self.convs = nn.ModuleList(
            [
                nn.Conv2d(channels, w, 3, padding=1),
                nn.Conv2d(w, w, 3, stride=2, padding=1),
                nn.Conv2d(w, w, 3, stride=2, padding=1),
            ]
        )
        self.shifts = nn.ModuleList(nn.Linear(3, w) for _ in self.convs)
        flat = w * _downsampled(size) ** 2
        self.head = nn.Sequential(
            nn.Linear(flat + 3 + classes, hidden), nn.GELU(), nn.Linear(hidden, classes)
        )
        self.gate = nn.Linear(3, 1)

    def forward(
        self, x: torch.Tensor, alpha: torch.Tensor, sigma: torch.Tensor, hint=None
    ) -> torch.Tensor:
        feat = _level_features(alpha, sigma)
        h = x.float()
        for conv, shift in zip(self.convs, self.shifts):
            h = nn.functional.gelu(conv(h) + shift(feat)[:, :, None, None])
        if hint is None:
            hint = torch.zeros(len(x), self.config["classes"])
        hint = hint.float()
        return self.head(torch.cat([h.flatten(1), feat, hint], 1)) + self.gate(feat) * hint


def classifier_hint(classifier, x: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """log softmax classifier(clamp(x/α, −1, 1)): :class:`NoisyClassifier`'s hint (no grad)."""
    scaled = (x.float() / alpha.float().clamp_min(1e-3)[:, None, None, None]).clamp(-1, 1)
    with torch.no_grad():
        return torch.log_softmax(classifier(scaled), 1)


def train_levels(
    schedule: str = "linear", num_train_steps: int = 1000, alphas_cumprod=None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Every training level (α, σ), float64: √ᾱ_t and √(1 − ᾱ_t) of ``alphas_cumprod`` at
    t = 0 … K − 1 when given (a diffusers scheduler's, e.g. SD's "scaled_linear" betas: the very
    ᾱ its backend's grid indexes), else toycode's ``schedule`` on ``num_train_steps`` (noisiest
    first, the order the MNIST checkpoint was trained in, so it retrains bit for bit)."""
    if alphas_cumprod is None:
        train = Process.make(num_train_steps, schedule, num_train_steps)
        return train.alphas[:-1], train.sigmas[:-1]
    ac = torch.as_tensor(alphas_cumprod, dtype=torch.float64)
    if ac.ndim != 1 or len(ac) < 1 or not ((ac > 0) & (ac < 1)).all():
        raise ValueError("alphas_cumprod must be a non-empty 1-D tensor in (0, 1)")
    return ac.sqrt(), (1 - ac).sqrt()


def _fit(model, x0, labels, *, levels, hint_fn, steps, batch_size, lr, gen, desc, progress):
    """Adam with a cosine decay on cross-entropy at fresh (level, noise) draws; the final
    loss's running mean."""
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps))
    )
    alphas, sigmas = levels
    avg = float("nan")
    for _ in tqdm(range(steps), disable=not progress, desc=desc):
        k = torch.randint(0, len(x0), (batch_size,), generator=gen)
        lv = torch.randint(0, len(alphas), (batch_size,), generator=gen)
        alpha, sigma = alphas[lv], sigmas[lv]
        noise = torch.randn(x0[k].shape, generator=gen)
        shape = (-1,) + (1,) * (x0.ndim - 1)
        xt = alpha.float().view(shape) * x0[k] + sigma.float().view(shape) * noise
        hint = None if hint_fn is None else hint_fn(xt, alpha)
        loss = nn.functional.cross_entropy(model(xt, alpha, sigma, hint), labels[k])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        avg = loss.item() if math.isnan(avg) else 0.98 * avg + 0.02 * loss.item()
    return avg


def train_class_value(
    x0: torch.Tensor,
    labels: torch.Tensor,
    out: str | Path,
    *,
    classifier=None,
    hint_fn=None,
    schedule: str = "linear",
    num_train_steps: int = 1000,
    alphas_cumprod=None,
    steps: int = 3000,
    batch_size: int = 256,
    lr: float = 2e-3,
    width: int = 32,
    seed: int = 0,
    meta: dict | None = None,
    progress: bool = True,
) -> dict:
    """Fit a :class:`NoisyClassifier` on (α x0 + σ ε, label) pairs and write it to ``out``.

    ``x0``: base-model samples (n, C, S, S), any channels C and side S (MNIST's pixels
    (n, 1, 28, 28), Fashion's latents (n, 4, 8, 8)); ``labels``: the reward classifier's labels
    of them; (α, σ) uniform over the denoiser's training levels (:func:`train_levels` of
    ``schedule`` / ``num_train_steps``, or of ``alphas_cumprod``); ``classifier``: the reward
    classifier, for MNIST's hint (:func:`classifier_hint`), or ``hint_fn(x_t, α)``: any other
    hint (log-probabilities, no grad), or neither."""
    check_range("steps", steps, 1, None)
    if x0.shape[0] != labels.shape[0] or x0.shape[0] < 2:
        raise ValueError(f"need ≥ 2 samples with one label each, got {x0.shape} / {labels.shape}")
    if x0.ndim != 4 or x0.shape[2] != x0.shape[3]:
        raise ValueError(f"x0 must be (n, C, S, S) square states, got {tuple(x0.shape)}")
    if classifier is not None and hint_fn is not None:
        raise ValueError("pass the classifier or a hint_fn, not both")
    if classifier is not None:
        hint_fn = lambda x, alpha: classifier_hint(classifier, x, alpha)  # noqa: E731
    gen = torch.Generator().manual_seed(seed)
    levels = train_levels(schedule, num_train_steps, alphas_cumprod)
    with seeded(seed):
        model = NoisyClassifier(width=width, channels=x0.shape[1], size=x0.shape[2])
    x0, labels = x0.float(), labels.long()
    avg = _fit(
        model,
        x0,
        labels,
        levels=levels,
        hint_fn=hint_fn,
        steps=steps,
        batch_size=batch_size,
        lr=lr,
        gen=gen,
        desc=f"training {Path(out).name}",
        progress=progress,
    )
    if alphas_cumprod is None:
        stored = {"name": schedule, "num_train_steps": num_train_steps}
    else:
        stored = {
            "name": "alphas_cumprod",
            "alphas_cumprod": torch.as_tensor(alphas_cumprod, dtype=torch.float64),
        }
    ckpt = {
        "kind": "class-value",
        "config": model.config,
        "model": model.state_dict(),
        "schedule": stored,
        "hint": hint_fn is not None,
        "class_counts": torch.bincount(labels, minlength=model.config["classes"]).tolist(),
        "seed": seed,
        "loss": avg,
        "train": {"steps": steps, "batch_size": batch_size, "lr": lr, "n": len(x0)},
        **(meta or {}),
    }
    atomic_save(ckpt, out)
    return ckpt


class ClassValue:
    """V(x_t) = (1/λ) log(1 + (e^λ − 1) q_θ(c | x_t, α_t, σ_t)) for r = 1[classifier = c].

    A :class:`~toycode.core.values.Value` (``needs_x0 = False``: it never reads x̂0, so the sampler
    skips the denoiser at candidates it discards); its network call is not counted in NFE."""

    needs_x0 = False

    def __init__(
        self, model: NoisyClassifier, digit: int, lam: float, classifier=None, *, hint_fn=None
    ):
        classes = model.config["classes"]
        if not isinstance(digit, int) or not 0 <= digit < classes:
            raise ValueError(f"class must be an integer in 0..{classes - 1}, got {digit!r}")
        check_range("lam", lam, 0.0, None, low_open=True)
        self.model, self.digit, self.lam = model.eval(), digit, float(lam)
        if classifier is not None and hint_fn is not None:
            raise ValueError("pass the classifier or a hint_fn, not both")
        self.classifier, self.hint_fn = classifier, hint_fn

    def probs_at(self, x: torch.Tensor, alpha: float, sigma: float) -> torch.Tensor:
        """q_θ(· | x) at one noise level: (n, classes) float64."""
        n = len(x)
        a = torch.full((n,), float(alpha))
        s = torch.full((n,), float(sigma))
        chunks = []
        with torch.no_grad():
            for c in x.float().split(1024):
                ac, sc = a[: len(c)], s[: len(c)]
                hint = self._hint(c, ac)
                chunks.append(self.model(c, ac, sc, hint))
        return torch.softmax(torch.cat(chunks).double(), 1)

    def _hint(self, x: torch.Tensor, alpha: torch.Tensor):
        if self.classifier is not None:
            return classifier_hint(self.classifier, x, alpha)
        return None if self.hint_fn is None else self.hint_fn(x, alpha)

    def values_at(self, x: torch.Tensor, alpha: float, sigma: float) -> torch.Tensor:
        """V at a batch x and one noise level (α, σ)."""
        q = self.probs_at(x, alpha, sigma)[:, self.digit]
        return torch.log1p(math.expm1(self.lam) * q) / self.lam

    def __call__(self, ledger, backend, x, x0, i: int, generator=None) -> torch.Tensor:
        lv = backend.process.level(i)
        return self.values_at(x, lv.alpha, lv.sigma)


def load_class_value(
    path: str | Path, digit: int, lam: float, classifier=None, *, hint_fn=None
) -> ClassValue:
    """The learned value of class ``digit`` at ``lam`` from a :func:`train_class_value` file
    (``classifier`` or ``hint_fn``: the hint it was trained with, needed when it was)."""
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(ckpt, dict) or ckpt.get("kind") != "class-value":
        raise ValueError(f"{path} is not a toycode class-value checkpoint")
    model = NoisyClassifier(**ckpt["config"])
    model.load_state_dict(ckpt["model"])
    if not ckpt.get("hint"):
        return ClassValue(model, digit, lam)
    if classifier is None and hint_fn is None:
        raise ValueError(f"{path} was trained with the classifier hint: pass its classifier")
    return ClassValue(model, digit, lam, classifier, hint_fn=hint_fn)
