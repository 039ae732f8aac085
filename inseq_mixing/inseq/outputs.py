"""inseq output classes for context-mixing methods, and the ``last`` aggregation function.

The attributions of every step hold one score per layer (``[input tokens, generated tokens, layer]``). Rolled-out
methods default to showing the rollout through the last layer; layer-wise methods to the mean over layers. The
defaults live on the sequence classes, so they survive ``save()``/``load()``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import no_type_check

import torch
from inseq.data.aggregation_functions import AggregationFunction
from inseq.data.attribution import (
    MultiDimensionalFeatureAttributionSequenceOutput,
    MultiDimensionalFeatureAttributionStepOutput,
)


class LastAggregationFunction(AggregationFunction):
    """Select the last index of a dimension (for rollouts: the rollout through the last layer)."""

    aggregation_function_name = "last"

    def __call__(self, scores: torch.Tensor, dim: int) -> torch.Tensor:
        return scores.select(dim, -1)


@no_type_check  # inseq's annotation of sequence_scores is 2-D; ours (like its own attention method's) are not
class LayerwiseMixingSequenceOutput(MultiDimensionalFeatureAttributionSequenceOutput):
    """Per-layer context-mixing scores of one sequence; ``.show()`` averages over layers by default.

    ``sequence_scores["decoder_mixing"]`` holds the full ``[key, query, layer]`` matrices of the whole sequence
    (prompt + generated text), in inseq's orientation: dimension 0 contributes, dimension 1 receives. (Like the
    encoder/decoder self-attention that inseq's own ``attention`` method stores there, it does not follow the 2-D
    shape that inseq's type annotation names, hence ``no_type_check`` for runtime shape checkers.)
    """

    def __post_init__(self) -> None:
        self._num_dimensions = 1  # one extra dimension (layers); private fields are not saved, so set it here
        super().__post_init__()


@no_type_check
class RolloutMixingSequenceOutput(LayerwiseMixingSequenceOutput):
    """Rolled-out context-mixing scores of one sequence; ``.show()`` shows the rollout through the last layer."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self._aggregator = ["last"]
        for names in self._attribution_dim_names.values():
            names[2] = "Rollout Through Layer"


@no_type_check  # inseq annotates source and target steps with one shared seq_len; an encoder-decoder's differ
@dataclass(eq=False, repr=False)
class MixingStepOutput(MultiDimensionalFeatureAttributionStepOutput):
    """One generation step of a context-mixing method: ``target_attributions`` is ``[batch, prefix, layer]``.

    On encoder-decoders ``source_attributions`` is ``[batch, source, layer]``, and ``target_attributions`` is
    ``None`` unless ``attribute_target=True`` was passed, as for inseq's ``attention`` method.
    """

    _rolled_out: bool = False

    def get_sequence_cls(self, **kwargs: object) -> LayerwiseMixingSequenceOutput:
        cls = RolloutMixingSequenceOutput if self._rolled_out else LayerwiseMixingSequenceOutput
        return cls(**kwargs)
