"""Tests of the tiny offline model factory (``tests/_tiny_models.py``) the rest of the test-suite builds on."""

from __future__ import annotations

import copy
import functools
import pathlib

import pytest
import torch
from transformers import AutoTokenizer, PreTrainedModel
from transformers.pytorch_utils import Conv1D

try:
    from . import _tiny_models as tm
except ImportError:  # tests/ is not a package
    import _tiny_models as tm  # type: ignore[no-redef]

# transformers 4.57's DeBERTa-v2 calls torch.jit.script, which torch 2.13 deprecates.
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")

ALL_TYPES = sorted(tm.TINY_CONFIGS)
LM_HEADS = {
    **dict.fromkeys(tm.ENCODER_TYPES, "masked_lm"),
    **dict.fromkeys(tm.CAUSAL_TYPES, "causal_lm"),
    **dict.fromkeys(tm.SEQ2SEQ_TYPES, "seq2seq_lm"),
}
TEXT = "either you win the game or you"


@functools.cache
def _model(model_type: str, head: str = "base", seed: int = 0) -> PreTrainedModel:
    """Build (once per session) a tiny model; callers must not modify it."""
    return tm.build_tiny_model(model_type, seed=seed, head=head)


def _inputs(model_type: str, text: str = TEXT) -> dict[str, torch.Tensor]:
    """Tokenized ``text`` (with the kind's special tokens), plus decoder inputs for encoder-decoders."""
    tokenizer = tm.build_tokenizer(None, template=tm.DEFAULT_TEMPLATES[model_type])
    inputs = dict(tokenizer(text, return_tensors="pt"))
    if model_type in tm.SEQ2SEQ_TYPES:
        start = tm.TINY_CONFIGS[model_type]().decoder_start_token_id
        inputs["decoder_input_ids"] = torch.tensor([[start, *tokenizer(TEXT, add_special_tokens=False).input_ids[:4]]])
    return inputs


def _forward(model: PreTrainedModel, inputs: dict[str, torch.Tensor], **kwargs: object) -> torch.Tensor:
    with torch.no_grad():
        return model(**inputs, **kwargs)[0]


def _norms(model: torch.nn.Module) -> list[tuple[str, torch.nn.Module]]:
    """LayerNorm/RMSNorm-like modules: class name contains "Norm" and the module owns a 1-D weight."""
    return [
        (name, module)
        for name, module in model.named_modules()
        if "Norm" in type(module).__name__ and getattr(module, "weight", None) is not None and module.weight.ndim == 1
    ]


def test_kinds_partition_the_configs() -> None:
    kinds = (*tm.ENCODER_TYPES, *tm.CAUSAL_TYPES, *tm.SEQ2SEQ_TYPES)
    assert sorted(kinds) == ALL_TYPES
    assert len(set(kinds)) == len(kinds)
    assert {"bert", "roberta", "distilbert", "gpt2", "llama", "mistral", "qwen2"} <= set(ALL_TYPES)


@pytest.mark.parametrize("model_type", ALL_TYPES)
def test_config_is_tiny(model_type: str) -> None:
    config = tm.TINY_CONFIGS[model_type]()
    assert config.model_type == model_type
    assert config.vocab_size == tm.VOCAB_SIZE
    assert config.num_hidden_layers == 2
    assert 2 <= config.num_attention_heads <= 4
    assert 16 <= config.hidden_size <= 64
    if hasattr(config, "max_position_embeddings"):
        assert config.max_position_embeddings >= 64
    assert (config.pad_token_id, config.eos_token_id) == (tm.PAD_ID, tm.EOS_ID)
    probabilities = {k: v for k, v in config.to_dict().items() if "dropout" in k or "pdrop" in k or "layerdrop" in k}
    assert all(v in (0.0, None) for v in probabilities.values()), probabilities
    for key in ("intermediate_size", "n_inner", "ffn_dim", "encoder_ffn_dim", "d_ff", "hidden_dim", "ffn_hidden_size"):
        if getattr(config, key, None) is not None:
            assert getattr(config, key) <= 4 * config.hidden_size, key
    if model_type in ("llama", "mistral", "qwen2"):
        assert (config.num_attention_heads, config.num_key_value_heads) == (4, 2)
    if config.is_encoder_decoder:
        assert config.decoder_start_token_id in (tm.PAD_ID, tm.EOS_ID)


@pytest.mark.parametrize("model_type", ALL_TYPES)
@pytest.mark.parametrize("head", ["base", "lm"])
def test_forward_is_finite(model_type: str, head: str) -> None:
    model = _model(model_type, LM_HEADS[model_type] if head == "lm" else "base")
    assert not model.training
    assert all(p.dtype == torch.float32 for p in model.parameters())
    inputs = _inputs(model_type)
    out = _forward(model, inputs)
    n = (inputs["decoder_input_ids"] if "decoder_input_ids" in inputs else inputs["input_ids"]).shape[1]
    width = tm.VOCAB_SIZE if head == "lm" else model.config.hidden_size
    assert out.shape == (1, n, width)
    assert torch.isfinite(out).all()
    assert out.std() > 0.1


@pytest.mark.parametrize("model_type", ALL_TYPES)
def test_norms_and_biases_are_nontrivial(model_type: str) -> None:
    model = _model(model_type, LM_HEADS[model_type])
    norms = _norms(model)
    assert norms, "no normalization module found"
    for name, norm in norms:
        weight = norm.weight
        assert weight.ndim == 1 and weight.std() > 0.05, name
        bias = getattr(norm, "bias", None)
        if bias is not None:
            assert bias.std() > 0.05, name
        # The effective scale is ~1 both for ``w * x`` norms and for Gemma's ``(1 + w) * x`` norms: check that the
        # class-name rule used by the factory matches what the module actually computes.
        probe = copy.deepcopy(norm)
        with torch.no_grad():
            probe.weight.zero_()
            if getattr(probe, "bias", None) is not None:
                probe.bias.zero_()
            x = torch.randn(3, weight.numel(), generator=torch.Generator().manual_seed(0))
            one_plus_weight = bool(probe(x).abs().max() > 0)
        expected_mean = 0.0 if one_plus_weight else 1.0
        assert ("Gemma" in type(norm).__name__) == one_plus_weight, name
        assert abs(weight.mean().item() - expected_mean) < 0.2, name
    biases = [m.bias for m in model.modules() if isinstance(m, torch.nn.Linear | Conv1D) and m.bias is not None]
    assert all(b.std() > 0.05 for b in biases)


def test_qwen2_has_qkv_biases_only() -> None:
    attention = _model("qwen2").layers[0].self_attn
    assert all(getattr(attention, f"{p}_proj").bias is not None for p in "qkv")
    assert attention.o_proj.bias is None


@pytest.mark.parametrize("model_type", ALL_TYPES)
def test_attention_is_clearly_non_uniform_and_default_matches_eager(model_type: str) -> None:
    model = _model(model_type)
    eager = tm.HEAD_CLASSES["base"].from_config(tm.TINY_CONFIGS[model_type](), attn_implementation="eager")
    eager.load_state_dict(model.state_dict())
    eager.eval()
    inputs = _inputs(model_type, "the cat sat on the mat . either you win the game or you")
    with torch.no_grad():
        out = eager(**inputs, output_attentions=True)
    attentions = out.encoder_attentions if model_type in tm.SEQ2SEQ_TYPES else out.attentions
    probs = torch.stack(attentions)  # [layers, batch, heads, n, n]
    assert probs.shape[0] == 2
    mean_max = probs[..., 2:, :].max(-1).values.mean().item()  # skip the first rows of causal models (trivially 1)
    assert 0.25 < mean_max < 0.95
    torch.testing.assert_close(out[0], _forward(model, inputs), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("model_type", ALL_TYPES)
def test_save_and_load_give_identical_outputs(model_type: str, tmp_path: pathlib.Path) -> None:
    head = tm.DEFAULT_HEADS[model_type]
    path = tm.save_tiny(model_type, tmp_path / model_type)
    assert path == tmp_path / model_type
    loaded = tm.HEAD_CLASSES[head].from_pretrained(path).eval()
    inputs = _inputs(model_type)
    tokenizers = [tm.load_tokenizer(path)]
    if model_type not in tm.AUTO_TOKENIZER_UNFAITHFUL:
        tokenizers.append(AutoTokenizer.from_pretrained(path))
    for tokenizer in tokenizers:
        assert tokenizer(TEXT, return_tensors="pt").input_ids.tolist() == inputs["input_ids"].tolist()
    assert torch.equal(_forward(loaded, inputs), _forward(_model(model_type, head), inputs))
    if model_type not in tm.ENCODER_TYPES:
        gen = loaded.generation_config
        assert (gen.bos_token_id, gen.eos_token_id, gen.pad_token_id) == (tm.BOS_ID, tm.EOS_ID, tm.PAD_ID)
    if model_type in tm.SEQ2SEQ_TYPES:
        assert loaded.generation_config.decoder_start_token_id == loaded.config.decoder_start_token_id


def test_tokenizer_round_trip(tmp_path: pathlib.Path) -> None:
    tokenizer = tm.build_tokenizer(tmp_path)
    reloaded = AutoTokenizer.from_pretrained(tmp_path)
    for tok in (tokenizer, reloaded):
        ids = tok(TEXT).input_ids
        assert tm.UNK_ID not in ids
        assert tok.convert_ids_to_tokens(ids) == TEXT.split()
        assert tok.decode(ids) == TEXT
        assert tok("Either YOU win the game, or you!").input_ids == [*ids[:5], tm.VOCAB[","], *ids[5:], tm.VOCAB["!"]]
        assert (tok.pad_token_id, tok.unk_token_id, tok.bos_token_id, tok.eos_token_id) == (0, 1, 2, 3)
        assert len(tok) == tm.VOCAB_SIZE and tok.model_max_length == 64
        assert tok.get_vocab() == tm.VOCAB
        assert tok("zebra").input_ids == [tm.UNK_ID]


def test_tokenizer_templates() -> None:
    words = tm.build_tokenizer(None)(TEXT).input_ids
    assert tm.build_tokenizer(None, template="bos_eos")(TEXT).input_ids == [tm.BOS_ID, *words, tm.EOS_ID]
    assert tm.build_tokenizer(None, template="eos")(TEXT).input_ids == [*words, tm.EOS_ID]
    assert tm.build_tokenizer(None, template="bos")(TEXT).input_ids == [tm.BOS_ID, *words]


def test_seed_controls_weights() -> None:
    same = tm.build_tiny_model("llama", seed=0)
    other = tm.build_tiny_model("llama", seed=1)
    reference = _model("llama")
    inputs = _inputs("llama")
    assert torch.equal(_forward(same, inputs), _forward(reference, inputs))
    assert not torch.allclose(_forward(other, inputs), _forward(reference, inputs))


def test_unknown_names_raise() -> None:
    with pytest.raises(KeyError):
        tm.build_tiny_model("not-a-model")
    with pytest.raises(KeyError):
        tm.build_tiny_model("bert", head="token_classification")
