"""Training the tiny denoisers, with seeds, progress bars, atomic and resumable checkpoints.

``fit`` is the one training loop, Adam with cosine learning-rate decay, for either process:

    vp     ε-prediction  E‖ε − ε̂(√ᾱ_t x0 + √(1 − ᾱ_t) ε, t)‖², t uniform over the training steps
           (Ho et al. 2020, Alg. 1)
    flow   velocity      E‖(ε − x0) − v̂((1 − t) x0 + t ε, 1000·t)‖², t ~ U(0, 1) (rectified
           flow / conditional flow matching: Liu et al. 2023, Lipman et al. 2023)

The checkpoint records its process and prediction type, from which
:func:`toycode.backends.load_trained_backend` builds the matching Process.
Checkpoints hold the model, optimiser, step and generator state, and are written atomically
(temporary file + rename), so an interrupted run resumes from its last checkpoint and a failed
one leaves no half-written file.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from tqdm.auto import tqdm

from ..backends.mlp import MLPDenoiser
from ..core.diffusion import cosine_schedule, linear_schedule
from ..exact.boxes import BoxMixture
from ..exact.gmm import GaussianMixture
from ..utils.checks import check_choice, check_range
from ..utils.io import atomic_save
from ..utils.seeding import seeded

__all__ = ["fit", "train_mlp", "CHECKPOINT_DIR", "find_mlp_checkpoint", "PROCESSES"]

log = logging.getLogger(__name__)
CHECKPOINT_DIR = Path(__file__).parents[1] / "checkpoints"
_SCHEDULES = {"linear": linear_schedule, "cosine": cosine_schedule}
PROCESSES = ("vp", "flow")
"""The forward processes a toy model may be trained on and sampled under."""


def fit(
    model: torch.nn.Module,
    data: Callable[[int, torch.Generator], torch.Tensor],
    *,
    out: str | Path,
    meta: dict,
    steps: int,
    batch_size: int = 1024,
    lr: float = 2e-3,
    schedule: str = "linear",
    num_train_steps: int = 1000,
    seed: int = 0,
    checkpoint_every: int = 1000,
    resume: bool = True,
    progress: bool = True,
    ema_decay: float | None = None,
    process: str = "vp",
) -> dict:
    """Train a denoiser on batches ``data(batch_size, generator)``; returns the final checkpoint.

    ``process`` "vp" trains ε-prediction on ``schedule``; "flow" trains rectified-flow velocity
    (``schedule`` is then unused and recorded as "flow").

    With ``ema_decay`` the checkpoint's "model" holds the exponential moving average of the
    weights (what sampling should use) and "train_model" the raw weights (what resuming needs).
    """
    check_range("steps", steps, 1, None)
    check_range("batch_size", batch_size, 1, None)
    check_range("lr", lr, 0.0, None, low_open=True)
    check_choice("process", process, PROCESSES)
    if schedule not in _SCHEDULES:
        raise ValueError(f"schedule must be one of {sorted(_SCHEDULES)}, got {schedule!r}")
    out = Path(out)
    flow = process == "flow"
    abar = None if flow else _SCHEDULES[schedule](num_train_steps).float()
    gen = torch.Generator().manual_seed(seed)  # the batches' and the noise's, checkpointed
    training = _Training.start(model, gen, lr=lr, steps=steps, ema_decay=ema_decay)
    start = 0
    if resume and out.exists():
        start = _resume(out, training, steps=steps, seed=seed, process=process)
    # what every checkpoint records of how it was trained, beside the training state
    record = {
        "process": process,
        "prediction": "flow" if flow else "epsilon",
        "schedule": {"name": "flow" if flow else schedule, "num_train_steps": num_train_steps},
        "train": {"steps": steps, "batch_size": batch_size, "lr": lr, "ema_decay": ema_decay},
    }
    model.train()
    avg, ckpt = float("nan"), None
    bar = tqdm(
        range(start, steps),
        initial=start,
        total=steps,
        disable=not progress,
        desc=f"training {out.name}",
    )
    for step in bar:
        loss = _loss(model, data(batch_size, gen), gen, abar=abar, num_train_steps=num_train_steps)
        training.step(loss)
        avg = loss.item() if math.isnan(avg) else 0.98 * avg + 0.02 * loss.item()
        if step % 50 == 0:
            bar.set_postfix(loss=f"{avg:.4f}", refresh=False)
        if (step + 1) % checkpoint_every == 0 or step + 1 == steps:
            ckpt = {
                **meta,
                **training.state(),
                "step": step + 1,
                "seed": seed,
                "loss": avg,
                **record,
            }
            atomic_save(ckpt, out)
    model.eval()
    return ckpt if ckpt is not None else torch.load(out, map_location="cpu", weights_only=True)


def _loss(
    model: torch.nn.Module,
    x0: torch.Tensor,
    gen: torch.Generator,
    *,
    abar: torch.Tensor | None,
    num_train_steps: int,
) -> torch.Tensor:
    """One batch's mean squared error (module docstring): ε-prediction on the schedule ``abar``,
    or rectified-flow velocity when ``abar`` is None. Draws t, then ε, from ``gen``."""
    shape = (-1, *([1] * (x0.ndim - 1)))
    if abar is None:  # x_t = (1 − t) x0 + t ε, target v = ε − x0, time input 1000·t as diffusers'
        t = torch.rand(len(x0), generator=gen)
        eps = torch.randn(x0.shape, generator=gen)
        tt = t.view(shape)
        pred = model((1 - tt) * x0 + tt * eps, t * num_train_steps)
        return ((pred - (eps - x0)) ** 2).mean()
    t = torch.randint(0, num_train_steps, (len(x0),), generator=gen)
    eps = torch.randn(x0.shape, generator=gen)
    a = abar[t].view(shape)
    return ((model(a.sqrt() * x0 + (1 - a).sqrt() * eps, t) - eps) ** 2).mean()


def _update_ema(ema: dict, model: torch.nn.Module, decay: float) -> None:
    """ema ← decay·ema + (1 − decay)·weights for floating tensors; others (counters) copied."""
    with torch.no_grad():
        for k, v in model.state_dict().items():
            if v.dtype.is_floating_point:
                ema[k].mul_(decay).add_(v.detach(), alpha=1 - decay)
            else:
                ema[k].copy_(v)


@dataclass
class _Training:
    """What a fit updates and checkpoints: the model, its optimiser and learning-rate schedule,
    the generator of its batches and noise, and the EMA weights (None without ``ema_decay``)."""

    model: torch.nn.Module
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LambdaLR
    gen: torch.Generator
    ema: dict | None
    ema_decay: float | None

    @classmethod
    def start(
        cls, model: torch.nn.Module, gen: torch.Generator, *, lr: float, steps: int, ema_decay
    ) -> _Training:
        """Adam with the learning rate decayed on a cosine to 0 at ``steps``; the EMA starts
        from the initial weights."""
        opt = torch.optim.Adam(model.parameters(), lr=lr)
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps))
        )
        ema = None
        if ema_decay is not None:
            check_range("ema_decay", ema_decay, 0.0, 1.0, high_open=True)
            ema = {k: v.detach().clone() for k, v in model.state_dict().items()}
        return cls(model, opt, sched, gen, ema, ema_decay)

    def step(self, loss: torch.Tensor) -> None:
        """One optimiser step on ``loss``, then the schedule's and the EMA's."""
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self.sched.step()
        if self.ema is not None and self.ema_decay is not None:
            _update_ema(self.ema, self.model, self.ema_decay)

    def state(self) -> dict:
        """The checkpoint's training entries: with an EMA its "model" is the average (what
        sampling uses) and "train_model" the raw weights (what resuming needs)."""
        if self.ema is not None:
            weights = {"model": self.ema, "train_model": self.model.state_dict()}
        else:
            weights = {"model": self.model.state_dict()}
        return {
            **weights,
            "optimizer": self.opt.state_dict(),
            "lr_schedule": self.sched.state_dict(),
            "generator": self.gen.get_state(),
        }

    def restore(self, ckpt: dict) -> None:
        """Load a checkpoint's training state in place (the inverse of :meth:`state`)."""
        self.model.load_state_dict(ckpt["train_model"] if self.ema is not None else ckpt["model"])
        self.opt.load_state_dict(ckpt["optimizer"])
        self.sched.load_state_dict(ckpt["lr_schedule"])
        self.gen.set_state(ckpt["generator"])
        self.ema = ckpt["model"] if self.ema is not None else None


def _resume(out: Path, training: _Training, *, steps: int, seed: int, process: str) -> int:
    """The step to continue from: the checkpoint at ``out`` is restored into ``training`` when
    it is this very run's (same steps, seed and process); any other is trained over from 0."""
    ckpt = torch.load(out, map_location="cpu", weights_only=True)
    if (
        ckpt.get("train", {}).get("steps") == steps
        and ckpt.get("seed") == seed
        and ckpt.get("process", "vp") == process
    ):
        training.restore(ckpt)
        log.info("resuming %s from step %d", out, ckpt["step"])
        return ckpt["step"]
    return 0


def train_mlp(
    prior: GaussianMixture | BoxMixture,
    out: str | Path,
    *,
    steps: int = 6000,
    batch_size: int = 2048,
    width: int = 128,
    depth: int = 4,
    seed: int = 0,
    progress: bool = True,
    process: str = "vp",
    **fit_options,
) -> dict:
    """Train the 2-D MLP denoiser on fresh exact samples of ``prior``; writes ``out``.

    ``process`` "vp" (ε-prediction) or "flow" (rectified-flow velocity)."""
    check_choice("process", process, PROCESSES)
    with seeded(seed):  # parameter initialisation
        model = MLPDenoiser(prior.dim, width, depth)
    meta = {"kind": "mlp", "config": model.config, "prior": prior.to_dict()}

    def data(n, gen):
        return prior.sample(n, gen).float()

    return fit(
        model,
        data,
        out=out,
        meta=meta,
        steps=steps,
        batch_size=batch_size,
        seed=seed,
        progress=progress,
        process=process,
        **fit_options,
    )


def find_mlp_checkpoint(
    prior: GaussianMixture | BoxMixture, folder: str | Path = CHECKPOINT_DIR, process: str = "vp"
) -> Path:
    """The committed MLP checkpoint trained on exactly this prior under ``process``."""
    check_choice("process", process, PROCESSES)
    others = []
    for path in sorted(Path(folder).glob("*.pt")):
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        p = ckpt.get("prior")
        if ckpt.get("kind") == "mlp" and p is not None and _same_prior(p, prior):
            if ckpt.get("process", "vp") == process:
                return path
            others.append(f"{path.name} ({ckpt.get('process', 'vp')})")
    found = f" (found {', '.join(others)})" if others else ""
    raise ValueError(
        f"no trained MLP checkpoint in {folder} matches this prior with "
        f"process={process!r}{found}; train one with "
        f"`toycode train --problem P.json --process {process} --out model.pt`"
    )


def _same_prior(spec: dict, prior: GaussianMixture | BoxMixture) -> bool:
    """A checkpoint's ``prior`` record describes this prior (its type and every array)."""
    want = prior.to_dict()
    if not isinstance(spec, dict) or set(spec) != set(want):
        return False
    for key, value in want.items():
        if key == "type":
            if spec[key] != value:
                return False
            continue
        try:
            a, b = torch.as_tensor(spec[key], dtype=torch.float64), torch.as_tensor(value)
        except (TypeError, ValueError, RuntimeError):
            return False
        if a.shape != b.shape or not torch.allclose(a, b.double()):
            return False
    return True
