"""Corpus runs: two processes under torchrun equal one; a run killed midway resumes without duplicates or loss; the
evaluate command's table and files."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from inseq_mixing.cli import main
from inseq_mixing.evaluation.corpus import read_rows

from ..inseq.conftest import saved_model

WORDS = ["either", "you", "win", "the", "game", "or", "the", "cat", "sat", "on", "mat", "is"]
METHODS = "alti,alti_logit,random"
KEY = ["example", "method"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A jsonl dataset of 40 short texts with a metadata column."""
    path = tmp_path_factory.mktemp("corpus") / "texts.jsonl"
    with path.open("w") as file:
        for i in range(40):
            text = " ".join(WORDS[(i * 7 + k * 3) % len(WORDS)] for k in range(3 + i % 5))
            file.write(json.dumps({"text": text, "label": i % 3}) + "\n")
    return path


def arguments(command: str, data: Path, output: Path, *extra: str) -> list[str]:
    return [command, "--model", str(saved_model("gpt2")), "--data", str(data), "--method", METHODS,
            "--output", str(output), "--batch-size", "4", "--no-progress", *extra]  # fmt: skip


@pytest.fixture(scope="module")
def reference(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> pd.DataFrame:
    """The rows of one uninterrupted single-process run."""
    output = tmp_path_factory.mktemp("reference")
    assert main(arguments("attribute-corpus", corpus, output)) == 0
    return read_rows(output)


def canonical(rows: pd.DataFrame) -> pd.DataFrame:
    assert not rows.duplicated(KEY).any(), "an (example, method) pair was written twice"
    return rows.sort_values(KEY).reset_index(drop=True)


def command_line(*args: str) -> list[str]:
    return [sys.executable, *args]


def environment() -> dict[str, str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).parents[2]), env.get("PYTHONPATH", "")])
    return env


def test_every_example_and_method_once_with_its_tokens_scores_and_metadata(reference: pd.DataFrame) -> None:
    rows = canonical(reference)
    assert len(rows) == 40 * 3 and set(rows["method"]) == set(METHODS.split(","))
    first = rows[(rows["example"] == 5) & (rows["method"] == "alti")].iloc[0]
    assert list(first["tokens"]) == first["text"].split() and len(first["scores"]) == len(first["tokens"])
    assert json.loads(first["metadata"]) == {"label": 5 % 3}
    assert 0 < first["probability"] <= 1


def test_two_processes_under_torchrun_equal_one(corpus: Path, reference: pd.DataFrame, tmp_path: Path) -> None:
    launch = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "inseq_mixing.cli"]
    command = command_line(*launch, *arguments("attribute-corpus", corpus, tmp_path))
    run = subprocess.run(command, env=environment(), capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    parts = sorted(p.name for p in tmp_path.glob("part-*.parquet"))
    assert any(p.startswith("part-r0000-") for p in parts) and any(p.startswith("part-r0001-") for p in parts), parts
    merged = canonical(read_rows(tmp_path))
    pd.testing.assert_frame_equal(merged, canonical(reference), check_exact=False, atol=1e-6, rtol=1e-5)


def test_a_killed_run_resumes_without_duplicates_or_loss(corpus: Path, reference: pd.DataFrame, tmp_path: Path) -> None:
    one_example_parts = arguments("attribute-corpus", corpus, tmp_path, "--flush-every", "1", "--batch-size", "1")
    command = command_line("-m", "inseq_mixing.cli", *one_example_parts)
    process = subprocess.Popen(command, env=environment(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 240
        while len(list(tmp_path.glob("part-*.parquet"))) < 3 and process.poll() is None:
            assert time.monotonic() < deadline, "the run wrote no parts"
            time.sleep(0.01)
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL, process.stderr.read().decode()[-3000:]
    partial = read_rows(tmp_path)
    assert 0 < partial["example"].nunique() < 40, "the kill came too late to test resuming"
    assert not partial.duplicated(KEY).any()
    written = {p.name: p.stat().st_mtime_ns for p in tmp_path.glob("part-*.parquet")}
    assert main(arguments("attribute-corpus", corpus, tmp_path)) == 0  # resume
    assert all(tmp_path.joinpath(name).stat().st_mtime_ns == t for name, t in written.items())  # kept, not redone
    pd.testing.assert_frame_equal(canonical(read_rows(tmp_path)), canonical(reference), check_exact=False,
                                  atol=1e-6, rtol=1e-5)  # fmt: skip


def test_the_evaluate_command_prints_the_table_and_writes_summary_and_curves(
    corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plot = tmp_path / "curves.png"
    args = arguments("evaluate", corpus, tmp_path / "run", "--max-examples", "8", "--bins", "0.2,0.5",
                     "--plot", str(plot))  # fmt: skip
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "comprehensiveness ↑" in out and "sufficiency ↓" in out
    summary = pd.read_csv(tmp_path / "run" / "summary.csv", header=[0, 1], index_col=0)
    assert list(summary.index) == sorted(METHODS.split(",")) and (summary[("n", "examples")] == 8).all()
    assert plot.stat().st_size > 0
    rows = read_rows(tmp_path / "run")
    assert set(rows["bin"].dropna()) == {0.2, 0.5} and rows["example"].nunique() == 8
    assert main(args) == 0  # finished: nothing recomputed, the same table
    assert capsys.readouterr().out.splitlines()[1:] == out.splitlines()[1:]


def test_bad_option_and_unknown_method_exit_with_one_line(corpus: Path, tmp_path: Path, capsys) -> None:
    assert main([*arguments("evaluate", corpus, tmp_path), "--option", "hta-samples"]) == 2
    assert "METHOD.NAME=VALUE" in capsys.readouterr().err
    bad = arguments("attribute-corpus", corpus, tmp_path)
    bad[bad.index("--method") + 1] = "altii"
    assert main(bad) == 2
    assert "altii" in capsys.readouterr().err
