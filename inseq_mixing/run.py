"""One run layer: the adapter, the inputs and the measures resolved once, then one recorded forward pass that feeds
every requested measure.

:func:`inseq_mixing.context_mixing`, the encoder-decoder path, the head tools, the inseq methods and the CLI all go
through :func:`run`. Several measures share one forward pass and, within a layer, the record and what their
computations have in common (per-head vectors, Gram matrices: see ``measures/_cache.py``).
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from .errors import ExtractionError, InvalidInputError, UnknownMethodError, UnknownOptionError
from .extract import Adapter, EncoderDecoderAdapter, bare_model, blocks_of, get_adapter, recording, stacks_of
from .extract.heads import active_head_mixes
from .inputs import ModelInputs, check_model, prepare_inputs
from .measures import DEFAULT_MEMORY_BUDGET, MEASURES, CrossLayerState, Measure, ModelKind
from .record import HeadRecord, LayerRecord, lowest_precision
from .rollout import mask_padding


def measure_named(name: str, *, explains: bool = False) -> Measure:
    """The registered measure ``name``: one that gives context-mixing matrices (or, with ``explains``, one that
    explains predictions).

    Raises:
        UnknownMethodError: Listing the available names (and where a name of the other kind belongs).
    """
    wanted = {n: m for n, m in MEASURES.items() if (m.explains if explains else m.maps)}
    if isinstance(name, str) and name in wanted:
        return wanted[name]
    kind, call = ("prediction", "attribute_prediction") if explains else ("context-mixing", "context_mixing")
    hint = ""
    if isinstance(name, str) and name in MEASURES:
        other = "context_mixing" if explains else "attribute_prediction"
        hint = f" ({name!r} is computed by inseq_mixing.{other}, not {call})"
    raise UnknownMethodError(f"Unknown {kind} method {name!r}{hint}; available: {', '.join(wanted)}.")


@dataclass(frozen=True)
class Request:
    """One measure to compute in a pass, with its options split into per-layer (or state) and finish options."""

    measure: Measure
    layer_options: dict[str, Any] = field(default_factory=dict)
    finish_options: dict[str, Any] = field(default_factory=dict)


def plan(methods: Sequence[str], options: Mapping[str, Any]) -> list[Request]:
    """Resolve ``methods`` and hand each the ``options`` it takes, before anything runs.

    With several methods, an option goes to every method that takes it and must be taken by at least one.

    Raises:
        UnknownMethodError: For a name that is not registered.
        UnknownOptionError: For an option no requested method takes (listing what they take).
        InvalidInputError: For a method named twice.
    """
    measures = [measure_named(name) for name in methods]
    if len({m.name for m in measures}) != len(measures):
        raise InvalidInputError(f"Each method may be requested once; got {list(methods)}.")
    if not measures:
        raise InvalidInputError(f"Request at least one method; available: {', '.join(MEASURES)}.")
    if len(measures) == 1:
        return [Request(measures[0], *measures[0].split_options(options))]
    taken = {name for m in measures for name in m.option_names()}
    unknown = [name for name in options if name not in taken]
    if unknown:
        listing = "; ".join(f"{m.name}: {', '.join(m.option_names())}" for m in measures)
        raise UnknownOptionError(f"No requested method takes option(s) {', '.join(map(repr, unknown))}; {listing}.")
    return [Request(m, *m.split_options({k: v for k, v in options.items() if k in m.option_names()})) for m in measures]


def _state_options(request: Request, memory_budget: int, padding_mask: Tensor) -> dict[str, Any]:
    """A cross-layer state's (or gradient measure's) arguments: the request's options, the memory budget, and the
    padding mask if it reads one (the run layer knows it; users do not pass it)."""
    options = {"memory_budget": memory_budget, **request.layer_options}
    if "padding_mask" in inspect.signature(request.measure.state or request.measure.gradient).parameters:
        options.setdefault("padding_mask", padding_mask)
    return options


def model_kind(adapter: Adapter | EncoderDecoderAdapter) -> ModelKind:
    """``"encoder-decoder"``, ``"decoder"`` (causal) or ``"encoder"``."""
    if isinstance(adapter, EncoderDecoderAdapter):
        return "encoder-decoder"
    return "decoder" if adapter.is_causal else "encoder"


@dataclass
class RunResult:
    """What one forward pass produced.

    Attributes:
        raw: Per-layer measures: ``name -> stack -> [batch, layer, ..., query, key]``, padding zeroed and the
            measure's ``finish`` applied, not normalized.
        results: Cross-layer measures: ``name -> result``.
        inputs: The validated inputs (masks per stack).
    """

    raw: dict[str, dict[str, Tensor]]
    results: dict[str, Any]
    inputs: ModelInputs


def run(
    model: Any,
    input_ids: Any,
    requests: Sequence[Request],
    *,
    attention_mask: Any = None,
    decoder_input_ids: Any = None,
    decoder_attention_mask: Any = None,
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
) -> RunResult:
    """Validate the inputs, run the model once with every block recorded, and feed each record to every request.

    ``model`` and the inputs are annotated loosely: they are checked here, with messages saying what to pass.

    Raises:
        TypeError, InvalidInputError: For bad inputs (:mod:`inseq_mixing.inputs`).
        UnsupportedArchitectureError: If the model has no adapter, or a measure does not support its kind.
        ExtractionError, DecompositionError: If a block's structure or decomposition does not match its adapter.
    """
    model = check_model(model)
    adapter = get_adapter(model)
    kind = model_kind(adapter)
    for request in requests:
        if kind not in request.measure.kinds:
            raise InvalidInputError(
                f"{request.measure.name} supports {', '.join(sorted(request.measure.kinds))} models; "
                f"{type(model).__name__} is an {kind} model."
            )
        layout = getattr(adapter, "layout", None)
        if layout is not None and layout not in request.measure.layouts:
            raise InvalidInputError(
                f"{request.measure.name} supports {', '.join(sorted(request.measure.layouts))} blocks; "
                f"{type(model).__name__}'s blocks are {adapter.form.describe()}; use another measure for it (see "
                "docs/measures)."
            )
    inputs = prepare_inputs(model, adapter, input_ids, attention_mask, decoder_input_ids, decoder_attention_mask)
    n_layers = {stack: len(blocks_of(model, stack)) for stack in stacks_of(adapter)}
    per_layer = [r for r in requests if not r.measure.whole_model]
    recorded = [r for r in requests if not r.measure.is_gradient]
    query_mask = next(iter(inputs.masks.values()))[0]
    states: dict[str, CrossLayerState] = {
        r.measure.name: r.measure.state(**_state_options(r, memory_budget, query_mask))
        for r in requests
        if r.measure.is_cross_layer
    }
    raw: dict[str, dict[str, Tensor]] = {r.measure.name: {} for r in per_layer}
    dtypes: dict[str, list[torch.dtype]] = {stack: [] for stack in n_layers}
    done: set[tuple[str, int]] = set()
    heads: list[HeadRecord] = []

    def on_layer(record: LayerRecord) -> None:
        for request in per_layer:
            matrix = request.measure(record, memory_budget=memory_budget, **request.layer_options)
            stacked = raw[request.measure.name]
            if record.stack not in stacked:
                stacked[record.stack] = matrix.new_zeros(matrix.shape[0], n_layers[record.stack], *matrix.shape[1:])
            stacked[record.stack][:, record.layer_idx] = matrix
        for state in states.values():
            state.layer(record)
        dtypes[record.stack].append(record.compute_dtype)
        done.add((record.stack, record.layer_idx))

    results: dict[str, Any] = {
        r.measure.name: r.measure.gradient(model, inputs, **_state_options(r, memory_budget, query_mask))
        for r in requests
        if r.measure.is_gradient
    }
    if not recorded:
        return RunResult(raw=raw, results=results, inputs=inputs)
    needs_head = any(r.measure.needs_head for r in requests)
    with recording(
        model,
        adapter,
        on_layer,
        record_ffn=any(r.measure.needs_ffn for r in requests),
        on_head=heads.append if needs_head else None,
        head_mixes=active_head_mixes(model),
    ):
        (model if needs_head else bare_model(model))(**inputs.forward)  # the head runs only when a measure reads it
    for stack, count in n_layers.items():
        missing = [idx for idx in range(count) if (stack, idx) not in done]
        if missing:
            raise ExtractionError(
                f"{type(model).__name__}: {stack} blocks {missing} did not run during the forward pass, so their "
                "records are missing; the adapter's 'blocks' must list the blocks the model calls."
            )
    for request in per_layer:
        stacked = raw[request.measure.name]
        for stack, matrices in stacked.items():
            matrices = mask_padding(matrices, *inputs.masks[stack])
            if request.measure.finish is not None:
                dtype = lowest_precision(dtypes[stack])
                matrices = request.measure.finish(matrices, inputs.masks[stack][0], dtype, **request.finish_options)
            stacked[stack] = matrices
    head = heads[-1] if heads else None
    results.update({name: state.result(head) for name, state in states.items()})
    return RunResult(raw=raw, results=results, inputs=inputs)
