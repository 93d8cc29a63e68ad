"""SD 2.x (v-prediction), SDXL and SD3 on the same sampler through toycode.sd.make_backend,
on tiny random-weight pipelines (no download)."""

import functools
import json

import pytest
import torch
from conftest import Latents

from toycode import sample_blockwise
from toycode.diffusion import Process
from toycode.sd import make_backend
from toycode.sd.backend import (
    StableDiffusion3Backend,
    StableDiffusionBackend,
    StableDiffusionXLBackend,
    load_pipeline,
)
from toycode.sd.tiny import tiny_pipeline

PROMPT = "a red fox in the snow"
KINDS = ("sd-v", "sdxl", "sd3")
BACKENDS = {"sd-v": StableDiffusionBackend, "sdxl": StableDiffusionXLBackend,
            "sd3": StableDiffusion3Backend}


@functools.cache
def tiny(kind):
    return tiny_pipeline(kind)


def mean_latent(x):
    return x.mean((1, 2, 3)).double()


def brightness(images):
    return images.mean((1, 2, 3)).double()


def pipeline_latents(pipe, steps, eta, seed=5):
    extra = {} if type(pipe).__name__ == "StableDiffusion3Pipeline" else {"eta": eta}
    return pipe(PROMPT, num_inference_steps=steps, guidance_scale=7.5, output_type="latent",
                generator=torch.Generator().manual_seed(seed), **extra).images


@pytest.mark.parametrize("kind, eta", [("sd-v", 0.0), ("sd-v", 1.0), ("sdxl", 0.0),
                                       ("sdxl", 1.0), ("sd3", 0.0)])
def test_base_reproduces_the_pipeline_latents(kind, eta):
    """N = 1 is the pipeline: DDIM(η) for SD 2.x and SDXL, the flow Euler step (η = 0) for SD3."""
    pipe, T = tiny(kind), 6
    want = pipeline_latents(pipe, T, eta)
    be = make_backend(pipe, PROMPT, steps=T, eta=eta, guidance_scale=7.5)
    assert type(be) is BACKENDS[kind]
    got = sample_blockwise(Latents(be), mean_latent, 1,
                           generator=torch.Generator().manual_seed(5)).samples
    assert torch.allclose(got, want, atol=1e-5)


def test_sd3_grid_is_process_flow_with_the_scheduler_shift():
    be = make_backend(tiny("sd3"), PROMPT, steps=5, eta=0.0)
    assert tiny("sd3").scheduler.config.shift == 3.0
    ref = Process.flow(5, shift=3.0, eta=0.0)
    assert be.process.kind == "flow"
    assert torch.allclose(be.process.sigmas, ref.sigmas, atol=1e-6)
    assert torch.allclose(be.process.timesteps.double(), ref.timesteps, atol=1e-3)


def test_v_prediction_is_read_as_v():
    """Reading SD 2.x's v̂ as ε̂ (the old behaviour) lands far from the pipeline's latents."""
    pipe = tiny("sd-v")
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
        x = args[0] if args else kwargs["hidden_states"]
        self.rows += x.shape[0] // 2
        self.kwargs.append(kwargs)

    def close(self):
        self.handle.remove()


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("N, B", [(3, 2), (2, 4)])   # CoDe, and best-of-N (B = T)
def test_denoiser_calls_follow_the_formula(kind, N, B):
    pipe = tiny(kind)
    T, n = 4, 2
    be = make_backend(pipe, PROMPT, steps=T, max_batch=4)
    counter = UNetCounter(pipe.transformer if kind == "sd3" else pipe.unet)
    try:
        res = sample_blockwise(be, brightness, n, num_candidates=N, block_size=B,
                               generator=torch.Generator().manual_seed(0))
    finally:
        counter.close()
    assert counter.rows == res.nfe == n * (1 + (T - 1) * N)
    assert res.samples.shape == (n, 3, 64, 64) and torch.isfinite(res.rewards).all()


@pytest.mark.parametrize("kind", KINDS)
def test_smc_runs_on_every_kind(kind):
    """SMC (K = 2 particles, systematic resampling at every step) on each pipeline: T denoiser
    rows per particle, the reward of the kept particles, a resampling record per step."""
    pipe = tiny(kind)
    T, n = 3, 2
    counter = UNetCounter(pipe.transformer if kind == "sd3" else pipe.unet)
    try:
        res = sample_blockwise(make_backend(pipe, PROMPT, steps=T), brightness, n, particles=2,
                               block_size=1, selection="systematic", ess_threshold=0.5,
                               generator=torch.Generator().manual_seed(0))
    finally:
        counter.close()
    assert counter.rows == res.nfe == n * T and res.ess.shape == (T, 1)
    assert torch.allclose(res.rewards, brightness(res.samples))


def test_sdxl_conditions_on_pooled_text_and_time_ids():
    pipe = tiny("sdxl")
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


def test_sdxl_decodes_an_fp16_vae_in_float32_when_asked():
    pipe = tiny_pipeline("sdxl")        # a fresh one: its VAE is cast below
    be = make_backend(pipe, PROMPT, steps=2)
    x = torch.randn(2, 4, 32, 32, generator=torch.Generator().manual_seed(0)).half()
    with torch.no_grad():
        want = be.decode(x.float())
        pipe.vae.register_to_config(force_upcast=True)
        pipe.vae.half()
        got = be.decode(x)
    assert pipe.vae.dtype == torch.float16 and be._vae().dtype == torch.float32
    assert got.dtype == torch.float32 and torch.allclose(got, want, atol=1e-2)


def test_make_backend_refuses_other_pipelines():
    with pytest.raises(ValueError, match="no toycode backend for object; supported: "
                                         "StableDiffusionXLPipeline, StableDiffusionPipeline, "
                                         "StableDiffusion3Pipeline"):
        make_backend(object(), PROMPT)


def test_tiny_kinds():
    assert tiny_pipeline().scheduler.config.prediction_type == "epsilon"
    assert tiny_pipeline("sd-v").scheduler.config.prediction_type == "v_prediction"
    with pytest.raises(ValueError, match="kind"):
        tiny_pipeline("sd9")


@pytest.mark.parametrize("kind", KINDS)
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
