"""Explaining predictions: each input token's share of a predicted logit (DecompX, ALTI-Logit, Logit), or its
relevance to it (gradient-weighted attention rollout).

:func:`attribute_prediction` runs the whole model once without recording to read its head (the predicted outputs
and the final norm's statistics), then once recording every block, and checks that the per-token scores plus the
named rest add up to the real logit (or logit difference).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, no_type_check

import torch
from torch import Tensor

from .errors import DecompositionError, InvalidInputError, UnsupportedArchitectureError
from .extract import blocks_of, get_adapter
from .extract._head import head_kind, head_pass
from .inputs import check_model, prepare_inputs
from .measures import DEFAULT_MEMORY_BUDGET, PREDICTION_METHODS
from .measures._explained import Explained
from .run import Request, measure_named, run

IDENTITY_TOLERANCE = {torch.float64: 1e-8, torch.float32: 1e-4, torch.float16: 2e-2, torch.bfloat16: 1e-1}
"""``|Σ scores + Σ rest − value|`` allowed, relative to ``max(1, |value|)``, by the model's precision."""


@dataclass(frozen=True)
class PredictionAttribution:
    """Each input token's contribution to a predicted logit (difference): ``scores.sum(-1) + Σ rest = value`` for the
    methods that decompose it (``decomposes``); relevance scores without that identity otherwise.

    With ``position="all"`` every field has an extra ``position`` dimension after ``batch``.

    Attributes:
        method: The method's name.
        scores: Each input token's contribution ``[batch, seq]``.
        per_layer: The contribution entering through each layer ``[batch, layer, seq]``, where the method defines it.
        rest: The named parts assigned to no token (e.g. ``"mlp.3"``, ``"attention_bias.0"``, ``"embedding"``,
            ``"output_bias"``), each ``[batch]``.
        value: The real logit (or logit difference) explained, ``[batch]``.
        target: The explained output (token id or class) ``[batch]``.
        foil: The contrasted output, or ``None``.
        positions: The explained positions ``[batch]`` (the classifier's token for classifiers).
        per_head: ``[batch, layer, head, seq]`` per-head contributions where asked and defined, else ``None``.
        decomposes: Whether the scores plus the rest add up to ``value`` (checked on every call when they do).
    """

    method: str
    scores: Tensor
    per_layer: Tensor | None
    rest: dict[str, Tensor]
    value: Tensor
    target: Tensor
    foil: Tensor | None
    positions: Tensor
    per_head: Tensor | None = None
    decomposes: bool = True

    def identity_error(self) -> Tensor:
        """``value − (Σ scores + Σ rest)``: 0 up to rounding."""
        total = self.scores.sum(-1) + sum(self.rest.values(), torch.zeros_like(self.value))
        return self.value - total


@no_type_check  # validates its own arguments (inputs.py): users get a message, not a type-check error
def attribute_prediction(
    model: Any,
    input_ids: Any,
    method: str,
    *,
    attention_mask: Any = None,
    target: int | Tensor | None = None,
    foil: int | Tensor | None = None,
    position: int | Tensor | Literal["all"] | None = None,
    per_head: bool = False,
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
    **options: Any,
) -> PredictionAttribution:
    """Explain what the model predicts: each input token's contribution to a logit, or to a logit difference.

    Args:
        model: A causal LM (``...ForCausalLM``) or an encoder sequence classifier (``...ForSequenceClassification``)
            of a supported family.
        input_ids: Token ids ``[batch, seq]`` (or ``[seq]``).
        method: One of ``PREDICTION_METHODS`` (``"logit"``, ``"alti_logit"``, ``"decompx"``, ``"grad_rollout"``).
        attention_mask: 1 for real tokens, 0 for padding.
        target: The explained output: a token id (causal LMs) or class (classifiers), one per sequence (an int for
            all); default: the model's prediction. With ``position="all"``: ``[batch, seq]`` (e.g. the next tokens).
        foil: Explain ``logit(target) − logit(foil)`` instead (same shapes as ``target``).
        position: Causal LMs: the position whose next-token prediction is explained (default: the last real
            token), one per sequence, or ``"all"`` for every position in one pass.
        per_head: Also return per-head contributions (Logit and ALTI-Logit).
        memory_budget: Bytes a measure may use for its per-chunk intermediates.
        **options: The method's own options, e.g. ``bias="separate"`` for DecompX (biases kept as their own part,
            reported in ``rest["bias"]``, instead of shared among the tokens by AbsDot).

    Returns:
        A :class:`PredictionAttribution` whose scores plus rest add up to ``value`` (for the methods that decompose
        the logit; ``grad_rollout`` gives relevance scores).

    Raises:
        UnknownMethodError: For a method that does not explain predictions.
        UnsupportedArchitectureError: For a model without a supported head (a bare model, a masked LM, ...).
        InvalidInputError: For targets, foils or positions out of range.
        DecompositionError: If a decomposing method's contributions do not add up to the real logit.

    Example:
        >>> explained = attribute_prediction(model, ids, "alti_logit", foil=tokenizer.convert_tokens_to_ids("is"))
        >>> explained.scores.sum(-1) + sum(explained.rest.values())  # == explained.value
    """
    model = check_model(model)
    measure = measure_named(method, explains=True)
    measure.split_options(options)  # unknown options fail before anything runs
    adapter = get_adapter(model)
    kind = head_kind(model, adapter)
    if kind == "none":
        raise UnsupportedArchitectureError(
            f"{type(model).__name__} has no head to explain: {method} explains a causal LM's next-token logits "
            "(load it with AutoModelForCausalLM) or an encoder classifier's class logits "
            f"(AutoModelForSequenceClassification); supported methods: {', '.join(PREDICTION_METHODS)}."
        )
    inputs = prepare_inputs(model, adapter, input_ids, attention_mask)
    mask = inputs.masks["layers"][0]
    head = head_pass(model, adapter, inputs.forward)
    explained = _explained(head, mask, kind, target, foil, position)
    options = {**options, "explained": explained, "padding_mask": mask}
    if per_head:
        if "per_head" not in measure.option_names():
            raise InvalidInputError(f"{method} has no per-head contributions; drop per_head=True.")
        options["per_head"] = True
    result = run(model, input_ids, [Request(measure, options)], attention_mask=attention_mask,
                 memory_budget=memory_budget).results[measure.name]  # fmt: skip
    out = _assemble(measure.name, result, explained, single=position != "all", decomposes=measure.decomposes)
    if out.decomposes:
        _check_identity(out, model, len(blocks_of(model)))
    return out


def _explained(head, mask: Tensor, kind: str, target, foil, position) -> Explained:
    batch, seq = mask.shape
    if kind == "classifier":
        if position not in (None, head.classifier_position):
            raise InvalidInputError("A classifier's prediction is read at the token its head reads; drop position.")
        positions = torch.full((batch, 1), head.classifier_position, device=mask.device)
        logits = head.logits.float()[:, None]  # [batch, 1, classes]
    else:
        if position == "all":
            positions = torch.arange(seq, device=mask.device).expand(batch, seq)
        elif position is None:  # the last real token of each row
            positions = (torch.arange(seq, device=mask.device) * mask).argmax(-1, keepdim=True)
        else:
            positions = torch.as_tensor(position, device=mask.device).reshape(-1, 1).expand(batch, 1)
            if (positions < 0).any() or (positions >= seq).any():
                raise InvalidInputError(f"position {position} is outside the {seq} positions of the input.")
        logits = head.logits.float().gather(1, positions[..., None].expand(-1, -1, head.logits.shape[-1]))
    n_outputs = logits.shape[-1]
    chosen_target = logits.argmax(-1) if target is None else _outputs(target, positions, n_outputs, "target")
    chosen_foil = None if foil is None else _outputs(foil, positions, n_outputs, "foil")
    return Explained(positions=positions, target=chosen_target, foil=chosen_foil, head=head)


def _outputs(value, positions: Tensor, n_outputs: int, name: str) -> Tensor:
    out = torch.as_tensor(value, device=positions.device).long()
    out = out.reshape(-1, 1) if out.dim() <= 1 else out
    out = out.expand_as(positions) if out.shape[-1] == 1 else out
    if out.shape != positions.shape:
        raise InvalidInputError(
            f"{name} has shape {tuple(out.shape)}; expected one per sequence (or [batch, seq] with position='all')."
        )
    if (out < 0).any() or (out >= n_outputs).any():
        raise InvalidInputError(f"{name} holds outputs outside 0..{n_outputs - 1}: {out.unique().tolist()}.")
    return out


def _assemble(
    method: str, result: dict, explained: Explained, *, single: bool, decomposes: bool
) -> PredictionAttribution:
    per_layer = result["per_layer"]  # [batch, layer, T, seq]
    scores = result.get("scores")
    if scores is None:
        scores = per_layer.sum(1)
    rest = result["rest"]
    value = result.get("value")
    if value is None:
        value = explained.linear_logit() if explained.head.output_weight is not None else explained.class_logit()
    per_head = result.get("per_head")
    per_layer = None if per_layer is None else per_layer.transpose(1, 2)  # [batch, T, layer, seq]
    per_head = None if per_head is None else per_head.permute(0, 3, 1, 2, 4)  # [batch, T, layer, head, seq]

    def pick(x: Tensor | None) -> Tensor | None:
        return None if x is None else (x[:, 0] if single else x)

    return PredictionAttribution(
        method=method, scores=pick(scores), per_layer=pick(per_layer), rest={k: pick(v) for k, v in rest.items()},
        value=pick(value), target=pick(explained.target), foil=pick(explained.foil),
        positions=pick(explained.positions), per_head=pick(per_head), decomposes=decomposes,
    )  # fmt: skip


def _check_identity(out: PredictionAttribution, model, n_layers: int) -> None:
    dtype = next(model.parameters()).dtype
    tolerance = IDENTITY_TOLERANCE.get(dtype, IDENTITY_TOLERANCE[torch.float32])
    error = (out.identity_error().abs() / out.value.abs().clamp_min(1.0)).max().item()
    if not error <= tolerance:
        raise DecompositionError(
            type(model).__name__, n_layers - 1, f"{out.method}: scores + rest = the explained logit", error, tolerance
        )
