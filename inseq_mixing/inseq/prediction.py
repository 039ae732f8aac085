"""The prediction methods (``decompx``, ``alti_logit``, ``logit``) as inseq attribution methods, for causal LMs.

One pass explains every position: :func:`inseq_mixing.attribute_prediction` with ``position="all"`` and, as the
target at position ``t``, the token at ``t + 1`` (the generated or forced text); the step that predicts token ``t``
then reads position ``t − 1``'s scores over the tokens before it, as inseq's gradient methods attribute that step's
logit. A foil (``attribution_args={"foil": token_id}``, or inseq's ``contrast_targets`` of the same length) makes
every step explain ``logit(target) − logit(foil)``.
"""

from __future__ import annotations

from typing import Any

import torch
from inseq.attr.feat import FeatureAttribution
from inseq.data import FeatureAttributionStepOutput
from inseq.utils import Registry
from torch import Tensor

from ..errors import InvalidInputError, UnsupportedArchitectureError
from ..measures import MEASURES
from ..prediction import attribute_prediction
from .methods import _require_generation_model

PREDICTION_INSEQ_METHODS: tuple[str, ...] = tuple(name for name, m in MEASURES.items() if m.inseq and m.explains)
"""The prediction methods registered with inseq, from the measure table."""


class PredictionMethodAttribution(FeatureAttribution, Registry):
    """Base of the prediction methods: each step's target attributions are the scores of that step's token."""

    method_name: str

    def __init__(self, attribution_model: Any, **kwargs: Any) -> None:
        """Raises UnsupportedArchitectureError for encoder-decoder and encoder-only models (causal LMs only)."""
        _require_generation_model(attribution_model.model, self.method_name)
        if attribution_model.is_encoder_decoder:
            raise UnsupportedArchitectureError(
                f"{self.method_name} through inseq explains decoder-only models' next-token predictions; "
                f"{type(attribution_model.model).__name__} is an encoder-decoder. Use inseq_mixing.context_mixing "
                "for its context mixing."
            )
        super().__init__(attribution_model, hook_to_model=False)
        self.use_predicted_target = False
        self._pending: dict[str, Any] | None = None

    def attribute(self, batch: Any, attributed_fn: Any, *args: Any, **kwargs: Any) -> Any:
        """Explain every position of prompt + target in one pass, then let inseq iterate over the steps."""
        options = dict(kwargs.get("attribution_args") or {})
        ids, mask = batch.input_ids, batch.attention_mask
        targets = torch.cat([ids[:, 1:], ids[:, -1:]], dim=1)  # position t predicts token t + 1
        foil = self._foils(options.pop("foil", None), kwargs.get("attributed_fn_args") or {}, ids)
        explained = attribute_prediction(
            self.attribution_model.model, ids, self.method_name, attention_mask=mask, position="all",
            target=targets, foil=foil, **options,
        )  # fmt: skip
        self._pending = {"scores": explained.scores}  # [batch, position, seq]
        try:
            return super().attribute(batch, attributed_fn, *args, **kwargs)
        finally:
            self._pending = None

    def _foils(self, foil: Any, fn_args: dict[str, Any], ids: Tensor) -> Tensor | None:
        """``[batch, seq]`` foil tokens (position t contrasts the token at t + 1), from a foil id or a contrast text."""
        contrast = fn_args.get("contrast_targets")
        if foil is not None:
            foil = torch.as_tensor(foil, device=ids.device).long()
            return foil.reshape(-1, 1).expand_as(ids) if foil.dim() <= 1 else foil
        if contrast is None:
            return None
        encoded = self.attribution_model.encode(contrast, as_targets=False).input_ids.to(ids.device)
        if encoded.shape != ids.shape:
            raise InvalidInputError(
                f"contrast_targets tokenize to {tuple(encoded.shape)} tokens but the attributed text to "
                f"{tuple(ids.shape)}; {self.method_name} contrasts position by position, so pass a contrast of the "
                "same length (or attribution_args={'foil': token_id})."
            )
        return torch.cat([encoded[:, 1:], encoded[:, -1:]], dim=1)

    def filtered_attribute_step(
        self, batch: Any, target_ids: Tensor, attributed_fn: Any, target_attention_mask: Tensor | None = None,
        attribute_target: bool = False, **kwargs: Any,
    ) -> Any:  # fmt: skip
        """Note the rows still generating and the step's prefix length, then run inseq's step."""
        pending = self._require_pending()
        n_rows = pending["scores"].shape[0]
        mask = target_attention_mask
        rows = torch.arange(n_rows) if mask is None else mask.reshape(-1).bool().nonzero().reshape(-1).cpu()
        pending.update(rows=rows, step=batch.input_ids.shape[1])
        return super().filtered_attribute_step(
            batch, target_ids, attributed_fn, target_attention_mask=mask, attribute_target=attribute_target, **kwargs
        )

    def attribute_step(self, attribute_fn_main_args: dict[str, Any], attribution_args: dict[str, Any]):
        """The scores of the position that predicts this step's token, over the tokens before it."""
        pending = self._require_pending()
        scores = pending["scores"]
        step, rows = pending["step"], pending["rows"].to(scores.device)
        return FeatureAttributionStepOutput(target_attributions=scores[rows, step - 1, :step].cpu())

    def _require_pending(self) -> dict[str, Any]:
        if self._pending is None:
            raise RuntimeError(f"{type(self).__name__} steps run only inside attribute().")
        return self._pending


def _class_name(method: str) -> str:
    return "".join(part.capitalize() for part in method.split("_")) + "Attribution"


PREDICTION_CLASSES: dict[str, type[PredictionMethodAttribution]] = {
    name: type(_class_name(name), (PredictionMethodAttribution,), {"method_name": name, "__module__": __name__})
    for name in PREDICTION_INSEQ_METHODS
}
"""The inseq attribution class of every prediction method, generated from the measure table."""

globals().update({cls.__name__: cls for cls in PREDICTION_CLASSES.values()})
