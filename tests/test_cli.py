"""The ``inseq-mixing`` command end to end, in subprocesses."""

from __future__ import annotations

import importlib.metadata
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from .inseq.conftest import saved_model


def run_cli(*args: str, cwd=None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "inseq_mixing.cli", *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=cwd,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )


def test_console_script_is_installed() -> None:
    scripts = {ep.name: ep.value for ep in importlib.metadata.entry_points(group="console_scripts")}
    assert scripts["inseq-mixing"] == "inseq_mixing.cli:main"


def test_attribute_runs_inseq_command_with_our_method(tmp_path) -> None:
    out_file = tmp_path / "out.json"
    result = run_cli(
        "attribute", "-a", "globenc", "-m", str(saved_model("gpt2")), "--input_texts", "either you win",
        "--generation_kwargs", '{"max_new_tokens": 3}', "--save_path", str(out_file), "--hide_attributions",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    saved = json.loads(out_file.read_text())
    assert "globenc" in json.dumps(saved)


def test_mix_prints_the_table_and_writes_heatmaps(tmp_path) -> None:
    plot = tmp_path / "mix.png"
    result = run_cli(
        "mix", "--model", str(saved_model("llama")), "--method", "alti", "--rollout", "--text", "either you win",
        "--plot", str(plot),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "either" in result.stdout and "alti" in result.stdout
    image = Image.open(plot).convert("L")
    assert image.size[0] > 300
    assert len(np.unique(np.asarray(image))) > 20  # not a blank canvas


def test_attribute_and_mix_on_an_encoder_decoder(tmp_path) -> None:
    path = str(saved_model("marian"))
    out_file = tmp_path / "out.json"
    result = run_cli(
        "attribute", "-a", "alti", "-m", path, "--input_texts", "either you win the game",
        "--generated_texts", "the cat sat", "--save_path", str(out_file), "--hide_attributions",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "source_attributions" in out_file.read_text()
    result = run_cli("mix", "--model", path, "--method", "alti", "--text", "either you win", "--target", "the cat")
    assert result.returncode == 0, result.stderr
    assert "source + target rollout" in result.stdout and "either" in result.stdout
    missing_target = run_cli("mix", "--model", path, "--method", "alti", "--text", "either you win")
    assert missing_target.returncode == 2 and "--target" in missing_target.stderr


def test_attribute_dataset_runs_our_method_on_a_local_file(tmp_path) -> None:
    pytest.importorskip("datasets")
    data = tmp_path / "data.jsonl"
    texts = ["either you win", "the game or you", "win the game", "you either win or you"]
    data.write_text("".join(json.dumps({"text": text}) + "\n" for text in texts))
    out_file = tmp_path / "out.json"
    result = run_cli(
        "attribute-dataset", "-a", "attention_norm", "-m", str(saved_model("gpt2")), "--dataset_name", "json",
        "--dataset_files", str(data), "--dataset_split", "train", "--input_text_field", "text", "--batch_size", "2",
        "--generation_kwargs", '{"max_new_tokens": 2}', "--save_path", str(out_file), "--hide_attributions",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    import inseq

    saved = inseq.FeatureAttributionOutput.load(str(out_file))
    assert saved.info["attribution_method"] == "attention_norm"
    assert len(saved.sequence_attributions) == len(texts)  # one attribution per row of the file
    for attribution in saved.sequence_attributions:
        scores = attribution.target_attributions
        assert scores.shape[1] == 2 and torch.isfinite(scores).any()  # two generated steps, real numbers


def test_mix_defaults_to_the_packaged_minilm() -> None:
    result = run_cli("mix", "--method", "attention_norm", "--text", "The cat sat on the mat .")
    assert result.returncode == 0, result.stderr
    assert "[CLS]" in result.stdout and "all-MiniLM-L6-v2" in result.stdout


@pytest.mark.parametrize("command", ["mix", "attribute"])
def test_bad_method_name_fails_with_a_clear_message(command: str) -> None:
    if command == "mix":
        result = run_cli("mix", "--method", "altii", "--text", "hi")
    else:
        result = run_cli("attribute", "-a", "altii", "-m", str(saved_model("gpt2")), "--input_texts", "hi")
    assert result.returncode == 2
    assert "altii" in result.stderr and "alti" in result.stderr


@pytest.mark.parametrize("command", ["mix", "attribute"])
def test_missing_model_path_fails_with_a_clear_message(tmp_path, command: str) -> None:
    missing = str(tmp_path / "no_such_model")
    if command == "mix":
        result = run_cli("mix", "--model", missing, "--method", "alti", "--text", "hi")
    else:
        result = run_cli("attribute", "-a", "alti", "-m", missing, "--input_texts", "hi")
    assert result.returncode == 2
    assert "does not exist" in result.stderr and missing in result.stderr
