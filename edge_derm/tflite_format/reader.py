"""Reading the .tflite format: a bounds-checked flatbuffer walk and the metadata the file carries.

Pure Python (numpy-free, no TensorFlow): the runtime install checks every file here *before* an
interpreter sees it, so a truncated or corrupt file is a ModelError, never a crash.

The metadata that ``edge-derm convert`` embeds is a JSON document (UTF-8) in the TFLite buffer that the
model's ``metadata`` table names ``edge_derm_metadata``. To read it from another language: open the
TFLite flatbuffer (schema.fbs), find the ``Model.metadata`` entry with that name, take
``Model.buffers[entry.buffer].data`` (or ``offset``/``size`` for buffers stored after the flatbuffer) and
parse it as JSON. :func:`read_metadata` does exactly that; :mod:`.writer` writes it.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge_derm.errors import ModelError

METADATA_NAME = "edge_derm_metadata"
# TFLite's standard metadata (tflite_format/standard.py); its labels are zipped onto the file's end
STANDARD_METADATA_NAME = "TFLITE_METADATA"
FILE_IDENTIFIER = b"TFL3"

# TFLite TensorType enum (schema.fbs) -> numpy dtype name.
TENSOR_TYPES = {0: "float32", 1: "float16", 2: "int32", 3: "uint8", 4: "int64", 5: "string", 6: "bool",
                7: "int16", 8: "complex64", 9: "int8", 10: "float64", 11: "complex128", 12: "uint64",
                13: "resource", 14: "variant", 15: "uint32", 16: "uint16", 17: "int4", 18: "bfloat16"}
FLOAT_TYPES = frozenset({"float32", "float16", "float64", "bfloat16"})
_QUANTIZE, _DEQUANTIZE = 114, 6  # BuiltinOperator codes of the conversion ops at the model's edges


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
    """The model's structure (main subgraph), every subgraph checked; _Corrupt when it is not sound."""
    r = _Reader(buf)
    if r.n < 16:
        raise _Corrupt("file too small")
    if bytes(buf[4:8]) != FILE_IDENTIFIER:
        raise _Corrupt("no TFL3 file identifier")
    model = r.table(r._unpack("<I", 0))
    version = r.scalar(model, 0, "<I")
    opcodes = _opcodes(r, model)
    n_buffers, buffer_data = _buffers(r, model)
    subgraphs = r.tables(model, 2)
    if not subgraphs:
        raise _Corrupt("no subgraph")
    # every subgraph is checked; only the main one (the first) is described
    main = [_subgraph(r, sg, n_buffers, opcodes) for sg in subgraphs][0]
    metadata = {}
    for m in r.tables(model, 6):
        bi = r.scalar(m, 1, "<I")
        if bi >= len(buffer_data):
            raise _Corrupt("metadata points at a missing buffer")
        start, length = buffer_data[bi]
        metadata[r.string(m, 0)] = bytes(buf[start:start + length])
    tensors, inputs, outputs, ops = main
    if not inputs or not outputs:
        raise _Corrupt("the main subgraph has no inputs or outputs")
    return ModelInfo(r.n, version, tensors, inputs, outputs, ops, metadata, len(subgraphs))


def _opcodes(r: _Reader, model) -> list[tuple[int, str]]:
    """(builtin code, name) of every operator code; the larger of the deprecated and current code fields."""
    names = _op_names()
    opcodes = []
    for oc in r.tables(model, 1):
        code = max(r.scalar(oc, 0, "<b"), r.scalar(oc, 3, "<i"))
        custom = r.string(oc, 1)
        opcodes.append((code, custom or names.get(code, f"BUILTIN_{code}")))
    return opcodes


def _buffers(r: _Reader, model) -> tuple[int, list[tuple[int, int]]]:
    """How many buffers there are and each one's (start, length) in the file (inline or offset/size)."""
    buffers = r.tables(model, 4)
    buffer_data: list[tuple[int, int]] = []
    for b in buffers:
        start, length = r.vector(b, 0, 1)
        offset, size = r.scalar(b, 1, "<Q"), r.scalar(b, 2, "<Q")
        if offset > 1 and offset + size > r.n:
            raise _Corrupt("a weights buffer runs past the end of the file")
        buffer_data.append((start, length) if start else (offset if offset > 1 else 0, size if offset > 1 else 0))
    return len(buffers), buffer_data


def _tensors(r: _Reader, sg, n_buffers: int) -> list[TensorInfo]:
    """A subgraph's tensors, with their quantisation parameters; each must point at an existing buffer."""
    tensors = []
    for i, t in enumerate(r.tables(sg, 0)):
        q = r._indirect(t, 4)
        scale, zp = [], []
        if q is not None:
            qt = r.table(q)
            scale, zp = r.scalars(qt, 2, "<f"), r.scalars(qt, 3, "<q")
        bi = r.scalar(t, 2, "<I")
        if bi >= n_buffers and n_buffers:
            raise _Corrupt(f"tensor {i} points at buffer {bi} of {n_buffers}")
        tensors.append(TensorInfo(i, r.string(t, 3), TENSOR_TYPES.get(r.scalar(t, 1, "<b"), "unknown"),
                                  r.scalars(t, 0, "<i"), bi, scale, zp))
    return tensors


def _subgraph(r: _Reader, sg, n_buffers: int, opcodes: list[tuple[int, str]]):
    """(tensors, inputs, outputs, ops) of one subgraph, every reference checked."""
    tensors = _tensors(r, sg, n_buffers)
    inputs, outputs = r.scalars(sg, 1, "<i"), r.scalars(sg, 2, "<i")
    ops = []
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
        ops.append(OpInfo(opcodes[idx][0], opcodes[idx][1], op_in, op_out))
    if any(t < 0 or t >= len(tensors) for t in inputs + outputs):
        raise _Corrupt("subgraph input/output refers to a missing tensor")
    return tensors, inputs, outputs, ops


def read_model(model: str | Path | bytes) -> tuple[bytes, str]:
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


def inspect_bytes(buf: bytes, label: str) -> ModelInfo:
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
    buf, label = read_model(model)
    return inspect_bytes(buf, label)


def validate_tflite(path: str | Path) -> ModelInfo:
    """Check a .tflite file before any interpreter touches it; raises ModelError if it is unsound."""
    return inspect_tflite(path)


def decode_metadata(info: ModelInfo, label: str) -> dict | None:
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
    buf, label = read_model(path)
    return decode_metadata(inspect_bytes(buf, label), label)
