"""Every context-mixing measure as an inseq attribution method, generated from one table.

One forward pass per batch: the matrices of prompt + generated text are computed once (rows of a causal model do
not depend on later tokens), and each generation step's row is sliced from them, following inseq's ``attention``
convention: the step that predicts token ``t`` reads the row of position ``t − 1`` over keys ``< t``.

``attribute_target`` also means what it means for inseq's ``attention``: on encoder-decoders a step holds only the
source attributions unless ``attribute_target=True`` (then the target prefix's too; the values do not depend on it);
decoder-only models always get their prompt + generated tokens as targets (inseq ignores the option there).
Encoder-only models are refused when the method is loaded, since inseq only attributes generated text.
"""

from __future__ import annotations

from typing import Any

import torch
from inseq.attr.feat import FeatureAttribution
from inseq.attr.feat import ValueZeroingAttribution as InseqValueZeroingAttribution
from inseq.utils import Registry
from torch import Tensor

from ..encoder_decoder import EncoderDecoderMixing
from ..errors import UnsupportedArchitectureError
from ..extract import EncoderDecoderAdapter, get_adapter
from ..measures import DEFAULT_MEMORY_BUDGET, MEASURES
from ..mixing import context_mixing
from .outputs import MixingStepOutput

ROLLED_OUT_BY_DEFAULT = frozenset(name for name, m in MEASURES.items() if m.aggregation != "layers")
"""Methods whose inseq scores are the rollout through each layer unless ``rollout=False`` is passed (the measure
table's ``aggregation``)."""

INSEQ_METHODS: tuple[str, ...] = tuple(name for name, m in MEASURES.items() if m.inseq and not m.explains)
"""Method names registered with inseq, from the measure table (``attention`` is inseq's own; ours is
``attention_rollout``).

``value_zeroing`` deliberately takes over inseq's name (inseq 0.7.1's own implementation fails on GPT-2, Llama and
transformers 5); inseq's class stays available as ``value_zeroing_inseq``."""

InseqValueZeroingAttribution.method_name = "value_zeroing_inseq"  # one class per name, so lookups are deterministic


class ContextMixing:
    """Computes the full-sequence matrices of one method; its ``attribute`` signature lists the user options."""

    def __init__(self, method: str, attribution_model: Any) -> None:
        self.method = method
        self.attribution_model = attribution_model

    def attribute(
        self,
        input_ids: Tensor,
        attention_mask: Tensor,
        decoder_input_ids: Tensor | None = None,
        decoder_attention_mask: Tensor | None = None,
        rollout: bool | None = None,
        normalize: bool = True,
        memory_budget: int = DEFAULT_MEMORY_BUDGET,
    ) -> Tensor | EncoderDecoderMixing:
        """The matrices of the whole sequences (see :func:`inseq_mixing.context_mixing`).

        Args:
            input_ids: Token ids of prompt + generated text (the source for encoder-decoders).
            attention_mask: 1 for tokens, 0 for padding.
            decoder_input_ids: Encoder-decoders: the whole target (decoder start token first).
            decoder_attention_mask: Its padding mask.
            rollout: Rolled-out (True) or layer-wise (False) scores; ``None`` uses the method's default (rollout for
                ``attention_rollout``, ``globenc`` and ``alti``).
            normalize: Row-normalize each layer (the reference implementations' convention).
            memory_budget: Bytes a measure may use for per-chunk intermediates.
        """
        return self.compute(
            input_ids, attention_mask, decoder_input_ids, decoder_attention_mask, rollout=rollout,
            normalize=normalize, memory_budget=memory_budget,
        )  # fmt: skip

    def compute(
        self,
        input_ids: Tensor,
        attention_mask: Tensor,
        decoder_input_ids: Tensor | None,
        decoder_attention_mask: Tensor | None,
        *,
        rollout: bool | None,
        **options: Any,
    ) -> Tensor | EncoderDecoderMixing:
        return context_mixing(
            self.attribution_model.model,
            input_ids,
            self.method,
            attention_mask=attention_mask,
            decoder_input_ids=decoder_input_ids,
            decoder_attention_mask=decoder_attention_mask,
            rollout=self.rolls_out(rollout),
            **options,
        )

    def rolls_out(self, rollout: bool | None) -> bool:
        """Whether the scores are rolled out, given the user's ``rollout`` option."""
        if MEASURES[self.method].aggregation == "rollout_only":
            return True
        return self.method in ROLLED_OUT_BY_DEFAULT if rollout is None else bool(rollout)


class ValueZeroingMixing(ContextMixing):
    """Value zeroing with inseq 0.7.1's keyword arguments and defaults, computed with the exact shortcut."""

    def attribute(
        self,
        input_ids: Tensor,
        attention_mask: Tensor,
        decoder_input_ids: Tensor | None = None,
        decoder_attention_mask: Tensor | None = None,
        similarity_metric: str = "cosine",
        decoder_zeroed_units_indices: Any = None,
        encoder_zeroed_units_indices: Any = None,
        cross_zeroed_units_indices: Any = None,
        output_decoder_self_scores: bool = True,
        output_encoder_self_scores: bool = True,
        zero_below: float = 1e-5,
        final_norm_on_last_layer: bool = True,
        rollout: bool | None = None,
        normalize: bool = True,
        memory_budget: int = DEFAULT_MEMORY_BUDGET,
    ) -> Tensor | EncoderDecoderMixing:
        """Value zeroing scores of the whole sequences, layer-wise unless ``rollout=True``.

        Args:
            input_ids: Token ids of prompt + generated text (the source for encoder-decoders).
            attention_mask: 1 for tokens, 0 for padding.
            decoder_input_ids: Encoder-decoders: the whole target.
            decoder_attention_mask: Its padding mask.
            similarity_metric: ``"cosine"`` (``1 − cos``) or ``"euclidean"`` (the distance itself).
            decoder_zeroed_units_indices: Heads whose values are zeroed in the (decoder) self-attention (``None``:
                all; an int, a ``(start, end)`` range, a list, or ``{layer: heads}`` where unnamed layers are not
                zeroed), as in inseq.
            encoder_zeroed_units_indices: The same for the encoder of encoder-decoder models.
            cross_zeroed_units_indices: The same for the cross-attention of encoder-decoder models.
            output_decoder_self_scores: Accepted for inseq compatibility; decoder self scores are always returned.
            output_encoder_self_scores: Accepted for inseq compatibility; encoder scores are always returned.
            zero_below: Raw scores below this are set to 0 before normalizing (inseq's 1e-5 by default; 0 gives the
                paper's definition).
            final_norm_on_last_layer: Compare the last layer's outputs after the model's final norm, as inseq does
                (``False`` gives the paper's definition).
            rollout: Roll the layer-wise scores out across layers.
            normalize: Row-normalize each layer.
            memory_budget: Bytes a chunk may use.
        """
        heads: Any = decoder_zeroed_units_indices
        if self.attribution_model.is_encoder_decoder:
            heads = {
                "encoder": encoder_zeroed_units_indices,
                "decoder": decoder_zeroed_units_indices,
                "cross": cross_zeroed_units_indices,
            }
        return self.compute(
            input_ids,
            attention_mask,
            decoder_input_ids,
            decoder_attention_mask,
            rollout=rollout,
            normalize=normalize,
            memory_budget=memory_budget,
            similarity=similarity_metric,
            heads=heads,
            zero_below=zero_below,
            final_norm_on_last_layer=final_norm_on_last_layer,
        )


class ContextMixingAttribution(FeatureAttribution, Registry):
    """Base of the context-mixing methods (not listed by inseq itself: it names no method)."""

    method_name: str

    def __init__(self, attribution_model: Any, **kwargs: Any) -> None:
        """Set the method up for an inseq model (inseq calls this from ``load_model`` or ``attribute(method=...)``).

        Raises:
            UnsupportedArchitectureError: If the model is encoder-only (inseq attributes generated tokens; use
                :func:`inseq_mixing.context_mixing` instead), or its architecture has no adapter.
        """
        _require_generation_model(attribution_model.model, self.method_name)
        # inseq's default input flags are kept, as by its ``attention`` method: ``attribute_batch_ids=True`` with
        # ``forward_batch_embeds=False`` would mark a layer method, for which inseq refuses ``attribute_target=True``.
        super().__init__(attribution_model, hook_to_model=False)
        self.use_predicted_target = False  # the scores do not depend on the attributed output
        self.method = OPTIONS_CLASSES.get(self.method_name, ContextMixing)(self.method_name, attribution_model)
        self._pending: dict[str, Any] | None = None

    def attribute(self, batch: Any, attributed_fn: Any, *args: Any, **kwargs: Any) -> Any:
        """Compute the whole batch in one forward pass, then let inseq iterate over the generation steps."""
        options = dict(kwargs.get("attribution_args") or {})
        rolled_out = self.method.rolls_out(options.get("rollout"))
        if self.attribution_model.is_encoder_decoder:
            source, target = batch.sources, batch.targets
            mixing = self.method.attribute(
                source.input_ids, source.attention_mask, target.input_ids, target.attention_mask, **options
            )
            n_source = source.input_ids.shape[1]
            if rolled_out and mixing.combined is None:
                raise ValueError(f"'{self.method_name}' has no combined encoder-decoder rollout; pass rollout=False.")
            if rolled_out:
                per_source, per_target = mixing.combined[..., :n_source], mixing.combined[..., n_source:]
            else:
                per_source, per_target = mixing.cross[..., :n_source], mixing.decoder
            encoder = mixing.encoder
            target_mask, source_mask = target.attention_mask, source.attention_mask
        else:
            per_target = self.method.attribute(batch.input_ids, batch.attention_mask, **options)
            per_source = encoder = source_mask = None
            target_mask = batch.attention_mask
        self._pending = {"source": per_source, "target": per_target, "rolled_out": rolled_out}
        try:
            out = super().attribute(batch, attributed_fn, *args, **kwargs)
        finally:
            self._pending = None
        for row, sequence in enumerate(out.sequence_attributions):
            scores = dict(sequence.sequence_scores or {})
            scores["decoder_mixing"] = self._unpadded(per_target[row], target_mask[row], len(sequence.target), row)
            if encoder is not None:
                scores["encoder_mixing"] = self._unpadded(encoder[row], source_mask[row], len(sequence.source), row)
            sequence.sequence_scores = scores
        return out

    def _unpadded(self, matrix_lqk: Tensor, mask: Tensor, n_tokens: int, row: int) -> Tensor:
        """One sequence's ``[layer, query, key]`` matrices without padding, in inseq's ``[key, query, layer]``."""
        valid = mask.bool().to(matrix_lqk.device)
        matrix_lqk = matrix_lqk[:, valid][:, :, valid].cpu()
        if matrix_lqk.shape[-1] != n_tokens:
            raise ValueError(
                f"Sequence {row} has {matrix_lqk.shape[-1]} tokens but inseq kept {n_tokens}: inseq drops every "
                f"token equal to the pad token ({self.attribution_model.pad_token!r}) from its outputs, so scores "
                "cannot be aligned with tokens. Remove that token from the text or set a pad token that does not "
                "occur in it."
            )
        return matrix_lqk.permute(2, 1, 0)

    def filtered_attribute_step(
        self,
        batch: Any,
        target_ids: Tensor,
        attributed_fn: Any,
        target_attention_mask: Tensor | None = None,
        attribute_target: bool = False,
        **kwargs: Any,
    ) -> Any:
        """Note which rows are still generating, the step's prefix length and whether the target prefix is
        attributed, then run inseq's step."""
        pending = self._require_pending()
        n_rows = pending["target"].shape[0]
        mask = target_attention_mask
        rows = torch.arange(n_rows) if mask is None else mask.reshape(-1).bool().nonzero().reshape(-1).cpu()
        is_encoder_decoder = self.attribution_model.is_encoder_decoder
        prefix = batch.targets.input_ids if is_encoder_decoder else batch.input_ids
        # Decoder-only models attribute their prompt + generated tokens as targets whatever the option says (inseq
        # resets it to False for them, with a warning); encoder-decoders only when asked, as in inseq's attention.
        pending.update(rows=rows, step=prefix.shape[1], with_target=attribute_target or not is_encoder_decoder)
        return super().filtered_attribute_step(
            batch, target_ids, attributed_fn, target_attention_mask=mask, attribute_target=attribute_target, **kwargs
        )

    def attribute_step(self, attribute_fn_main_args: dict[str, Any], attribution_args: dict[str, Any]):
        """The row of the position predicting this step's token, for every layer: over the target tokens before it
        (on encoder-decoders only with ``attribute_target=True``) and (encoder-decoders) over the source tokens."""
        pending = self._require_pending()
        step, rows = pending["step"], pending["rows"]
        target = pending["target"]
        target_blk = target[rows.to(target.device), :, step - 1, :step] if pending["with_target"] else None
        source_bls = None
        if pending["source"] is not None:
            source_bls = pending["source"][rows.to(target.device), :, step - 1, :]
        return MixingStepOutput(
            source_attributions=None if source_bls is None else source_bls.permute(0, 2, 1),
            target_attributions=None if target_blk is None else target_blk.permute(0, 2, 1),
            _num_dimensions=1,
            _rolled_out=pending["rolled_out"],
        )

    def _require_pending(self) -> dict[str, Any]:
        if self._pending is None:
            raise RuntimeError(f"{type(self).__name__} steps run only inside attribute().")
        return self._pending


def _require_generation_model(model: Any, method: str) -> None:
    """Raise unless ``model`` generates text (decoder-only or encoder-decoder), as inseq's attribution needs.

    inseq wraps any model it is given as a decoder-only one (from a path it loads ``AutoModelForCausalLM``, which for
    BERT is a bidirectional ``BertLMHeadModel``), so an encoder fails only later, while generating or aligning the
    text. The adapter says what the model is: encoder-decoder, causal, or a bidirectional encoder.

    Raises:
        UnsupportedArchitectureError: If the model is an encoder, or has no adapter.
    """
    adapter = get_adapter(model)
    if isinstance(adapter, EncoderDecoderAdapter) or adapter.is_causal:
        return
    raise UnsupportedArchitectureError(
        f"inseq attributes generated text, but {type(model).__name__} (model_type={model.config.model_type!r}) is "
        f"an encoder-only model: it attends in both directions and generates nothing. Measure its context mixing "
        f"with inseq_mixing.context_mixing(model, input_ids, {method!r}) (or the 'inseq-mixing mix' command) instead "
        "of inseq.load_model; inseq supports decoder-only and encoder-decoder models."
    )


OPTIONS_CLASSES: dict[str, type[ContextMixing]] = {"value_zeroing": ValueZeroingMixing}
"""Methods whose user options differ from :class:`ContextMixing`'s (value zeroing keeps inseq's keywords)."""


def _class_name(method: str) -> str:
    return "".join(part.capitalize() for part in method.split("_")) + "Attribution"


ATTRIBUTION_CLASSES: dict[str, type[ContextMixingAttribution]] = {
    name: type(_class_name(name), (ContextMixingAttribution,), {"method_name": name, "__module__": __name__})
    for name in INSEQ_METHODS
}
"""The inseq attribution class of every method, generated from :data:`INSEQ_METHODS`."""

globals().update({cls.__name__: cls for cls in ATTRIBUTION_CLASSES.values()})
