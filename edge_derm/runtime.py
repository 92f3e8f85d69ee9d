"""Run .tflite classifiers without TensorFlow.

The interpreter comes from ai-edge-litert, else tflite-runtime, else ``tf.lite`` (the only path
that would import TensorFlow, and only when neither runtime is installed). Files are checked by
a pure-Python, bounds-checked flatbuffer walk (:func:`inspect_tflite`) *before* any interpreter
sees them, so a truncated or corrupt file is a ModelError, never a crash.

The metadata that ``edge-derm convert`` embeds is a JSON document (UTF-8) in the TFLite buffer
that the model's ``metadata`` table names ``edge_derm_metadata``. To read it from another
language: open the TFLite flatbuffer (schema.fbs), find the ``Model.metadata`` entry with that
name, take ``Model.buffers[entry.buffer].data`` (or ``offset``/``size`` for buffers stored after
the flatbuffer) and parse it as JSON. :func:`read_metadata` does exactly that.

When a convert folder's ``model.json`` sits beside the model, it records the SHA-256 of every file
it verified; :class:`TFLiteModel` refuses a file whose bytes no longer match (a damaged copy, or a
file swapped after verification), so what runs is what was verified.
"""

from __future__ import annotations

import hashlib
import json
import logging
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from edge_derm.errors import DataError, ModelError

_log = logging.getLogger(__name__)

METADATA_NAME = "edge_derm_metadata"
# TFLite's standard metadata (converters/standard_metadata.py); its labels are zipped onto the file's end
STANDARD_METADATA_NAME = "TFLITE_METADATA"
FILE_IDENTIFIER = b"TFL3"

# TFLite TensorType enum (schema.fbs) -> numpy dtype name.
TENSOR_TYPES = {0: "float32", 1: "float16", 2: "int32", 3: "uint8", 4: "int64", 5: "string", 6: "bool",
                7: "int16", 8: "complex64", 9: "int8", 10: "float64", 11: "complex128", 12: "uint64",
                13: "resource", 14: "variant", 15: "uint32", 16: "uint16", 17: "int4", 18: "bfloat16"}
FLOAT_TYPES = frozenset({"float32", "float16", "float64", "bfloat16"})
_QUANTIZE, _DEQUANTIZE = 114, 6  # BuiltinOperator codes of the conversion ops at the model's edges


def max_threads() -> int:
    """The most interpreter threads accepted on this machine: 4 x its CPUs (far more crashes the runtime)."""
    import os

    return 4 * (os.cpu_count() or 1)


def check_threads(n: int | None, what: str = "--threads") -> None:
    """ConfigError unless ``n`` is None or a thread count in 1 .. :func:`max_threads`."""
    from edge_derm.errors import ConfigError

    if n is None:
        return
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= max_threads():
        raise ConfigError(f"{what} {n} is out of range; use 1 to {max_threads()} (4 x this machine's CPUs)")


@dataclass
class TensorInfo:
    """One tensor of the main subgraph, as stored in the file."""

    index: int
    name: str
    dtype: str
    shape: list[int]
    buffer: int
    scale: list[float] = field(default_factory=list)
    zero_point: list[int] = field(default_factory=list)


@dataclass
class OpInfo:
    """One operator of the main subgraph."""

    code: int
    name: str
    inputs: list[int]
    outputs: list[int]


@dataclass
class ModelInfo:
    """What :func:`inspect_tflite` reads from a .tflite file (main subgraph only)."""

    size: int
    version: int
    tensors: list[TensorInfo]
    inputs: list[int]
    outputs: list[int]
    ops: list[OpInfo]
    metadata: dict[str, bytes]
    n_subgraphs: int

    @property
    def input_tensors(self) -> list[TensorInfo]:
        return [self.tensors[i] for i in self.inputs]

    @property
    def output_tensors(self) -> list[TensorInfo]:
        return [self.tensors[i] for i in self.outputs]

    def integer_op_share(self) -> float:
        """Share of compute ops whose inputs and outputs are all non-float.

        QUANTIZE / DEQUANTIZE ops (type conversions at the model's edges and fp16 weight
        expansion) are not compute and are left out; hybrid (dynamic-range) ops have float
        activations and so count as float.
        """
        compute = [op for op in self.ops if op.code not in (_QUANTIZE, _DEQUANTIZE)]
        if not compute:
            return 0.0
        n_int = sum(1 for op in compute if not any(self.tensors[t].dtype in FLOAT_TYPES
                                                   for t in op.inputs + op.outputs if t >= 0))
        return n_int / len(compute)

    def float_ops(self) -> list[str]:
        """Names of the compute ops that run in float (for error messages and reports)."""
        return [op.name for op in self.ops if op.code not in (_QUANTIZE, _DEQUANTIZE)
                and any(self.tensors[t].dtype in FLOAT_TYPES for t in op.inputs + op.outputs if t >= 0)]


class _Corrupt(Exception):
    pass


class _Reader:
    """A bounds-checked reader of flatbuffer tables, vectors and strings."""

    def __init__(self, buf: bytes):
        self.buf = buf
        self.n = len(buf)

    def _unpack(self, fmt: str, pos: int) -> Any:
        size = struct.calcsize(fmt)
        if pos < 0 or pos + size > self.n:
            raise _Corrupt(f"offset {pos} beyond the end of the file ({self.n} bytes)")
        return struct.unpack_from(fmt, self.buf, pos)[0]

    def table(self, pos: int) -> tuple[int, int, int]:
        """Return (table pos, vtable pos, vtable length)."""
        vt = pos - self._unpack("<i", pos)
        vt_len = self._unpack("<H", vt)
        if vt_len < 4 or vt_len % 2:
            raise _Corrupt("bad vtable")
        self._unpack("<H", vt + vt_len - 2)
        return pos, vt, vt_len

    def _field(self, tab: tuple[int, int, int], slot: int) -> int:
        pos, vt, vt_len = tab
        o = 4 + 2 * slot
        return self._unpack("<H", vt + o) if o < vt_len else 0

    def scalar(self, tab, slot: int, fmt: str, default: Any = 0) -> Any:
        o = self._field(tab, slot)
        return self._unpack(fmt, tab[0] + o) if o else default

    def _indirect(self, tab, slot: int) -> int | None:
        o = self._field(tab, slot)
        if not o:
            return None
        p = tab[0] + o
        return p + self._unpack("<I", p)

    def vector(self, tab, slot: int, elem_size: int) -> tuple[int, int]:
        """Return (start of elements, length); (0, 0) when absent."""
        p = self._indirect(tab, slot)
        if p is None:
            return 0, 0
        length = self._unpack("<I", p)
        if p + 4 + length * elem_size > self.n:
            raise _Corrupt(f"vector of {length} items runs past the end of the file")
        return p + 4, length

    def scalars(self, tab, slot: int, fmt: str) -> list[Any]:
        size = struct.calcsize(fmt)
        start, length = self.vector(tab, slot, size)
        return list(struct.unpack_from(f"<{length}{fmt[-1]}", self.buf, start)) if length else []

    def tables(self, tab, slot: int) -> list[tuple[int, int, int]]:
        start, length = self.vector(tab, slot, 4)
        out = []
        for i in range(length):
            p = start + 4 * i
            out.append(self.table(p + self._unpack("<I", p)))
        return out

    def string(self, tab, slot: int) -> str:
        start, length = self.vector(tab, slot, 1)
        return bytes(self.buf[start:start + length]).decode("utf-8", errors="replace") if start else ""

    def bytes_(self, tab, slot: int) -> bytes:
        start, length = self.vector(tab, slot, 1)
        return bytes(self.buf[start:start + length]) if start else b""


def _op_names() -> dict[int, str]:
    try:  # the generated schema is pure Python and ships with ai-edge-litert
        from ai_edge_litert.schema_py_generated import BuiltinOperator
    except ImportError:  # pragma: no cover - other runtimes
        return {}
    return {v: k for k, v in vars(BuiltinOperator).items() if isinstance(v, int) and not k.startswith("_")}


def _parse(buf: bytes) -> ModelInfo:
    r = _Reader(buf)
    if r.n < 16:
        raise _Corrupt("file too small")
    if bytes(buf[4:8]) != FILE_IDENTIFIER:
        raise _Corrupt("no TFL3 file identifier")
    model = r.table(r._unpack("<I", 0))
    version = r.scalar(model, 0, "<I")
    names = _op_names()
    opcodes = []
    for oc in r.tables(model, 1):
        code = max(r.scalar(oc, 0, "<b"), r.scalar(oc, 3, "<i"))
        custom = r.string(oc, 1)
        opcodes.append((code, custom or names.get(code, f"BUILTIN_{code}")))
    buffers = r.tables(model, 4)
    buffer_data: list[tuple[int, int]] = []
    for b in buffers:
        start, length = r.vector(b, 0, 1)
        offset, size = r.scalar(b, 1, "<Q"), r.scalar(b, 2, "<Q")
        if offset > 1 and offset + size > r.n:
            raise _Corrupt("a weights buffer runs past the end of the file")
        buffer_data.append((start, length) if start else (offset if offset > 1 else 0, size if offset > 1 else 0))
    subgraphs = r.tables(model, 2)
    if not subgraphs:
        raise _Corrupt("no subgraph")
    tensors_all: list[TensorInfo] = []
    sg_inputs: list[int] = []
    sg_outputs: list[int] = []
    ops: list[OpInfo] = []
    for k, sg in enumerate(subgraphs):
        tensors = []
        for i, t in enumerate(r.tables(sg, 0)):
            q = r._indirect(t, 4)
            scale, zp = [], []
            if q is not None:
                qt = r.table(q)
                scale, zp = r.scalars(qt, 2, "<f"), r.scalars(qt, 3, "<q")
            bi = r.scalar(t, 2, "<I")
            if bi >= len(buffers) and buffers:
                raise _Corrupt(f"tensor {i} points at buffer {bi} of {len(buffers)}")
            tensors.append(TensorInfo(i, r.string(t, 3), TENSOR_TYPES.get(r.scalar(t, 1, "<b"), "unknown"),
                                      r.scalars(t, 0, "<i"), bi, scale, zp))
        inputs, outputs = r.scalars(sg, 1, "<i"), r.scalars(sg, 2, "<i")
        sg_ops = []
        for o in r.tables(sg, 3):
            idx = r.scalar(o, 0, "<I")
            if idx >= len(opcodes):
                raise _Corrupt(f"operator code {idx} out of range")
            op_in, op_out = r.scalars(o, 1, "<i"), r.scalars(o, 2, "<i")
            options = r._indirect(o, 4)
            if options is not None:
                r.table(options)
            r.vector(o, 5, 1)  # custom options
            if any(t >= len(tensors) for t in op_in + op_out) or any(t < 0 for t in op_out):
                raise _Corrupt("operator refers to a missing tensor")
            sg_ops.append(OpInfo(opcodes[idx][0], opcodes[idx][1], op_in, op_out))
        if any(t < 0 or t >= len(tensors) for t in inputs + outputs):
            raise _Corrupt("subgraph input/output refers to a missing tensor")
        if k == 0:
            tensors_all, sg_inputs, sg_outputs, ops = tensors, inputs, outputs, sg_ops
    metadata = {}
    for m in r.tables(model, 6):
        bi = r.scalar(m, 1, "<I")
        if bi >= len(buffer_data):
            raise _Corrupt("metadata points at a missing buffer")
        start, length = buffer_data[bi]
        metadata[r.string(m, 0)] = bytes(buf[start:start + length])
    if not sg_inputs or not sg_outputs:
        raise _Corrupt("the main subgraph has no inputs or outputs")
    return ModelInfo(r.n, version, tensors_all, sg_inputs, sg_outputs, ops, metadata, len(subgraphs))


def _read_model(model: str | Path | bytes) -> tuple[bytes, str]:
    """The file's bytes and a label for messages."""
    if isinstance(model, (bytes, bytearray)):
        return bytes(model), "model"
    path = Path(model)
    if path.is_dir():
        found = sorted(p.name for p in path.glob("*.tflite"))
        raise ModelError(f"{path} is a folder, not a .tflite file; pass one of its models"
                         + (f" ({', '.join(found[:4])})" if found else " (it holds none)"))
    if not path.is_file():
        raise ModelError(f"model file not found: {path}")
    try:
        return path.read_bytes(), str(path)
    except OSError as exc:
        raise ModelError(f"{path}: cannot read ({exc.strerror})") from exc


def _inspect_bytes(buf: bytes, label: str) -> ModelInfo:
    try:
        info = _parse(buf)
    except (_Corrupt, struct.error, IndexError, OverflowError, ValueError) as exc:
        raise ModelError(f"{label} is not a valid .tflite model ({exc}); it may be truncated or corrupt, "
                         "convert it again") from None
    if STANDARD_METADATA_NAME in info.metadata and _archive_started(buf):
        # the standard metadata's label files are zipped onto the end: a cut there leaves the flatbuffer
        # sound, so the archive is what tells that the file is incomplete (a tool that rewrote the model
        # and dropped the archive altogether, e.g. a quantiser, leaves no archive to check)
        import io
        import zipfile

        try:
            with zipfile.ZipFile(io.BytesIO(buf)) as zf:
                bad = zf.testzip()
        except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
            bad = str(exc)
        if bad is not None:
            raise ModelError(f"{label}: the labels archive at the end of the file is damaged ({bad}); it may be "
                             "truncated, convert it again")
    return info


def _archive_started(buf: bytes) -> bool:
    """Whether a zip entry for ``labels.txt`` (the first associated file) begins somewhere in ``buf``:
    its local header is ``PK\\x03\\x04`` and 26 bytes of fields before the name."""
    at = buf.rfind(b"labels.txt")
    while at >= 30:
        if buf[at - 30:at - 26] == b"PK\x03\x04":
            return True
        at = buf.rfind(b"labels.txt", 0, at)
    return False


def inspect_tflite(model: str | Path | bytes) -> ModelInfo:
    """Parse a .tflite file (path or bytes) with bounds checks; ModelError when it is not a sound model."""
    buf, label = _read_model(model)
    return _inspect_bytes(buf, label)


def validate_tflite(path: str | Path) -> ModelInfo:
    """Check a .tflite file before any interpreter touches it; raises ModelError if it is unsound."""
    return inspect_tflite(path)


def _decode_metadata(info: ModelInfo, label: str) -> dict | None:
    raw = info.metadata.get(METADATA_NAME)
    if raw is None:
        return None
    try:
        meta = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise ModelError(f"{label}: the embedded {METADATA_NAME} is not valid JSON ({exc}); "
                         "convert the model again") from None
    if not isinstance(meta, dict):
        raise ModelError(f"{label}: the embedded {METADATA_NAME} is not a JSON object; convert the model again")
    return meta


def read_metadata(path: str | Path | bytes) -> dict | None:
    """The embedded ``edge_derm_metadata`` JSON, or None when the model has none."""
    buf, label = _read_model(path)
    return _decode_metadata(_inspect_bytes(buf, label), label)


def sha256_bytes(data: bytes) -> str:
    """Hex SHA-256 of ``data`` (what ``model.json`` records for each file)."""
    return hashlib.sha256(data).hexdigest()


def recorded_sha256(path: str | Path) -> str | None:
    """The SHA-256 that the ``model.json`` beside ``path`` records for it; None when nothing is recorded.

    ``model.json`` is either a convert folder's document (``variants``, each with ``file`` and
    ``sha256``) or the flat metadata of one model (``edge-derm export android``), which applies when its
    ``file`` names this file.

    Raises:
        ModelError: ``model.json`` is there but is not valid JSON.
    """
    path = Path(path)
    doc_path = path.parent / "model.json"
    if not doc_path.is_file():
        return None
    try:
        doc = json.loads(doc_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ModelError(f"{doc_path} beside the model is not readable JSON ({exc}); convert again or remove it") from None
    if not isinstance(doc, dict):
        return None
    if doc.get("kind") == "convert":
        for q, meta in (doc.get("variants") or {}).items():
            if isinstance(meta, dict) and meta.get("file", f"model.{q}.tflite") == path.name:
                return meta.get("sha256")
        return None
    return doc.get("sha256") if doc.get("file") == path.name else None


def _interpreter_class():
    try:
        from ai_edge_litert.interpreter import Interpreter
        return Interpreter
    except ImportError:
        pass
    try:  # pragma: no cover - depends on what is installed
        from tflite_runtime.interpreter import Interpreter
        return Interpreter
    except ImportError:  # pragma: no cover
        pass
    try:  # pragma: no cover
        import tensorflow as tf
        return tf.lite.Interpreter
    except ImportError:  # pragma: no cover
        raise ModelError("no TFLite interpreter installed; pip install ai-edge-litert") from None


def quantize(x: np.ndarray, dtype: np.dtype, scale: float, zero_point: int) -> np.ndarray:
    """Float -> integer with the tensor's affine parameters (round half to even, clipped)."""
    info = np.iinfo(dtype)
    if not scale:
        return np.clip(np.rint(x), info.min, info.max).astype(dtype)
    return np.clip(np.rint(x / scale + zero_point), info.min, info.max).astype(dtype)


def dequantize(q: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    """Integer -> float32."""
    return ((q.astype(np.float32) - np.float32(zero_point)) * np.float32(scale)).astype(np.float32)


def _check_metadata(meta: dict, path: Path, input_size: int) -> None:
    """ModelError (one line) when the embedded metadata contradicts the model or cannot be used: it
    decides the labels and the preprocessing, so a tampered document must not run silently."""
    def bad(what: str) -> ModelError:
        return ModelError(f"{path}: bad embedded metadata: {what}; convert the model again")

    labels = meta.get("labels")
    if labels is not None:
        if not isinstance(labels, list) or not all(isinstance(x, str) and x for x in labels):
            raise bad("labels is not a list of names")
        if len(set(labels)) != len(labels):
            dup = sorted({x for x in labels if labels.count(x) > 1})
            raise bad(f"labels has duplicates ({', '.join(dup)})")
    inp = meta.get("input", {})
    if not isinstance(inp, dict):
        raise bad("input is not an object")
    size = inp.get("size")
    if size is not None:
        if not (isinstance(size, list) and len(size) == 2 and all(isinstance(v, int) and not isinstance(v, bool)
                                                                 for v in size)):
            raise bad(f"input.size {size!r} is not [height, width]")
        if size != [input_size, input_size]:
            raise bad(f"input.size {size} but the model takes {input_size} x {input_size}")
    from edge_derm.data.images import RESIZE_MODES

    if inp.get("resize", "nearest") not in RESIZE_MODES:
        raise bad(f"input.resize {inp.get('resize')!r} is not one of {', '.join(RESIZE_MODES)}")


class TFLiteModel:
    """A validated .tflite classifier with its metadata.

    Args:
        path: the .tflite file.
        num_threads: interpreter threads (None: the runtime's default).
        labels: class names in output order; default the embedded metadata, else ``labels.txt``
            beside the model, else ``class_<i>``.
    """

    def __init__(self, path: str | Path, num_threads: int | None = None, labels: Sequence[str] | None = None, *,
                 content: bytes | None = None, check_hash: bool = True):
        self.path = Path(path)
        check_threads(num_threads)
        # The file is read and parsed once; the interpreter runs these same bytes, so the
        # checks below (hash, structure, metadata) are about exactly what runs.
        self.content, label = (bytes(content), str(self.path)) if content is not None else _read_model(self.path)
        self.sha256 = sha256_bytes(self.content)
        if check_hash:
            expected = recorded_sha256(self.path)
            if expected and expected != self.sha256:
                raise ModelError(f"{self.path}: SHA-256 {self.sha256[:12]}... differs from the {expected[:12]}... that "
                                 f"{self.path.parent / 'model.json'} recorded at conversion; the file was changed or "
                                 "damaged, convert again")
        self.info = _inspect_bytes(self.content, label)
        self.metadata: dict = _decode_metadata(self.info, label) or {}
        if len(self.info.inputs) != 1 or len(self.info.outputs) != 1:
            raise ModelError(f"{self.path}: expected one image input and one output, found "
                             f"{len(self.info.inputs)} and {len(self.info.outputs)}")
        tin = self.info.input_tensors[0]
        if len(tin.shape) != 4 or tin.shape[3] != 3 or tin.shape[1] != tin.shape[2]:
            raise ModelError(f"{self.path}: input shape {tin.shape} is not a square RGB image batch")
        try:
            self.interpreter = _interpreter_class()(model_content=self.content, num_threads=num_threads)
            self.interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise ModelError(f"{self.path}: the interpreter cannot load it ({exc})") from None
        self.input_details = self.interpreter.get_input_details()[0]
        self.output_details = self.interpreter.get_output_details()[0]
        self.num_classes = int(self.output_details["shape"][-1])
        self.labels = self._labels(labels)
        self.input_size = int(tin.shape[1])
        _check_metadata(self.metadata, self.path, self.input_size)
        self.resize_mode = self.metadata.get("input", {}).get("resize", "nearest")
        self._batch = int(self.input_details["shape"][0])
        from edge_derm.calibration import check as check_calibration
        from edge_derm.errors import ConfigError

        try:
            self.calibration: dict | None = check_calibration(self.metadata.get("output_calibration"),
                                                                     self.num_classes)
        except ConfigError as exc:
            raise ModelError(f"{self.path}: bad metadata: {exc}; convert the model again") from None

    def calibrate(self, probs: np.ndarray) -> np.ndarray:
        """The metadata's temperature (and prior shift) applied to raw output probabilities (N, C)."""
        if not self.calibration:
            return np.asarray(probs, dtype=np.float32)
        from edge_derm.calibration import apply

        return apply(probs, self.calibration.get("temperature", 1.0), self.calibration.get("log_prior"))

    def referral(self, calibrated: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        """``(score, refer)`` per row: the referral group's calibrated probability and whether it reaches
        the stored operating point; None when the metadata has no threshold."""
        cal = self.calibration or {}
        if cal.get("threshold") is None or not cal.get("referral_classes"):
            return None
        # by the converted labels (the metadata's), not names a caller may have passed
        names = self.metadata.get("labels") or self.labels
        mask = np.array([lab in cal["referral_classes"] for lab in names], dtype=bool)
        score = np.asarray(calibrated, np.float64)[..., mask].sum(axis=-1)
        return score, score >= float(cal["threshold"])

    def _labels(self, labels: Sequence[str] | None) -> list[str]:
        source = "--labels"
        if labels is None and self.metadata.get("labels"):
            labels, source = self.metadata["labels"], "the embedded metadata"
        if labels is None:
            txt = self.path.parent / "labels.txt"
            if txt.is_file():
                labels = [s for s in txt.read_text(encoding="utf-8").splitlines() if s.strip()]
                source = str(txt)
        if labels is None:
            return [f"class_{i}" for i in range(self.num_classes)]
        labels = list(labels)
        if len(labels) != self.num_classes:
            raise ModelError(f"{self.path}: {len(labels)} labels in {source} but the model has "
                             f"{self.num_classes} outputs; use the labels the model was converted with")
        return labels

    def _resize_batch(self, n: int) -> None:
        if n != self._batch:
            idx = self.input_details["index"]
            self.interpreter.resize_tensor_input(idx, [n, self.input_size, self.input_size, 3])
            self.interpreter.allocate_tensors()
            self.input_details = self.interpreter.get_input_details()[0]
            self.output_details = self.interpreter.get_output_details()[0]
            self._batch = n

    def set_input(self, batch: np.ndarray) -> None:
        """Quantise (when needed) and set a float [N, S, S, 3] batch in [0, 255]."""
        batch = np.asarray(batch, dtype=np.float32)
        s = self.input_size
        if batch.ndim != 4 or batch.shape[1:] != (s, s, 3):
            raise DataError(f"batch shape {batch.shape} does not match the model input (N, {s}, {s}, 3)")
        self._resize_batch(batch.shape[0])
        dtype = self.input_details["dtype"]
        if np.issubdtype(dtype, np.integer):
            scale, zp = self.input_details["quantization"]
            batch = quantize(batch, dtype, scale, zp)
        else:
            batch = batch.astype(dtype)
        self.interpreter.set_tensor(self.input_details["index"], batch)

    def invoke_raw(self) -> None:
        """Run the interpreter once on the input already set (for latency loops)."""
        self.interpreter.invoke()

    def get_output(self) -> np.ndarray:
        """The output as float32 probabilities (dequantised when needed)."""
        out = self.interpreter.get_tensor(self.output_details["index"])
        if np.issubdtype(out.dtype, np.integer):
            scale, zp = self.output_details["quantization"]
            return dequantize(out, scale, zp)
        return out.astype(np.float32)

    def predict(self, batch: np.ndarray, batch_size: int = 32) -> np.ndarray:
        """Probabilities float32 [N, C] for float RGB images [N, S, S, 3] in [0, 255]."""
        batch = np.asarray(batch, dtype=np.float32)
        if batch.ndim != 4:
            raise DataError(f"expected a batch of images (N, S, S, 3), got shape {batch.shape}")
        outs = []
        for i in range(0, batch.shape[0], batch_size):
            self.set_input(batch[i:i + batch_size])
            self.invoke_raw()
            outs.append(self.get_output().reshape(-1, self.num_classes))
        return np.concatenate(outs) if outs else np.zeros((0, self.num_classes), np.float32)

    def load_image(self, path: str | Path) -> np.ndarray:
        """An image preprocessed exactly as the metadata says (size, resize mode)."""
        from edge_derm.data.images import load_for_model

        return load_for_model(path, self.input_size, self.resize_mode)

    def predict_files(self, paths: Sequence[str | Path], batch_size: int = 32) -> tuple[np.ndarray, dict[str, str]]:
        """Classify image files; unreadable ones are reported, not fatal.

        Returns:
            ``probs`` float32 [len(paths), C] (rows of failed files are NaN) and ``errors``
            mapping each failed path (as given, str) to a one-line message.
        """
        probs = np.full((len(paths), self.num_classes), np.nan, dtype=np.float32)
        errors: dict[str, str] = {}
        for start in range(0, len(paths), batch_size):
            chunk = list(range(start, min(start + batch_size, len(paths))))
            imgs, ok = [], []
            for i in chunk:
                try:
                    imgs.append(self.load_image(paths[i]))
                    ok.append(i)
                except DataError as exc:
                    errors[str(paths[i])] = str(exc)
            if imgs:
                probs[ok] = self.predict(np.stack(imgs), batch_size=batch_size)
        return probs, errors


def top_k(probs: np.ndarray, labels: Sequence[str], k: int = 3) -> list[tuple[str, float]]:
    """The k most probable (label, probability) pairs of one probability vector."""
    order = np.argsort(-probs, kind="stable")[:k]
    return [(labels[i], float(probs[i])) for i in order]
