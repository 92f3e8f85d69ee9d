"""The metadata every .tflite carries: built here, embedded as the ``edge_derm_metadata`` buffer.

Embedding uses the TFLite schema's generated Python object API (pure Python, shipped with
ai-edge-litert) and ``flatbuffers``: the model is unpacked, a buffer with the JSON and a
``Metadata`` entry naming it are added (replacing an older one of the same name), and the model
is packed again. :func:`edge_derm.runtime.read_metadata` is the reader. Beside it goes TFLite's
standard metadata (:mod:`converters.standard_metadata`) with the labels zipped onto the end, so that
MediaPipe Tasks and the Android tooling open the file too.
"""

from __future__ import annotations

import json
import logging
from typing import Any, Callable

from edge_derm.artefacts import RunConfig
from edge_derm.errors import ConversionError
from edge_derm.runtime import FILE_IDENTIFIER, METADATA_NAME, ModelInfo

from .standard_metadata import METADATA_NAME as STANDARD_NAME
from .standard_metadata import pack_associated_files, read_associated_files, standard_metadata

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


def build_metadata(*, run_config: RunConfig, run_dir: str, quantization: str,
                   io: tuple[dict[str, Any], dict[str, Any]], verification: dict[str, Any], config_hash: str,
                   versions: dict[str, str], extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The flat metadata document of docs/ARCHITECTURE.md ("Convert folder").

    ``io`` is the (input, output) description of :func:`tensor_io` / :func:`embed_metadata`.
    """
    classes = list(run_config.classes)
    # The run's own triage and descriptions (from its datasets) win: a custom --taxonomy file has no
    # shipped namesake to reload. Runs from before they were recorded reload the taxonomy by name.
    own_triage = {c: g for c, g in (run_config.get("triage") or {}).items() if c in classes and g != "unknown"}
    if own_triage:
        triage = {c: own_triage.get(c, "unknown") for c in classes}
        descriptions = {c: d for c, d in (run_config.get("descriptions") or {}).items() if c in classes}
        if "descriptions" not in run_config.extra:  # a run from before descriptions were recorded
            descriptions, _ = taxonomy_info(run_config.get("taxonomy"), classes)
    else:
        descriptions, triage = taxonomy_info(run_config.get("taxonomy"), classes)
    tin, tout = io
    size = int(run_config.image_size)
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


def _object_io(obj: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """:func:`tensor_io` from the schema's object API (the model being embedded into)."""
    from edge_derm.runtime import TENSOR_TYPES

    sg = obj.subgraphs[0]

    def describe(index: int) -> dict[str, Any]:
        t = sg.tensors[int(index)]
        q = t.quantization
        scale = list(q.scale) if q is not None and q.scale is not None else []
        zp = list(q.zeroPoint) if q is not None and q.zeroPoint is not None else []
        return {"dtype": TENSOR_TYPES.get(int(t.type), "unknown"), "scale": float(scale[0]) if scale else 0.0,
                "zero_point": int(zp[0]) if zp else 0, "shape": [int(d) for d in t.shape]}

    return describe(sg.inputs[0]), describe(sg.outputs[0])


def embed_metadata(model: bytes, meta: dict[str, Any], name: str = METADATA_NAME) -> bytes:
    """Return ``model`` with ``meta`` (JSON, UTF-8) embedded as the named metadata buffer."""
    return embed_built_metadata(model, meta, name)[0]


def embed_built_metadata(model: bytes, meta: dict[str, Any] | Callable[[tuple[dict, dict]], dict[str, Any]],
                         name: str = METADATA_NAME) -> tuple[bytes, dict[str, Any]]:
    """Return ``model`` with the metadata embedded as the named buffer, and the metadata.

    ``meta`` is the document, or a function of the model's (input, output) description that makes
    it, so that the converted model is read once: here, where it is unpacked to be packed again.
    """
    import flatbuffers
    import numpy as np

    try:
        from ai_edge_litert import schema_py_generated as schema
    except ImportError:  # pragma: no cover - ai-edge-litert is a dependency
        from tensorflow.lite.python import schema_py_generated as schema

    try:
        obj = schema.ModelT.InitFromPackedBuf(bytearray(model), 0)
        io = _object_io(obj)
    except Exception as exc:  # noqa: BLE001 - the generated code raises assorted errors on bad input
        raise ConversionError(f"cannot read the converted model to embed metadata ({exc})") from exc
    if callable(meta):
        meta = meta(io)
    blob = json.dumps(meta, sort_keys=False, ensure_ascii=False).encode("utf-8")
    standard, files = _standard_parts(meta)
    for key, data in ((name, blob), (STANDARD_NAME, standard)):
        if data is None:
            continue
        buffer = schema.BufferT()
        buffer.data = np.frombuffer(data, dtype=np.uint8)
        obj.buffers = list(obj.buffers or []) + [buffer]
        entry = schema.MetadataT()
        entry.name = key
        entry.buffer = len(obj.buffers) - 1
        obj.metadata = [m for m in (obj.metadata or []) if _name(m.name) != key] + [entry]
    builder = flatbuffers.Builder(len(model) + len(blob) + len(standard or b"") + 4096)
    builder.Finish(obj.Pack(builder), file_identifier=FILE_IDENTIFIER)
    packed = bytes(builder.Output())
    if standard is None:
        files = read_associated_files(model)  # repacking dropped the archive: put the old one back
    return (pack_associated_files(packed, files) if files else packed), meta


def _standard_parts(meta: dict[str, Any]) -> tuple[bytes | None, dict[str, bytes]]:
    """The standard clients' copy of a project document; (None, {}) for another document (tests embed bare
    or deliberately broken ones), which keeps what the file has. Convert's verification reads the labels
    back from the written file, so a document that should have produced them and did not is caught."""
    try:
        return standard_metadata(meta)
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
        _log.debug("no standard metadata for this document (%s)", exc)
        return None, {}


def _name(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
