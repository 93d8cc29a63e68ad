"""SD 2.x (v-prediction) and SDXL on the same sampler, through toycode.sd.make_backend, on tiny
random-weight pipelines (no download)."""

import json

import pytest
import torch

from toycode import sample_blockwise
from toycode.sd import make_backend
from toycode.sd.backend import StableDiffusionBackend, StableDiffusionXLBackend, load_pipeline
from toycode.sd.tiny import tiny_pipeline

PROMPT = "a red fox in the snow"
KINDS = ("sd-v", "sdxl")


@pytest.fixture(scope="module", params=KINDS)
def kind_pipe(request):
    return request.param, tiny_pipeline(request.param)


class Latents:
    """The backend with decode = identity, to compare latents with the pipeline's."""

    def __init__(self, inner):
        self.inner = inner

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def decode(self, x0):
        return x0


def mean_latent(x):
    return x.mean((1, 2, 3)).double()


def brightness(images):
    return images.mean((1, 2, 3)).double()


def pipeline_latents(pipe, steps, eta, seed=5):
    return pipe(PROMPT, num_inference_steps=steps, eta=eta, guidance_scale=7.5,
                output_type="latent", generator=torch.Generator().manual_seed(seed)).images


@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_base_reproduces_the_pipeline_latents(kind_pipe, eta):
    kind, pipe = kind_pipe
    T = 6
    want = pipeline_latents(pipe, T, eta)
    be = make_backend(pipe, PROMPT, steps=T, eta=eta)
    assert type(be) is {"sd-v": StableDiffusionBackend, "sdxl": StableDiffusionXLBackend}[kind]
    got = sample_blockwise(Latents(be), mean_latent, 1,
                           generator=torch.Generator().manual_seed(5)).samples
    assert torch.allclose(got, want, atol=1e-5)


@pytest.mark.parametrize("kind_pipe", ["sd-v"], indirect=True)
def test_v_prediction_is_read_as_v(kind_pipe):
    """Reading SD 2.x's v̂ as ε̂ (the old behaviour) lands far from the pipeline's latents."""
    _, pipe = kind_pipe
    be = make_backend(pipe, PROMPT, steps=4, eta=0.0)
    assert be.prediction == "v_prediction"
    be.prediction = "epsilon"
    wrong = sample_blockwise(Latents(be), mean_latent, 1,
                             generator=torch.Generator().manual_seed(5)).samples
    assert (wrong - pipeline_latents(pipe, 4, 0.0)).abs().max() > 0.1


class UNetCounter:
    """Latents the UNet sees per call (a CFG call carries each latent twice) and its kwargs."""

    def __init__(self, unet):
        self.rows, self.kwargs = 0, []
        self.handle = unet.register_forward_pre_hook(self.hook, with_kwargs=True)

    def hook(self, module, args, kwargs):
        self.rows += args[0].shape[0] // 2
        self.kwargs.append(kwargs)

    def close(self):
        self.handle.remove()


@pytest.mark.parametrize("N, B", [(3, 2), (2, 4)])   # CoDe, and best-of-N (B = T)
def test_unet_calls_follow_the_formula(kind_pipe, N, B):
    _, pipe = kind_pipe
    T, n = 4, 2
    be = make_backend(pipe, PROMPT, steps=T, max_batch=4)
    counter = UNetCounter(pipe.unet)
    try:
        res = sample_blockwise(be, brightness, n, num_candidates=N, block_size=B,
                               generator=torch.Generator().manual_seed(0))
    finally:
        counter.close()
    assert counter.rows == res.nfe == n * (1 + (T - 1) * N)
    assert res.samples.shape == (n, 3, 64, 64) and torch.isfinite(res.rewards).all()


def test_sdxl_conditions_on_pooled_text_and_time_ids():
    pipe = tiny_pipeline("sdxl")
    be = make_backend(pipe, PROMPT, steps=2, height=48, width=64)
    assert be.shape == (4, 24, 32)
    counter = UNetCounter(pipe.unet)
    try:
        be.predict(be.prior_sample(3, torch.Generator().manual_seed(0)), 0)
    finally:
        counter.close()
    (kw,) = counter.kwargs
    added = kw["added_cond_kwargs"]
    assert added["time_ids"].tolist() == [[48, 64, 0, 0, 48, 64]] * 6
    assert added["text_embeds"].shape == (6, 8) and kw["encoder_hidden_states"].shape[-1] == 16
    assert torch.equal(added["text_embeds"][:3], torch.zeros(3, 8))   # empty negative → zeros
    assert torch.equal(added["text_embeds"][3:], be.pooled[1].expand(3, -1))


def test_make_backend_refuses_other_pipelines():
    with pytest.raises(ValueError, match="no toycode backend for object; supported: "
                                         "StableDiffusionXLPipeline, StableDiffusionPipeline"):
        make_backend(object(), PROMPT)


def test_tiny_kinds():
    assert tiny_pipeline().scheduler.config.prediction_type == "epsilon"
    assert tiny_pipeline("sd-v").scheduler.config.prediction_type == "v_prediction"
    with pytest.raises(ValueError, match="kind"):
        tiny_pipeline("sd9")


@pytest.mark.parametrize("kind", ["sd-v", "sdxl"])
def test_cli_runs_a_tiny_pipeline_offline(kind, tmp_path, monkeypatch, capsys):
    from toycode.cli import main
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out = tmp_path / "out"
    code = main(["sd", "--model", f"tiny:{kind}", "--prompt", "a fox", "--steps", "3", "--n",
                 "1", "--num-candidates", "2", "--block-size", "2", "--out", str(out)])
    assert code == 0
    assert {p.name for p in out.iterdir()} == {"image_000.png", "rewards.json", "grid.png"}
    (meta,) = json.loads((out / "rewards.json").read_text())
    assert meta["nfe"] == 1 + 2 * 2 and meta["prompt"] == "a fox" and meta["steps"] == 3
    from PIL import Image
    assert Image.open(out / "image_000.png").size == (64, 64)


def test_load_pipeline_tiny_and_bad_names():
    pipe = load_pipeline("tiny:sdxl", device="cpu")
    assert type(pipe).__name__ == "StableDiffusionXLPipeline" and pipe.unet.dtype == torch.float32
    with pytest.raises(ValueError, match="kind"):
        load_pipeline("tiny:sd9", device="cpu")
