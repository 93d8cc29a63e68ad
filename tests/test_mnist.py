"""MNIST: rewards, checkpoints, the 784-D exact mixture."""

import math
import os
from pathlib import Path

import pytest
import torch

from toycode import Linear, Problem, sample_blockwise
from toycode.backends import load_trained_backend
from toycode.mnist.data import load_split
from toycode.mnist.eval import bon_fraction, classifier_accuracy, tilted_fraction
from toycode.mnist.gmm import digit_problem, fit_mnist_mixture, project
from toycode.mnist.models import ClassIndicator, ClassLogProb, Ink, load_classifier, train_unet
from toycode.utils.images import Compressibility

# the Makefile exports TOYCODE_DATA where a shared MNIST copy exists; tests never download it
MNIST = Path(os.environ.get("TOYCODE_DATA", "/nonexistent")) / "mnist"
needs_mnist = pytest.mark.skipif(
    not (MNIST / "t10k-images-idx3-ubyte.gz").exists(),
    reason=f"no MNIST copy under {MNIST} (TOYCODE_DATA: "
    f"{os.environ.get('TOYCODE_DATA', 'not set')})",
)


@pytest.fixture(scope="module")
def classifier():
    return load_classifier()


@pytest.fixture(scope="module")
def heldout():
    if not MNIST.is_dir():
        pytest.skip(needs_mnist.kwargs["reason"])
    return load_split("heldout_a")


@pytest.fixture(scope="module")
def fitted():
    if not MNIST.is_dir():
        pytest.skip(needs_mnist.kwargs["reason"])
    return fit_mnist_mixture()


@needs_mnist
def test_committed_classifier_accuracy(classifier):
    acc, se, n = classifier_accuracy(classifier)
    assert n == 1000 and acc > 0.95


def test_image_rewards(classifier, heldout):
    x, y = heldout
    ind = ClassIndicator(3, classifier)(x[:200])
    with torch.no_grad():
        labels = classifier(x[:200]).argmax(1)
    assert torch.equal(ind, (labels == 3).double())
    xg = x[:4].clone().requires_grad_(True)
    assert torch.autograd.grad(ClassLogProb(3, classifier)(xg).sum(), xg)[0].abs().sum() > 0
    ink = Ink()(x[:50])
    assert ((ink > 0) & (ink < 0.5)).all()
    blank, noisy = -torch.ones(1, 1, 28, 28), torch.rand(1, 1, 28, 28) * 2 - 1
    comp = Compressibility("png", value_range=(-1, 1))
    assert float(comp(blank)) > float(comp(noisy))
    with pytest.raises(ValueError, match="digit"):
        ClassIndicator(10, classifier)


def test_tilted_fraction_formulas():
    assert tilted_fraction(0.1, 0.0) == pytest.approx(0.1)
    assert tilted_fraction(0.1, math.log(9)) == pytest.approx(0.5)
    # best-of-N softmax: N = 1 is the base rate, large N tends to the tilt
    assert bon_fraction(0.1, 2.0, 1) == pytest.approx(0.1)
    assert bon_fraction(0.1, 2.0, 4000) == pytest.approx(tilted_fraction(0.1, 2.0), abs=2e-3)


@needs_mnist
def test_unet_checkpoint_round_trip(tmp_path):
    path = tmp_path / "unet.pt"
    train_unet(path, steps=3, batch_size=8, progress=False, checkpoint_every=3)
    runs = [
        sample_blockwise(
            load_trained_backend(path, steps=4),
            Ink(),
            3,
            num_candidates=2,
            block_size=2,
            generator=torch.Generator().manual_seed(1),
        )
        for _ in range(2)
    ]
    assert torch.equal(runs[0].samples, runs[1].samples)
    assert runs[0].samples.shape == (3, 1, 28, 28)


@pytest.mark.slow
def test_mixture_fit_is_a_valid_784d_model(fitted):
    mixture, axes, var = fitted
    assert mixture.dim == 784 and mixture.num_components == 10
    assert torch.allclose(axes.T @ axes, torch.eye(784, dtype=torch.float64), atol=1e-8)
    x, y = load_split("heldout_a")
    # held-out digits are most likely under their own component far more often than chance
    resp = mixture.responsibilities(x.flatten(1).double())
    assert float((resp.argmax(1) == y).double().mean()) > 0.7


def test_784d_exact_score_matches_autograd(fitted):
    noised = fitted[0].noised(0.3)
    x = noised.sample(3, torch.Generator().manual_seed(0)).requires_grad_(True)
    (grad,) = torch.autograd.grad(noised.log_prob(x).sum(), x)
    assert torch.allclose(noised.score(x.detach()), grad, rtol=1e-7, atol=1e-9)


@pytest.mark.slow
@pytest.mark.parametrize("d", [16, 784])
def test_784d_tilt_matches_importance_sampling(fitted, d):
    """log Z and E_p*[r] in closed form against importance sampling in d dimensions."""
    mixture = project(fitted[0], fitted[1], d)
    gen = torch.Generator().manual_seed(0)
    direction = torch.randn(d, generator=gen, dtype=torch.float64)
    problem = Problem(mixture, Linear(direction / direction.norm()), 0.7)
    x = mixture.sample(40_000, gen)
    lw = problem.lam * problem.reward(x)
    w = torch.exp(lw - lw.max())
    log_z = float(torch.log(w.mean()) + lw.max())
    se = float(w.std() / w.mean()) / math.sqrt(len(x))
    assert problem.target.log_z == pytest.approx(log_z, abs=5 * se)
    q = digit_problem(mixture, precision=0.05)
    lw = q.lam * q.reward(x)
    w = torch.exp(lw - lw.max())
    er = float((w * q.reward(x)).sum() / w.sum())
    ess = float(w.sum() ** 2 / (w**2).sum())
    se = float(q.reward(x).std()) / math.sqrt(ess)
    assert q.target.reward_mean == pytest.approx(er, abs=5 * se)


@pytest.mark.slow
def test_best_of_n_softmax_matches_the_exact_tilted_fraction(classifier):
    """Softmax best-of-N on 1[class = c] is SNIS: its class-c rate is E[K e^λ/(K e^λ + N − K)],
    K ~ Bin(N, π_c), with π_c the base model's rate, to within the combined standard error."""
    from toycode.mnist.eval import class_rates
    from toycode.mnist.models import UNET_PATH

    c, lam, big_n = 3, 2.0, 4
    backend = load_trained_backend(UNET_PATH, steps=10)
    reward = ClassIndicator(c, classifier)
    base = sample_blockwise(backend, reward, 600, generator=torch.Generator().manual_seed(0))
    rates, se = class_rates(classifier, base.samples)
    pi, pi_se = float(rates[c]), float(se[c])
    assert 0.03 < pi < 0.3  # a digit the model does produce
    res = sample_blockwise(
        backend,
        reward,
        300,
        num_candidates=big_n,
        block_size=10,
        selection="softmax",
        lam=lam,
        generator=torch.Generator().manual_seed(1),
    )
    frac = float(res.rewards.mean())
    want = bon_fraction(pi, lam, big_n)
    slope = (bon_fraction(pi + 1e-4, lam, big_n) - bon_fraction(pi - 1e-4, lam, big_n)) / 2e-4
    sigma = math.sqrt(want * (1 - want) / res.n + (slope * pi_se) ** 2)
    assert abs(frac - want) < 4 * sigma


@pytest.mark.slow
def test_mnist_demo_with_lookahead_values_counts_its_rollouts(tmp_path):
    """The demo's selecting methods take a look-ahead value on the UNet: CoDe's NFE per image
    is 1 + (T − 1)·N + (interior block ends)·N·M·(k − 1); an unavailable value is refused."""
    from toycode.mnist.demo import MnistDemoConfig, run_mnist_demo

    T, N, B, M, k = 6, 2, 3, 2, 2
    config = MnistDemoConfig(
        n=2,
        n_base=4,
        steps=T,
        num_candidates=N,
        block_size=B,
        particles=2,
        value="lookahead",
        value_samples=M,
        lookahead_steps=k,
        out_dir=str(tmp_path),
        progress=False,
    )
    rows = {r["method"]: r for r in run_mnist_demo(config)["rows"]}
    assert rows["CoDe (softmax)"]["nfe"] == 1 + (T - 1) * N + (T // B - 1) * N * M * (k - 1)
    with pytest.raises(ValueError, match="value"):
        run_mnist_demo(
            MnistDemoConfig(
                n=2, n_base=4, steps=T, value="posterior", out_dir=str(tmp_path), progress=False
            )
        )
