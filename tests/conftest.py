"""Shared fixtures: small problems and seeded generators (diffusers-style dummy components)."""

import os

import pytest
import torch

from toycode import GaussianMixture, Problem, Quadratic, load_problem

torch.set_num_threads(int(os.environ.get("TOYCODE_TEST_THREADS", "2")))


@pytest.fixture
def gen():
    return torch.Generator().manual_seed(0)


@pytest.fixture(scope="session")
def between():
    return load_problem("between")


@pytest.fixture(scope="session")
def box():
    return load_problem("box")


@pytest.fixture(scope="session")
def mixture3d():
    """A 3-D, 2-component mixture with correlated covariances."""
    covs = torch.tensor(
        [
            [[1.0, 0.3, 0.0], [0.3, 0.5, 0.1], [0.0, 0.1, 0.8]],
            [[0.4, -0.1, 0.05], [-0.1, 0.6, 0.0], [0.05, 0.0, 0.3]],
        ]
    )
    return GaussianMixture([0.3, 0.7], [[1.0, -1.0, 0.5], [-1.0, 0.5, 0.0]], covs)


@pytest.fixture(scope="session")
def quad3d(mixture3d):
    precision = torch.tensor([[2.0, 0.5, 0.0], [0.5, 1.0, 0.0], [0.0, 0.0, 0.5]])
    return Problem(mixture3d, Quadratic([0.5, 0.5, -0.5], precision), 1.5, "quad3d")


class Latents:
    """A backend with decode = identity, to compare latents with a pipeline's own."""

    def __init__(self, inner):
        self.inner = inner

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def decode(self, x0):
        return x0
