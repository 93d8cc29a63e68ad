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
    "load_class_value",
]


def _level_features(alpha: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """[α, σ, log-SNR / 10]: the log-SNR spreads the nearly clean and nearly pure-noise levels."""
    a, s = alpha.float(), sigma.float()
    snr = torch.log(a.clamp_min(1e-6) ** 2 / s.clamp_min(1e-6) ** 2) / 10
    return torch.stack([a, s, snr], 1)


class NoisyClassifier(nn.Module):
    """10 logits for q(class | x_t) on (n, 1, 28, 28) states x_t at noise level (α, σ).

    Three conv blocks (28 → 14 → 7) whose channels get a per-level bias from (α, σ) (a FiLM-style
    shift), then a small head that sees the level features again. ``hint``, when given, is the
    reward classifier's log-probabilities at clamp(x_t/α, −1, 1), a denoiser-free guess that is
    exact at the clean end (the role the Gaussian baseline plays for the toys' ValueNet): it
    enters the head's input and, through a per-level gate, the logits themselves. Without it a
    net fitted on a few thousand base samples stays far from the classifier at low noise."""

    def __init__(self, width: int = 32, hidden: int = 64, classes: int = 10):
        super().__init__()
        self.config = {"width": width, "hidden": hidden, "classes": classes}
        w = width
        self.convs = nn.ModuleList(
            [
                nn.Conv2d(1, w, 3, padding=1),
                nn.Conv2d(w, w, 3, stride=2, padding=1),
                nn.Conv2d(w, w, 3, stride=2, padding=1),
            ]
        )
        self.shifts = nn.ModuleList(nn.Linear(3, w) for _ in self.convs)
        self.head = nn.Sequential(
            nn.Linear(w * 49 + 3 + classes, hidden), nn.GELU(), nn.Linear(hidden, classes)
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


def _levels(train: Process, n: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    k = torch.randint(0, train.num_steps, (n,), generator=gen)
    return train.alphas[k], train.sigmas[k]


def train_class_value(
    x0: torch.Tensor,
    labels: torch.Tensor,
    out: str | Path,
    *,
    classifier=None,
    schedule: str = "linear",
    num_train_steps: int = 1000,
    steps: int = 3000,
    batch_size: int = 256,
    lr: float = 2e-3,
    seed: int = 0,
    meta: dict | None = None,
    progress: bool = True,
) -> dict:
    """Fit a :class:`NoisyClassifier` on (α x0 + σ ε, label) pairs and write it to ``out``.

    ``x0``: base-model samples (n, 1, 28, 28); ``labels``: the reward classifier's labels of them;
    (α, σ) uniform over the ``schedule``'s ``num_train_steps`` levels (the denoiser's);
    ``classifier``: the reward classifier, for the hint (:class:`NoisyClassifier`), or None."""
    check_range("steps", steps, 1, None)
    if x0.shape[0] != labels.shape[0] or x0.shape[0] < 2:
        raise ValueError(f"need ≥ 2 samples with one label each, got {x0.shape} / {labels.shape}")
    gen = torch.Generator().manual_seed(seed)
    train = Process.make(num_train_steps, schedule, num_train_steps)  # every training level
    with seeded(seed):
        model = NoisyClassifier()
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps))
    )
    x0, labels, avg = x0.float(), labels.long(), float("nan")
    for _ in tqdm(range(steps), disable=not progress, desc=f"training {Path(out).name}"):
        k = torch.randint(0, len(x0), (batch_size,), generator=gen)
        alpha, sigma = _levels(train, batch_size, gen)
        noise = torch.randn(x0[k].shape, generator=gen)
        xt = alpha.float()[:, None, None, None] * x0[k] + sigma.float()[:, None, None, None] * noise
        hint = None if classifier is None else classifier_hint(classifier, xt, alpha)
        loss = nn.functional.cross_entropy(model(xt, alpha, sigma, hint), labels[k])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        avg = loss.item() if math.isnan(avg) else 0.98 * avg + 0.02 * loss.item()
    ckpt = {
        "kind": "class-value",
        "config": model.config,
        "model": model.state_dict(),
        "schedule": {"name": schedule, "num_train_steps": num_train_steps},
        "hint": classifier is not None,
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

    def __init__(self, model: NoisyClassifier, digit: int, lam: float, classifier=None):
        classes = model.config["classes"]
        if not isinstance(digit, int) or not 0 <= digit < classes:
            raise ValueError(f"class must be an integer in 0..{classes - 1}, got {digit!r}")
        check_range("lam", lam, 0.0, None, low_open=True)
        self.model, self.digit, self.lam = model.eval(), digit, float(lam)
        self.classifier = classifier

    def probs_at(self, x: torch.Tensor, alpha: float, sigma: float) -> torch.Tensor:
        """q_θ(· | x) at one noise level: (n, classes) float64."""
        n = len(x)
        a = torch.full((n,), float(alpha))
        s = torch.full((n,), float(sigma))
        chunks = []
        with torch.no_grad():
            for c in x.float().split(1024):
                ac, sc = a[: len(c)], s[: len(c)]
                hint = None if self.classifier is None else classifier_hint(self.classifier, c, ac)
                chunks.append(self.model(c, ac, sc, hint))
        return torch.softmax(torch.cat(chunks).double(), 1)

    def values_at(self, x: torch.Tensor, alpha: float, sigma: float) -> torch.Tensor:
        """V at a batch x and one noise level (α, σ)."""
        q = self.probs_at(x, alpha, sigma)[:, self.digit]
        return torch.log1p(math.expm1(self.lam) * q) / self.lam

    def __call__(self, ledger, backend, x, x0, i: int, generator=None) -> torch.Tensor:
        lv = backend.process.level(i)
        return self.values_at(x, lv.alpha, lv.sigma)


def load_class_value(path: str | Path, digit: int, lam: float, classifier=None) -> ClassValue:
    """The learned value of class ``digit`` at ``lam`` from a :func:`train_class_value` file
    (``classifier``: the reward classifier, needed when it was trained with the hint)."""
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(ckpt, dict) or ckpt.get("kind") != "class-value":
        raise ValueError(f"{path} is not a toycode class-value checkpoint")
    model = NoisyClassifier(**ckpt["config"])
    model.load_state_dict(ckpt["model"])
    if ckpt.get("hint") and classifier is None:
        raise ValueError(f"{path} was trained with the classifier hint: pass its classifier")
    return ClassValue(model, digit, lam, classifier if ckpt.get("hint") else None)
