"""Writing the metadata a .tflite carries: the ``edge_derm_metadata`` buffer and TFLite's standard metadata.

Embedding uses the TFLite schema's generated Python object API (pure Python, shipped with ai-edge-litert)
and ``flatbuffers``: the model is unpacked, a buffer with the JSON and a ``Metadata`` entry naming it are
added (replacing an older one of the same name), and the model is packed again. Beside it goes TFLite's
standard metadata (:mod:`.standard`) with the labels zipped onto the end, so that MediaPipe Tasks and the
Android tooling open the file too. :func:`.reader.read_metadata` is the reader.
"""

from __future__ import annotations

import json
import logging
from typing import Any, Callable

from edge_derm.errors import ConversionError

from .reader import FILE_IDENTIFIER, METADATA_NAME, TENSOR_TYPES
from .standard import METADATA_NAME as STANDARD_NAME
from .standard import pack_associated_files, read_associated_files, standard_metadata

_log = logging.getLogger(__name__)


def _schema():
    """The TFLite schema's generated object API (ai-edge-litert's copy, else TensorFlow's)."""
    try:
        from ai_edge_litert import schema_py_generated as schema
    except ImportError:  # pragma: no cover - ai-edge-litert is a dependency
        from tensorflow.lite.python import schema_py_generated as schema
    return schema


def object_io(obj: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """The (input, output) dtype, quantisation and shape of an unpacked model (the schema's object API)."""
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

    schema = _schema()
    try:
        obj = schema.ModelT.InitFromPackedBuf(bytearray(model), 0)
        io = object_io(obj)
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
