"""toycode: reward-guided sampling of diffusion models, checked against exact tilted targets.

A pretrained diffusion model samples p(x); a reward r(x) says what we want; the target is
p*(x) ∝ p(x) e^{λ r(x)}. :func:`toycode.sampler.sample_blockwise` is CoDe (blockwise controlled
denoising, arXiv 2502.00968) with best-of-N and SVDD as its edge cases; :mod:`toycode.targets`
gives p* exactly for Gaussian-mixture priors so every sampler can be judged against it.
"""

from .diffusion import Process
from .exact.gmm import GaussianMixture
from .exact.problems import Problem, builtin_problems, load_problem
from .exact.rewards import Box, Linear, Quadratic, Reward, Ring
from .sampler import ExactValue, SampleResult, TweedieValue, sample_blockwise
from .exact.targets import Target, exact_target

__version__ = "0.1.0"

__all__ = ["Process", "GaussianMixture", "Problem", "builtin_problems", "load_problem", "Box",
           "Linear", "Quadratic", "Reward", "Ring", "ExactValue", "SampleResult", "TweedieValue",
           "sample_blockwise", "Target", "exact_target"]
