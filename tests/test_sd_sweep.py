"""`toycode sd-sweep` on a tiny random-weight SD pipeline: rows, resuming, accelerate, TAESD."""

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import transformers
from test_sd import clip  # noqa: F401  (the tiny random CLIP fixture)

from toycode.cli import main
from toycode.experiments.tradeoff import parse_grid, read_results
from toycode.sd import sweep
from toycode.sd.backend import make_sd_backend
from toycode.sd.run import save_png
from toycode.sd.score_decoder import load_score_decoder
from toycode.sd.sweep import load_prompts, row_key, run_sd_sweep, sweep_row
from toycode.sd.tiny import tiny_pipeline
from toycode.utils.images import Compressibility

PROMPTS = ["a red fox", "a cat"]
METHODS, GRID, T, SEEDS = ["bon", "code", "smc"], "N=1,2;B=2;K=2", 4, 2


@pytest.fixture(scope="module")
def pipe():
    return tiny_pipeline(seed=0)


@pytest.fixture(autouse=True)
def one_thread():
    """Rows are bitwise reproducible at a fixed thread count; the subprocesses use one."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def swept(pipe, clip, tmp_path_factory):  # noqa: F811
    out = tmp_path_factory.mktemp("sweep")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        rows = run_sd_sweep(
            pipe,
            PROMPTS,
            lambda p: Compressibility(),
            METHODS,
            parse_grid(GRID),
            seeds=SEEDS,
            steps=T,
            out=out,
            fidelity=clip,
            describe={"model": "tiny:sd"},
            progress=False,
        )
    finally:
        torch.set_num_threads(threads)
    return out, rows


def _by_key(rows):
    return {row_key(r["prompt"], r["method"], r["settings"], r["seed"]): r for r in rows}


def test_prompt_sets(tmp_path):
    animals = load_prompts("animals")
    assert 40 <= len(animals) <= 50 and len(set(animals)) == len(animals) and "cat" in animals
    (tmp_path / "p.txt").write_text("a cat\n\n  a dog  \na cat\n\n")
    assert load_prompts(tmp_path / "p.txt") == ["a cat", "a dog"]
    assert load_prompts("animals", limit=3) == animals[:3]


@pytest.mark.slow
def test_a_sweep_writes_one_row_per_prompt_method_setting_seed(swept, pipe, clip):  # noqa: F811
    out, rows = swept
    assert len(rows) == len(PROMPTS) * SEEDS * 5 == len(_by_key(rows))
    for r in rows:
        if r["method"] == "smc":  # one population of K = 2 particles, T // B = 2 blocks
            assert r["settings"] == {"K": 2, "B": 2} and r["particles"] == 2
            assert r["nfe"] == 2 * T and r["reward_calls"] == 2 * 2
        else:
            n = r["settings"]["N"]
            assert r["nfe"] == (T if n == 1 else 1 + (T - 1) * n)
            blocks = 1 if r["method"] == "bon" or n == 1 else T // 2
            assert r["reward_calls"] == n * blocks
        assert r["device"] == "cpu" and r["model"] == "tiny:sd" and r["steps"] == T
        assert -1 <= r["fidelity"] <= 1 and r["reward"] < 0 and r["wall_s"] > 0
        assert (out / r["image"]).stat().st_size > 0
    # N = 1 is the base model under either method: the same (prompt, seed) noise, the same image
    by = _by_key(rows)
    for p in PROMPTS:
        for s in range(SEEDS):
            a, b = by[row_key(p, "bon", {"N": 1}, s)], by[row_key(p, "code", {"N": 1, "B": 2}, s)]
            assert a["reward"] == b["reward"]
            assert (out / a["image"]).read_bytes() == (out / b["image"]).read_bytes()
    assert (
        len({(r["prompt"], r["seed"], r["reward"]) for r in rows if r["settings"].get("N") == 2})
        > 1
    )


def test_a_row_recomputes_alone(swept, pipe):
    out, rows = swept
    for method in ("code", "smc"):
        row = next(r for r in rows if r["method"] == method and r["settings"].get("N", 2) == 2)
        again, image = sweep_row(
            make_sd_backend(pipe, row["prompt"], steps=T),
            method,
            row["settings"],
            row["seed"],
            Compressibility(),
        )
        assert again["reward"] == row["reward"] and again["nfe"] == row["nfe"]
        save_png(image, out / "again.png")
        assert (out / "again.png").read_bytes() == (out / row["image"]).read_bytes()


def test_a_killed_sweep_resumes_without_duplicates(swept, pipe, clip, tmp_path, monkeypatch):  # noqa: F811
    src, rows = swept
    out = tmp_path / "killed"
    shutil.copytree(src, out)
    lines = (out / "results.jsonl").read_text().splitlines(keepends=True)
    (out / "results.jsonl").write_text("".join(lines[:-3]) + lines[-3][:25])  # torn by a kill
    real, calls = sweep.sweep_row, []

    def interrupted(*args, **kwargs):  # killed again, while computing the second row
        calls.append(args[1:4])
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(sweep, "sweep_row", interrupted)
    run = dict(
        seeds=SEEDS, steps=T, out=out, fidelity=clip, describe={"model": "tiny:sd"}, progress=False
    )
    with pytest.raises(KeyboardInterrupt):
        run_sd_sweep(pipe, PROMPTS, lambda p: Compressibility(), METHODS, parse_grid(GRID), **run)
    assert len(read_results(out)) == len(rows) - 2  # only the row in flight was lost
    monkeypatch.setattr(sweep, "sweep_row", real)
    again = run_sd_sweep(
        pipe, PROMPTS, lambda p: Compressibility(), METHODS, parse_grid(GRID), **run
    )
    lines = (out / "results.jsonl").read_text().splitlines()
    assert len(lines) == len(rows) and all(json.loads(line) for line in lines)
    want, got = _by_key(rows), _by_key(again)
    assert got.keys() == want.keys()
    assert all(got[k]["reward"] == want[k]["reward"] for k in want)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_accelerate_processes_give_the_rows_of_one(swept, clip, tmp_path):  # noqa: F811
    """`accelerate launch` on CPU (torchrun + gloo, no config file): each process runs every
    second row; the union equals the one-process rows, image bytes included."""
    src, rows = swept
    clip.model.save_pretrained(tmp_path / "clip")
    clip.tokenizer.save_pretrained(tmp_path / "clip")
    (tmp_path / "prompts.txt").write_text("\n".join(PROMPTS) + "\n")
    env = {
        **os.environ,
        "HF_HOME": str(tmp_path / "hf"),
        "HF_HUB_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
        "CUDA_VISIBLE_DEVICES": "",
        "ACCELERATE_USE_CPU": "1",
    }
    cmd = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "--main_process_port",
        str(_free_port()),
        "-m",
        "toycode",
        "sd-sweep",
        "--model",
        "tiny:sd",
        "--prompts",
        str(tmp_path / "prompts.txt"),
        "--reward",
        "jpeg",
        "--fidelity-model",
        str(tmp_path / "clip"),
        "--methods",
        *METHODS,
        "--grid",
        GRID,
        "--seeds",
        str(SEEDS),
        "--steps",
        str(T),
        "--out",
        str(tmp_path / "two"),
    ]
    done = subprocess.run(
        cmd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "(2 processes)" in done.stdout
    two = read_results(tmp_path / "two")
    assert {r["rank"] for r in two} == {0, 1} and len(two) == len(rows)
    want, got = _by_key(rows), _by_key(two)
    assert got.keys() == want.keys()
    for k, r in want.items():
        for field in ("reward", "nfe", "reward_calls", "image"):
            assert got[k][field] == r[field], (k, field)
        # the same CLIP weights, loaded from a folder (its attention kernel may differ)
        assert got[k]["fidelity"] == pytest.approx(r["fidelity"], rel=1e-6, abs=1e-6)
        assert (tmp_path / "two" / r["image"]).read_bytes() == (src / r["image"]).read_bytes()


def _tiny_taesd(folder, latent_channels=4, decoder_blocks=(1, 1)):
    from diffusers import AutoencoderTiny

    torch.manual_seed(0)
    width = (8,) * len(decoder_blocks)
    AutoencoderTiny(
        encoder_block_out_channels=width,
        decoder_block_out_channels=width,
        num_encoder_blocks=(1,) * len(decoder_blocks),
        num_decoder_blocks=decoder_blocks,
        latent_channels=latent_channels,
    ).save_pretrained(folder)
    return folder


class RowCounter:
    """Latents a decoder module sees."""

    def __init__(self, module):
        self.rows = 0
        self.handle = module.register_forward_pre_hook(self.hook)

    def hook(self, module, args):
        self.rows += args[0].shape[0]


@pytest.mark.parametrize(
    "method, settings, interior",
    [("code", {"N": 2, "B": 2}, 1), ("code", {"N": 3, "B": 1}, 3), ("bon", {"N": 2}, 0)],
)
def test_the_score_decoder_decodes_block_ends_and_the_vae_the_outputs(
    pipe, tmp_path, method, settings, interior
):
    taesd = load_score_decoder(_tiny_taesd(tmp_path / "taesd"), pipe)
    backend = make_sd_backend(pipe, "a cat", steps=T)
    n = settings["N"]
    counts = []
    for decoder in (taesd, None):
        cheap, full = RowCounter(taesd.decoder), RowCounter(pipe.vae.decoder)
        try:
            row, _ = sweep_row(
                backend, method, settings, 0, Compressibility(), score_decoder=decoder
            )
        finally:
            cheap.handle.remove()
            full.handle.remove()
        counts.append((cheap.rows, full.rows, row["nfe"], row["reward_calls"]))
    # interior block ends: N candidates each, by TAESD; the clean end's N by the full VAE
    assert counts[0] == (n * interior, n, 1 + (T - 1) * n, n * (interior + 1))
    assert counts[1] == (0, n * (interior + 1), 1 + (T - 1) * n, n * (interior + 1))


def test_a_score_decoder_must_fit_the_pipeline(pipe, tmp_path):
    with pytest.raises(ValueError, match="16-channel"):
        load_score_decoder(_tiny_taesd(tmp_path / "c16", latent_channels=16), pipe)
    with pytest.raises(ValueError, match="upsamples latents 4×"):
        load_score_decoder(_tiny_taesd(tmp_path / "up4", decoder_blocks=(1, 1, 1)), pipe)
    pipe.vae.save_pretrained(tmp_path / "kl")
    with pytest.raises(ValueError, match="AutoencoderKL"):
        load_score_decoder(tmp_path / "kl", pipe)


def _sweep_args(out, *extra):
    return [
        "sd-sweep",
        "--model",
        "tiny:sd",
        "--prompts",
        "animals",
        "--limit-prompts",
        "1",
        "--methods",
        "code",
        "--grid",
        "N=2;B=2",
        "--seeds",
        "1",
        "--steps",
        str(T),
        "--out",
        str(out),
        *extra,
    ]


@pytest.mark.slow
def test_the_cli_sweeps_with_a_score_decoder_and_plots(swept, tmp_path, capsys):
    out = tmp_path / "cli"
    taesd = _tiny_taesd(tmp_path / "taesd")
    assert main(_sweep_args(out, "--score-decoder", str(taesd))) == 0
    (row,) = read_results(out)
    assert row["prompt"] == "cat" and row["reward_calls"] == 4 and row["nfe"] == 7
    assert json.loads((out / "sweep.json").read_text())["score_decoder"] == str(taesd)
    src, _ = swept
    for kind in ("reward-nfe", "reward-fidelity"):
        assert main(["plot", str(src), "--kind", kind, "--out", str(tmp_path / f"{kind}.png")]) == 0
        assert (tmp_path / f"{kind}.png").stat().st_size > 10_000
    assert main(["plot", str(out)]) == 0 and (out / "sd_reward-nfe.png").exists()
    assert main(["plot", str(out), "--kind", "reward-fidelity"]) == 2  # no fidelity model
    assert main(["plot", str(out), "--kind", "frontier"]) == 2
    from toycode.experiments.tradeoff import load

    table = load(src)
    assert {"N", "B", "reward", "fidelity", "prompt"} <= set(table.columns)


@pytest.mark.parametrize(
    "extra, match",
    [
        (["--prompts", "birds"], "prompts must be one of"),
        (["--prompts", "EMPTY"], "holds no prompts"),
        (["--grid", "N=2;Q=1"], "grid key"),
        (["--grid", "N=2;M=2"], "grid knobs are"),
        (["--methods", "bon", "--grid", "N=2;B=2"], "read by none of the methods bon"),
        (["--methods", "dps"], "method must be one of"),
        (["--score-decoder", "MISSING"], "score decoder"),
        (["--eta", "0"], "stochastic"),
        (["--steps", "0"], "steps"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, capsys, extra, match):
    (tmp_path / "empty.txt").write_text("\n  \n")
    extra = [
        str(tmp_path / "empty.txt")
        if e == "EMPTY"
        else str(tmp_path / "missing")
        if e == "MISSING"
        else e
        for e in extra
    ]
    out = tmp_path / "out"
    args = _sweep_args(out)
    for flag, value in zip(extra[::2], extra[1::2]):  # later flags win in argparse
        args += [flag, value]
    # transformers logs advisories of its own on loading the tiny CLIP (once per process):
    # silenced here so that the check sees toycode's output alone
    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()
    try:
        assert main(args) == 2
    finally:
        transformers.logging.set_verbosity(verbosity)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and match in err[0] and not out.exists()


def test_a_folder_keeps_its_configuration(swept, tmp_path, capsys):
    src, rows = swept
    out = tmp_path / "held"
    shutil.copytree(src, out)
    before = (out / "results.jsonl").read_bytes()
    assert main(_sweep_args(out, "--guidance-scale", "3")) == 2
    assert "guidance_scale=7.5" in capsys.readouterr().err
    assert (out / "results.jsonl").read_bytes() == before


def test_selection_is_the_candidate_methods_and_smc_keeps_its_own(tmp_path):
    """--selection argmax for bon and SMC (which cannot resample by argmax) runs both rows:
    SMC keeps systematic, as in `toycode tradeoff`."""
    out = tmp_path / "sel"
    assert (
        main(
            _sweep_args(
                out, "--methods", "bon", "smc", "--grid", "N=2;K=2", "--selection", "argmax"
            )
        )
        == 0
    )
    rows = {r["method"]: r for r in read_results(out)}
    assert rows["bon"]["selection"] == "argmax" and rows["smc"]["selection"] == "systematic"


def test_a_rerun_with_another_dtype_or_clip_model_is_refused(tmp_path, capsys):
    out = tmp_path / "held"
    assert main(_sweep_args(out)) == 0
    held = json.loads((out / "sweep.json").read_text())
    assert held["dtype"] == "float32" and held["clip_model"] == "openai/clip-vit-large-patch14"
    before = (out / "results.jsonl").read_bytes()
    capsys.readouterr()
    for extra, match in (
        (["--dtype", "bfloat16"], "dtype='float32'"),
        (["--clip-model", "another/clip"], "clip_model="),
    ):
        assert main(_sweep_args(out, *extra)) == 2
        assert match in capsys.readouterr().err.strip().splitlines()[-1]  # after load warnings
    assert (out / "results.jsonl").read_bytes() == before


class Brightness:
    """A differentiable image reward: the mean pixel value."""

    differentiable = True

    def __call__(self, images):
        return images.mean((1, 2, 3))


def test_gradient_methods_need_a_differentiable_reward(pipe, tmp_path):
    with pytest.raises(ValueError, match="not differentiable"):
        sweep.sweep_jobs(PROMPTS, ["dps"], {"scale": [1.0]}, 1)
    with pytest.raises(ValueError, match="not differentiable"):
        run_sd_sweep(
            pipe, PROMPTS, lambda p: Compressibility(), ["dps"], {}, seeds=1, steps=T,
            out=tmp_path / "jpeg", progress=False,
        )  # fmt: skip
    assert not (tmp_path / "jpeg").exists()
    with pytest.raises(ValueError, match="method must be one of"):
        sweep.sweep_jobs(PROMPTS, ["exact-guidance"], {}, 1, gradient=True)
    # a guidance scale may be below 1 (or 0: the base sampler), never negative
    assert len(sweep.sweep_jobs(PROMPTS, ["dps"], {"scale": [0.0, 0.5]}, 1, gradient=True)) == 4
    with pytest.raises(ValueError, match="scale"):
        sweep.sweep_jobs(PROMPTS, ["dps"], {"scale": [-1.0]}, 1, gradient=True)


def test_dps_rows_ascend_a_differentiable_reward_at_t_unet_calls(pipe, tmp_path):
    """DPS's rows at growing scale raise the reward over the base image of the same noise
    (paired by prompt and seed): the guidance reaches the UNet's latents through the decoder."""
    out = tmp_path / "dps"
    for method, grid in (("base", {}), ("dps", {"scale": [30.0, 300.0]})):
        rows = run_sd_sweep(
            pipe, PROMPTS, lambda p: Brightness(), [method], grid, seeds=2, steps=T, out=out,
            progress=False,
        )  # fmt: skip
    base = {(r["prompt"], r["seed"]): r["reward"] for r in rows if r["method"] == "base"}
    gain = {30.0: [], 300.0: []}
    for r in rows:
        if r["method"] == "dps":
            assert r["nfe"] == T and r["num_candidates"] == 1
            gain[r["settings"]["scale"]].append(r["reward"] - base[r["prompt"], r["seed"]])
    assert len(gain[30.0]) == len(gain[300.0]) == 4
    assert all(g > 0 for g in gain[300.0]), gain
    assert sum(gain[300.0]) > sum(gain[30.0]) > 0, gain
