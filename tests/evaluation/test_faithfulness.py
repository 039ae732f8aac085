"""Faithfulness metrics against a hand computation; deletion, batching, datasets, the result table and curves."""

from __future__ import annotations

import functools
import math

import datasets
import pytest
import torch
from PIL import Image

from inseq_mixing import EvaluationResult, InvalidInputError, UnknownMethodError, context_mixing, evaluate
from inseq_mixing.evaluation.faithfulness import make_batch, top_k

from .._tiny_models import build_tiny_model, build_tokenizer

TEXTS = ["either you win the game or you", "the cat sat on the mat", "you win", "the game is on"]


@functools.cache
def classifier():
    return build_tiny_model("bert", head="sequence_classification").eval(), build_tokenizer(None, template="bos_eos")


@functools.cache
def causal_lm():
    return build_tiny_model("gpt2", head="causal_lm").eval(), build_tokenizer(None, template="bos")


def probability(model, ids: list[int], target: int, *, causal: bool, scale: torch.Tensor | None = None) -> float:
    """The model's probability of ``target`` on one unpadded sequence (embeddings scaled by ``scale``)."""
    with torch.no_grad():
        if scale is None:
            logits = model(input_ids=torch.tensor([ids])).logits
        else:
            embeddings = model.get_input_embeddings()(torch.tensor([ids])) * scale[None, :, None]
            logits = model(inputs_embeds=embeddings).logits
    logits = logits[0, -1] if causal else logits[0]
    return float(logits.softmax(-1)[target])


@pytest.mark.parametrize("kind", ["classifier", "causal"])
def test_every_metric_equals_a_hand_computation(kind: str) -> None:
    model, tokenizer = classifier() if kind == "classifier" else causal_lm()
    causal = kind == "causal"
    text = TEXTS[0]
    result = evaluate(model, [text], ["alti"], tokenizer=tokenizer, bins=(0.2, 0.5), progress=False,
                      deletion="remove" if causal else "mask")  # fmt: skip
    ids = tokenizer(text)["input_ids"]
    p_full = [probability(model, ids, t, causal=causal) for t in range(3)]  # the predicted one is the argmax
    logits_target = None
    with torch.no_grad():
        out = model(input_ids=torch.tensor([ids])).logits
        logits_target = int((out[0, -1] if causal else out[0]).argmax())
    p = probability(model, ids, logits_target, causal=causal)
    position = len(ids) - 1 if causal else 0
    scores = context_mixing(model, torch.tensor([ids]), "alti", rollout=True)[0, -1, position]
    deletable = [i for i, t in enumerate(ids) if t > 4 and not (causal and i == len(ids) - 1)]
    ranked = sorted(deletable, key=lambda i: (-float(scores[i]), i))
    values = {}
    for q in (0.2, 0.5):
        top = set(ranked[: max(1, math.ceil(q * len(deletable)))])
        rest = set(deletable) - top
        if causal:  # removal
            without_top = [t for i, t in enumerate(ids) if i not in top]
            only_top = [t for i, t in enumerate(ids) if i not in rest]
        else:  # the mask token, id 4
            without_top = [4 if i in top else t for i, t in enumerate(ids)]
            only_top = [4 if i in rest else t for i, t in enumerate(ids)]
        values[("comprehensiveness", q)] = p - probability(model, without_top, logits_target, causal=causal)
        values[("sufficiency", q)] = p - probability(model, only_top, logits_target, causal=causal)
    s = scores[deletable]
    normalized = torch.ones(len(ids))
    normalized[deletable] = (s - s.min()) / (s.max() - s.min())
    keep, only = torch.ones(len(ids)), torch.ones(len(ids))
    keep[deletable], only[deletable] = 1 - normalized[deletable], normalized[deletable]
    values[("soft_comprehensiveness", None)] = p - probability(model, ids, logits_target, causal=causal, scale=keep)
    values[("soft_sufficiency", None)] = p - probability(model, ids, logits_target, causal=causal, scale=only)
    rows = result.rows
    assert len(rows) == len(values) and max(p_full) <= p + 1e-6
    for (metric, q), expected in values.items():
        row = rows[(rows["metric"] == metric) & (rows["bin"].isna() if q is None else rows["bin"] == q)]
        assert float(row["value"].iloc[0]) == pytest.approx(expected, abs=1e-6), (metric, q)
        assert int(row["target"].iloc[0]) == logits_target and float(row["probability"].iloc[0]) == pytest.approx(p)


@pytest.mark.parametrize("kind", ["classifier", "causal"])
def test_batching_and_padding_do_not_change_the_numbers(kind: str) -> None:
    model, tokenizer = classifier() if kind == "classifier" else causal_lm()
    methods = ["decompx", "random"] if kind == "classifier" else ["alti_logit", "grad_rollout", "random"]
    one = evaluate(model, TEXTS, methods, tokenizer=tokenizer, batch_size=1, progress=False)
    together = evaluate(model, TEXTS, methods, tokenizer=tokenizer, batch_size=3, progress=False)
    torch.testing.assert_close(torch.tensor(one.rows["value"].to_numpy()),
                               torch.tensor(together.rows["value"].to_numpy()), atol=1e-5, rtol=0)  # fmt: skip
    assert one.rows[["example", "method", "metric"]].equals(together.rows[["example", "method", "metric"]])


def test_special_tokens_and_the_explained_position_are_never_deleted() -> None:
    _, tokenizer = causal_lm()
    batch = make_batch(tokenizer, ["either you win the game"], causal=True)
    ids = batch.tokens[0]
    assert ids[0] == 2 and batch.deletable[0] == [False, True, True, True, True, False]
    everything = top_k(torch.arange(6.0), batch.deletable[0], 1.0)
    assert everything == {1, 2, 3, 4}
    assert top_k(torch.tensor([9.0, 1, 3, 3, 0, 9]), batch.deletable[0], 0.01) == {2}  # ties: the earlier


def test_datasets_lists_and_files_give_the_same_result(tmp_path) -> None:
    model, tokenizer = classifier()
    frame = datasets.Dataset.from_dict({"sentence": TEXTS, "label": [0, 1, 0, 1]})
    frame.to_csv(str(tmp_path / "data.csv"))
    frame.to_json(str(tmp_path / "data.jsonl"))
    kwargs = {"tokenizer": tokenizer, "metric": ("comprehensiveness",), "progress": False}
    reference = evaluate(model, TEXTS, ["attention_rollout"], **kwargs).rows["value"]
    for source in (frame, tmp_path / "data.csv", str(tmp_path / "data.jsonl")):
        got = evaluate(model, source, ["attention_rollout"], text_column="sentence", **kwargs).rows["value"]
        assert got.tolist() == pytest.approx(reference.tolist(), abs=1e-7)
    with pytest.raises(InvalidInputError, match=r"no column 'text'.*\['sentence', 'label'\]"):
        evaluate(model, frame, ["alti"], **kwargs)


def test_bad_arguments_get_clear_errors() -> None:
    model, tokenizer = classifier()
    with pytest.raises(InvalidInputError, match="Pass tokenizer="):
        evaluate(model, TEXTS, ["alti"])
    with pytest.raises(UnknownMethodError, match=r"'altii'.*decompx.*random"):
        evaluate(model, TEXTS, ["altii"], tokenizer=tokenizer)
    with pytest.raises(InvalidInputError, match="bins must be fractions"):
        evaluate(model, TEXTS, ["alti"], tokenizer=tokenizer, bins=(0, 0.5))
    with pytest.raises(InvalidInputError, match="Unknown metric"):
        evaluate(model, TEXTS, ["alti"], tokenizer=tokenizer, metric=("aopc",))
    no_mask = build_tokenizer(None, template="bos_eos")
    no_mask.mask_token = None
    with pytest.raises(InvalidInputError, match="no mask token; pass deletion='remove'"):
        evaluate(model, TEXTS, ["alti"], tokenizer=no_mask, deletion="mask")
    with pytest.raises(Exception, match="no prediction to evaluate"):
        evaluate(build_tiny_model("bert"), TEXTS, ["alti"], tokenizer=tokenizer)


def test_the_table_the_dataframe_and_the_curves(tmp_path) -> None:
    model, tokenizer = causal_lm()
    result = evaluate(model, TEXTS, ["alti", "random"], tokenizer=tokenizer, progress=False)
    table = result.to_pandas()
    assert list(table.index) == ["alti", "random"]
    assert table[("n", "examples")].tolist() == [4, 4]
    per_example = result.aopc()
    alti = per_example[(per_example["method"] == "alti") & (per_example["metric"] == "comprehensiveness")]
    assert table.loc["alti", ("comprehensiveness", "mean")] == pytest.approx(alti["aopc"].mean())
    text = str(result)
    assert "comprehensiveness ↑" in text and "sufficiency ↓" in text and text.count("±") == 8
    assert EvaluationResult.from_rows(result.rows.sample(frac=1, random_state=0)).rows.equals(result.rows)
    image = Image.open(result.plot(tmp_path / "curves.png"))
    assert image.size[0] > image.size[1]  # two panels side by side


def test_a_missing_optional_package_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    from inseq_mixing.errors import MissingDependencyError

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "pyarrow" else real(name, *a))
    model, tokenizer = classifier()
    with pytest.raises(MissingDependencyError, match=r"pyarrow: pip install 'inseq-mixing\[evaluate\]'"):
        evaluate(model, TEXTS, ["alti"], tokenizer=tokenizer)
