"""The exact wing: Gaussian-mixture and uniform-box priors, rewards, tilted targets known in
closed form (or by quadrature in 2-D), the built-in problems, and the metrics that score samples
against them.

Nothing here runs a denoiser: this is the ground truth every sampler is checked against.
"""

from .boxes import BoxMixture
from .gmm import GaussianMixture
from .problems import Problem, builtin_problems, load_problem
from .rewards import Box, Bump, Linear, Quadratic, Reward, Ring
from .targets import Target, exact_target

__all__ = [
    "BoxMixture",
    "GaussianMixture",
    "Problem",
    "builtin_problems",
    "load_problem",
    "Box",
    "Bump",
    "Linear",
    "Quadratic",
    "Reward",
    "Ring",
    "Target",
    "exact_target",
]
