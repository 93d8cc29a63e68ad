"""The Stable Diffusion backend on tiny random-weight pipelines built from configs (no download)."""

import json
import math

import pytest
import torch
from conftest import Latents

from toycode import sample_blockwise
from toycode.core.guidance import DPS, GuidedBackend
from toycode.sd.backend import StableDiffusionBackend
from toycode.sd.rewards import Aesthetic, Clip, ClipImageSimilarity, ClipTextScore
from toycode.sd.run import make_image_reward, sd_sample, write_outputs
from toycode.sd.tiny import tiny_pipeline
from toycode.utils.images import Compressibility

PROMPT = "a red fox in the snow"


@pytest.fixture(scope="module")
def pipe():
    return tiny_pipeline(seed=0)


@pytest.fixture(scope="module")
def clip():
    from transformers import CLIPConfig, CLIPModel

    from toycode.sd.tiny import tiny_tokenizer

    torch.manual_seed(0)
    config = CLIPConfig(
        text_config={
            "hidden_size": 16,
            "intermediate_size": 32,
            "num_attention_heads": 2,
            "num_hidden_layers": 1,
            "vocab_size": 1000,
            "bos_token_id": 0,
            "eos_token_id": 2,
            "pad_token_id": 1,
        },
        vision_config={
            "hidden_size": 16,
            "intermediate_size": 32,
            "num_attention_heads": 2,
            "num_hidden_layers": 1,
            "image_size": 32,
            "patch_size": 8,
        },
        projection_dim=12,
    )
    return Clip(CLIPModel(config).eval(), tiny_tokenizer())


class UNetCounter:
    """Counts the latents the UNet sees (a CFG call carries each latent twice) and its t's."""

    def __init__(self, unet, cfg=True):
        self.rows, self.calls, self.t, self.sizes = 0, 0, [], []
        self.per = 2 if cfg else 1
        self.handle = unet.register_forward_pre_hook(self.hook, with_kwargs=True)

    def hook(self, module, args, kwargs):
        self.rows += args[0].shape[0] // self.per
        self.sizes.append(args[0].shape[0] // self.per)
        self.calls += 1
        self.t.append(int(args[1]))

    def close(self):
        self.handle.remove()


def brightness(images):
    return images.mean((1, 2, 3)).double()


@pytest.mark.slow
@pytest.mark.parametrize("N, B, max_batch", [(1, 5, 8), (3, 5, 8), (4, 2, 3), (3, 10, 2)])
def test_unet_calls_follow_the_formula(pipe, N, B, max_batch):
    T, n = 10, 2
    be = StableDiffusionBackend(pipe, PROMPT, steps=T, max_batch=max_batch)
    counter = UNetCounter(pipe.unet)
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
    per_sample = T if N == 1 else 1 + (T - 1) * N
    assert counter.rows == res.nfe == n * per_sample
    assert counter.rows < n * N * T * (1 + 1 / B)  # the official code's cost
    assert max(counter.sizes) <= max_batch  # chunking bounded every call
    assert res.samples.shape == (n, 3, 64, 64) and 0 <= res.samples.min() <= res.samples.max() <= 1


def test_chunks_never_exceed_max_batch(pipe):
    be = StableDiffusionBackend(pipe, PROMPT, steps=4, max_batch=3)
    sizes = []
    handle = pipe.unet.register_forward_pre_hook(lambda m, a: sizes.append(a[0].shape[0]))
    try:
        sample_blockwise(
            be,
            brightness,
            2,
            num_candidates=4,
            block_size=2,
            generator=torch.Generator().manual_seed(0),
        )
    finally:
        handle.remove()
    assert max(sizes) <= 2 * 3 and sum(sizes) == 2 * 2 * (1 + 3 * 4)


def test_selection_picks_the_favoured_candidate(pipe):
    """A reward that scores candidate 2 of every group highest must see candidate 2 kept."""
    N, n = 4, 3

    def favour_two(images):
        k = torch.arange(len(images)) % N
        return (k == 2).double() + 1e-3 * images.mean((1, 2, 3)).double()

    seen = []
    be = StableDiffusionBackend(pipe, PROMPT, steps=6)
    sample_blockwise(
        be,
        favour_two,
        n,
        num_candidates=N,
        block_size=2,
        callback=seen.append,
        generator=torch.Generator().manual_seed(0),
    )
    assert len(seen) == 3
    for block in seen:
        assert torch.equal(block["selected"].view(-1), torch.full((n,), 2))
        assert torch.equal(block["x"], block["candidates"][torch.arange(n) * N + 2])


@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_base_reproduces_the_pipeline_latents(pipe, eta):
    T = 8
    want = pipe(
        PROMPT,
        num_inference_steps=T,
        eta=eta,
        guidance_scale=7.5,
        output_type="latent",
        generator=torch.Generator().manual_seed(5),
    ).images
    be = Latents(StableDiffusionBackend(pipe, PROMPT, steps=T, eta=eta))
    got = sample_blockwise(
        be, lambda x: x.mean((1, 2, 3)).double(), 1, generator=torch.Generator().manual_seed(5)
    ).samples
    assert torch.allclose(got, want, atol=1e-5)


def test_code_strengths_at_the_right_timestep_and_keeps_the_reference(pipe):
    T = 10
    be = StableDiffusionBackend(pipe, PROMPT, steps=T)
    reference = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    latents = be.encode(reference)
    counter = UNetCounter(pipe.unet)
    try:
        res = sample_blockwise(
            be,
            brightness,
            1,
            num_candidates=2,
            block_size=2,
            reference=latents,
            strength=0.4,
            generator=torch.Generator().manual_seed(0),
        )
    finally:
        counter.close()
    assert res.settings["start_index"] == 6 and counter.t[0] == int(be.process.timesteps[6])
    assert counter.rows == 1 + (4 - 1) * 2
    kept = sample_blockwise(be, brightness, 1, reference=latents, strength=0.01)
    assert kept.nfe == 0
    with torch.no_grad():
        assert torch.allclose(kept.samples, be.decode(latents))


def test_gradient_guidance_and_smc_run_on_the_same_backend(pipe, clip):
    be = StableDiffusionBackend(pipe, PROMPT, steps=4)
    reward = ClipTextScore("a fox", clip)
    res = sample_blockwise(
        GuidedBackend(be, DPS(reward, 1.0)), reward, 2, generator=torch.Generator().manual_seed(0)
    )
    assert res.nfe == 8 and res.reward_grads == 8 and res.backprops == 8
    smc = sample_blockwise(
        be,
        brightness,
        4,
        particles=2,
        selection="systematic",
        generator=torch.Generator().manual_seed(0),
    )
    assert smc.nfe == 16 and smc.ess.shape == (4, 2)


def test_image_rewards(clip, tmp_path):
    flat = torch.full((1, 3, 32, 32), 0.5)
    noise = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    jpeg = Compressibility()
    assert float(jpeg(flat)) > float(jpeg(noise))  # a flat image compresses better
    sim = ClipImageSimilarity(noise[0], clip)
    assert float(sim(noise)) == pytest.approx(1.0, abs=1e-5) and float(sim(flat)) < 1.0
    x = noise.clone().requires_grad_(True)
    torch.autograd.grad(sim(x).sum(), x)  # differentiable end to end
    for state in (
        torch.nn.Linear(12, 1).state_dict(),
        {f"layers.{k}": v for k, v in _mlp_state().items()},
    ):
        torch.save(state, tmp_path / "head.pth")
        head = Aesthetic(tmp_path / "head.pth", clip)
        emb = clip.image_embeds(noise)
        assert torch.allclose(head(noise), head.head(emb).squeeze(1).double(), atol=1e-6)


def _mlp_state():
    layers = torch.nn.Sequential(
        torch.nn.Linear(12, 1024),
        torch.nn.Dropout(),
        torch.nn.Linear(1024, 128),
        torch.nn.Dropout(),
        torch.nn.Linear(128, 64),
        torch.nn.Dropout(),
        torch.nn.Linear(64, 16),
        torch.nn.Linear(16, 1),
    )
    return layers.state_dict()


def test_sd_sample_writes_images_rewards_and_grid(pipe, tmp_path):
    records = sd_sample(
        pipe,
        ["a cat", "a dog", "a cat"],
        Compressibility(),
        n=3,
        num_candidates=2,
        block_size=2,
        steps=4,
        progress=False,
    )
    assert [r["prompt"] for r in records] == ["a cat", "a dog", "a cat"]
    assert all(r["nfe"] == 1 + 3 * 2 for r in records)
    paths = write_outputs(records, tmp_path / "out")
    meta = json.loads((tmp_path / "out" / "rewards.json").read_text())
    assert [m["reward"] for m in meta] == [r["reward"] for r in records]
    assert {p.name for p in paths} == {
        "image_000.png",
        "image_001.png",
        "image_002.png",
        "rewards.json",
        "grid.png",
    }


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda p: make_image_reward("sharpness"), "reward"),
        (lambda p: make_image_reward("clip-image", clip=object()), "reference"),
        (lambda p: make_image_reward("aesthetic", clip=object()), "aesthetic-head"),
        (lambda p: sd_sample(p, "x", brightness, num_candidates=0, steps=2), "num_candidates"),
        (lambda p: sd_sample(p, ["a", "b"], brightness, n=3, steps=2), "2 prompts for n=3"),
        (
            lambda p: sd_sample(
                p, "x", brightness, steps=2, reference=torch.rand(3, 64, 64), strength=0.0
            ),
            "strength",
        ),
        (
            lambda p: sd_sample(
                p, "x", brightness, steps=2, reference=torch.rand(3, 64, 64), strength=1.5
            ),
            "strength",
        ),
        (lambda p: sd_sample(p, "x", brightness, steps=2, strength=0.5), "reference"),
        (lambda p: StableDiffusionBackend(p, "x", steps=2, scheduler="heun"), "scheduler"),
        (lambda p: sd_sample(p, "x", brightness, steps=2, eta=0.0, num_candidates=2), "stochastic"),
        *(
            (
                lambda p, m=m: sd_sample(
                    p,
                    "x",
                    brightness,
                    method=m,
                    steps=2,
                    reference=torch.rand(3, 64, 64),
                    strength=0.5,
                ),
                "cannot start from a reference",
            )
            for m in ("noise-random", "dts", "dsearch")
        ),
    ],
)
def test_bad_input(pipe, call, match):
    with pytest.raises(ValueError, match=match):
        call(pipe)


def test_blockwise_wrappers_start_from_a_reference(pipe):
    """DAS's loop hands the reference on to the blockwise sampler; the search loops refuse it
    (test_bad_input)."""
    records = sd_sample(
        pipe,
        "x",
        brightness,
        method="das",
        n=2,
        particles=2,
        steps=4,
        reference=torch.rand(3, 64, 64),
        strength=0.5,
        progress=False,
    )
    assert records[0]["start_index"] == 2 and records[0]["nfe"] == 2


def test_cli_on_a_saved_tiny_pipeline(pipe, tmp_path, monkeypatch, capsys):
    from toycode.cli import main

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    pipe.save_pretrained(tmp_path / "tiny")
    code = main(
        [
            "sd",
            "--model",
            str(tmp_path / "tiny"),
            "--prompt",
            "a fox",
            "--n",
            "2",
            "--reward",
            "jpeg",
            "--method",
            "code",
            "--num-candidates",
            "2",
            "--block-size",
            "2",
            "--steps",
            "4",
            "--seed",
            "1",
            "--out",
            str(tmp_path / "out"),
        ]
    )
    assert code == 0
    meta = json.loads((tmp_path / "out" / "rewards.json").read_text())
    assert len(meta) == 2 and meta[0]["nfe"] == 1 + 3 * 2 and meta[0]["seed"] == 1
    assert math.isfinite(meta[0]["reward"]) and (tmp_path / "out" / "grid.png").exists()
    code = main(
        [
            "sd",
            "--model",
            str(tmp_path / "tiny"),
            "--prompt",
            "a fox",
            "--reward",
            "clip-image",
            "--out",
            str(tmp_path / "bad"),
        ]
    )
    assert code == 2 and not (tmp_path / "bad").exists()
    code = main(
        [
            "sd",
            "--model",
            str(tmp_path / "nowhere"),
            "--prompt",
            "a fox",
            "--out",
            str(tmp_path / "bad"),
        ]
    )
    assert code == 2 and "nowhere" in capsys.readouterr().err.splitlines()[-1]


def test_building_a_tiny_pipeline_leaves_the_global_generator_alone():
    state = torch.get_rng_state()
    a = tiny_pipeline(seed=1)
    assert torch.equal(torch.get_rng_state(), state)
    torch.manual_seed(99)
    b = tiny_pipeline(seed=1)
    assert all(torch.equal(p, q) for p, q in zip(a.unet.parameters(), b.unet.parameters()))


def test_lookahead_values_run_on_sd_and_their_unet_calls_are_counted(pipe):
    """Rollouts go through the same UNet (chunked by max_batch) and the one Ledger:
    per sample 1 + (T − 1)·N + (interior block ends)·N·M·(k − 1) UNet rows."""
    from toycode.core.values import LookaheadValue

    T, n, N, B, M, k = 6, 2, 2, 2, 2, 2
    be = StableDiffusionBackend(pipe, PROMPT, steps=T, max_batch=3)
    counter = UNetCounter(pipe.unet)
    try:
        res = sample_blockwise(
            be,
            brightness,
            n,
            num_candidates=N,
            block_size=B,
            value=LookaheadValue(brightness, 1.0, samples=M, steps=k),
            generator=torch.Generator().manual_seed(0),
        )
    finally:
        counter.close()
    interior = T // B - 1
    assert counter.rows == res.nfe == n * (1 + (T - 1) * N + interior * N * M * (k - 1))
    assert max(counter.sizes) <= 3


def test_pickscore_is_the_scaled_clip_logit_and_runs_from_the_cli(clip, tmp_path, capsys):
    """PickScore = exp(logit_scale) · cos(image, prompt); `toycode sd --reward pickscore
    --reward-model FOLDER` loads a (here tiny, random) CLIP from a folder, offline."""
    from toycode.cli import main
    from toycode.sd.rewards import PickScore

    images = torch.rand(3, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    pick, cos = PickScore("a fox", clip), ClipTextScore("a fox", clip)
    scale = float(clip.model.logit_scale.exp())
    assert torch.allclose(pick(images), scale * cos(images)) and scale > 1
    assert make_image_reward("pickscore", prompt="a fox", clip=clip).to_dict() == {
        "type": "pickscore",
        "text": "a fox",
    }
    clip.model.save_pretrained(tmp_path / "pick")
    clip.tokenizer.save_pretrained(tmp_path / "pick")
    code = main(
        [
            "sd",
            "--model",
            "tiny:sd",
            "--prompt",
            "a fox",
            "--reward",
            "pickscore",
            "--reward-model",
            str(tmp_path / "pick"),
            "--method",
            "bon",
            "--num-candidates",
            "2",
            "--steps",
            "3",
            "--out",
            str(tmp_path / "out"),
        ]
    )
    assert code == 0, capsys.readouterr().err
    meta = json.loads((tmp_path / "out" / "rewards.json").read_text())
    assert math.isfinite(meta[0]["reward"])
