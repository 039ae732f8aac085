"""Exceptions raised by inseq_mixing."""

from __future__ import annotations


class DecompositionError(RuntimeError):
    """The per-token decomposition of a layer does not reproduce the model's real outputs.

    Raised by the extractors when a recorded decomposition disagrees with what the module actually computed,
    instead of returning silently wrong numbers.
    """

    def __init__(self, model_class: str, layer_idx: int, check: str, error: float, tolerance: float) -> None:
        self.model_class = model_class
        self.layer_idx = layer_idx
        self.check = check
        self.error = error
        self.tolerance = tolerance
        super().__init__(
            f"{model_class}, layer {layer_idx}: check '{check}' failed: the decomposition differs from the module's "
            f"real output by {error:.3g} (tolerance {tolerance:.3g}). The model's structure does not match its "
            "adapter; see docs/architectures.md for how adapters are declared."
        )


class UnsupportedArchitectureError(ValueError):
    """The model's architecture has no registered adapter."""


class ExtractionError(UnsupportedArchitectureError):
    """The model's structure does not match its adapter: a path names no submodule, or a module did not produce
    what the adapter says it does (no attention weights, a block that never ran, a head layout that does not divide).

    Raised before any hook is registered where the problem can be seen from the module tree, and otherwise during
    the forward pass (hooks are removed either way). Distinct from :class:`DecompositionError`, which reports a
    decomposition that ran but does not reproduce the model's outputs.
    """


class InvalidInputError(ValueError):
    """The token ids, masks or other inputs cannot be measured as given (the message says what to pass instead)."""


class UnknownOptionError(TypeError):
    """A measure was given an option it does not take (checked before the forward pass)."""


class UnknownMethodError(ValueError):
    """The requested context-mixing method does not exist."""


class OffloadedWeightsError(ValueError):
    """A layer's weights are not in memory (``device_map`` offloading to CPU or disk leaves them on ``meta``)."""

    def __init__(self, model_class: str, layer_idx: int) -> None:
        self.model_class = model_class
        self.layer_idx = layer_idx
        super().__init__(
            f"{model_class}, layer {layer_idx}: the attention's output projection is on the 'meta' device, as left by "
            "device_map offloading (accelerate moves offloaded weights in only while a module runs). Load the model "
            "without offloading (device_map on GPUs only, or no device_map) to measure context mixing."
        )


class MissingDependencyError(ImportError):
    """An optional dependency of the requested feature is not installed; the message names the extra to install."""


class UsageError(ValueError):
    """A mistake on the command line; the message says what was wrong and what to pass instead."""
