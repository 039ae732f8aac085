"""Where examples and models come from: a ``datasets.Dataset``, a list of strings or a local file; a loaded model
with its tokenizer, or a local model directory."""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import InvalidInputError, MissingDependencyError

FORMATS = {".json": "json", ".jsonl": "json", ".csv": "csv", ".parquet": "parquet", ".txt": "text"}
"""File suffixes read with ``datasets.load_dataset`` and the builder each uses."""


EVALUATION_PACKAGES = ("datasets", "pandas", "pyarrow")
"""What evaluation and corpus runs import (the ``evaluate`` extra)."""


def require_evaluation_packages() -> None:
    """Check that evaluation's optional packages are installed.

    Raises:
        MissingDependencyError: Naming the missing packages and ``pip install 'inseq-mixing[evaluate]'``.
    """
    missing = [name for name in EVALUATION_PACKAGES if importlib.util.find_spec(name) is None]
    if missing:
        raise MissingDependencyError(
            f"Evaluation needs {', '.join(missing)}: pip install 'inseq-mixing[evaluate]' (or install them directly)."
        )


def load_texts(dataset: Any, text_column: str = "text") -> Any:
    """A ``datasets.Dataset`` with the column ``text_column`` from a Dataset, a list of strings or a local file.

    Raises:
        InvalidInputError: For a missing file, an unknown format, a missing column or an empty dataset.
    """
    import datasets

    if isinstance(dataset, (str, Path)):
        path = Path(dataset).expanduser()
        if not path.is_file():
            raise InvalidInputError(f"Dataset file {str(path)!r} does not exist.")
        builder = FORMATS.get(path.suffix.lower())
        if builder is None:
            raise InvalidInputError(f"Cannot read {path.name}: use one of {', '.join(FORMATS)}.")
        dataset = datasets.load_dataset(builder, data_files=str(path), split="train")
        if builder == "text" and text_column not in dataset.column_names:
            dataset = dataset.rename_column("text", text_column)
    elif isinstance(dataset, Sequence) and all(isinstance(t, str) for t in dataset):
        dataset = datasets.Dataset.from_dict({text_column: list(dataset)})
    elif not isinstance(dataset, datasets.Dataset):
        raise InvalidInputError(
            f"dataset must be a datasets.Dataset, a list of strings or a local file path; got {type(dataset).__name__}."
        )
    if text_column not in dataset.column_names:
        raise InvalidInputError(
            f"The dataset has no column {text_column!r}; its columns are {dataset.column_names}. Pass text_column=."
        )
    if len(dataset) == 0:
        raise InvalidInputError("The dataset is empty.")
    return dataset


def load_model(model: Any, tokenizer: Any = None, *, device: str | None = None) -> tuple[Any, Any]:
    """``(model, tokenizer)``: loaded from a local directory (a sequence classifier if its config says so, else a
    causal LM), or the given module with its tokenizer.

    Raises:
        InvalidInputError: For a module without a tokenizer, or a path that is not a model directory.
    """
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

    if isinstance(model, (str, Path)):
        path = Path(model).expanduser()
        if not (path / "config.json").is_file():
            raise InvalidInputError(f"{str(path)!r} is not a model directory (no config.json); save it with "
                                    "save_pretrained, or pass the loaded model and its tokenizer.")  # fmt: skip
        config = AutoConfig.from_pretrained(path, local_files_only=True)
        classifier = any("ForSequenceClassification" in a for a in (config.architectures or ()))
        auto = AutoModelForSequenceClassification if classifier else AutoModelForCausalLM
        loaded = auto.from_pretrained(path, config=config, local_files_only=True).eval()
        tokenizer = tokenizer or AutoTokenizer.from_pretrained(path, local_files_only=True)
        return (loaded.to(device) if device else loaded), tokenizer
    if tokenizer is None:
        raise InvalidInputError(
            "Pass tokenizer= with a loaded model (the examples are text); or pass the model's directory instead."
        )
    return (model.to(device) if device else model), tokenizer
