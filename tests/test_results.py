"""Result tables: a folder is only ever ours, and processes sharing one never duplicate a row."""

import json
import multiprocessing
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from toycode.experiments.results import ResultsTable
from toycode.experiments.tradeoff import read_results

ROW = {"method": "bon", "settings": {"N": 2}, "seed": 0}


def _write(folder: Path, text: str) -> Path:
    folder.mkdir(exist_ok=True)
    (folder / "results.jsonl").write_text(text)
    return folder


@pytest.mark.parametrize(
    "text, line",
    [
        (json.dumps(ROW) + "\ngarbage{\n" + json.dumps({**ROW, "seed": 1}) + "\n", 2),
        ("[1, 2]\n", 1),
        (json.dumps({"id": 1, "loss": 0.3}) + "\n", 1),
        (json.dumps(ROW) + "\n\n", 2),
    ],
)
def test_a_line_that_is_not_ours_refuses_the_table_with_its_number(tmp_path, text, line):
    folder = _write(tmp_path / "t", text)
    with pytest.raises(ValueError, match=f"line {line}: not a toycode results row"):
        read_results(folder)


def test_only_a_torn_last_line_is_tolerated(tmp_path):
    folder = _write(tmp_path / "t", json.dumps(ROW) + "\n" + '{"method": "bo')
    assert read_results(folder) == [ROW]
    table = ResultsTable(folder, key=lambda r: r["seed"])
    table.append({**ROW, "seed": 1})
    assert [r["seed"] for r in read_results(folder)] == [0, 1]  # the torn tail was cut


def _worker(folder: str, jobs: list[int], delay: float) -> None:
    table = ResultsTable(folder, key=lambda r: r["seed"])
    for seed in table.claimed(jobs, job_key=lambda j: j):
        time.sleep(delay)  # a slow row, so that the two processes overlap
        table.append({**ROW, "seed": seed, "pid": os.getpid()})


def test_a_claim_is_kept_and_another_configuration_refused_naming_what_differs(tmp_path):
    table = ResultsTable(tmp_path / "run", key=lambda r: r["seed"])
    table.claim({"size": "fast", "dims": (2, 3)}, name="run.json", what="study")
    table.claim({"size": "fast", "dims": [2, 3]}, name="run.json", what="study")  # resumes
    before = (tmp_path / "run" / "run.json").read_bytes()
    with pytest.raises(ValueError, match=r"holds a study run with other size='fast'; resume"):
        table.claim({"size": "default", "dims": [2, 3]}, name="run.json", what="study")
    assert (tmp_path / "run" / "run.json").read_bytes() == before
    (tmp_path / "run" / "run.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="not a study configuration"):
        table.claim({"size": "fast"}, name="run.json", what="study")


def test_a_claim_on_a_foreign_table_writes_nothing(tmp_path):
    (tmp_path / "results.jsonl").write_text("hello\n")
    with pytest.raises(ValueError, match="line 1"):
        ResultsTable(tmp_path, key=lambda r: r["seed"]).claim({}, name="c.json", what="study")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.jsonl"]


def test_two_processes_on_one_folder_compute_each_row_once(tmp_path):
    jobs = list(range(12))
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_worker, args=(str(tmp_path), jobs, 0.05)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    rows = read_results(tmp_path)
    assert sorted(r["seed"] for r in rows) == jobs  # one row per key
    assert len({r["pid"] for r in rows}) == 2  # and both processes worked


def test_a_lease_held_by_a_dead_process_is_taken_over(tmp_path):
    """A process killed mid-row frees its lease (the OS drops its locks): the row is done by
    the next run, not skipped for ever."""
    ctx = multiprocessing.get_context("fork")
    p = ctx.Process(target=_worker, args=(str(tmp_path), [0], 30.0))
    p.start()
    time.sleep(1.0)
    p.kill()
    p.join()
    _worker(str(tmp_path), [0, 1], 0.0)
    assert sorted(r["seed"] for r in read_results(tmp_path)) == [0, 1]


@pytest.mark.slow
def test_two_tradeoff_commands_on_one_folder_write_each_row_once(tmp_path):
    out = tmp_path / "sweep"
    cmd = [
        sys.executable,
        "-m",
        "toycode",
        "tradeoff",
        "--problem",
        "between",
        "--methods",
        "bon",
        "code",
        "--grid",
        "N=2,4;B=2;T=6",
        "--seeds",
        "3",
        "--n",
        "32",
        "--out",
        str(out),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [
        subprocess.Popen(
            cmd,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=env,
            cwd=Path(__file__).resolve().parents[1],
        )
        for _ in range(2)
    ]
    for p in procs:
        assert p.wait(300) == 0, p.stderr.read().decode()
    rows = read_results(out)
    keys = [(r["method"], json.dumps(r["settings"], sort_keys=True), r["seed"]) for r in rows]
    assert len(keys) == len(set(keys)) == 2 * 2 * 3


@pytest.mark.slow
def test_two_plain_sd_sweeps_on_one_folder_write_each_row_once(tmp_path):
    pytest.importorskip("diffusers")
    out = tmp_path / "sweep"
    cmd = [
        sys.executable,
        "-m",
        "toycode",
        "sd-sweep",
        "--model",
        "tiny:sd",
        "--prompts",
        "animals",
        "--limit-prompts",
        "2",
        "--methods",
        "base",
        "bon",
        "--grid",
        "N=2",
        "--seeds",
        "3",
        "--steps",
        "3",
        "--out",
        str(out),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "CUDA_VISIBLE_DEVICES": ""}
    procs = [
        subprocess.Popen(
            cmd,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=env,
            cwd=Path(__file__).resolve().parents[1],
        )
        for _ in range(2)
    ]
    for p in procs:
        assert p.wait(300) == 0, p.stderr.read().decode()[-2000:]
    rows = read_results(out)
    keys = [
        (r["prompt"], r["method"], json.dumps(r["settings"], sort_keys=True), r["seed"])
        for r in rows
    ]
    assert len(keys) == len(set(keys)) == 2 * 2 * 3
