"""The learned class value (toycode.training.class_value) and its MNIST checkpoint."""

import math

import pytest
import torch

from toycode.training.class_value import ClassValue, NoisyClassifier, load_class_value


class _FixedQ(NoisyClassifier):
    """Logits that put probability q on class 0 and spread the rest evenly."""

    def __init__(self, q: torch.Tensor):
        super().__init__(width=2, hidden=2)
        self.q = q

    def forward(self, x, alpha, sigma, hint=None):
        q = self.q[: len(x)]
        rest = ((1 - q) / 9)[:, None].expand(len(q), 9)
        return torch.cat([q[:, None], rest], 1).log()


def test_value_is_the_exact_function_of_q():
    q = torch.tensor([0.0, 0.1, 0.5, 0.9, 1.0])
    lam = 2.0
    v = ClassValue(_FixedQ(q), 0, lam).values_at(torch.zeros(5, 1, 28, 28), 0.5, 0.8)
    want = [math.log(1 + math.expm1(lam) * float(p)) / lam for p in q]
    assert torch.allclose(v, torch.tensor(want, dtype=torch.float64), atol=1e-6)
    # the ends: q = 0 gives V = 0 = r, q = 1 gives V = 1 = r
    assert abs(float(v[0])) < 1e-6 and abs(float(v[-1]) - 1) < 1e-6


def test_bad_input_is_one_line():
    model = NoisyClassifier(width=2, hidden=2)
    with pytest.raises(ValueError, match="class must be"):
        ClassValue(model, 10, 2.0)
    with pytest.raises(ValueError, match="lam"):
        ClassValue(model, 3, 0.0)


def test_rejects_a_foreign_checkpoint(tmp_path):
    path = tmp_path / "x.pt"
    torch.save({"kind": "unet"}, path)
    with pytest.raises(ValueError, match="not a toycode class-value"):
        load_class_value(path, 3, 2.0)


def test_a_hinted_checkpoint_needs_its_classifier(tmp_path):
    from toycode.training.class_value import train_class_value
    from toycode.training.classifier import Classifier

    x0, labels = torch.rand(8, 1, 28, 28) * 2 - 1, torch.arange(8) % 10
    path = tmp_path / "v.pt"
    train_class_value(
        x0, labels, path, classifier=Classifier().eval(), steps=2, batch_size=4, progress=False
    )
    with pytest.raises(ValueError, match="pass its classifier"):
        load_class_value(path, 3, 2.0)
    value = load_class_value(path, 3, 2.0, Classifier().eval())
    assert value.values_at(x0, 0.9, 0.4).shape == (8,)


def test_committed_checkpoint_is_small_and_loads():
    from toycode.mnist.class_value import CLASS_VALUE_PATH, load_mnist_class_value

    assert CLASS_VALUE_PATH.stat().st_size < 1_000_000
    value = load_mnist_class_value(3, 2.0)
    assert value.needs_x0 is False
    q = value.probs_at(torch.zeros(4, 1, 28, 28), 0.01, 1.0)
    assert torch.allclose(q.sum(1), torch.ones(4, dtype=torch.float64))


@pytest.mark.slow
def test_learned_q_beats_tweedie_at_high_noise():
    """At grid index 2 of T = 10 (α ≈ 0.05) the classifier of x̂0 is confidently wrong, while the
    noisy classifier stays near the class rates: lower log-loss on held-out (x_t, label) pairs,
    by more than 3 s.e. of the paired gap, 10-way and for the digit-3 indicator."""
    from toycode.mnist.class_value import heldout_logloss

    res = heldout_logloss(512, level=2, seed=4321)
    for key in ("10way", "digit"):
        gap, se = res[f"gap/{key}"]
        assert gap > 3 * se, (key, gap, se)


def test_tilt_fractions_refuses_unknown_names():
    from toycode.mnist.class_value import tilt_fractions

    with pytest.raises(ValueError, match="method must be one of"):
        tilt_fractions(methods=("bon",))
    with pytest.raises(ValueError, match="value must be one of"):
        tilt_fractions(values=("exact",))
