"""Every context-mixing measure as an inseq attribution method, generated from one table.

One forward pass per batch: the matrices of prompt + generated text are computed once (rows of a causal model do
not depend on later tokens), and each generation step's row is sliced from them, following inseq's ``attention``
convention: the step that predicts token ``t`` reads the row of position ``t − 1`` over keys ``< t``.
"""

from __future__ import annotations

from typing import Any

import torch
from inseq.attr.feat import FeatureAttribution
from inseq.utils import Registry
from torch import Tensor

from ..errors import UnsupportedArchitectureError
from ..measures import DEFAULT_MEMORY_BUDGET
from ..mixing import METHODS, context_mixing
from .outputs import MixingStepOutput

ROLLED_OUT_BY_DEFAULT = frozenset({"attention_rollout", "globenc", "alti"})
"""Methods whose inseq scores are the rollout through each layer unless ``rollout=False`` is passed."""

INSEQ_METHODS: tuple[str, ...] = tuple(name for name in METHODS if name != "attention")
"""Method names registered with inseq (``attention`` is inseq's own; ours is ``attention_rollout``)."""


class ContextMixing:
    """Computes the full-sequence matrices of one method; its ``attribute`` signature lists the user options."""

    def __init__(self, method: str) -> None:
        self.method = method

    def attribute(
        self,
        input_ids: Tensor,
        attention_mask: Tensor,
        rollout: bool | None = None,
        normalize: bool = True,
        memory_budget: int = DEFAULT_MEMORY_BUDGET,
        model: Any = None,
    ) -> Tensor:
        """``[batch, layer, query, key]`` matrices of the whole sequences (see :func:`inseq_mixing.context_mixing`).

        Args:
            input_ids: Token ids of prompt + generated text.
            attention_mask: 1 for tokens, 0 for padding.
            rollout: Rolled-out (True) or layer-wise (False) scores; ``None`` uses the method's default (rollout for
                ``attention_rollout``, ``globenc`` and ``alti``).
            normalize: Row-normalize each layer (the reference implementations' convention).
            memory_budget: Bytes a measure may use for per-chunk intermediates.
            model: The Hugging Face model.
        """
        return context_mixing(
            model,
            input_ids,
            self.method,
            attention_mask=attention_mask,
            rollout=self.rolls_out(rollout),
            normalize=normalize,
            memory_budget=memory_budget,
        )

    def rolls_out(self, rollout: bool | None) -> bool:
        """Whether the scores are rolled out, given the user's ``rollout`` option."""
        return (
            self.method in ROLLED_OUT_BY_DEFAULT
            if rollout is None
            else bool(rollout) or self.method == ("attention_rollout")
        )


class ContextMixingAttribution(FeatureAttribution, Registry):
    """Base of the context-mixing methods (not listed by inseq itself: it names no method)."""

    method_name: str

    def __init__(self, attribution_model: Any, **kwargs: Any) -> None:
        super().__init__(attribution_model, hook_to_model=False)
        self.use_predicted_target = False  # the scores do not depend on the attributed output
        self.attribute_batch_ids = True  # no input embeddings needed
        self.forward_batch_embeds = False
        self.method = ContextMixing(self.method_name)
        self._pending: dict[str, Any] | None = None

    def attribute(self, batch: Any, attributed_fn: Any, *args: Any, **kwargs: Any) -> Any:
        """Compute the whole batch in one forward pass, then let inseq iterate over the generation steps."""
        if self.attribution_model.is_encoder_decoder:
            raise UnsupportedArchitectureError(
                f"Method '{self.method_name}' does not support encoder-decoder models yet "
                f"({type(self.attribution_model.model).__name__}); use a decoder-only model."
            )
        options = dict(kwargs.get("attribution_args") or {})
        input_ids, attention_mask = batch.input_ids, batch.attention_mask
        full = self.method.attribute(input_ids, attention_mask, model=self.attribution_model.model, **options)
        self._pending = {"full": full, "rolled_out": self.method.rolls_out(options.get("rollout"))}
        try:
            out = super().attribute(batch, attributed_fn, *args, **kwargs)
        finally:
            self._pending = None
        for row, sequence in enumerate(out.sequence_attributions):
            valid = attention_mask[row].bool().to(full.device)
            matrix_lqk = full[row][:, valid][:, :, valid].cpu()
            if matrix_lqk.shape[-1] != len(sequence.target):
                raise RuntimeError(
                    f"Internal error: {matrix_lqk.shape[-1]} unpadded positions for {len(sequence.target)} tokens."
                )
            # inseq's layout: [contributing token, receiving token, layer]
            sequence.sequence_scores = {
                **(sequence.sequence_scores or {}),
                "decoder_mixing": matrix_lqk.permute(2, 1, 0),
            }
        return out

    def filtered_attribute_step(self, batch: Any, target_ids: Tensor, attributed_fn: Any, *args: Any, **kwargs: Any):
        """Note which rows are still generating and the step's prefix length, then run inseq's step."""
        mask = kwargs.get("target_attention_mask", args[0] if args else None)
        full = self._require_pending()["full"]
        rows = torch.arange(full.shape[0]) if mask is None else mask.reshape(-1).bool().nonzero().reshape(-1).cpu()
        self._pending.update(rows=rows, step=batch.input_ids.shape[1])
        return super().filtered_attribute_step(batch, target_ids, attributed_fn, *args, **kwargs)

    def attribute_step(self, attribute_fn_main_args: dict[str, Any], attribution_args: dict[str, Any]):
        """The row of the position predicting this step's token, over the keys before it, for every layer."""
        pending = self._require_pending()
        step = pending["step"]
        scores_blk = pending["full"][pending["rows"].to(pending["full"].device), :, step - 1, :step]
        return MixingStepOutput(
            target_attributions=scores_blk.permute(0, 2, 1), _num_dimensions=1, _rolled_out=pending["rolled_out"]
        )

    def _require_pending(self) -> dict[str, Any]:
        if self._pending is None:
            raise RuntimeError(f"{type(self).__name__} steps run only inside attribute().")
        return self._pending


def _class_name(method: str) -> str:
    return "".join(part.capitalize() for part in method.split("_")) + "Attribution"


ATTRIBUTION_CLASSES: dict[str, type[ContextMixingAttribution]] = {
    name: type(_class_name(name), (ContextMixingAttribution,), {"method_name": name, "__module__": __name__})
    for name in INSEQ_METHODS
}
"""The inseq attribution class of every method, generated from :data:`INSEQ_METHODS`."""

globals().update({cls.__name__: cls for cls in ATTRIBUTION_CLASSES.values()})
