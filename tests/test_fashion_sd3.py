"""The rectified-flow Fashion-MNIST pipeline (StableDiffusion3Pipeline) and the distilled tiny
decoder: plain-diffusers folder, names, N = 1 reproduction, exact class-tilt checks.

As for the DDPM pipeline (tests/test_fashion.py): r(x) = 1[classifier(x) = c] on the generic
prompt tilts only the class shares, P*(c) = π_c e^λ / (π_c e^λ + 1 − π_c) under p* ∝ p e^{λr}
(design note §4), π_c the base sampler's own rate measured here with its standard error. The
samplers run through ``toycode.sd.make_sd_backend`` on the loaded pipeline (the flow backend's
DDIM(η) step on the FlowMatchEuler grid).
"""

import json
import math
import os
import subprocess
import sys

import pytest
import torch
from conftest import Latents

from toycode import sample_blockwise
from toycode.mnist.eval import tilted_fraction
from toycode.sd import make_sd_backend
from toycode.sd.backend import StableDiffusion3Backend, load_pipeline
from toycode.sd.fashion import PIPELINE_DIR, SD3_DIR, TAESD_DIR, TRAINED_MODELS, resolve_model
from toycode.sd.fashion.flow import build_flow_scheduler, flow_timesteps
from toycode.sd.fashion.prompts import GENERIC_PROMPT, all_prompts, class_prompt
from toycode.sd.fashion.rewards import FashionClassIndicator, classify
from toycode.sd.fashion.train import load_fashion_classifier

CHECKPOINTS = PIPELINE_DIR.parent

# the exact checks: η = 1 on T = 10 steps, no CFG (the generic prompt as trained), the class
# "bag" (label 8) and λ = 1.5, as for the DDPM pipeline; about 17,000 transformer rows in all
T, CLASS, LAM = 10, 8, 1.5


@pytest.fixture(scope="module")
def pipe():
    return load_pipeline("tiny:fashion-sd3", device="cpu")


@pytest.fixture(scope="module")
def classifier():
    return load_fashion_classifier()


def test_the_names_find_the_committed_folders_offline(pipe):
    from diffusers import StableDiffusion3Pipeline

    from toycode.cli.sd import _check_model

    assert TRAINED_MODELS == {"tiny:fashion": PIPELINE_DIR, "tiny:fashion-sd3": SD3_DIR}
    assert resolve_model("fashion-sd3") == SD3_DIR and resolve_model("x/y") == "x/y"
    for name in TRAINED_MODELS:
        _check_model(name)  # `toycode sd --model tiny:fashion-sd3` passes the CLI's check
    assert isinstance(pipe, StableDiffusion3Pipeline)
    assert type(make_sd_backend(pipe, GENERIC_PROMPT, steps=4)) is StableDiffusion3Backend
    assert type(pipe.scheduler).__name__ == "FlowMatchEulerDiscreteScheduler"


def test_the_vae_is_the_ddpm_pipelines_with_shift_zero(pipe):
    """Both pipelines share their latents: the same weights, scaling factor, and shift 0."""
    from diffusers import AutoencoderKL

    ddpm = AutoencoderKL.from_pretrained(PIPELINE_DIR / "vae")
    assert pipe.vae.config.shift_factor == 0.0
    assert pipe.vae.config.scaling_factor == ddpm.config.scaling_factor
    theirs = ddpm.state_dict()
    assert all(torch.equal(v, theirs[k]) for k, v in pipe.vae.state_dict().items())


def test_the_t5_tokenizer_keeps_every_prompt_word_whole(pipe):
    """T5 splits on whitespace: each prompt word one piece, no <unk>; the second CLIP tokenizer
    is the first's copy (their word-level vocabulary is tested in test_fashion.py)."""
    tok = pipe.tokenizer_3
    for prompt in all_prompts():
        ids = tok(prompt, add_special_tokens=False).input_ids
        assert len(ids) == len(prompt.split()) and tok.unk_token_id not in ids, prompt
    assert pipe.tokenizer_2.get_vocab() == pipe.tokenizer.get_vocab()
    assert len(tok(GENERIC_PROMPT, padding="max_length").input_ids) == 256  # SD3's T5 length


def test_training_levels_follow_the_scheduler_grid():
    """The SD3 script's draw: t on the scheduler's training grid, the model's input 1000·t,
    logit-normal (median ½, quartiles at sigmoid(±0.674))."""
    sched = build_flow_scheduler()
    timestep, t = flow_timesteps(sched, 20000, torch.Generator().manual_seed(0))
    assert torch.allclose(timestep, 1000 * t)
    assert set(t.tolist()) <= set(sched.sigmas.tolist()) and t.min() > 0
    q = torch.quantile(t.double(), torch.tensor([0.25, 0.5, 0.75], dtype=torch.float64))
    want = torch.sigmoid(torch.tensor([-0.6745, 0.0, 0.6745], dtype=torch.float64))
    assert torch.allclose(q, want, atol=0.01)


def test_committed_weights_are_small():
    """Every checkpoint together, the ≤ 25 MB the issue aims at; the finished runs."""
    total = sum(p.stat().st_size for p in CHECKPOINTS.rglob("*") if p.is_file())
    assert total < 25e6, total
    for folder in (SD3_DIR, TAESD_DIR):
        meta = json.loads((folder / "toycode_training.json").read_text())
        assert meta.get("steps_done", meta["steps"]) == meta["steps"]


@pytest.mark.slow
def test_plain_diffusers_loads_the_folder_without_toycode():
    code = (
        "import sys, torch\n"
        "from diffusers import StableDiffusion3Pipeline\n"
        f"p = StableDiffusion3Pipeline.from_pretrained({str(SD3_DIR)!r})\n"
        "p.set_progress_bar_config(disable=True)\n"
        "im = p('a photo of a sneaker', num_inference_steps=2, output_type='pt',\n"
        "       generator=torch.Generator().manual_seed(0)).images\n"
        "assert not any(m.startswith('toycode') for m in sys.modules)\n"
        "print(type(p.scheduler).__name__, tuple(im.shape), p.vae.config.shift_factor)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd="/",
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == [
        "FlowMatchEulerDiscreteScheduler",
        "(1,",
        "3,",
        "32,",
        "32)",
        "0.0",
    ]


@pytest.mark.slow
@pytest.mark.parametrize("guidance", [7.0, 1.0])
def test_one_candidate_reproduces_the_pipeline_latents(pipe, guidance):
    """N = 1 with η = 0 is the pipeline's own FlowMatchEuler sampler, CFG on and off."""
    want = pipe(
        class_prompt(7),
        num_inference_steps=8,
        guidance_scale=guidance,
        output_type="latent",
        generator=torch.Generator().manual_seed(3),
    ).images
    be = make_sd_backend(pipe, class_prompt(7), steps=8, eta=0.0, guidance_scale=guidance)
    got = sample_blockwise(
        Latents(be),
        lambda x: x.mean((1, 2, 3)).double(),
        1,
        generator=torch.Generator().manual_seed(3),
    ).samples
    assert torch.allclose(got, want, atol=1e-5)


def test_the_cli_samples_the_trained_sd3_pipeline(tmp_path, capsys):
    from toycode.cli import main

    argv = ["sd", "--model", "tiny:fashion-sd3", "--prompt", class_prompt(8), "--n", "1"]
    argv += ["--steps", "3", "--method", "code", "--num-candidates", "2", "--block-size", "1"]
    assert main([*argv, "--out", str(tmp_path)]) == 0
    assert any(p.suffix == ".png" for p in tmp_path.rglob("*"))


def _backend(pipe):
    return make_sd_backend(
        pipe, GENERIC_PROMPT, steps=T, eta=1.0, guidance_scale=1.0, max_batch=256
    )


@pytest.fixture(scope="module")
def base_rate(pipe, classifier):
    """π_c of the base sampler (N = 1, same grid, η and guidance as the methods) ± its s.e."""
    n = 400
    res = sample_blockwise(
        _backend(pipe),
        FashionClassIndicator(CLASS, classifier),
        n,
        generator=torch.Generator().manual_seed(0),
    )
    pi = float((classify(classifier, res.samples) == CLASS).double().mean())
    assert 0.05 < pi < 0.3, pi  # a class the generic prompt makes
    return pi, math.sqrt(pi * (1 - pi) / n)


@pytest.mark.slow
def test_code_softmax_selects_by_its_exact_weights_and_argmax_overshoots(
    pipe, classifier, base_rate
):
    """CoDe-softmax with one block (B = T): of the N candidates of a start, K of class c, it
    keeps one of class c with probability p = K e^λ / (K e^λ + N − K), argmax whenever K > 0.

    Checked: the kept share against the mean of p (exact given the candidates; the s.e. is the
    draws'), the candidates as base draws (class-c rate π), and argmax's share 1[K > 0] above
    softmax's. At N = 8 softmax's expected share is below P*(c) (self-normalised importance
    sampling reaches P* only as N → ∞; SMC reaches it, next test) and argmax's above it
    (measured: 0.43 against P* = 0.27, 2.8 combined s.e., so not asserted at this size).
    """
    big_n, n = 8, 120
    seen = []
    res = sample_blockwise(
        _backend(pipe),
        FashionClassIndicator(CLASS, classifier),
        n,
        num_candidates=big_n,
        block_size=T,
        selection="softmax",
        lam=LAM,
        callback=seen.append,
        generator=torch.Generator().manual_seed(1),
    )
    k = seen[-1]["values"].sum(1)  # class-c candidates per start
    p = k * math.exp(LAM) / (k * math.exp(LAM) + big_n - k)
    share, want = float(res.rewards.mean()), float(p.mean())
    se = max(float((p * (1 - p)).sum().sqrt()) / n, 1 / n)
    assert abs(share - want) < 3 * se
    pi, pi_se = base_rate
    rate = float(k.sum()) / (n * big_n)  # the candidates' own class-c rate
    rate_se = float(k.std()) / (big_n * math.sqrt(n))  # starts independent, candidates not
    assert abs(rate - pi) < 3 * math.sqrt(rate_se**2 + pi_se**2)
    argmax = float((k > 0).double().mean())  # argmax keeps class c iff K > 0
    assert argmax - want > 3 * se and argmax - share > 3 * se  # softmax at λ is not argmax


@pytest.mark.slow
def test_smc_hits_p_star(pipe, classifier, base_rate):
    """SMC (systematic resampling at every block end, potentials e^{λ Δr} of the decoded x̂0)
    targets p* itself: its class share is P*(c) up to O(1/K); the s.e. is the populations'."""
    pi, pi_se = base_rate
    k, pops = 32, 12
    res = sample_blockwise(
        _backend(pipe),
        FashionClassIndicator(CLASS, classifier),
        k * pops,
        particles=k,
        block_size=2,
        selection="systematic",
        lam=LAM,
        generator=torch.Generator().manual_seed(2),
    )
    per_pop = res.rewards.view(pops, k).mean(1)
    share, share_se = float(per_pop.mean()), float(per_pop.std()) / math.sqrt(pops)
    want = tilted_fraction(pi, LAM)
    slope = (tilted_fraction(pi + 1e-4, LAM) - tilted_fraction(pi - 1e-4, LAM)) / 2e-4
    sigma = math.hypot(share_se, slope * pi_se)
    assert abs(share - want) < 3 * sigma
    assert want - pi > 3 * sigma  # base sampling misses P*


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["train-flow", "--steps", "0"], "steps"),
        (["train-taesd", "--steps", "-1"], "steps"),
        (["taesd", "--model", "/nonexistent"], "AutoencoderTiny"),
        (["taesd", "--n", "0"], "n_tweedie"),
    ],
)
def test_bad_options_are_one_line_errors_before_any_work(argv, needle, capsys):
    from toycode.sd.fashion.__main__ import main

    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0], err


# the distilled tiny decoder


def test_the_score_decoder_name_finds_the_tiny_decoder_for_both_pipelines(pipe):
    from toycode.sd.score_decoder import check_score_decoder_path, load_score_decoder

    assert check_score_decoder_path("tiny:fashion-taesd") == TAESD_DIR
    for p in (pipe, load_pipeline("tiny:fashion", device="cpu")):
        decoder = load_score_decoder("tiny:fashion-taesd", p)
        assert type(decoder).__name__ == "AutoencoderTiny"
        assert decoder.config.scaling_factor == 1.0 and decoder.config.shift_factor == 0.0


@pytest.mark.slow
def test_the_tiny_decoder_agrees_with_the_full_one(classifier):
    """On 1,000 test images' latents the tiny decode is close to the full VAE's and the
    classifier labels both alike (measured on all 10,000, ``python -m toycode.sd.fashion
    taesd``: MSE 0.00123, agreement 0.9675 ± 0.0018; the agreement bound sits 3 s.e. of a
    1,000-image share below it); a decoder that is not distilled (its random initialisation)
    fails both."""
    from toycode.sd.fashion.data import load_fashion, pad32
    from toycode.sd.fashion.taesd import _compare, _vae, load_fashion_taesd

    tiny, vae = load_fashion_taesd(), _vae(PIPELINE_DIR)
    x, _ = load_fashion("test")
    with torch.no_grad():
        z = vae.encode(pad32(x[:1000])).latent_dist.mean * vae.config.scaling_factor
    test = _compare(vae, tiny, classifier, z)
    assert test["mse"] < 0.0016 and test["agreement"] > 0.95, test
    from toycode.sd.fashion.taesd import build_taesd

    torch.manual_seed(0)
    untrained = _compare(vae, build_taesd().eval(), classifier, z)
    assert untrained["mse"] > 0.05 and untrained["agreement"] < 0.5, untrained
