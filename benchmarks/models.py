"""The set of models a benchmark scores: .tflite files (and the folders holding them) and Keras run folders.

Each model is described once, before anything runs (:class:`ModelEntry`): its status, size, input size,
labels and quantisation. The quantisation is what the file says about itself (its embedded metadata, or
the convert folder's ``model.json`` record of it), never what its name suggests. Only the Keras path
(:func:`keras_entry`, :func:`open_predictor` on a ``keras`` entry) imports TensorFlow.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge_derm.artefacts import FAILED_LOAD, FAILED_VALIDATION, OK, recorded_variant
from edge_derm.benchmarks.latency import open_model
from edge_derm.errors import DataError, ModelError

_log = logging.getLogger(__name__)

#: The ``format`` and ``quantization`` of a Keras reference row.
KERAS = "keras"


@dataclass
class ModelEntry:
    """One model of the set (a .tflite, or a run folder's ``model.keras``), checked and described before
    anything runs."""

    path: Path
    name: str
    quantization: str = "unknown"
    status: str = OK
    reason: str = ""
    size_mb: float = 0.0
    input_size: int | None = None
    resize_mode: str = "nearest"
    labels: list[str] = field(default_factory=list)
    taxonomy: str | None = None
    metrics: dict[str, Any] | None = None
    probs: np.ndarray | None = None
    #: the class names of ``probs``' columns: the dataset's classes, then the model's others (another domain)
    space: list[str] = field(default_factory=list)
    #: ``tflite``, or ``keras`` for a run folder's Keras model (scored on the host, not timed)
    format: str = "tflite"


def resolve_models(items: list[Path]) -> list[Path]:
    """Expand folders (convert output, or a run folder holding one) into their .tflite files."""
    out: list[Path] = []
    for item in items:
        item = Path(item)
        if item.is_dir():
            found = sorted(item.glob("*.tflite")) or sorted(item.glob("*/*.tflite"))
            if not found:
                raise ModelError(f"no .tflite files in {item}; run 'edge-derm convert' first or pass the files")
            out += found
        elif item.is_file():
            out.append(item)
        else:
            raise ModelError(f"model {item} not found; pass .tflite files or a convert folder")
    unique = list(dict.fromkeys(p.resolve() for p in out))
    return unique


def recorded_quantization(path: Path) -> str | None:
    """The quantisation the ``model.json`` beside ``path`` records for this file (a convert folder's
    ``ConvertResult``, or an exported model's flat ``VariantRecord`` naming it), or None."""
    try:
        record = recorded_variant(path)
    except DataError as exc:  # an unreadable record is no record
        _log.info("no quantisation recorded beside %s (%s)", path, exc)
        return None
    return (record.quantization or None) if record is not None else None


def _quantization(path: Path, meta: dict) -> str:
    """What ``path`` says its quantisation is: its embedded metadata, else the ``model.json`` record of it;
    ``unknown`` when it says nothing (a file's name is not evidence)."""
    if meta.get("quantization"):
        return str(meta["quantization"])
    return recorded_quantization(path) or "unknown"


def describe(path: Path, name: str) -> ModelEntry:
    """Validate and open one .tflite; failures become the entry's status, not exceptions."""
    from edge_derm.runtime import validate_tflite

    entry = ModelEntry(path=path, name=name, size_mb=path.stat().st_size / 1e6 if path.exists() else 0.0)
    try:
        info = validate_tflite(path)
    except ModelError as exc:
        entry.status, entry.reason = FAILED_VALIDATION, str(exc)
        entry.quantization = _quantization(path, {})
        return entry
    try:
        model = open_model(path, 1)
    except ModelError as exc:
        entry.status, entry.reason = FAILED_LOAD, str(exc)
        entry.quantization = _quantization(path, {})
        return entry
    entry.quantization = _quantization(path, model.metadata or {})
    entry.input_size, entry.resize_mode, entry.labels = model.input_size, model.resize_mode, list(model.labels)
    entry.taxonomy = (model.metadata or {}).get("taxonomy")
    return entry


def display_names(paths: list[Path]) -> list[str]:
    """File names, or ``folder/file`` when two files of the set share a name."""
    names = [p.name for p in paths]
    if len(set(names)) < len(names):
        names = [f"{p.parent.name}/{p.name}" for p in paths]
    return names


def is_run_folder(path: Path) -> bool:
    """Whether ``path`` is a run folder (``config.json`` and ``model.keras``)."""
    path = Path(path)
    return path.is_dir() and (path / "config.json").is_file() and (path / "model.keras").is_file()


def keras_entry(run_dir: Path, name: str | None = None) -> ModelEntry:
    """The entry of a run folder's Keras model (quantisation ``keras``), described from its ``config.json``.

    The model itself is loaded when it is scored (:func:`open_predictor`), so describing imports no
    TensorFlow. Raises ModelError when ``run_dir`` is not a run folder.
    """
    from edge_derm.training.evaluate import read_run

    run_dir = Path(run_dir)
    cfg = read_run(run_dir)
    model = run_dir / "model.keras"
    return ModelEntry(path=model.resolve(), name=name or f"{run_dir.name} (keras)", quantization=KERAS,
                      size_mb=model.stat().st_size / 1e6, input_size=int(cfg.image_size),
                      resize_mode=cfg.get("resize_mode", "nearest"), labels=list(cfg.classes),
                      taxonomy=cfg.get("taxonomy"), format=KERAS)


class KerasPredictor:
    """A Keras model with the ``predict(batch)`` of a .tflite model: float32 (N, S, S, 3) in [0, 255] in,
    class probabilities out (the run's preprocessing is inside the model, as in its .tflite)."""

    def __init__(self, path: Path):
        from edge_derm.models import load_model

        self.model = load_model(path)

    def predict(self, batch: np.ndarray) -> np.ndarray:
        return np.asarray(self.model(np.asarray(batch, np.float32), training=False), dtype=np.float32)


def open_predictor(entry: ModelEntry, threads: int) -> Any:
    """What scores ``entry``'s images: its .tflite interpreter, or its Keras model (imports TensorFlow)."""
    if entry.format == KERAS:
        return KerasPredictor(entry.path)
    return open_model(entry.path, threads)
