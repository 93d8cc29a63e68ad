"""The trained Fashion-MNIST pipeline: loader, tokenizer, plain-diffusers folder, exact checks.

The class-indicator reward r(x) = 1[classifier(x) = c] on the generic prompt tilts only the
class shares (design note §4): under p* ∝ p e^{λr}, P*(c) = π_c e^λ / (π_c e^λ + 1 − π_c), π_c
the base sampler's own rate, measured here with its standard error propagated. The samplers run
through ``toycode.sd.make_sd_backend`` on the loaded pipeline.
"""

import functools
import gzip
import http.server
import json
import math
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch
from conftest import Latents

from toycode import sample_blockwise
from toycode.mnist.eval import tilted_fraction
from toycode.sd import make_sd_backend
from toycode.sd.backend import load_pipeline
from toycode.sd.fashion import CLASSIFIER_PATH, PIPELINE_DIR
from toycode.sd.fashion.data import FILES, load_fashion
from toycode.sd.fashion.prompts import (
    GENERIC_PROMPT,
    all_prompts,
    class_prompt,
    fashion_tokenizer,
    vocabulary_words,
)
from toycode.sd.fashion.rewards import FashionClassIndicator, classify
from toycode.sd.fashion.train import load_fashion_classifier

# the Makefile exports TOYCODE_DATA where a shared copy exists; tests never download it
DATA = Path(os.environ.get("TOYCODE_DATA", "/nonexistent")) / "fashion-mnist"
needs_data = pytest.mark.skipif(
    not (DATA / FILES["test"][0][0]).exists(),
    reason=f"no Fashion-MNIST copy under {DATA} (TOYCODE_DATA: "
    f"{os.environ.get('TOYCODE_DATA', 'not set')})",
)

# the exact checks: DDIM η = 1 on T = 10 steps, no CFG (the generic prompt as trained), the
# class "bag" (label 8, about one image in nine from the generic prompt) and λ = 1.5. Sized for
# about 23,000 UNet rows in all; each test also shows that a wrong sampler would fail it
T, CLASS, LAM = 10, 8, 1.5


@pytest.fixture(scope="module")
def pipe():
    return load_pipeline("tiny:fashion", device="cpu")


@pytest.fixture(scope="module")
def classifier():
    return load_fashion_classifier()


@needs_data
def test_the_loader_reads_the_shared_copy_checked_by_its_contents():
    x, y = load_fashion("test")
    assert x.shape == (10000, 1, 28, 28) and x.min() == -1 and x.max() == 1
    assert torch.equal(torch.bincount(y), torch.full((10,), 1000))


@needs_data
def test_a_recompressed_download_passes_and_a_corrupted_one_fails(tmp_path):
    """The checksum is of the contents: upstream's and Debian's .gz differ, both pass."""
    from toycode.utils.idx import fetch

    name, checksum = FILES["test"][1]
    payload = gzip.decompress((DATA / name).read_bytes())
    (tmp_path / "good").mkdir()
    (tmp_path / "bad").mkdir()
    (tmp_path / "good" / name).write_bytes(gzip.compress(payload, compresslevel=1, mtime=0))
    (tmp_path / "bad" / name).write_bytes(gzip.compress(payload[:-1] + b"\x00", mtime=0))
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    handler.log_message = lambda *a, **k: None
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{httpd.server_address[1]}"
    digest = "SHA256 of the contents"
    try:
        with pytest.raises(ValueError, match="SHA256 of the contents"):
            fetch(name, checksum, tmp_path / "cache", (url + "/bad/",), digest=digest)
        assert not (tmp_path / "cache" / name).exists()
        got = fetch(
            name, checksum, tmp_path / "cache", (url + "/bad/", url + "/good/"), digest=digest
        )
        assert gzip.decompress(got.read_bytes()) == payload
    finally:
        httpd.shutdown()


def test_the_tokenizer_keeps_every_prompt_word_whole():
    tok = fashion_tokenizer()
    for word in vocabulary_words():
        assert len(tok(word, add_special_tokens=False).input_ids) == 1, word
    ids = {tuple(tok(p).input_ids) for p in all_prompts()}
    assert len(ids) == len(all_prompts())  # no two prompts collapse
    assert len(tok(GENERIC_PROMPT).input_ids) <= tok.model_max_length


@pytest.mark.slow
def test_plain_diffusers_loads_the_folder_without_toycode():
    code = (
        "import sys, torch\n"
        "from diffusers import StableDiffusionPipeline\n"
        f"p = StableDiffusionPipeline.from_pretrained({str(PIPELINE_DIR)!r})\n"
        "p.set_progress_bar_config(disable=True)\n"
        "im = p('a photo of a sneaker', num_inference_steps=2, output_type='pt',\n"
        "       generator=torch.Generator().manual_seed(0)).images\n"
        "assert not any(m.startswith('toycode') for m in sys.modules)\n"
        "print(type(p.scheduler).__name__, tuple(im.shape), p.vae.config.scaling_factor)\n"
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
    sched, shape, scale = out.stdout.split(" ", 1)[0], *out.stdout.strip().rsplit(" ", 1)
    assert sched == "DDIMScheduler" and "(1, 3, 32, 32)" in shape
    assert float(scale) != 1.0  # measured on the data, not default


def test_committed_weights_are_small():
    files = [p for p in PIPELINE_DIR.rglob("*") if p.is_file()] + [CLASSIFIER_PATH]
    assert sum(p.stat().st_size for p in files) < 25e6
    meta = json.loads((PIPELINE_DIR / "toycode_training.json").read_text())
    assert meta["steps_done"] == meta["steps"]  # the finished run, not a snapshot


@pytest.mark.slow
@pytest.mark.parametrize("eta, guidance", [(0.0, 7.5), (1.0, 7.5), (0.0, 1.0)])
def test_one_candidate_reproduces_the_pipeline_latents(pipe, eta, guidance):
    want = pipe(
        class_prompt(7),
        num_inference_steps=8,
        eta=eta,
        guidance_scale=guidance,
        output_type="latent",
        generator=torch.Generator().manual_seed(3),
    ).images
    be = Latents(make_sd_backend(pipe, class_prompt(7), steps=8, eta=eta, guidance_scale=guidance))
    got = sample_blockwise(
        be, lambda x: x.mean((1, 2, 3)).double(), 1, generator=torch.Generator().manual_seed(3)
    ).samples
    assert torch.allclose(got, want, atol=1e-5)


@pytest.mark.slow
def test_fp16_weights_draw_the_garments_float32_draws(pipe, classifier):
    """fp16 is what ``load_pipeline`` picks on a GPU; it must not silently change the images.
    With no GPU here, the same half-precision weights run on the CPU's fp16 kernels: 64 draws
    from one seed (N = 1, η = 0, guidance 7.5, so the sampler adds no noise) are decoded from
    both pipelines and must match pixel for pixel to fp16 accuracy and in their labels."""
    half = load_pipeline("tiny:fashion", device="cpu", dtype=torch.float16)
    draws = []
    for p in (pipe, half):
        be = make_sd_backend(p, GENERIC_PROMPT, steps=10, eta=0.0, guidance_scale=7.5)
        assert next(be.pipe.unet.parameters()).dtype == p.dtype
        gen = torch.Generator().manual_seed(5)
        res = sample_blockwise(be, lambda x: x.float().mean((1, 2, 3)).double(), 64, generator=gen)
        draws.append(res.samples.float())
    # measured: mean |Δpixel| 0.0007, max 0.066, labels agree on 63 of 64; another seed's
    # draws differ by 0.18 a pixel and agree on 4 labels of 64
    diff = (draws[0] - draws[1]).abs()
    assert float(diff.mean()) < 0.005 and float(diff.max()) < 0.25, (diff.mean(), diff.max())
    labels = [classify(classifier, d) for d in draws]
    assert float((labels[0] == labels[1]).double().mean()) >= 0.95


@pytest.mark.slow
@needs_data
def test_the_classifier_is_accurate_on_the_test_images(classifier):
    from toycode.sd.fashion.gates import classifier_test_accuracy

    acc, _ = classifier_test_accuracy(classifier)
    assert acc > 0.87  # measured: 0.8823


@needs_data
def test_the_vae_reconstructions_the_frechet_gate_compares_are_the_test_images(pipe, classifier):
    """The autoencoder's share of the Fréchet gap is measured on images in the classifier's own
    range and crop (a [0, 1] / [−1, 1] or border mix-up moves the pixels by ~0.5)."""
    from toycode.sd.fashion.data import load_fashion
    from toycode.sd.fashion.gates import _reconstructions
    from toycode.sd.fashion.rewards import to_classifier_input

    x = load_fashion("test")[0][:200]
    rec = to_classifier_input(_reconstructions(pipe.vae, x))
    assert rec.shape == x.shape
    assert float((rec - x).abs().mean()) < 0.1  # measured 0.070; a range mix-up gives ~0.5
    with torch.no_grad():
        agree = (classifier(rec).argmax(1) == classifier(x).argmax(1)).double().mean()
    assert agree > 0.9  # the taesd check measures 0.968 on the full decode of all test latents


def _backend(pipe):
    return make_sd_backend(
        pipe, GENERIC_PROMPT, steps=T, eta=1.0, guidance_scale=1.0, max_batch=1024
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


def _sigma(want_fn, pi, pi_se, share_se):
    """The combined standard error: the share's own and π's, through the target's slope."""
    slope = (want_fn(pi + 1e-4) - want_fn(pi - 1e-4)) / 2e-4
    return math.sqrt(share_se**2 + (slope * pi_se) ** 2)


@pytest.mark.slow
def test_code_softmax_selects_by_its_exact_weights_and_argmax_overshoots(
    pipe, classifier, base_rate
):
    """CoDe-softmax with one block (B = T): of the N candidates of a start, K of class c, it
    keeps one of class c with probability p = K e^λ / (K e^λ + N − K), argmax whenever K > 0.

    Checked: the kept share against the mean of p (exact given the candidates; the s.e. is the
    draws'), argmax's share 1[K > 0] above it, and the candidates as base draws (their class-c
    rate is π). At N = 4 softmax's expected share E[p] is well below P*(c) (self-normalised
    importance sampling reaches P* only as N → ∞); SMC reaches it (next test).
    """
    big_n, n = 4, 240
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
    argmax = float((k > 0).double().mean())  # argmax keeps class c iff K > 0
    assert argmax - want > 3 * se and argmax - share > 3 * se  # softmax at λ is not argmax
    pi, pi_se = base_rate
    rate = float(k.sum()) / (n * big_n)  # the candidates' own class-c rate
    # starts are independent, candidates of one start not: the s.e. from the per-start counts
    rate_se = float(k.std()) / (big_n * math.sqrt(n))
    assert abs(rate - pi) < 3 * math.sqrt(rate_se**2 + pi_se**2)


def _assert_smc_hits_p_star(pipe, classifier, base_rate, value="tweedie"):
    """SMC with K = 32 particles in 12 populations, resampled every 2 steps: its class share
    is P*(c) within 3 s.e. (the populations' and π's, propagated), and P* is > 3 s.e. above π."""
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
        value=value,
        generator=torch.Generator().manual_seed(2),
    )
    per_pop = res.rewards.view(pops, k).mean(1)
    share, share_se = float(per_pop.mean()), float(per_pop.std()) / math.sqrt(pops)
    want = tilted_fraction(pi, LAM)
    sigma = _sigma(lambda p: tilted_fraction(p, LAM), pi, pi_se, share_se)
    assert abs(share - want) < 3 * sigma
    assert want - pi > 3 * sigma  # base sampling misses P*


@pytest.mark.slow
def test_smc_hits_p_star(pipe, classifier, base_rate):
    """SMC (systematic resampling at every block end, potentials e^{λ Δr} of the decoded x̂0)
    targets p* itself: its class share is P*(c) up to O(1/K); the s.e. is the populations'."""
    _assert_smc_hits_p_star(pipe, classifier, base_rate)


# the learned class value (toycode.sd.fashion.class_value): q_θ on the latents, no reverse rollouts


def test_the_class_value_checkpoint_is_small_and_matches_its_config(pipe):
    from toycode.sd.fashion.class_value import (
        CLASS_VALUE_PATH,
        _train_alphas_cumprod,
        load_fashion_class_value,
    )
    from toycode.training.class_value import NoisyClassifier

    assert CLASS_VALUE_PATH.stat().st_size < 1_000_000
    ckpt = torch.load(CLASS_VALUE_PATH, map_location="cpu", weights_only=True)
    assert ckpt["kind"] == "class-value" and ckpt["hint"] is False
    assert ckpt["config"]["channels"] == 4 and ckpt["config"]["size"] == 8
    fresh = NoisyClassifier(**ckpt["config"]).state_dict()
    assert {k: v.shape for k, v in fresh.items()} == {k: v.shape for k, v in ckpt["model"].items()}
    # trained at the scheduler's own levels, and reproducible by the command it records
    assert torch.equal(ckpt["schedule"]["alphas_cumprod"], _train_alphas_cumprod(pipe))
    makefile = (Path(__file__).resolve().parents[1] / "Makefile").read_text()
    assert ckpt["command"].startswith("OMP_NUM_THREADS=1 python -m toycode.sd.fashion class-value")
    assert ckpt["command"].split("python ", 1)[1] in makefile.replace("$(PY)", "python")
    value = load_fashion_class_value(CLASS, LAM)
    assert value.needs_x0 is False and value.model.config == ckpt["config"]
    q = value.probs_at(torch.zeros(3, 4, 8, 8), 0.5, 0.8)
    assert q.shape == (3, 10) and torch.allclose(q.sum(1), torch.ones(3, dtype=torch.float64))


@pytest.mark.parametrize("steps", [T, 25, 50])
def test_train_time_and_sample_time_levels_agree(pipe, steps):
    """Every grid level the sampler values at (i < T) is one of the training levels, to the
    last bit: same ᾱ table, same float64 square roots."""
    from toycode.sd.fashion.class_value import _train_alphas_cumprod
    from toycode.training.class_value import train_levels

    alphas, sigmas = train_levels(alphas_cumprod=_train_alphas_cumprod(pipe))
    process = make_sd_backend(pipe, GENERIC_PROMPT, steps=steps, eta=1.0).process
    for i, t in enumerate(process.timesteps.tolist()):
        lv = process.level(i)
        assert (lv.alpha, lv.sigma) == (float(alphas[t]), float(sigmas[t])), (i, t)


def test_the_noisy_classifier_takes_any_state_shape():
    from toycode.training.class_value import NoisyClassifier

    for channels, size in [(1, 28), (4, 8), (3, 5)]:
        net = NoisyClassifier(width=4, hidden=8, channels=channels, size=size)
        x, a = torch.zeros(2, channels, size, size), torch.full((2,), 0.5)
        assert net(x, a, a).shape == (2, 10)
    assert "channels" not in NoisyClassifier().config  # MNIST's stored config, unchanged


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["class-value", "--steps", "0"], "steps"),
        (["class-value", "--n", "1"], "n"),
        (["class-value", "--out", str(Path(__file__).resolve().parent)], "--out"),
        (["class-value-check", "--model", "/nonexistent.pt"], "--model"),
        (["class-value-check", "--block", "3"], "block"),
        (["class-value-check", "--class", "10"], "class"),
        (["class-value-check", "--lam", "0"], "lam"),
        (["class-value-check", "--model", __file__], "not a toycode class-value checkpoint"),
        (["class-value-check", "--model", "toycode/checkpoints/class_value_mnist.pt"], "1×28×28"),
        (["gates", "--n", "1"], "n must be"),
        (["gates", "--n-generic", "0"], "n_generic"),
        (["gates", "--steps", "0"], "steps"),
        (["gates", "--guidance", "7.5", "-1"], "--guidance"),
        (["gates", "--model", "/nonexistent"], "could not load"),
    ],
)
def test_bad_options_are_one_line_errors_before_any_work(argv, needle, capsys):
    from toycode.sd.fashion.__main__ import main

    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0] and "error:" in err[0], err


def test_learned_q_beats_the_class_prior_on_held_out_latents(pipe, classifier):
    """On fresh base latents (none of the training draws) noised to each grid level, q_θ's 10-way
    log-loss is below the constant class-prior predictor's (2.25 nats) by > 3 s.e. of the paired
    gap at every level, and by > 1 nat from i = 3 (α = 0.40) on: measured on 2048 latents
    (``python -m toycode.sd.fashion class-value-check``) the gap is ≥ 1.36 ± 0.02 there (1.35 ±
    0.06 on this test's own 256 draws at i = 3), so the 1-nat margin, > 5 s.e. below it, fails
    only if the fit itself regresses."""
    from toycode.sd.fashion.class_value import (
        CLASS_VALUE_PATH,
        base_latents,
        fashion_backend,
        heldout_logloss,
        load_fashion_class_value,
    )

    backend = fashion_backend(pipe)
    x0, labels = base_latents(backend, classifier, 256, seed=4321)
    counts = torch.tensor(
        torch.load(CLASS_VALUE_PATH, weights_only=True)["class_counts"], dtype=torch.float64
    )
    value = load_fashion_class_value(CLASS, LAM)
    for row in heldout_logloss(value, backend, x0, labels, counts / counts.sum(), seed=5):
        gap, se = row["gap"]
        assert gap > 3 * se, row
        if row["i"] >= 3:
            assert gap > 1.0, row


@pytest.mark.slow
def test_smc_with_the_learned_value_hits_p_star(pipe, classifier, base_rate):
    """SMC with potentials e^{λ ΔV} of the learned value (no x̂0, no decode before the clean
    end) at the settings of test_smc_hits_p_star: its share is P*(c) within 3 s.e."""
    from toycode.sd.fashion.class_value import load_fashion_class_value

    _assert_smc_hits_p_star(pipe, classifier, base_rate, load_fashion_class_value(CLASS, LAM))
