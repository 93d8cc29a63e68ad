"""Shared fixtures: small problems and seeded generators (diffusers-style dummy components)."""

import os

import pytest
import torch

from toycode import GaussianMixture, Problem, Quadratic, load_problem

torch.set_num_threads(int(os.environ.get("TOYCODE_TEST_THREADS", "2")))
# tests read the shared MNIST test split; they never download it
SHARED_DATA = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data")
os.environ.setdefault("TOYCODE_DATA", os.path.abspath(SHARED_DATA))


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
    covs = torch.tensor([[[1.0, 0.3, 0.0], [0.3, 0.5, 0.1], [0.0, 0.1, 0.8]],
                         [[0.4, -0.1, 0.05], [-0.1, 0.6, 0.0], [0.05, 0.0, 0.3]]])
    return GaussianMixture([0.3, 0.7], [[1.0, -1.0, 0.5], [-1.0, 0.5, 0.0]], covs)


@pytest.fixture(scope="session")
def quad3d(mixture3d):
    precision = torch.tensor([[2.0, 0.5, 0.0], [0.5, 1.0, 0.0], [0.0, 0.0, 0.5]])
    return Problem(mixture3d, Quadratic([0.5, 0.5, -0.5], precision), 1.5, "quad3d")


class ExactReference:
    """An exact sample, its kernel bandwidth, and the mean MMD² of fresh exact samples of size
    ``n`` against it (the noise floor a perfect sampler would reach)."""

    def __init__(self, sampler, n_ref, gen, n=None, replicates=10):
        from toycode.exact.metrics import median_bandwidth, mmd2
        self._mmd2 = mmd2
        self.ref = sampler(n_ref, gen)
        self.bandwidth = median_bandwidth(self.ref)
        self.floor = sum(mmd2(sampler(n or n_ref, gen), self.ref, self.bandwidth)
                         for _ in range(replicates)) / replicates

    def floors(self, x):
        """MMD² of x against the reference, in units of the floor."""
        return self._mmd2(x, self.ref, self.bandwidth) / self.floor


class Latents:
    """A backend with decode = identity, to compare latents with a pipeline's own."""

    def __init__(self, inner):
        self.inner = inner

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def decode(self, x0):
        return x0
