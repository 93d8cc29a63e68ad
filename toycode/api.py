"""The Python API behind the command line: ``sample``, ``target``, ``train``, ``make_backend``.

Method names map onto the one blockwise sampler:

    base   N = 1                       the pretrained model
    bon    B = T                       best-of-N (one block: score the finished samples)
    svdd   B = 1                       SVDD-PM (select after every step)
    code   B as given                  CoDe
"""

from __future__ import annotations

from pathlib import Path

import torch

from .backends import analytic_backend, load_mlp_backend
from .backends.base import Backend
from .checks import check_choice, check_range
from .diffusion import Process
from .problems import Problem, load_problem
from .sampler import ExactValue, SampleResult, sample_blockwise
from .train import find_mlp_checkpoint, train_mlp

__all__ = ["METHODS", "make_backend", "sample", "target", "train", "method_settings"]

METHODS = ("base", "bon", "svdd", "code")


def _problem(problem: Problem | str | Path) -> Problem:
    return problem if isinstance(problem, Problem) else load_problem(problem)


def make_backend(problem: Problem | str | Path, backend: str | Path = "analytic", *,
                 steps: int = 100, eta: float = 1.0) -> Backend:
    """"analytic" (exact denoiser), "trained" (the committed MLP for this prior) or a .pt path."""
    problem = _problem(problem)
    if str(backend) == "analytic":
        return analytic_backend(problem.prior, Process.make(steps, eta=eta))
    path = find_mlp_checkpoint(problem.prior) if str(backend) == "trained" else Path(backend)
    if not path.is_file():
        raise ValueError(f"backend must be 'analytic', 'trained' or a checkpoint path; "
                         f"{str(backend)!r} is none of these")
    return load_mlp_backend(path, steps, eta)


def method_settings(method: str, num_candidates: int, block_size: int, steps: int) -> dict:
    """(num_candidates, block_size) that a method name stands for."""
    check_choice("method", method, METHODS)
    if method == "base":
        return {"num_candidates": 1, "block_size": steps}
    return {"num_candidates": num_candidates,
            "block_size": {"bon": steps, "svdd": 1, "code": block_size}[method]}


def sample(problem: Problem | str | Path, *, backend: str | Path | Backend = "analytic",
           method: str = "code", num_candidates: int = 16, block_size: int = 10,
           selection: str = "argmax", lam: float | None = None, value: str = "tweedie",
           steps: int = 100, n: int = 1000, seed: int = 0, progress: bool = False,
           callback=None) -> SampleResult:
    """Sample a problem with a named method; ``lam`` defaults to the problem's λ."""
    problem = _problem(problem)
    check_choice("value", value, ("tweedie", "exact"))
    check_range("num_candidates", num_candidates, 1, None)
    check_range("block_size", block_size, 1, None)
    if not isinstance(backend, (str, Path)):
        be = backend
    else:
        check_range("steps", steps, 1, 1000)
        be = make_backend(problem, backend, steps=steps)
    lam = problem.lam if lam is None else lam
    value_fn = ExactValue(problem.target) if value == "exact" else "tweedie"
    if value == "exact" and not problem.lam > 0:
        raise ValueError(f"value='exact' needs the problem's lam > 0, got {problem.lam}")
    settings = method_settings(method, num_candidates, block_size, be.num_steps)
    gen = torch.Generator().manual_seed(seed)
    result = sample_blockwise(be, problem.reward, n, selection=selection, lam=lam,
                              value=value_fn, generator=gen, progress=progress,
                              callback=callback, **settings)
    result.settings.update(method=method, seed=seed, backend=str(getattr(be, "name", be)))
    return result


def target(problem: Problem | str | Path, n: int = 1000, seed: int = 0):
    """Exact samples of p* and its summary (log Z, E_{p*}[r], KL(p*‖p), mode weights)."""
    problem = _problem(problem)
    check_range("n", n, 1, None)
    tg = problem.target
    return tg.sample(n, torch.Generator().manual_seed(seed)), tg.summary()


def train(problem: Problem | str | Path, out: str | Path, *, steps: int = 8000, seed: int = 0,
          progress: bool = True, **options) -> dict:
    """Train the MLP denoiser on the problem's prior (see :func:`toycode.train.train_mlp`)."""
    return train_mlp(_problem(problem).prior, out, steps=steps, seed=seed, progress=progress,
                     **options)
