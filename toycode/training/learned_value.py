"""A learned soft value v_θ for the toy problems, trained without reverse rollouts.

Fitting v_θ = e^u to y = e^{λ(r(x0) − b(x_t))} on x_t = α x0 + σ ε, with x0 drawn from the base
model and (α, σ) from the process, by the proper loss e^u − y·u (minimised, pointwise, at
u = log E[y | x_t]) gives v* = E[e^{λ(r(x0) − b(x_t))} | x_t], so
V_t = b(x_t) + (1/λ) log v* (design notes §7). Any baseline b that is a function of x_t alone keeps
the minimiser; toycode uses b(x_t) = r(m(x_t)), m the posterior mean under a single Gaussian
moment-matched to the prior, which makes y of order one at every noise level (with a constant
baseline y spans e^{−20}…1 on ``between`` and the fit ignores the low-value modes). The network
sees (α, σ) rather than a timestep, so one checkpoint serves every grid of its process. The
targets are clipped at e^6 (a handful of outliers would otherwise swamp the loss at every
level): the fit is then log E[min(y, e^6) | x_t], biased down only where a state's value
exceeds its baseline by 6/λ, which `toycode values` shows to be negligible on the built-ins.

``toycode train-value --problem P`` writes ``toycode/checkpoints/value_P_vp.pt``;
:func:`find_value_checkpoint` finds the one matching a problem (prior, reward, λ) and process.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from ..core.diffusion import Process
from ..utils.checks import check_choice, check_range
from ..utils.io import atomic_save
from ..utils.seeding import seeded
from .train import CHECKPOINT_DIR, PROCESSES

__all__ = [
    "ValueNet",
    "GaussianBaseline",
    "LearnedValue",
    "train_value",
    "find_value_checkpoint",
    "load_learned_value",
]


class ValueNet(nn.Module):
    """u(x, α, σ) = σ·f(x, α, σ), f an MLP on [x, α, σ] with residual GELU blocks; v_θ = e^u.

    The factor σ builds in what is known at the clean end: there the posterior is a point mass,
    the baseline is exact and the correction must vanish."""

    def __init__(self, dim: int = 2, width: int = 128, depth: int = 3):
        super().__init__()
        self.config = {"dim": dim, "width": width, "depth": depth}
        self.inp = nn.Linear(dim + 2, width)
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.LayerNorm(width), nn.GELU(), nn.Linear(width, width))
            for _ in range(depth)
        )
        self.out = nn.Sequential(nn.LayerNorm(width), nn.GELU(), nn.Linear(width, 1))

    def forward(self, x: torch.Tensor, alpha: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        h = self.inp(torch.cat([x, alpha[:, None], sigma[:, None]], 1))
        for block in self.blocks:
            h = h + block(h)
        return sigma * self.out(h)[:, 0]


_VP_LEVELS = Process.make(1000, num_train_steps=1000)  # every VP training timestep's (α, σ)


def _levels(process: str, n: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(α, σ) drawn uniformly over the process's training levels (1000 VP steps; flow t ∈ (0,1))."""
    if process == "flow":
        t = torch.rand(n, generator=gen, dtype=torch.float64) * (1 - 1e-3) + 1e-3
        return 1 - t, t
    k = torch.randint(0, _VP_LEVELS.num_steps, (n,), generator=gen)
    return _VP_LEVELS.alphas[k], _VP_LEVELS.sigmas[k]


def _spec(problem) -> dict:
    return {"problem": problem.to_dict()}


class GaussianBaseline:
    """b(x_t) = r(m(x_t)), m(x) = μ + α Σ (α² Σ + σ² I)⁻¹ (x − α μ) for the prior's mean μ and
    covariance Σ: a cheap, denoiser-free guess of the value that the network corrects."""

    def __init__(self, reward, mean: torch.Tensor, cov: torch.Tensor):
        self.reward = reward
        self.mean, self.cov = mean.double(), cov.double()
        # Σ = Q Λ Qᵀ turns α Σ (α²Σ + σ²I)⁻¹ into Q diag(αλ/(α²λ + σ²)) Qᵀ: no per-row solve
        self._evals, self._evecs = torch.linalg.eigh(self.cov)

    @classmethod
    def of(cls, problem) -> "GaussianBaseline":
        return cls(problem.reward, problem.prior.mean, problem.prior.covariance)

    def __call__(self, x: torch.Tensor, alpha: torch.Tensor, sigma: torch.Tensor):
        a, s = alpha.double()[:, None], sigma.double()[:, None]
        lam = self._evals[None, :]
        gain = a * lam / (a * a * lam + s * s)  # (n, d) in Σ's eigenbasis
        resid = (x.double() - a * self.mean) @ self._evecs
        return self.reward(self.mean + (gain * resid) @ self._evecs.T)


def train_value(
    problem,
    out: str | Path | None = None,
    *,
    process: str = "vp",
    steps: int = 1500,
    batch_size: int = 2048,
    lr: float = 2e-3,
    seed: int = 0,
    progress: bool = True,
) -> dict:
    """Fit v_θ for a toy problem (base samples are exact draws of its prior); writes ``out``."""
    check_choice("process", process, PROCESSES)
    check_range("steps", steps, 1, None)
    if not problem.lam > 0:
        raise ValueError(f"a learned value needs lam > 0, got lam={problem.lam}")
    out = Path(out) if out is not None else CHECKPOINT_DIR / f"value_{problem.name}_{process}.pt"
    gen = torch.Generator().manual_seed(seed)
    pool = problem.prior.sample(400_000, gen)  # base samples, drawn once
    pool_r = problem.reward(pool)
    baseline = GaussianBaseline.of(problem)
    with seeded(seed):
        model = ValueNet(problem.prior.dim)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps))
    )
    avg = float("nan")
    for _ in tqdm(range(steps), disable=not progress, desc=f"training {out.name}"):
        k = torch.randint(0, len(pool), (batch_size,), generator=gen)
        x0 = pool[k]
        alpha, sigma = _levels(process, batch_size, gen)
        xt = alpha[:, None] * x0 + sigma[:, None] * torch.randn(
            x0.shape, generator=gen, dtype=x0.dtype
        )
        # bounded targets: a few e^{6}-sized outliers would otherwise swamp every other level
        y = torch.exp((problem.lam * (pool_r[k] - baseline(xt, alpha, sigma))).clamp(max=6.0))
        u = model(xt.float(), alpha.float(), sigma.float())
        loss = (u.exp() - y.float() * u).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        avg = loss.item() if math.isnan(avg) else 0.98 * avg + 0.02 * loss.item()
    ckpt = {
        "kind": "value",
        "config": model.config,
        "model": model.state_dict(),
        "process": process,
        "baseline": {"mean": baseline.mean, "cov": baseline.cov},
        **_spec(problem),
        "seed": seed,
        "loss": avg,
        "train": {"steps": steps, "batch_size": batch_size, "lr": lr},
    }
    atomic_save(ckpt, out)
    return ckpt


class LearnedValue:
    """V(x_t) = b(x_t) + (1/λ) log v_θ(x_t, α_t, σ_t) from a trained :class:`ValueNet` (λ is the
    one it was trained at)."""

    needs_x0 = False

    def __init__(self, model: ValueNet, baseline: GaussianBaseline, lam: float):
        self.model, self.baseline, self.lam = model.eval(), baseline, lam

    def values_at(self, x: torch.Tensor, alpha: float, sigma: float) -> torch.Tensor:
        """V at a batch x and one noise level (α, σ)."""
        n = len(x)
        a = torch.full((n,), float(alpha), dtype=torch.float64)
        s = torch.full((n,), float(sigma), dtype=torch.float64)
        x = x.reshape(n, -1)
        with torch.no_grad():
            u = self.model(x.float(), a.float(), s.float())
        return self.baseline(x, a, s) + u.double() / self.lam

    def __call__(self, ledger, backend, x, x0, i: int, generator=None) -> torch.Tensor:
        lv = backend.process.level(i)
        return self.values_at(x, lv.alpha, lv.sigma)


def find_value_checkpoint(
    problem, process: str = "vp", folder: str | Path = CHECKPOINT_DIR
) -> Path:
    """The committed value checkpoint trained for exactly this problem and process."""
    want = _spec(problem)["problem"]
    for path in sorted(Path(folder).glob("value_*.pt")):
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        if ckpt.get("process") == process and ckpt.get("problem") == want:
            return path
    raise ValueError(
        f"no learned value for problem {problem.name!r} (process {process}) in "
        f"{folder}; train one with `toycode train-value --problem {problem.name} "
        f"--process {process}`"
    )


def load_learned_value(
    problem, process: str = "vp", path: str | Path | None = None
) -> LearnedValue:
    """The learned value of a problem (its committed checkpoint, or ``path``)."""
    path = Path(path) if path is not None else find_value_checkpoint(problem, process)
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    if ckpt.get("kind") != "value":
        raise ValueError(f"{path} is not a toycode value checkpoint")
    model = ValueNet(**ckpt["config"])
    model.load_state_dict(ckpt["model"])
    baseline = GaussianBaseline(problem.reward, ckpt["baseline"]["mean"], ckpt["baseline"]["cov"])
    return LearnedValue(model, baseline, ckpt["problem"]["lam"])
