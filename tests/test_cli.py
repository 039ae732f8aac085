"""The ``inseq-mixing`` command end to end: through ``main`` in this process, and once through the real entry point."""

from __future__ import annotations

import contextlib
import importlib.metadata
import io
import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from PIL import Image

from inseq_mixing.cli import looks_local, main

from ._tiny_models import MAX_LEN, WORDS, save_tiny
from .inseq.conftest import saved_model


def run_cli(*args: str, cwd=None, fresh_process: bool = False) -> subprocess.CompletedProcess[str]:
    """The command's exit status, stdout and stderr: in this process through :func:`main` (fast), or with
    ``fresh_process`` as ``python -m inseq_mixing.cli`` (the real entry point, ~10 s of imports)."""
    env = {"HF_HUB_OFFLINE": "1", "COLUMNS": "400"}  # wide enough that rich never wraps a table
    if fresh_process:
        return subprocess.run([sys.executable, "-m", "inseq_mixing.cli", *args], capture_output=True, text=True,
                              timeout=300, cwd=cwd, env={**os.environ, **env})  # fmt: skip
    out, err = io.StringIO(), io.StringIO()
    saved_env, saved_cwd = {k: os.environ.get(k) for k in env}, os.getcwd()
    os.environ.update(env)
    try:
        if cwd is not None:
            os.chdir(cwd)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(list(args))
            except SystemExit as exit_:  # argparse's own errors
                code = exit_.code if isinstance(exit_.code, int) else 1
    finally:
        os.chdir(saved_cwd)
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    return subprocess.CompletedProcess(["inseq-mixing", *args], code, out.getvalue(), err.getvalue())


def assert_user_error(result: subprocess.CompletedProcess[str], *fragments: str) -> None:
    """Exit status 2 and exactly one stderr line, ``inseq-mixing: error: ...``, holding every fragment."""
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("inseq-mixing: error: "), result.stderr
    assert all(fragment in lines[0] for fragment in fragments), lines[0]


def tables(stdout: str) -> list[tuple[str, list[str], list[list[float]]]]:
    """Each rich table printed: ``(title, column headers, rows of numbers)``; the ┃ divider column is dropped."""
    found, title = [], []
    for line in stdout.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("┃│").split("┃" if line.startswith("┃") else "│")]
        if line.startswith("┏"):
            found.append((" ".join(title), [], []))
            title = []
        elif line.startswith("┃") and found and not found[-1][1]:
            found[-1][1].extend(cell for cell in cells[1:] if cell)
        elif line.startswith("│") and found:
            found[-1][2].append([float(cell) for cell in cells[1:] if cell not in ("┃", "")])
        elif not line.startswith(("┡", "└", "┃")):
            title.append(line.strip())
    return found


@pytest.fixture(scope="module")
def quiet_marian(tmp_path_factory) -> str:
    """A tiny Marian saved without its LM head, so loading it with AutoModel prints no load report on stderr."""
    return str(save_tiny("marian", tmp_path_factory.mktemp("marian_base"), head="base"))


def test_console_script_is_installed() -> None:
    scripts = {ep.name: ep.value for ep in importlib.metadata.entry_points(group="console_scripts")}
    assert scripts["inseq-mixing"] == "inseq_mixing.cli:main"


def test_attribute_runs_inseq_command_with_our_method(tmp_path) -> None:
    out_file = tmp_path / "out.json"
    result = run_cli(
        "attribute", "-a", "globenc", "-m", str(saved_model("gpt2")), "--input_texts", "either you win",
        "--generation_kwargs", '{"max_new_tokens": 3}', "--save_path", str(out_file), "--hide_attributions",
        fresh_process=True,
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


def test_mix_several_methods_from_one_pass_prints_each_and_plots_one_row_per_method(tmp_path) -> None:
    plot = tmp_path / "all.png"
    result = run_cli(
        "mix", "--model", str(saved_model("gpt2")), "--method", "alti,globenc,value_zeroing", "--text",
        "either you win", "--plot", str(plot),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    for method in ("alti", "globenc", "value_zeroing"):
        assert f"{method}, layer-wise, last layer" in result.stdout
    image = Image.open(plot)
    assert image.size[1] > 2.5 * image.size[0] / saved_model_layers("gpt2")  # three rows of panels
    bad = run_cli("mix", "--model", str(saved_model("gpt2")), "--method", "alti,altii", "--text", "either")
    assert bad.returncode == 2 and "unknown method(s) 'altii'" in bad.stderr


def saved_model_layers(model_type: str) -> int:
    import json as _json

    config = _json.loads((saved_model(model_type) / "config.json").read_text())
    return config.get("n_layer") or config["num_hidden_layers"]


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
    assert "cross-attention" in result.stdout and "either" in result.stdout


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
    assert_user_error(result, "'altii'", "available: ", "alti")


@pytest.mark.parametrize("command", ["mix", "attribute"])
def test_missing_model_path_fails_with_a_clear_message(tmp_path, command: str) -> None:
    missing = str(tmp_path / "no_such_model")
    if command == "mix":
        result = run_cli("mix", "--model", missing, "--method", "alti", "--text", "hi")
    else:
        result = run_cli("attribute", "-a", "alti", "-m", missing, "--input_texts", "hi")
    assert_user_error(result, "does not exist", missing)


def test_mix_rejects_a_directory_without_a_model(tmp_path) -> None:
    result = run_cli("mix", "--model", str(tmp_path), "--method", "alti", "--text", "hi")
    assert_user_error(result, "has no config.json", str(tmp_path))


@pytest.mark.parametrize("name", ["models/missing", "../missing"])
def test_a_missing_relative_path_is_never_looked_up_on_the_hub(tmp_path, name: str) -> None:
    (tmp_path / "models").mkdir()
    result = run_cli("attribute", "-a", "alti", "-m", name, "--input_texts", "hi", cwd=tmp_path)
    assert_user_error(result, "does not exist", repr(name))


def test_a_missing_relative_path_fails_before_inseq_is_loaded(tmp_path, monkeypatch, capsys) -> None:
    """In-process, so the time measured is the CLI's own (a Hub lookup would retry for about 35 s)."""
    (tmp_path / "models").mkdir()
    monkeypatch.chdir(tmp_path)
    start = time.monotonic()
    status = main(["attribute", "-a", "alti", "-m", "models/missing", "--input_texts", "hi"])
    assert status == 2 and time.monotonic() - start < 10
    assert capsys.readouterr().err.startswith("inseq-mixing: error: model directory 'models/missing' does not exist")


def test_local_paths_and_hub_ids_are_told_apart(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "models").mkdir()
    local = ["models/missing", "./x", "../x", "/abs/x", "~/x", ".hidden", "a/b/c", "models"]
    hub = ["gpt2", "org/name", "Helsinki-NLP/opus-mt-en-de"]
    assert [looks_local(name) for name in local] == [True] * len(local)
    assert [looks_local(name) for name in hub] == [False] * len(hub)


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (("--method", "alti", "--text", ""), "--text is empty"),
        (("--method", "alti", "--text", "   "), "--text is empty"),
        (("--method", "alti", "--text", "hi", "--digits", "-1"), "--digits"),
        (("--text", "hi"), "--method"),
    ],
    ids=["empty-text", "blank-text", "negative-digits", "no-method"],
)
def test_mix_usage_errors_are_one_line(args: tuple[str, ...], fragment: str) -> None:
    assert_user_error(run_cli("mix", "--model", str(saved_model("gpt2")), *args), fragment)


def test_mix_text_longer_than_the_model_positions_is_one_line() -> None:
    """Needs the library to raise InvalidInputError (a ValueError) for more positions than the model has."""
    text = " ".join(WORDS[i % len(WORDS)] for i in range(MAX_LEN + 8))
    result = run_cli("mix", "--model", str(saved_model("gpt2")), "--method", "alti", "--text", text)
    assert_user_error(result)


def test_mix_on_an_encoder_decoder_needs_a_target() -> None:
    result = run_cli("mix", "--model", str(saved_model("marian")), "--method", "alti", "--text", "either you win")
    assert_user_error(result, "encoder-decoder", "--target")


def test_mix_refuses_a_target_for_a_decoder_only_model() -> None:
    args = ("--method", "alti", "--text", "either you win", "--target", "the cat")
    assert_user_error(run_cli("mix", "--model", str(saved_model("gpt2")), *args), "--target", "drop --target")


@pytest.mark.parametrize("method", ["alti", "value_zeroing"])
def test_mix_on_an_encoder_decoder_shows_cross_and_decoder_stacks_separately(tmp_path, method: str) -> None:
    plot = tmp_path / "out.png"
    result = run_cli(
        "mix", "--model", str(saved_model("marian")), "--method", method, "--text", "either you win",
        "--target", "the cat", "--digits", "4", "--plot", str(plot),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    (cross_title, cross_columns, cross), (decoder_title, _, decoder) = tables(result.stdout)
    assert "cross-attention, layer-wise" in cross_title
    if method == "alti":
        assert "rows sum to 1 over source tokens and the residual" in cross_title
        assert cross_columns == ["either", "you", "win", "</s>", "(residual)"]
    else:  # an unscored residual is left out, not shown as a measured 0
        assert "rows sum to 1 over source tokens (value_zeroing does not score the residual)" in cross_title
        assert cross_columns == ["either", "you", "win", "</s>"]
    assert "decoder self-attention, layer-wise" in decoder_title and "rows sum to 1 over target tokens" in decoder_title
    for rows in (cross, decoder):  # each stack on its own normalization, never two side by side (rows summing to 2)
        assert [sum(row) for row in rows] == pytest.approx([1.0] * len(rows), abs=1e-3)
    assert "source + target rollout" not in result.stdout
    assert sorted(path.name for path in tmp_path.iterdir()) == ["out-cross.png", "out-decoder.png"]


def test_mix_rollout_on_an_encoder_decoder_shows_the_combined_rollout(tmp_path) -> None:
    plot = tmp_path / "rollout.png"
    result = run_cli(
        "mix", "--model", str(saved_model("marian")), "--method", "alti", "--rollout", "--text", "either you win",
        "--target", "the cat", "--digits", "4", "--plot", str(plot),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    ((title, columns, rows),) = tables(result.stdout)
    assert "source + target rollout" in title and "rows sum to 1 over source + target tokens" in title
    assert columns[:4] == ["either", "you", "win", "</s>"]  # the 4 source tokens, then the ┃ divider, then the target
    assert [sum(row) for row in rows] == pytest.approx([1.0] * len(rows), abs=1e-3)
    assert any("│ ┃ │" in line for line in result.stdout.splitlines())  # the divider column is drawn
    assert plot.is_file()


def test_mix_rollout_is_refused_for_value_zeroing_on_an_encoder_decoder(quiet_marian: str) -> None:
    result = run_cli(
        "mix", "--model", quiet_marian, "--method", "value_zeroing", "--rollout", "--text", "either you win",
        "--target", "the cat",
    )  # fmt: skip
    assert_user_error(result, "--rollout", "value_zeroing", "drop --rollout")


def test_explain_a_causal_lm_with_a_foil_prints_signed_contributions_and_plots(tmp_path) -> None:
    plot = tmp_path / "explain.png"
    result = run_cli(
        "explain", "--model", str(saved_model("gpt2")), "--method", "alti_logit", "--text", "either you win the",
        "--target", "game", "--foil", "or", "--plot", str(plot),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "logit(game) − logit(or)" in result.stdout and "identity residual" in result.stdout
    assert "mlp.0" in result.stdout and "either" in result.stdout
    image = Image.open(plot)
    assert image.size[1] > image.size[0] / 3  # bars and the per-layer heatmap


def test_explain_a_classifier_label(tmp_path) -> None:
    from ._tiny_models import save_tiny

    path = save_tiny("bert", tmp_path / "classifier", head="sequence_classification")
    result = run_cli("explain", "--model", str(path), "--method", "decompx", "--text", "either you win", "--target",
                     "1", "--foil", "LABEL_0")  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "logit(LABEL_1) − logit(LABEL_0)" in result.stdout
    bad = run_cli("explain", "--model", str(path), "--method", "decompx", "--text", "either", "--target", "LABEL_9")
    assert bad.returncode == 2 and bad.stderr.startswith("inseq-mixing: error:") and "LABEL_9" in bad.stderr


def test_routes_command_writes_the_page_and_the_figure(tmp_path) -> None:
    html, png = tmp_path / "routes.html", tmp_path / "routes.png"
    result = run_cli("routes", "--model", str(saved_model("gpt2")), "--text", "either you win the game",
                     "--html", str(html), "--plot", str(png))  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "routes to" in result.stdout and "X0_" in result.stdout
    assert html.stat().st_size > 100_000 and Image.open(png).size[0] > 300  # plotly bundled into the page
    bad = run_cli("routes", "--model", str(saved_model("gpt2")), "--text", "either", "--threshold", "2")
    assert bad.returncode == 2 and "--threshold" in bad.stderr
