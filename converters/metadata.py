"""The metadata every .tflite carries: built here, embedded as the ``edge_derm_metadata`` buffer.

Embedding uses the TFLite schema's generated Python object API (pure Python, shipped with
ai-edge-litert) and ``flatbuffers``: the model is unpacked, a buffer with the JSON and a
``Metadata`` entry naming it are added (replacing an older one of the same name), and the model
is packed again. :func:`edge_derm.runtime.read_metadata` is the reader.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from edge_derm.errors import ConversionError
from edge_derm.runtime import FILE_IDENTIFIER, METADATA_NAME, ModelInfo

_log = logging.getLogger(__name__)
FORMAT_VERSION = 1


def taxonomy_info(name: str | None, classes: list[str]) -> tuple[dict[str, str], dict[str, str]]:
    """Class descriptions and triage groups from the run's taxonomy (empty / ``unknown`` if none)."""
    descriptions: dict[str, str] = {}
    triage: dict[str, str] = {}
    if name and name != "native":
        try:
            from edge_derm.data.taxonomy import load_taxonomy

            tax = load_taxonomy(name)
            descriptions = {c: tax.descriptions[c] for c in classes if c in tax.descriptions}
            triage = {c: tax.triage[c] for c in classes if c in tax.triage}
        except Exception as exc:  # noqa: BLE001 - metadata is still useful without descriptions
            _log.warning("taxonomy %r not available for class descriptions (%s)", name, exc)
    for c in classes:
        triage.setdefault(c, "unknown")
    return descriptions, triage


def tensor_io(info: ModelInfo) -> tuple[dict[str, Any], dict[str, Any]]:
    """The real input/output dtypes and quantisation parameters read back from the file."""
    def describe(t) -> dict[str, Any]:
        return {"dtype": t.dtype, "scale": float(t.scale[0]) if t.scale else 0.0,
                "zero_point": int(t.zero_point[0]) if t.zero_point else 0, "shape": list(t.shape)}

    return describe(info.input_tensors[0]), describe(info.output_tensors[0])


def build_metadata(*, run_config: dict[str, Any], run_dir: str, quantization: str, info: ModelInfo,
                   verification: dict[str, Any], config_hash: str, versions: dict[str, str],
                   extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The flat metadata document of docs/ARCHITECTURE.md ("Convert folder")."""
    classes = list(run_config["classes"])
    descriptions, triage = taxonomy_info(run_config.get("taxonomy"), classes)
    tin, tout = tensor_io(info)
    size = int(run_config["image_size"])
    meta: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "name": run_config.get("backbone", "model"),
        "quantization": quantization,
        "labels": classes,
        "descriptions": descriptions,
        "triage": triage,
        "taxonomy": run_config.get("taxonomy", "native"),
        "input": {"size": [size, size], "channels": 3, "color": "RGB",
                  "resize": run_config.get("resize_mode", "nearest"), "range": [0, 255],
                  "mean": [0, 0, 0], "std": [1, 1, 1],
                  "preprocessing_in_model": run_config.get("preprocessing", ""),
                  "dtype": tin["dtype"], "scale": tin["scale"], "zero_point": tin["zero_point"]},
        "output": {"dtype": tout["dtype"], "scale": tout["scale"], "zero_point": tout["zero_point"],
                   "activation": "softmax"},
        # Temperature, prior shift and triage operating point fitted on the run's validation split
        # (edge_derm.calibration); the runtime, predict and the Android app apply them.
        "output_calibration": _output_calibration(run_config.get("calibration")),
        "verification": verification,
        "provenance": {"run": run_dir,
                       "dataset_hashes": [d.get("hash", "") for d in run_config.get("data", [])],
                       "config_hash": config_hash, "run_config_hash": run_config.get("config_hash", ""),
                       "versions": versions},
    }
    if extra:
        meta.update(extra)
    return meta


def _output_calibration(block: dict[str, Any] | None) -> dict[str, Any] | None:
    if not block:
        return None
    keys = ("method", "fitted_on", "temperature", "log_prior", "prevalence", "referral_groups", "referral_classes",
            "threshold", "target_sensitivity")
    return {k: block.get(k) for k in keys}


def embed_metadata(model: bytes, meta: dict[str, Any], name: str = METADATA_NAME) -> bytes:
    """Return ``model`` with ``meta`` (JSON, UTF-8) embedded as the named metadata buffer."""
    import flatbuffers
    import numpy as np

    try:
        from ai_edge_litert import schema_py_generated as schema
    except ImportError:  # pragma: no cover - ai-edge-litert is a dependency
        from tensorflow.lite.python import schema_py_generated as schema

    blob = json.dumps(meta, sort_keys=False, ensure_ascii=False).encode("utf-8")
    try:
        obj = schema.ModelT.InitFromPackedBuf(bytearray(model), 0)
    except Exception as exc:  # noqa: BLE001 - the generated code raises assorted errors on bad input
        raise ConversionError(f"cannot read the converted model to embed metadata ({exc})") from exc
    buffer = schema.BufferT()
    buffer.data = np.frombuffer(blob, dtype=np.uint8)
    obj.buffers = list(obj.buffers or []) + [buffer]
    entry = schema.MetadataT()
    entry.name = name
    entry.buffer = len(obj.buffers) - 1
    obj.metadata = [m for m in (obj.metadata or []) if _name(m.name) != name] + [entry]
    builder = flatbuffers.Builder(len(model) + len(blob) + 4096)
    builder.Finish(obj.Pack(builder), file_identifier=FILE_IDENTIFIER)
    return bytes(builder.Output())


def _name(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
