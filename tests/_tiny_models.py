"""Tiny, deterministic, offline Transformer models and a word-level tokenizer for tests.

Everything is built from configs (no Hugging Face Hub access) and works with transformers 4.57 and 5.x.

Skipped model types: none. Every requested type (bert, roberta, distilbert, gpt2, llama, mistral, qwen2, bart,
marian, m2m_100, mbart, t5, gpt_neox, gptj, opt, falcon, phi, phi3, gemma, gemma2, gemma3_text, qwen3, olmo2,
stablelm, bloom, codegen, xglm, electra, deberta-v2) builds, runs a forward pass (base and LM head) and round-trips
through ``save_pretrained`` in both transformers 4.57.6 and 5.23.0.

Version notes (4.57 vs 5.x) handled here:

* RoPE arguments differ (``rope_theta``/``rope_scaling``/``rotary_pct``/``partial_rotary_factor`` in 4.57 versus a
  single ``rope_parameters`` dict in 5.x), so no RoPE argument is passed: every model uses its default RoPE.
* ``gemma2``: 5.x never uses sdpa for Gemma2 (sdpa cannot soft-cap logits) while 4.57 defaults to sdpa and silently
  drops ``attn_logit_softcapping``. It is set to ``None`` so both versions compute the same function.
* The 4.57 fast tokenizer returns ``token_type_ids`` by default and 5.x does not; ``model_input_names`` is fixed to
  ``["input_ids", "attention_mask"]`` so both return the same keys (and decoder-only models accept them).
* 5.x saves tokenizers as ``TokenizersBackend``, a class 4.57 does not know: :func:`build_tokenizer` writes
  ``"tokenizer_class": "PreTrainedTokenizerFast"`` so a saved folder loads in either version.
* 5.x ``AutoTokenizer`` ignores ``tokenizer_class`` for a few model types and rebuilds their tokenizer from the
  vocabulary with a hard-wired pipeline. Of the types here only ``qwen2`` is affected (it becomes a byte-level BPE
  ``Qwen2Tokenizer`` that mis-tokenizes): see :data:`AUTO_TOKENIZER_UNFAITHFUL`. :func:`load_tokenizer` loads any
  saved folder faithfully in both versions.
* Module registration order differs between versions (e.g. RoBERTa embeddings, the ``embed_out``/``lm_head`` rename
  of GPT-NeoX, tied-embedding aliases of Marian/T5), so the random draws follow a version-independent order: a given
  ``(model_type, head, seed)`` yields bit-identical weights in 4.57 and 5.x.

Token ids (shared by every model): ``<pad>``=0, ``<unk>``=1, ``<s>``=2 (bos), ``</s>``=3 (eos), ``<mask>``=4, then
the words of ``WORDS`` in order (ids 5...). Encoder-decoder conventions: bart/mbart/m2m_100 start decoding with
``</s>`` (as the public checkpoints do), marian and t5 with ``<pad>``.
"""

from __future__ import annotations

import json
import pathlib
from collections.abc import Callable
from typing import Any

import torch
import transformers
from tokenizers import Tokenizer, normalizers, pre_tokenizers, processors
from tokenizers.models import WordLevel
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForMaskedLM,
    AutoModelForSeq2SeqLM,
    AutoModelForSequenceClassification,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerFast,
)
from transformers.pytorch_utils import Conv1D

__all__ = [
    "AUTO_TOKENIZER_UNFAITHFUL",
    "BOS_ID",
    "CAUSAL_TYPES",
    "DEFAULT_HEADS",
    "DEFAULT_TEMPLATES",
    "ENCODER_TYPES",
    "EOS_ID",
    "HEAD_CLASSES",
    "MASK_ID",
    "MAX_LEN",
    "PAD_ID",
    "SEQ2SEQ_TYPES",
    "SPECIAL_TOKENS",
    "TINY_CONFIGS",
    "UNK_ID",
    "VOCAB",
    "VOCAB_SIZE",
    "WORDS",
    "build_tiny_model",
    "build_tokenizer",
    "load_tokenizer",
    "save_tiny",
]

# --------------------------------------------------------------------------------------------------------------------
# Vocabulary (fixed: changing it changes every model's weights)
# --------------------------------------------------------------------------------------------------------------------

SPECIAL_TOKENS: tuple[str, ...] = ("<pad>", "<unk>", "<s>", "</s>", "<mask>")
PAD_ID, UNK_ID, BOS_ID, EOS_ID, MASK_ID = range(len(SPECIAL_TOKENS))

WORDS: tuple[str, ...] = (
    # function words
    "the", "a", "an", "and", "or", "but", "not", "is", "was", "are", "be", "to", "of", "in", "on", "at", "for",
    "with", "by", "from", "it", "that", "this", "he", "she", "they", "we", "i", "you", "my", "your", "either",
    # content words
    "cat", "dog", "man", "woman", "game", "win", "lose", "play", "sat", "ran", "see", "mat", "house", "book",
    "boy", "girl", "red", "big", "small", "good", "new", "day", "time", "very",
    # punctuation
    ".", ",", "?", "!",
)  # fmt: skip

VOCAB: dict[str, int] = {tok: i for i, tok in enumerate((*SPECIAL_TOKENS, *WORDS))}
VOCAB_SIZE: int = len(VOCAB)
MAX_LEN: int = 64

#: Standard deviation of the re-initialised Linear/Conv1D/Embedding weights. As large as the reference tiny BERT's
#: ``initializer_range`` (tests/data/reference) so that attention is clearly non-uniform, while activations stay O(1).
WEIGHT_STD: float = 0.3
#: Norm weights are ``1 + NORM_WEIGHT_STD * N(0, 1)`` (``NORM_WEIGHT_STD * N(0, 1)`` for Gemma's ``(1 + w)`` norms).
NORM_WEIGHT_STD: float = 0.2
#: Linear/Conv1D biases and norm biases are ``BIAS_STD * N(0, 1)``.
BIAS_STD: float = 0.1

# --------------------------------------------------------------------------------------------------------------------
# Configs
# --------------------------------------------------------------------------------------------------------------------

_IDS: dict[str, int] = {"pad_token_id": PAD_ID, "bos_token_id": BOS_ID, "eos_token_id": EOS_ID}
# Shared sizes for the "llama-like" family: hidden 32, 4 query heads of dim 8, 2 key/value heads.
_DEC: dict[str, Any] = {
    "vocab_size": VOCAB_SIZE,
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "max_position_embeddings": MAX_LEN,
    **_IDS,
}
_GQA: dict[str, Any] = {**_DEC, "num_key_value_heads": 2}
# Shared sizes for BART-like encoder-decoders.
_S2S: dict[str, Any] = {
    "vocab_size": VOCAB_SIZE,
    "d_model": 32,
    "encoder_layers": 2,
    "decoder_layers": 2,
    "encoder_attention_heads": 4,
    "decoder_attention_heads": 4,
    "encoder_ffn_dim": 64,
    "decoder_ffn_dim": 64,
    "max_position_embeddings": MAX_LEN,
    **_IDS,
}
_BERT: dict[str, Any] = {
    "vocab_size": VOCAB_SIZE,
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "intermediate_size": 64,
    "max_position_embeddings": MAX_LEN,
    **_IDS,
}


def _finalize(config: PretrainedConfig) -> PretrainedConfig:
    """Set every float dropout-like probability (``*dropout*``, ``*pdrop*``, ``*layerdrop*``) of ``config`` to 0.

    ``initializer_range``/``init_std`` are set to :data:`WEIGHT_STD`, the std :func:`build_tiny_model` uses, so
    weights a later ``from_pretrained`` has to initialise (e.g. a new head) get the same scale.
    """
    for key, value in config.to_dict().items():
        if isinstance(value, float) and any(s in key for s in ("dropout", "pdrop", "layerdrop")):
            setattr(config, key, 0.0)
        elif key in ("initializer_range", "init_std"):
            setattr(config, key, WEIGHT_STD)
    return config


def _factory(model_type: str, **kwargs: Any) -> Callable[[], PretrainedConfig]:
    """Return a zero-argument callable building a fresh ``model_type`` config (see :func:`_finalize`)."""

    def make() -> PretrainedConfig:
        return _finalize(AutoConfig.for_model(model_type, **kwargs))

    make.__name__ = f"tiny_{model_type.replace('-', '_')}_config"
    make.__doc__ = f"Tiny ``{model_type}`` config."
    return make


TINY_CONFIGS: dict[str, Callable[[], PretrainedConfig]] = {
    # ---- encoders ----
    "bert": _factory("bert", **_BERT),
    # RoBERTa positions start at pad_token_id + 1, hence 2 extra rows (like roberta-base's 514).
    "roberta": _factory("roberta", **{**_BERT, "max_position_embeddings": MAX_LEN + 2}),
    "distilbert": _factory(
        "distilbert", vocab_size=VOCAB_SIZE, dim=32, n_layers=2, n_heads=4, hidden_dim=64,
        max_position_embeddings=MAX_LEN, **_IDS,
    ),
    # ELECTRA with a smaller embedding size than hidden size (exercises embeddings_project), like electra-small.
    "electra": _factory("electra", **_BERT, embedding_size=16),
    # DeBERTa-v3 style: disentangled relative attention, no absolute positions, no token types.
    "deberta-v2": _factory(
        "deberta-v2", **_BERT, type_vocab_size=0, relative_attention=True,
        position_biased_input=False, pos_att_type=["p2c", "c2p"], max_relative_positions=-1, position_buckets=16,
        norm_rel_ebd="layer_norm", share_att_key=True,
    ),
    # ---- decoder-only ----
    "gpt2": _factory(
        "gpt2", vocab_size=VOCAB_SIZE, n_embd=32, n_layer=2, n_head=4, n_inner=64, n_positions=MAX_LEN, **_IDS,
    ),
    "llama": _factory("llama", **_GQA),
    "mistral": _factory("mistral", **_GQA),
    "qwen2": _factory("qwen2", **_GQA),  # q/k/v projections have biases in Qwen2 (hard-wired, no config flag)
    "qwen3": _factory("qwen3", **_GQA, head_dim=8),
    "olmo2": _factory("olmo2", **_GQA),
    "gemma": _factory("gemma", **_GQA, head_dim=8),
    "gemma2": _factory("gemma2", **_GQA, head_dim=8, query_pre_attn_scalar=8, attn_logit_softcapping=None),
    "gemma3_text": _factory("gemma3_text", **_GQA, head_dim=8, query_pre_attn_scalar=8),
    "phi": _factory("phi", **_DEC),
    "phi3": _factory("phi3", **_GQA, original_max_position_embeddings=MAX_LEN),
    "stablelm": _factory("stablelm", **_GQA, use_qkv_bias=True),
    "gpt_neox": _factory("gpt_neox", **_DEC),
    "gptj": _factory(
        "gptj", vocab_size=VOCAB_SIZE, n_embd=32, n_layer=2, n_head=4, n_inner=64, rotary_dim=4, n_positions=MAX_LEN,
        **_IDS,
    ),
    "codegen": _factory(
        "codegen", vocab_size=VOCAB_SIZE, n_embd=32, n_layer=2, n_head=4, n_inner=64, rotary_dim=4,
        n_positions=MAX_LEN, n_ctx=MAX_LEN, **_IDS,
    ),
    "opt": _factory(
        "opt", vocab_size=VOCAB_SIZE, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, ffn_dim=64,
        word_embed_proj_dim=32, max_position_embeddings=MAX_LEN, **_IDS,
    ),
    # Falcon-7B style: multi-query attention, parallel attention/MLP.
    "falcon": _factory(
        "falcon", vocab_size=VOCAB_SIZE, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, ffn_hidden_size=64,
        max_position_embeddings=MAX_LEN, **_IDS,
    ),
    "bloom": _factory("bloom", vocab_size=VOCAB_SIZE, hidden_size=32, n_layer=2, n_head=4, **_IDS),  # MLP is 4x hidden
    "xglm": _factory(
        "xglm", vocab_size=VOCAB_SIZE, d_model=32, num_layers=2, attention_heads=4, ffn_dim=64,
        max_position_embeddings=MAX_LEN, decoder_start_token_id=EOS_ID, **_IDS,
    ),
    # ---- encoder-decoder ----
    # Embedding scaling (sqrt(d_model)) and decoder start ids as in the public checkpoints of each family.
    "bart": _factory("bart", **_S2S, decoder_start_token_id=EOS_ID, forced_eos_token_id=EOS_ID),
    "mbart": _factory(
        "mbart", **_S2S, scale_embedding=True, decoder_start_token_id=EOS_ID, forced_eos_token_id=EOS_ID,
    ),
    "marian": _factory(
        "marian", **_S2S, scale_embedding=True, decoder_start_token_id=PAD_ID, forced_eos_token_id=EOS_ID,
    ),
    "m2m_100": _factory("m2m_100", **_S2S, scale_embedding=True, decoder_start_token_id=EOS_ID),
    "t5": _factory(
        "t5", vocab_size=VOCAB_SIZE, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_decoder_layers=2, num_heads=4,
        relative_attention_num_buckets=8, relative_attention_max_distance=MAX_LEN, decoder_start_token_id=PAD_ID,
        **_IDS,
    ),
}  # fmt: skip

_KINDS: dict[str, tuple[str, ...]] = {
    "encoder": ("bert", "roberta", "distilbert", "electra", "deberta-v2"),
    "causal": (
        "gpt2", "llama", "mistral", "qwen2", "qwen3", "olmo2", "gemma", "gemma2", "gemma3_text", "phi", "phi3",
        "stablelm", "gpt_neox", "gptj", "codegen", "opt", "falcon", "bloom", "xglm",
    ),
    "seq2seq": ("bart", "mbart", "marian", "m2m_100", "t5"),
}  # fmt: skip

ENCODER_TYPES: tuple[str, ...] = tuple(t for t in _KINDS["encoder"] if t in TINY_CONFIGS)
CAUSAL_TYPES: tuple[str, ...] = tuple(t for t in _KINDS["causal"] if t in TINY_CONFIGS)
SEQ2SEQ_TYPES: tuple[str, ...] = tuple(t for t in _KINDS["seq2seq"] if t in TINY_CONFIGS)

HEAD_CLASSES: dict[str, type] = {
    "base": AutoModel,
    "causal_lm": AutoModelForCausalLM,
    "seq2seq_lm": AutoModelForSeq2SeqLM,
    "masked_lm": AutoModelForMaskedLM,
    "sequence_classification": AutoModelForSequenceClassification,  # num_labels = 3 (set by build_tiny_model)
}
#: Head used by :func:`save_tiny` when none is given. Encoders are saved bare, like the reference ``BertModel``.
DEFAULT_HEADS: dict[str, str] = {
    **dict.fromkeys(ENCODER_TYPES, "base"),
    **dict.fromkeys(CAUSAL_TYPES, "causal_lm"),
    **dict.fromkeys(SEQ2SEQ_TYPES, "seq2seq_lm"),
}

# --------------------------------------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------------------------------------


def _normal_(param: torch.Tensor, std: float, generator: torch.Generator, mean: float = 0.0) -> None:
    """Fill ``param`` in place with ``mean + std * N(0, 1)`` drawn from ``generator`` (on CPU, then copied)."""
    param.copy_(mean + std * torch.randn(param.shape, generator=generator, dtype=torch.float32))


def _is_norm(module: torch.nn.Module) -> bool:
    """Whether ``module`` is LayerNorm/RMSNorm-like: its class name contains "Norm" and it owns a 1-D weight."""
    weight = getattr(module, "weight", None)
    return "Norm" in type(module).__name__ and isinstance(weight, torch.nn.Parameter) and weight.ndim == 1


def _randomize(model: PreTrainedModel, generator: torch.Generator) -> None:
    """Re-draw projection/embedding weights, biases and normalization parameters of ``model`` from ``generator``.

    The draw order does not depend on the order in which a transformers version registers submodules, nor on which
    aliases of a tied embedding it exposes: first projections and norms in sorted name order, then the learned
    embedding tables (ordered by their lexicographically largest alias), then the output projection. A parameter
    shared by several modules is drawn once. Fixed sinusoidal tables are kept.
    """
    seen: set[int] = set()

    def draw(param: Any, std: float, mean: float = 0.0) -> None:
        if isinstance(param, torch.nn.Parameter) and id(param) not in seen:
            seen.add(id(param))
            _normal_(param, std, generator, mean=mean)

    modules = sorted(model.named_modules(), key=lambda item: item[0])
    output = model.get_output_embeddings()
    embeddings = [
        (name, m)
        for name, m in modules
        if isinstance(m, torch.nn.Embedding) and "Sinusoidal" not in type(m).__name__ and m.weight.requires_grad
    ]
    seen.update(id(m.weight) for _, m in embeddings)  # drawn in the second pass
    for _, module in modules:
        if isinstance(module, torch.nn.Linear | Conv1D) and module is not output:
            draw(module.weight, WEIGHT_STD)
            draw(module.bias, BIAS_STD)
        elif _is_norm(module):
            # Gemma-style RMSNorms scale by (1 + weight): keep the effective scale near 1.
            draw(module.weight, NORM_WEIGHT_STD, mean=0.0 if "Gemma" in type(module).__name__ else 1.0)
            draw(getattr(module, "bias", None), BIAS_STD)
    aliases: dict[int, tuple[str, torch.nn.Parameter]] = {}
    for name, module in embeddings:
        key = id(module.weight)
        aliases[key] = (max(name, aliases.get(key, ("", None))[0]), module.weight)
    seen.difference_update(aliases)
    for _, weight in sorted(aliases.values(), key=lambda item: item[0]):
        draw(weight, WEIGHT_STD)
    if isinstance(output, torch.nn.Linear | Conv1D):
        draw(output.weight, WEIGHT_STD)
        draw(output.bias, BIAS_STD)
    for _, module in embeddings:  # padding rows stay zero, as after the models' own initialisation
        if module.padding_idx is not None:
            module.weight[module.padding_idx].zero_()


def _set_generation_ids(model: PreTrainedModel) -> None:
    """Make the generation config agree with the tokenizer's special token ids.

    ``forced_eos_token_id`` is moved from the model config to the generation config (where transformers 4.57 would
    move it on ``save_pretrained``, with a warning).
    """
    gen = getattr(model, "generation_config", None)
    forced_eos = getattr(model.config, "forced_eos_token_id", None)
    if forced_eos is not None:
        model.config.forced_eos_token_id = None
    if gen is None:
        return
    gen.pad_token_id, gen.bos_token_id, gen.eos_token_id = PAD_ID, BOS_ID, EOS_ID
    if model.config.is_encoder_decoder:
        gen.decoder_start_token_id = model.config.decoder_start_token_id
        gen.forced_eos_token_id = forced_eos


def build_tiny_model(model_type: str, *, seed: int = 0, head: str = "base", **config_overrides: Any) -> PreTrainedModel:
    """Build the tiny ``model_type`` model with ``head`` in eval mode, float32, with non-trivial norms and biases.

    ``torch.manual_seed(seed)`` is set before construction; every Linear/Conv1D/Embedding weight, every existing
    Linear/Conv1D bias and every normalization weight/bias is then re-drawn from a generator seeded ``1000 + seed``.
    ``config_overrides`` set config attributes first (layout variants such as ``use_parallel_residual``).
    """
    if model_type not in TINY_CONFIGS:
        raise KeyError(f"unknown tiny model type {model_type!r}; known: {sorted(TINY_CONFIGS)}")
    if head not in HEAD_CLASSES:
        raise KeyError(f"unknown head {head!r}; known: {sorted(HEAD_CLASSES)}")
    config = TINY_CONFIGS[model_type]()
    if head == "sequence_classification":
        config.num_labels = 3
    for name, value in config_overrides.items():
        setattr(config, name, value)
    torch.manual_seed(seed)
    model = HEAD_CLASSES[head].from_config(config)
    generator = torch.Generator().manual_seed(1000 + seed)
    with torch.no_grad():
        _randomize(model, generator)
    _set_generation_ids(model)
    return model.float().eval()


# --------------------------------------------------------------------------------------------------------------------
# Tokenizer and saving
# --------------------------------------------------------------------------------------------------------------------

#: Model types whose saved folder ``AutoTokenizer.from_pretrained`` does not load faithfully in this transformers
#: version (it substitutes a model-specific tokenizer class); use :func:`load_tokenizer` for these.
AUTO_TOKENIZER_UNFAITHFUL: frozenset[str] = frozenset(
    {"qwen2"} if int(transformers.__version__.split(".")[0]) >= 5 else set()
)

_TEMPLATES: dict[str, tuple[str, str]] = {
    "none": ("$A", "$A $B"),
    "bos": ("<s> $A", "<s> $A <s> $B"),
    "eos": ("$A </s>", "$A </s> $B </s>"),
    "bos_eos": ("<s> $A </s>", "<s> $A </s> $B </s>"),
}
#: Special tokens :func:`save_tiny` makes the tokenizer add, by model kind (``<s> … </s>`` like ``[CLS] … [SEP]``).
DEFAULT_TEMPLATES: dict[str, str] = {
    **dict.fromkeys(ENCODER_TYPES, "bos_eos"),
    **dict.fromkeys(CAUSAL_TYPES, "none"),
    **dict.fromkeys(SEQ2SEQ_TYPES, "eos"),
}


def build_tokenizer(save_dir: str | pathlib.Path | None, *, template: str = "none") -> PreTrainedTokenizerFast:
    """Build the fixed word-level tokenizer (lower-cases, splits on whitespace and punctuation) and save it.

    ``template`` chooses which special tokens encoding adds: ``"none"`` (default), ``"bos"``, ``"eos"`` or
    ``"bos_eos"``. Nothing is saved when ``save_dir`` is ``None``.
    """
    single, pair = _TEMPLATES[template]
    backend = Tokenizer(WordLevel(vocab=dict(VOCAB), unk_token="<unk>"))
    backend.normalizer = normalizers.Lowercase()
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.post_processor = processors.TemplateProcessing(
        single=single, pair=pair, special_tokens=[("<s>", BOS_ID), ("</s>", EOS_ID)]
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token="<pad>",
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="</s>",
        mask_token="<mask>",
        model_max_length=MAX_LEN,
        model_input_names=["input_ids", "attention_mask"],
    )
    if save_dir is not None:
        tokenizer.save_pretrained(str(save_dir))
        _portable_tokenizer_config(pathlib.Path(save_dir))
    return tokenizer


def load_tokenizer(save_dir: str | pathlib.Path) -> PreTrainedTokenizerFast:
    """Load a tokenizer saved by :func:`build_tokenizer`/:func:`save_tiny` exactly as saved, in any version."""
    return PreTrainedTokenizerFast.from_pretrained(str(save_dir))


def save_tiny(
    model_type: str,
    save_dir: str | pathlib.Path,
    *,
    seed: int = 0,
    head: str | None = None,
    template: str | None = None,
) -> pathlib.Path:
    """Build the tiny model and tokenizer and ``save_pretrained`` both into ``save_dir``; return its path.

    ``head`` defaults to :data:`DEFAULT_HEADS` (``base`` for encoders, ``causal_lm``, ``seq2seq_lm``) and
    ``template`` to :data:`DEFAULT_TEMPLATES`.
    """
    path = pathlib.Path(save_dir)
    path.mkdir(parents=True, exist_ok=True)
    model = build_tiny_model(model_type, seed=seed, head=head or DEFAULT_HEADS[model_type])
    model.save_pretrained(str(path))
    build_tokenizer(path, template=template or DEFAULT_TEMPLATES[model_type])
    return path


def _portable_tokenizer_config(path: pathlib.Path) -> None:
    """Name the generic fast tokenizer class so that the folder also loads with the other transformers version."""
    cfg_file = path / "tokenizer_config.json"
    cfg = json.loads(cfg_file.read_text())
    cfg["tokenizer_class"] = "PreTrainedTokenizerFast"
    cfg["model_input_names"] = ["input_ids", "attention_mask"]
    cfg_file.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
