"""Classifier-free guidance is not the tilt: the exact densities on a labelled 2-D mixture.

Chidambaram et al. 2024 ("What does guidance do? A fine-grained analysis in a simple setting",
arXiv 2409.13074) show that sampling with the classifier-free-guided score

    s_w(x, t) = w ∇ log p_t(x | c) + (1 − w) ∇ log p_t(x)                         (CFG)

does not sample the density it is usually said to target,

    (a)  p_w(x | c) ∝ p(x | c)^w p(x)^{1−w}                           (the CFG "target")

because the noised marginals of (a) are not p_t(x | c)^w p_t(x)^{1−w}: guidance mixes scores,
and a sum of scores is the score of a product only at t = 0. Bayes' rule p(x | c) = p(c | x)
p(x) / p(c) turns (a) into

    (b)  p(x | c)^w p(x)^{1−w} = p(x) (p(c | x) / p(c))^w ∝ p(x) e^{w log p(c | x)},

the reward tilt of the prior by r(x) = log p(c | x) at λ = w — the same density, normalisers
aside (log Z_a = log Z_b − w log p(c)). So (a) is a target toycode's reward-guided samplers
reach exactly (a :class:`~toycode.exact.problems.Problem` with :class:`ClassLogProb`, whose
exact target is the 2-D quadrature of :class:`~toycode.exact.targets.GridTarget`), and CFG
sampling is what misses it. ``toycode.experiments.cfg_study`` samples both and measures them.

Here: a mixture whose components carry class labels (:class:`LabelledMixture`; by default each
component is its own class, as for a built-in prior), the class posterior as a reward
(:class:`ClassLogProb`), (a) by its own quadrature (:class:`CFGTarget`, from p(x | c) and p(x)
directly, with exact samples and exact moments), (b) as a problem (:func:`tilt_problem`), and
the guided score of the noised mixture in closed form (:meth:`LabelledMixture.guided_score`;
each class's noised law is a Gaussian mixture, :meth:`GaussianMixture.noised`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..core.diffusion import NoiseLevel
from ..utils.checks import check_range
from .gmm import GaussianMixture
from .problems import Problem
from .rewards import Reward

__all__ = ["LabelledMixture", "ClassLogProb", "CFGTarget", "tilt_problem"]

_F64 = torch.float64


@dataclass(frozen=True, eq=False)
class LabelledMixture:
    """A Gaussian mixture whose component k belongs to class ``labels[k]`` (classes 0 … C − 1,
    each with at least one component). p(x | c) is the mixture of class c's components with
    their weights renormalised, p(c) their total weight."""

    prior: GaussianMixture
    labels: torch.Tensor | None = None

    def __post_init__(self):
        k = self.prior.num_components
        labels = torch.arange(k) if self.labels is None else torch.as_tensor(self.labels)
        if labels.shape != (k,) or labels.dtype.is_floating_point:
            raise ValueError(f"labels must be {k} integers (one per component), got {self.labels}")
        classes = int(labels.max()) + 1
        if labels.min() < 0 or len(torch.unique(labels)) != classes:
            raise ValueError(f"labels must name classes 0..C-1, each at least once, got {labels}")
        object.__setattr__(self, "labels", labels.long())
        object.__setattr__(self, "_noised", {})

    @property
    def num_classes(self) -> int:
        return int(self.labels.max()) + 1

    def check_class(self, c: int) -> int:
        """c itself if it names a class; otherwise a one-line ValueError."""
        check_range("class", c, 0, self.num_classes - 1)
        if int(c) != c:
            raise ValueError(f"class must be an integer, got {c!r}")
        return int(c)

    def class_prior(self, c: int) -> float:
        """p(c) = Σ_{k in c} w_k."""
        return float(self.prior.weights[self.labels == self.check_class(c)].sum())

    def conditional(self, c: int) -> GaussianMixture:
        """p(x | c): class c's components, weights renormalised."""
        keep = self.labels == self.check_class(c)
        w = self.prior.weights[keep]
        return GaussianMixture(w / w.sum(), self.prior.means[keep], self.prior.covs[keep])

    def log_class_posterior(self, x: torch.Tensor, c: int) -> torch.Tensor:
        """log p(c | x) = logsumexp over class c's components of log w_k N_k(x) − log p(x)."""
        log_joint = self.prior.component_log_prob(x)  # (n, K)
        keep = self.labels == self.check_class(c)
        return torch.logsumexp(log_joint[:, keep], 1) - torch.logsumexp(log_joint, 1)

    def _pair(self, level: NoiseLevel, c: int):
        key = (level, c)
        if key not in self._noised:  # memo of immutable values: one Cholesky per noise level
            self._noised[key] = (self.conditional(c).noised(level), self.prior.noised(level))
        return self._noised[key]

    def guided_score(
        self, x: torch.Tensor, level: NoiseLevel | float, c: int, w: float
    ) -> torch.Tensor:
        """The CFG score w ∇ log p_t(x | c) + (1 − w) ∇ log p_t(x) at a noise level, exact:
        both noised laws are Gaussian mixtures (x_t = α x0 + σ ε)."""
        check_range("w", w, 0.0, None)
        conditional, marginal = self._pair(NoiseLevel.of(level), self.check_class(c))
        return w * conditional.score(x) + (1 - w) * marginal.score(x)


class ClassLogProb(Reward):
    """r(x) = log p(c | x) of a labelled mixture: the reward whose tilt at λ = w is the CFG
    "target" (a) = (b) (module docstring). r ≤ 0, smooth, differentiable."""

    differentiable = True

    def __init__(self, mixture: LabelledMixture, c: int):
        self.mixture, self.c = mixture, mixture.check_class(c)

    @property
    def dim(self) -> int:
        return self.mixture.prior.dim

    def __call__(self, x):
        return self.mixture.log_class_posterior(x.to(_F64), self.c).to(x.dtype)

    def to_dict(self):
        return {"type": "class-log-prob", "class": self.c, "labels": self.mixture.labels.tolist()}


def tilt_problem(mixture: LabelledMixture, c: int, w: float, name: str = "cfg-tilt") -> Problem:
    """(b) as a problem: the prior tilted by r = log p(c | x) at λ = w. Its exact target is a
    :class:`~toycode.exact.targets.GridTarget` (2-D quadrature), so every toycode sampler —
    exact guidance, SMC, CoDe — can be run on it and measured against it."""
    return Problem(mixture.prior, ClassLogProb(mixture, c), float(w), name)


class CFGTarget:
    """(a) p_w(x | c) ∝ p(x | c)^w p(x)^{1−w} in 2-D, by quadrature of its own on a grid of
    ``resolution``² cells (the normaliser and the moments) and exact elsewhere.

    ``log_prob`` is w log p(x | c) + (1 − w) log p(x) − log Z_a, pointwise in closed form;
    ``sample`` draws exactly, by rejection from the prior with acceptance p(c | x)^w ≤ 1
    (identity (b)), never from the grid. ``mean``, ``cov_trace`` and ``class_mass``
    (E[p(c | x)], the share of class c) are quadrature sums over the cells.
    """

    def __init__(
        self,
        mixture: LabelledMixture,
        c: int,
        w: float,
        *,
        resolution: int = 401,
        extent: float | None = None,
    ):
        if mixture.prior.dim != 2:
            raise ValueError(
                f"the CFG target is by 2-D quadrature, got dimension {mixture.prior.dim}"
            )
        check_range("w", w, 0.0, None)
        check_range("resolution", resolution, 16, 4096)
        self.mixture, self.c, self.w = mixture, mixture.check_class(c), float(w)
        self.conditional = mixture.conditional(self.c)
        if extent is None:  # every component to 8 standard deviations
            sd = mixture.prior.covs.diagonal(dim1=-2, dim2=-1).sqrt()
            extent = float((mixture.prior.means.abs() + 8 * sd).max())
        self.extent = extent
        h = 2 * extent / resolution
        self.centers = -extent + h * (torch.arange(resolution, dtype=_F64) + 0.5)
        gx, gy = torch.meshgrid(self.centers, self.centers, indexing="ij")
        self.points = torch.stack([gx.reshape(-1), gy.reshape(-1)], 1)
        log_q = self._log_unnormalised(self.points)
        self.log_z = float(torch.logsumexp(log_q, 0)) + 2 * math.log(h)
        self.mass = torch.softmax(log_q, 0)

    def _log_unnormalised(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(_F64)
        return self.w * self.conditional.log_prob(x) + (1 - self.w) * self.mixture.prior.log_prob(x)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """log p_w(x | c)."""
        return self._log_unnormalised(x) - self.log_z

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n exact samples: prior proposals kept with probability p(c | x)^w."""
        out, have = [], 0
        accept = math.exp(self.log_z + self.w * math.log(self.mixture.class_prior(self.c)))
        while have < n:
            m = min(int(1.2 * (n - have) / max(accept, 1e-6)) + 16, 2_000_000)
            x = self.mixture.prior.sample(m, generator)
            u = torch.rand(m, generator=generator, dtype=_F64)
            x = x[u.log() < self.w * self.mixture.log_class_posterior(x, self.c)]
            out.append(x)
            have += len(x)
        return torch.cat(out)[:n]

    @property
    def mean(self) -> torch.Tensor:
        return self.mass @ self.points

    @property
    def cov_trace(self) -> float:
        """tr Cov of (a), the number :func:`~toycode.exact.metrics.target_cov_trace` asks for."""
        return float(self.mass @ (self.points**2).sum(1) - (self.mean**2).sum())

    @property
    def class_mass(self) -> float:
        """E_{p_w}[p(c | x)]: how much of (a) class c's posterior claims."""
        return float(self.mass @ self.mixture.log_class_posterior(self.points, self.c).exp())

    def density_grid(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(cell centres, density on the centres² grid (resolution, resolution), indexing ij)."""
        r = len(self.centers)
        return self.centers, self.log_prob(self.points).exp().view(r, r)
