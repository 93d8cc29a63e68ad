"""Problems: a prior, a reward and λ — everything the exact target needs.

A problem file is JSON::

    {"prior": {"weights": [...], "means": [[...]], "covs": [[[...]]]}
            | {"type": "uniform_boxes", "weights": [...], "low": [[...]], "high": [[...]]},
     "reward": {"type": "quadratic", "center": [...], "precision": [[...]]}
             | {"type": "linear", "direction": [...]}
             | {"type": "box", "low": [...], "high": [...]}
             | {"type": "ring", "radius": R, "width": W}
             | {"type": "bump", "center": [...], "width": W},
     "lam": 1.0,
     "source": {"paper": "...", "prior": "...", ...}}

The prior's ``type`` is "gaussian_mixture" (:class:`~toycode.exact.gmm.GaussianMixture`, the
default, so files without a type load as before) or "uniform_boxes" (a mixture of uniform boxes,
:class:`~toycode.exact.boxes.BoxMixture`). ``source`` (optional) is a JSON object of strings
saying where the numbers come from; it is carried, never interpreted.

Built-in problems live in ``toycode/exact/builtin/*.json`` and are named by their file stem;
docs/problems.md lists them with their sources.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from ..utils.checks import check_range
from .boxes import BoxMixture
from .gmm import GaussianMixture
from .rewards import Reward, reward_from_dict
from .targets import Target, exact_target

__all__ = ["Problem", "load_problem", "builtin_problems", "prior_from_dict"]

PROBLEM_DIR = Path(__file__).parent / "builtin"

PRIOR_TYPES = {
    "gaussian_mixture": (GaussianMixture, ("weights", "means", "covs")),
    "uniform_boxes": (BoxMixture, ("weights", "low", "high")),
}
"""A problem file's prior types: the class and its fields, in constructor order."""


@dataclass(frozen=True, eq=False)
class Problem:
    """A prior p, a reward r and the tilt strength λ of the target p* ∝ p e^{λr}; ``source``
    optionally records where each number comes from (paper, code, file)."""

    prior: GaussianMixture | BoxMixture
    reward: Reward
    lam: float
    name: str = "custom"
    source: dict | None = None

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
        return Problem(self.prior, self.reward, lam, self.name, self.source)

    def to_dict(self) -> dict:
        """The problem file's JSON object (:meth:`from_dict` reads it back)."""
        spec = {"prior": self.prior.to_dict(), "reward": self.reward.to_dict(), "lam": self.lam}
        if self.source is not None:
            spec["source"] = dict(self.source)
        return spec

    @classmethod
    def from_dict(cls, spec: dict, name: str = "custom") -> "Problem":
        if not isinstance(spec, dict):
            raise ValueError(f"a problem must be a JSON object, got {type(spec).__name__}")
        for key in ("prior", "reward", "lam"):
            if key not in spec:
                raise ValueError(f"problem field {key!r} is missing")
        unknown = set(spec) - {"prior", "reward", "lam", "name", "source"}
        if unknown:
            raise ValueError(f"problem has unknown field(s) {sorted(unknown)}")
        prior = prior_from_dict(spec["prior"])
        source = spec.get("source")
        if source is not None and not (
            isinstance(source, dict)
            and all(isinstance(k, str) and isinstance(v, str) for k, v in source.items())
        ):
            raise ValueError("problem field 'source' must be an object of strings")
        try:
            reward = reward_from_dict(spec["reward"])
        except (TypeError, RuntimeError) as err:
            raise ValueError(f"problem field 'reward' is malformed: {err}") from None
        lam = spec["lam"]
        if not isinstance(lam, (int, float)) or isinstance(lam, bool):
            raise ValueError(f"problem field 'lam' must be a number, got {lam!r}")
        return cls(prior, reward, float(lam), spec.get("name", name), source)


def prior_from_dict(spec) -> GaussianMixture | BoxMixture:
    """A problem file's ``prior`` object as a prior, naming any bad field in one line."""
    if not isinstance(spec, dict):
        raise ValueError(
            "problem field 'prior' must be an object (weights, means, covs; or a 'type')"
        )
    kind = spec.get("type", "gaussian_mixture")
    if not isinstance(kind, str) or kind not in PRIOR_TYPES:
        raise ValueError(f"prior.type must be one of {sorted(PRIOR_TYPES)}, got {kind!r}")
    cls, fields = PRIOR_TYPES[kind]
    unknown = set(spec) - set(fields) - {"type"}
    if unknown:
        raise ValueError(f"prior has unknown field(s) {sorted(unknown)} for type {kind!r}")
    for key in fields:
        if key not in spec:
            raise ValueError(f"problem field 'prior.{key}' is missing (type {kind!r})")
    try:
        return cls(*(spec[key] for key in fields))
    except (TypeError, RuntimeError) as err:  # ragged lists, non-numbers
        raise ValueError(f"problem field 'prior' is malformed: {err}") from None
    except ValueError as err:
        raise ValueError(f"problem field 'prior': {err}") from None


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
