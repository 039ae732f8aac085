"""Recording the model's head: what follows the last block (final norm, unembedding or classification head).

Measures that explain a prediction read it (:class:`~inseq_mixing.record.HeadRecord`). Causal LMs: the final norm
with its true input and the unembedding rows. Sequence classifiers (``...ForSequenceClassification`` of a family whose
adapter declares its ``classifier``): each step's input and pre-activation, read at module boundaries; the
activation is the model's own module, or the function its forward applies inline.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import ExitStack
from typing import Any

import torch
from torch import Tensor, nn
from transformers import PreTrainedModel
from transformers.models.auto.modeling_auto import MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES

from ..errors import ExtractionError
from ..record import HeadRecord, HeadStep, NormRecord
from ._adapter import Adapter, ClassifierStep, EncoderDecoderAdapter
from ._modules import bare_model, eval_mode, first_tensor, input_output_weight, resolve
from ._recorder import Session
from ._verify import verify_head

OnHead = Callable[[HeadRecord], None]


def head_kind(model: PreTrainedModel, adapter: Adapter | EncoderDecoderAdapter) -> str:
    """``"causal_lm"``, ``"classifier"`` (a supported sequence-classification head) or ``"none"``."""
    if isinstance(adapter, EncoderDecoderAdapter) or model is bare_model(model):
        return "none"
    if adapter.is_causal and model.get_output_embeddings() is not None:
        return "causal_lm"
    classifier_class = MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES.get(model.config.model_type)
    if adapter.classifier is not None and type(model).__name__ == classifier_class:
        return "classifier"
    return "none"


class HeadRecorder:
    """Hooks on the final norm, the bare model's output, the classification head and the whole model's output."""

    def __init__(self, model: PreTrainedModel, adapter: Adapter | EncoderDecoderAdapter, on_head: OnHead) -> None:
        where = type(model).__name__
        if isinstance(adapter, EncoderDecoderAdapter):
            raise ExtractionError(f"{where}: recording the model's head is supported for single-stack models only.")
        self.model, self.adapter, self.on_head, self.kind = model, adapter, on_head, head_kind(model, adapter)
        self.final_norm = None
        if adapter.final_norm is not None:
            self.final_norm = resolve(bare_model(model), adapter.final_norm, field="final_norm", where=where)
        self.steps: list[tuple[nn.Module, Callable[[Tensor], Tensor] | None]] = []
        if self.kind == "classifier":
            self.steps = [self._step(step, where) for step in adapter.classifier.steps]
        self.last_block = resolve(bare_model(model), adapter.blocks, field="blocks", where=where)[-1]
        self.softcap = getattr(model.config, "final_logit_softcapping", None) if self.kind == "causal_lm" else None
        self.slots: dict[str, Tensor] = {}

    def _step(self, step: ClassifierStep, where: str) -> tuple[nn.Module, Callable[[Tensor], Tensor] | None]:
        linear = resolve(self.model, step.linear, field="classifier", where=where)
        if step.activation is None:
            return linear, None
        if isinstance(step.activation, str):
            return linear, resolve(self.model, step.activation, field="classifier", where=where)
        return linear, step.activation(self.model.config)

    def attach(self, hooks: ExitStack, session: Session) -> None:
        def store(name: str, output_side: bool) -> Callable[..., None]:
            def hook(_module: nn.Module, inputs: Any, output: Any = None) -> None:
                if not session.paused:
                    self.slots[name] = first_tensor(output if output_side else inputs).clone()

            return hook

        def keep(module: nn.Module, name: str) -> None:
            hooks.callback(module.register_forward_pre_hook(store(f"{name}_input", False)).remove)
            hooks.callback(module.register_forward_hook(store(f"{name}_output", True)).remove)

        if self.final_norm is not None:
            keep(self.final_norm, "norm")
        for idx, (linear, _activation) in enumerate(self.steps):
            keep(linear, f"step{idx}")
        # The stream the head reads: the final norm's output, or the last block's (some heads call the decoder stack
        # directly, not the bare model, so the bare model's own output is not observed).
        hooks.callback(self.last_block.register_forward_hook(store("last_block", True)).remove)
        hooks.callback(self.model.register_forward_hook(self._on_model_output).remove)

    def _on_model_output(self, _module: nn.Module, _inputs: Any, output: Any) -> None:
        logits = getattr(output, "logits", None)
        if logits is None and isinstance(output, (tuple, list)):
            logits = output[0]
        slots, self.slots = self.slots, {}
        head = self.record(slots, logits)
        n_layers = len(resolve(bare_model(self.model), self.adapter.blocks))
        verify_head(head, type(self.model).__name__, n_layers)  # the head counts as the layer after the last
        self.on_head(head)

    def record(self, slots: dict[str, Tensor], logits: Tensor | None) -> HeadRecord:
        adapter, norm = self.adapter, None
        if self.final_norm is not None:
            weight = getattr(self.final_norm, "weight", None)
            if weight is not None:
                weight = weight.detach() + adapter.norm_weight_offset if adapter.norm_weight_offset else weight.detach()
            bias = getattr(self.final_norm, "bias", None)
            norm = NormRecord(
                kind=adapter.norm_kind, weight=weight, bias=None if bias is None else bias.detach(),
                eps=float(getattr(self.final_norm, adapter.norm_eps_attr)), input=slots["norm_input"],
                output=slots["norm_output"],
            )  # fmt: skip
        output_weight = output_bias = None
        if self.kind == "causal_lm":
            layer = self.model.get_output_embeddings()
            output_weight = layer.weight.detach()
            output_bias = None if getattr(layer, "bias", None) is None else layer.bias.detach()
        steps = []
        for idx, (linear, activation) in enumerate(self.steps):
            weight = input_output_weight(linear)
            bias = getattr(linear, "bias", None)
            steps.append(HeadStep(
                weight=weight.detach(), bias=None if bias is None else bias.detach(), activation=activation,
                input=slots[f"step{idx}_input"], pre_activation=slots[f"step{idx}_output"],
            ))  # fmt: skip
        position = adapter.classifier.position if adapter.classifier is not None else 0
        hidden = norm.output if norm is not None else slots["last_block"]
        return HeadRecord(
            hidden=hidden, final_norm=norm, output_weight=output_weight, output_bias=output_bias,
            classifier=tuple(steps), classifier_position=position,
            logits=None if logits is None else logits.detach(),
            logit_softcap=self.softcap,
        )  # fmt: skip


def head_pass(model: PreTrainedModel, adapter: Adapter, forward: dict[str, Any]) -> HeadRecord:
    """One plain forward of the whole model (its own attention implementation) that records only its head."""
    found: list[HeadRecord] = []
    recorder = HeadRecorder(model, adapter, found.append)
    with ExitStack() as hooks, eval_mode(model), torch.no_grad():
        recorder.attach(hooks, Session())
        model(**forward)
    return found[-1]
