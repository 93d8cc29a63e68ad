"""Problems: a Gaussian-mixture prior, a reward and λ — everything the exact target needs.

A problem file is JSON::

    {"prior": {"weights": [...], "means": [[...]], "covs": [[[...]]]},
     "reward": {"type": "quadratic", "center": [...], "precision": [[...]]}
             | {"type": "linear", "direction": [...]}
             | {"type": "box", "low": [...], "high": [...]}
             | {"type": "ring", "radius": R, "width": W},
     "lam": 1.0}

Built-in problems live in ``toycode/exact/builtin/*.json`` and are named by their file stem.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from ..utils.checks import check_range
from .gmm import GaussianMixture
from .rewards import Reward, reward_from_dict
from .targets import Target, exact_target

__all__ = ["Problem", "load_problem", "builtin_problems"]

PROBLEM_DIR = Path(__file__).parent / "builtin"


@dataclass(frozen=True, eq=False)
class Problem:
    """A prior p, a reward r and the tilt strength λ of the target p* ∝ p e^{λr}."""

    prior: GaussianMixture
    reward: Reward
    lam: float
    name: str = "custom"

    def __post_init__(self):
        check_range("lam", self.lam, 0.0, None)
        if self.reward.dim is not None and self.reward.dim != self.prior.dim:
            raise ValueError(
                f"reward dimension {self.reward.dim} does not match prior "
                f"dimension {self.prior.dim}"
            )

    @cached_property
    def target(self) -> Target:
        """The exact target (closed form or 2-D quadrature), built once."""
        return exact_target(self.prior, self.reward, self.lam)

    def with_lam(self, lam: float) -> "Problem":
        return Problem(self.prior, self.reward, lam, self.name)

    def to_dict(self) -> dict:
        return {
            "prior": {
                "weights": self.prior.weights.tolist(),
                "means": self.prior.means.tolist(),
                "covs": self.prior.covs.tolist(),
            },
            "reward": self.reward.to_dict(),
            "lam": self.lam,
        }

    @classmethod
    def from_dict(cls, spec: dict, name: str = "custom") -> "Problem":
        if not isinstance(spec, dict):
            raise ValueError(f"a problem must be a JSON object, got {type(spec).__name__}")
        for key in ("prior", "reward", "lam"):
            if key not in spec:
                raise ValueError(f"problem field {key!r} is missing")
        unknown = set(spec) - {"prior", "reward", "lam", "name"}
        if unknown:
            raise ValueError(f"problem has unknown field(s) {sorted(unknown)}")
        prior = spec["prior"]
        if not isinstance(prior, dict):
            raise ValueError("problem field 'prior' must be an object with weights, means, covs")
        for key in ("weights", "means", "covs"):
            if key not in prior:
                raise ValueError(f"problem field 'prior.{key}' is missing")
        try:
            mixture = GaussianMixture(prior["weights"], prior["means"], prior["covs"])
        except (TypeError, RuntimeError) as err:  # ragged lists, non-numbers
            raise ValueError(f"problem field 'prior' is malformed: {err}") from None
        except ValueError as err:
            raise ValueError(f"problem field 'prior': {err}") from None
        try:
            reward = reward_from_dict(spec["reward"])
        except (TypeError, RuntimeError) as err:
            raise ValueError(f"problem field 'reward' is malformed: {err}") from None
        lam = spec["lam"]
        if not isinstance(lam, (int, float)) or isinstance(lam, bool):
            raise ValueError(f"problem field 'lam' must be a number, got {lam!r}")
        return cls(mixture, reward, float(lam), spec.get("name", name))


def builtin_problems() -> list[str]:
    """Names of the problems shipped with toycode."""
    return sorted(p.stem for p in PROBLEM_DIR.glob("*.json"))


def load_problem(name_or_path: str | Path) -> Problem:
    """A built-in problem by name, or a problem file by path."""
    path = Path(name_or_path)
    if path.suffix != ".json" and str(name_or_path) in builtin_problems():
        path = PROBLEM_DIR / f"{name_or_path}.json"
    if not path.is_file():
        raise ValueError(
            f"problem {str(name_or_path)!r} is neither a built-in "
            f"({', '.join(builtin_problems())}) nor an existing file"
        )
    try:
        spec = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"problem file {path} is not valid JSON: {err}") from None
    return Problem.from_dict(spec, name=path.stem)
