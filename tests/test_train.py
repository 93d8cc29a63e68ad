import pytest
import torch

from toycode import sample_blockwise
from toycode.backends import load_trained_backend
from toycode.exact.reference import ExactReference
from toycode.training.train import find_mlp_checkpoint, fit, train_mlp


def test_checkpoint_round_trip_gives_identical_samples(tmp_path, between):
    path = tmp_path / "m.pt"
    train_mlp(between.prior, path, steps=30, batch_size=256, width=32, depth=2, progress=False)
    runs = [
        sample_blockwise(
            load_trained_backend(path, steps=10),
            between.reward,
            20,
            num_candidates=3,
            block_size=5,
            generator=torch.Generator().manual_seed(4),
        )
        for _ in range(2)
    ]
    assert torch.equal(runs[0].samples, runs[1].samples)
    assert runs[0].samples.dtype == torch.float32


def test_training_leaves_the_global_generator_alone(tmp_path, between):
    """Initialisation is seeded without touching the caller's torch.manual_seed state, and the
    seed still fixes the weights."""
    state = torch.get_rng_state()
    a = train_mlp(
        between.prior, tmp_path / "a.pt", steps=2, batch_size=16, width=8, depth=1, progress=False
    )
    assert torch.equal(torch.get_rng_state(), state)
    torch.manual_seed(123)  # a different global state must not change the trained weights
    b = train_mlp(
        between.prior, tmp_path / "b.pt", steps=2, batch_size=16, width=8, depth=1, progress=False
    )
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])


def test_interrupted_training_resumes_to_the_same_weights(tmp_path, between):
    def data(n, gen):
        return between.prior.sample(n, gen).float()

    calls = {"n": 0}

    def flaky(n, gen):
        calls["n"] += 1
        if calls["n"] == 30:
            raise KeyboardInterrupt
        return data(n, gen)

    def model():
        torch.manual_seed(0)
        from toycode.backends.mlp import MLPDenoiser

        return MLPDenoiser(2, 32, 2)

    opts = dict(meta={"kind": "mlp"}, steps=40, batch_size=128, checkpoint_every=20, progress=False)
    straight = fit(model(), data, out=tmp_path / "a.pt", **opts)
    with pytest.raises(KeyboardInterrupt):
        fit(model(), flaky, out=tmp_path / "b.pt", **opts)
    assert torch.load(tmp_path / "b.pt", weights_only=True)["step"] == 20
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.pt", "b.pt"]  # no temp files left
    resumed = fit(model(), data, out=tmp_path / "b.pt", **opts)
    assert resumed["step"] == 40
    for k, v in straight["model"].items():
        assert torch.equal(v, resumed["model"][k]), k


def test_committed_checkpoint_is_a_good_denoiser(between):
    """The committed MLP's base samples match the prior to within a small MMD (tests the file)."""
    be = load_trained_backend(find_mlp_checkpoint(between.prior), steps=100)
    gen = torch.Generator().manual_seed(0)
    exact = ExactReference.of_sampler(between.prior.sample, 1000, gen)
    res = sample_blockwise(be, between.reward, 1000, generator=gen)
    assert exact.mmd2_over_floor(res.samples) < 4


def test_no_checkpoint_for_an_unknown_prior(quad3d):
    with pytest.raises(ValueError, match="toycode train"):
        find_mlp_checkpoint(quad3d.prior)


def test_bad_training_arguments(tmp_path, between):
    with pytest.raises(ValueError, match="steps"):
        train_mlp(between.prior, tmp_path / "m.pt", steps=0, progress=False)
    with pytest.raises(ValueError, match="schedule"):
        train_mlp(between.prior, tmp_path / "m.pt", steps=5, schedule="sigmoid", progress=False)
    assert not (tmp_path / "m.pt").exists()
