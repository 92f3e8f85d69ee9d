"""The one Keras model loader: a classifier saved by edge-derm, checked against its run's config."""

from __future__ import annotations

import os
from pathlib import Path

from edge_derm.errors import ModelError


def load_model(path: str | os.PathLike, *, num_classes: int | None = None, image_size: int | None = None):
    """Load a classifier saved by edge-derm (``safe_mode=True``, no custom objects): the one model loader.

    ``num_classes`` / ``image_size``, when given, are what the caller's config says the model is (a run's
    ``config.json``); a model that disagrees is a ModelError naming both.
    """
    from edge_derm.models._tf import keras

    path = Path(path)
    if not path.is_file():
        raise ModelError(f"model file not found: {path}")
    try:
        model = keras.models.load_model(path, safe_mode=True, compile=False)
    except Exception as exc:  # noqa: BLE001 - Keras raises many types for a bad file
        raise ModelError(f"cannot load model {path}: {first_line(exc)[:200]}; the file may be truncated, "
                         "retrain or restore it") from None
    n_out = int(model.output_shape[-1])
    if num_classes is not None and n_out != num_classes:
        raise ModelError(f"{path}: the model has {n_out} outputs but its config lists {num_classes} classes; "
                         "the run folder is inconsistent")
    shape = tuple(model.input_shape[1:])
    if image_size is not None and shape != (image_size, image_size, 3):
        raise ModelError(f"{path}: the model takes {shape} but its config says image_size {image_size}; "
                         "the run folder is inconsistent")
    return model


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (Keras errors run to many lines), else its type name."""
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
