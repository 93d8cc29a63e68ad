"""toycode: reward-guided sampling of diffusion models, checked against exact tilted targets.

A pretrained diffusion model samples p(x); a reward r(x) says what we want; the target is
p*(x) ∝ p(x) e^{λ r(x)}. :func:`code_sample` is CoDe (blockwise controlled denoising,
arXiv 2502.00968, Alg. 1) in one screen, to read; :func:`sample_blockwise` is the engine that
runs it (bit-identical) with best-of-N, SVDD and SMC relatives; :mod:`toycode.exact` gives p*
exactly for Gaussian-mixture priors so every sampler can be judged against it.
"""

from .core.code import code_sample
from .core.diffusion import Process
from .core.sampler import SampleResult, sample_blockwise
from .core.values import TweedieValue
from .exact.gmm import GaussianMixture
from .exact.problems import Problem, builtin_problems, load_problem
from .exact.rewards import Box, Linear, Quadratic, Reward, Ring
from .exact.targets import Target, exact_target
from .exact.values import ExactValue

__version__ = "0.1.0"

__all__ = [
    "Process",
    "GaussianMixture",
    "Problem",
    "builtin_problems",
    "load_problem",
    "Box",
    "Linear",
    "Quadratic",
    "Reward",
    "Ring",
    "ExactValue",
    "SampleResult",
    "TweedieValue",
    "sample_blockwise",
    "code_sample",
    "Target",
    "exact_target",
    "explore",
]


def explore(problem="between", **options):
    """Sliders and menus that rerun a sampler against the exact target in a notebook: see
    :func:`toycode.experiments.explorer.explore`. Imported here on first use, since it needs
    ipywidgets
    (the ``notebooks`` extra) and importing toycode must not."""
    from .experiments.explorer import explore as _explore

    return _explore(problem, **options)
