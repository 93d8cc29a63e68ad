"""SD 2.x (v-prediction), SDXL (DDIM and Euler grids), SD3 and FLUX on the same sampler through
toycode.sd.make_sd_backend, on tiny random-weight pipelines (no download)."""

import functools
import json

import pytest
import torch
from conftest import Latents

from toycode import sample_blockwise
from toycode.core.diffusion import Process
from toycode.sd import make_sd_backend
from toycode.sd.backend import (
    FluxBackend,
    StableDiffusion3Backend,
    StableDiffusionBackend,
    StableDiffusionXLBackend,
    load_pipeline,
)
from toycode.sd.tiny import tiny_pipeline

PROMPT = "a red fox in the snow"
KINDS = ("sd-v", "sdxl", "sd3", "flux")
BACKENDS = {
    "sd-v": StableDiffusionBackend,
    "sdxl": StableDiffusionXLBackend,
    "sd3": StableDiffusion3Backend,
    "flux": FluxBackend,
}
TRANSFORMERS = ("sd3", "flux")


@functools.cache
def tiny(kind):
    return tiny_pipeline(kind)


def mean_latent(x):
    return x.mean((1, 2, 3)).double()


def brightness(images):
    return images.mean((1, 2, 3)).double()


def pipeline_latents(pipe, steps, eta, seed=5, **extra):
    """The pipeline's own latents (FLUX's unpacked from its 2×2 tokens by its own method)."""
    flow = type(pipe).__name__ in ("StableDiffusion3Pipeline", "FluxPipeline")
    out = pipe(
        PROMPT,
        num_inference_steps=steps,
        guidance_scale=7.5,
        output_type="latent",
        generator=torch.Generator().manual_seed(seed),
        **extra,
        **({} if flow else {"eta": eta}),
    ).images
    if type(pipe).__name__ != "FluxPipeline":
        return out
    size = extra.get("height", pipe.default_sample_size * pipe.vae_scale_factor)
    return pipe._unpack_latents(out, size, extra.get("width", size), pipe.vae_scale_factor)


@pytest.mark.parametrize(
    "kind, eta",
    [("sd-v", 0.0), ("sd-v", 1.0), ("sdxl", 0.0), ("sdxl", 1.0), ("sd3", 0.0), ("flux", 0.0)],
)
def test_base_reproduces_the_pipeline_latents(kind, eta):
    """N = 1 is the pipeline: DDIM(η) for SD 2.x and SDXL, the flow Euler step (η = 0) for SD3
    and FLUX."""
    pipe, T = tiny(kind), 6
    want = pipeline_latents(pipe, T, eta)
    be = make_sd_backend(pipe, PROMPT, steps=T, eta=eta, guidance_scale=7.5)
    assert type(be) is BACKENDS[kind]
    got = sample_blockwise(
        Latents(be), mean_latent, 1, generator=torch.Generator().manual_seed(5)
    ).samples
    assert torch.allclose(got, want, atol=1e-5)


@pytest.mark.parametrize("kind", ["sd-v", "sdxl"])
def test_guidance_rescale_reproduces_the_pipeline(kind):
    """guidance_rescale φ = 0.7 (Lin et al. 2023, §3.4) gives the pipeline's latents under the
    same φ, and latents away from φ = 0's."""
    pipe, T = tiny(kind), 4
    want = pipeline_latents(pipe, T, 0.0, guidance_rescale=0.7)
    runs = {}
    for phi in (0.7, 0.0):
        be = make_sd_backend(
            pipe, PROMPT, steps=T, eta=0.0, guidance_scale=7.5, guidance_rescale=phi
        )
        runs[phi] = sample_blockwise(
            Latents(be), mean_latent, 1, generator=torch.Generator().manual_seed(5)
        ).samples
    assert torch.allclose(runs[0.7], want, atol=1e-5)
    assert (runs[0.0] - want).abs().max() > 1e-2
    with pytest.raises(ValueError, match="guidance_rescale"):
        make_sd_backend(pipe, PROMPT, steps=T, guidance_rescale=1.5)


def test_sd3_grid_is_process_flow_with_the_scheduler_shift():
    be = make_sd_backend(tiny("sd3"), PROMPT, steps=5, eta=0.0)
    assert tiny("sd3").scheduler.config.shift == 3.0
    ref = Process.flow(5, shift=3.0, eta=0.0)
    assert be.process.kind == "flow"
    assert torch.allclose(be.process.sigmas, ref.sigmas, atol=1e-6)
    assert torch.allclose(be.process.timesteps.double(), ref.timesteps, atol=1e-3)


def test_v_prediction_is_read_as_v():
    """Reading SD 2.x's v̂ as ε̂ (the old behaviour) lands far from the pipeline's latents."""
    pipe = tiny("sd-v")
    be = make_sd_backend(pipe, PROMPT, steps=4, eta=0.0)
    assert be.prediction == "v_prediction"
    be.prediction = "epsilon"
    wrong = sample_blockwise(
        Latents(be), mean_latent, 1, generator=torch.Generator().manual_seed(5)
    ).samples
    assert (wrong - pipeline_latents(pipe, 4, 0.0)).abs().max() > 0.1


class UNetCounter:
    """Latents the denoiser sees per call and its kwargs: a CFG call carries each latent twice,
    FLUX's distilled guidance once."""

    def __init__(self, unet, per=2):
        self.rows, self.kwargs, self.per = 0, [], per
        self.handle = unet.register_forward_pre_hook(self.hook, with_kwargs=True)

    def hook(self, module, args, kwargs):
        x = args[0] if args else kwargs["hidden_states"]
        self.rows += x.shape[0] // self.per
        self.kwargs.append(kwargs)

    def close(self):
        self.handle.remove()


def denoiser_counter(pipe, kind):
    if kind in TRANSFORMERS:
        return UNetCounter(pipe.transformer, per=1 if kind == "flux" else 2)
    return UNetCounter(pipe.unet)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("N, B", [(3, 2), (2, 4)])  # CoDe, and best-of-N (B = T)
def test_denoiser_calls_follow_the_formula(kind, N, B):
    pipe = tiny(kind)
    T, n = 4, 2
    be = make_sd_backend(pipe, PROMPT, steps=T, max_batch=4)
    counter = denoiser_counter(pipe, kind)
    try:
        res = sample_blockwise(
            be,
            brightness,
            n,
            num_candidates=N,
            block_size=B,
            generator=torch.Generator().manual_seed(0),
        )
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
    counter = denoiser_counter(pipe, kind)
    try:
        res = sample_blockwise(
            make_sd_backend(pipe, PROMPT, steps=T),
            brightness,
            n,
            particles=2,
            block_size=1,
            selection="systematic",
            ess_threshold=0.5,
            generator=torch.Generator().manual_seed(0),
        )
    finally:
        counter.close()
    assert counter.rows == res.nfe == n * T and res.ess.shape == (T, 1)
    assert torch.allclose(res.rewards, brightness(res.samples))


def test_sdxl_conditions_on_pooled_text_and_time_ids():
    pipe = tiny("sdxl")
    be = make_sd_backend(pipe, PROMPT, steps=2, height=48, width=64)
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
    assert torch.equal(added["text_embeds"][:3], torch.zeros(3, 8))  # empty negative → zeros
    assert torch.equal(added["text_embeds"][3:], be.pooled[1].expand(3, -1))


def test_sdxl_decodes_an_fp16_vae_in_float32_when_asked():
    pipe = tiny_pipeline("sdxl")  # a fresh one: its VAE is cast below
    be = make_sd_backend(pipe, PROMPT, steps=2)
    x = torch.randn(2, 4, 32, 32, generator=torch.Generator().manual_seed(0)).half()
    with torch.no_grad():
        want = be.decode(x.float())
        pipe.vae.register_to_config(force_upcast=True)
        pipe.vae.half()
        got = be.decode(x)
    assert pipe.vae.dtype == torch.float16 and be._vae().dtype == torch.float32
    assert got.dtype == torch.float32 and torch.allclose(got, want, atol=1e-2)


def test_make_backend_refuses_other_pipelines():
    with pytest.raises(
        ValueError,
        match="no toycode backend for object; supported: "
        "StableDiffusionXLPipeline, StableDiffusionPipeline, "
        "StableDiffusion3Pipeline, FluxPipeline",
    ):
        make_sd_backend(object(), PROMPT)


def test_flux_reproduces_the_pipeline_at_another_size_and_shift():
    """At 32×32 px the 4 image tokens give FLUX a different μ; the grid is the pipeline's
    linspace(1, 1/T, T) shifted by e^μ, and N = 1, η = 0 still lands on its latents."""
    import math

    from diffusers.pipelines.flux.pipeline_flux import calculate_shift

    from toycode.sd.backend import flux_shift

    pipe, T = tiny("flux"), 4
    be = make_sd_backend(pipe, PROMPT, steps=T, eta=0.0, guidance_scale=7.5, height=32, width=32)
    assert be.shape == (16, 16, 16)
    mu = flux_shift(64, pipe.scheduler.config)
    assert mu == pytest.approx(calculate_shift(64)) and mu < pipe.scheduler.config.base_shift
    t = torch.linspace(1, 1 / T, T, dtype=torch.float64)
    want_t = math.exp(mu) / (math.exp(mu) + 1 / t - 1)
    assert torch.allclose(be.process.sigmas[:-1], want_t, atol=1e-6)
    assert be.process.sigmas[-1] == 0 and be.process.kind == "flow"
    want = pipeline_latents(pipe, T, 0.0, height=32, width=32)
    got = sample_blockwise(
        Latents(be), mean_latent, 1, generator=torch.Generator().manual_seed(5)
    ).samples
    assert torch.allclose(got, want, atol=1e-5)


def test_flux_guidance_is_an_input_not_cfg():
    """One transformer row per latent per call, the guidance scale as its guidance input, the
    same text for every row; no negative prompt."""
    pipe = tiny("flux")
    be = make_sd_backend(pipe, PROMPT, steps=2, guidance_scale=4.0)
    x = be.prior_sample(3, torch.Generator().manual_seed(0))
    counter = UNetCounter(pipe.transformer, per=1)
    try:
        with torch.no_grad():
            p4 = be.predict(x, 0)
            p1 = make_sd_backend(pipe, PROMPT, steps=2, guidance_scale=1.0).predict(x, 0)
    finally:
        counter.close()
    kw = counter.kwargs[0]
    assert counter.rows == 6 and kw["guidance"].tolist() == [4.0] * 3
    assert kw["hidden_states"].shape == (3, 16 * 16, 64) and kw["img_ids"].shape == (256, 3)
    assert torch.equal(kw["encoder_hidden_states"][0], kw["encoder_hidden_states"][2])
    assert (p4.x0 - p1.x0).abs().max() > 1e-4
    with pytest.raises(ValueError, match="negative prompt"):
        make_sd_backend(pipe, PROMPT, steps=2, negative_prompt="blurry")
    with pytest.raises(ValueError, match="multiples of 4"):
        make_sd_backend(pipe, PROMPT, steps=2, height=30, width=32)


def test_tiny_t5_tokenizer_tells_prompts_apart():
    from toycode.sd.tiny import tiny_t5_tokenizer

    tok = tiny_t5_tokenizer()
    a, b = (
        tok(p, padding="max_length", max_length=16, return_tensors="pt").input_ids
        for p in ("a red fox", "a blue owl")
    )
    assert a.shape == (1, 16) and not torch.equal(a, b)
    assert tok.batch_decode(tok(["a red fox"]).input_ids) == ["a red fox</s>"]


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
    code = main(
        [
            "sd",
            "--model",
            f"tiny:{kind}",
            "--prompt",
            "a fox",
            "--steps",
            "3",
            "--n",
            "1",
            "--num-candidates",
            "2",
            "--block-size",
            "2",
            "--out",
            str(out),
        ]
    )
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


# SDXL base 1.0's scheduler_config.json: EulerDiscreteScheduler, "leading" spacing
SDXL_EULER = {
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "interpolation_type": "linear",
    "num_train_timesteps": 1000,
    "prediction_type": "epsilon",
    "sample_max_value": 1.0,
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "timestep_spacing": "leading",
    "trained_betas": None,
    "use_karras_sigmas": False,
    "clip_sample": False,
}


@functools.cache
def tiny64(kind):
    return tiny_pipeline(kind).to(dtype=torch.float64)


def euler_pipeline(kind="sdxl", dtype=torch.float32, **changes):
    """A tiny pipeline with SDXL's own Euler scheduler (``changes`` to its config)."""
    from diffusers import EulerDiscreteScheduler

    pipe = tiny(kind) if dtype == torch.float32 else tiny64(kind)
    sched = EulerDiscreteScheduler.from_config({**SDXL_EULER, **changes})
    extra = {} if kind == "sdxl" else {"requires_safety_checker": False}
    euler = type(pipe)(**{**pipe.components, "scheduler": sched}, **extra)
    euler.set_progress_bar_config(disable=True)
    return euler


@pytest.mark.parametrize(
    "kind, changes",
    [
        ("sdxl", {}),
        ("sdxl", {"timestep_spacing": "trailing"}),
        ("sdxl", {"final_sigmas_type": "sigma_min"}),
        ("sd-v", {"prediction_type": "v_prediction"}),
    ],
)
def test_base_reproduces_the_euler_pipeline(kind, changes):
    """N = 1, η = 0 on Euler's grid is the Euler pipeline: SDXL's "leading" config; "trailing",
    whose first latent is σ_max·z rather than √(σ_max² + 1)·z; a final σ = σ_min > 0; SD 2.x's
    v-prediction read through Euler.

    The modules run in float64 here: diffusers' Euler step is float32 whatever the latents'
    dtype (that alone leaves ~4e-6), and in float32 the tiny random UNet under CFG 7.5 magnifies
    the two paths' different roundings to ~3e-5 on latents of size ~26 (1e-6 relative)."""
    pipe, T = euler_pipeline(kind, torch.float64, **changes), 6
    be = make_sd_backend(pipe, PROMPT, steps=T, eta=0.0, guidance_scale=7.5)
    assert be.scheduler == "euler" and pipe.scheduler.num_inference_steps is None  # untouched
    want = pipeline_latents(pipe, T, 0.0)
    got = sample_blockwise(
        Latents(be), mean_latent, 1, generator=torch.Generator().manual_seed(5)
    ).samples
    assert got.dtype == want.dtype == torch.float64
    assert torch.allclose(got, want, atol=1e-5)
    if changes:
        return
    # DDIM's grid has the same timesteps but ends at ᾱ_0 (set_alpha_to_one=False), not σ = 0
    ddim = make_sd_backend(pipe, PROMPT, steps=T, eta=0.0, guidance_scale=7.5, scheduler="ddim")
    off = sample_blockwise(
        Latents(ddim), mean_latent, 1, generator=torch.Generator().manual_seed(5)
    ).samples
    assert (off - want).abs().max() > 1e-3


def test_euler_step_is_ddim_eta_0_on_its_grid():
    """Every Euler step of SDXL's 50-step grid, x̃' = x̃ + (σ' − σ) ε̂ on x̃ = x/√ᾱ, is the DDIM
    η = 0 step of x on the VP levels ᾱ = 1/(1 + σ²) (to float32 rounding: Euler steps in
    float32); the DDIM grid shares the timesteps and differs only at the clean end."""
    from diffusers import EulerDiscreteScheduler

    from toycode.sd.backend import sd_process

    sched = EulerDiscreteScheduler.from_config(SDXL_EULER)
    sched.set_timesteps(50)
    proc = sd_process(SDXL_EULER, 50, "euler", eta=0.0)
    gen = torch.Generator().manual_seed(0)
    for i, t in enumerate(sched.timesteps):
        xt = torch.randn(2, 4, 8, 8, generator=gen) * (1 + sched.sigmas[i] ** 2).sqrt()
        eps = torch.randn(2, 4, 8, 8, generator=gen)
        x = sched.scale_model_input(xt, t)  # the VP latent x̃·√ᾱ
        want = sched.step(eps, t, xt).prev_sample
        got = proc.step(x.double(), i, eps.double()) / proc.alphas[i + 1]
        assert torch.allclose(got.float(), want, rtol=1e-5, atol=1e-5), i
    ddim = sd_process(SDXL_EULER, 50, "ddim", eta=0.0)
    assert torch.equal(ddim.timesteps, proc.timesteps.long())
    assert torch.allclose(ddim.abar[:-1], proc.abar[:-1], rtol=1e-6)
    assert proc.sigmas[-1] == 0 and ddim.abar[-1] == sched.alphas_cumprod[0].double() < 1
