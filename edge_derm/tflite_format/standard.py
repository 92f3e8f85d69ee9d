"""TensorFlow Lite's standard model metadata, so the standard clients can open every variant.

MediaPipe Tasks' ImageClassifier (Android, iOS, web, Python), Android Studio's ML model binding and
the TFLite Support library read a ``TFLITE_METADATA`` buffer (a ``ModelMetadata`` flatbuffer of
``metadata_schema.fbs``, file identifier ``M001``) and the associated files zipped onto the end of
the model. This module writes both from the project's own metadata document:

* input: image properties (RGB) and ``NormalizationOptions`` equal to the model's own input contract
  (pixels in [0, 255], mean 0, std 1: the scaling lives inside the model), with value stats;
* output: the class codes as ``labels.txt`` (``TENSOR_AXIS_LABELS``), their descriptions as a
  display-name file (locale ``en``), and, when the run fitted one, the temperature and prior shift as
  ``ScoreCalibrationOptions``: with the ``LOG`` transformation MediaPipe scores class ``i`` as
  ``sigmoid(log(p_i) / T + log_prior_i)``, which orders the classes exactly as the project's
  calibrated ``softmax(log p / T + log_prior)`` (same top-1) but is not normalised over classes.

Why hand-built with ``flatbuffers`` rather than through MediaPipe's ``metadata_writers``: those do not
import from the current wheels (a compiled module is missing), and no MediaPipe release installs
beside tensorflow-model-optimization (``absl-py ~= 2.3`` against ``~= 1.2``). The writer below follows
the published schema's field slots; ``tests/test_standard_metadata.py`` reads its output back with
MediaPipe's own generated schema and runs MediaPipe's ImageClassifier on every variant.
"""

from __future__ import annotations

import io
import math
import zipfile
from typing import Any, Sequence

import flatbuffers

from .reader import STANDARD_METADATA_NAME as METADATA_NAME

FILE_IDENTIFIER = b"M001"
# The features used here (image properties, normalisation, score calibration, labels with a locale)
# are all in the schema's first release; clients refuse only a version newer than their own parser.
MIN_PARSER_VERSION = "1.0.0"
LABELS_FILE = "labels.txt"
DISPLAY_NAMES_FILE = "labels_en.txt"
CALIBRATION_FILE = "score_calibration.txt"

# metadata_schema.fbs enum values
_COLOR_RGB = 1
_CONTENT_FEATURE, _CONTENT_IMAGE = 1, 2
_UNIT_NORMALIZATION, _UNIT_SCORE_CALIBRATION = 1, 2
_TRANSFORM_LOG = 1
_FILE_AXIS_LABELS, _FILE_SCORE_CALIBRATION = 2, 4


def standard_metadata(meta: dict[str, Any]) -> tuple[bytes, dict[str, bytes]]:
    """The ``ModelMetadata`` flatbuffer and the associated files for the project's metadata ``meta``.

    ``meta`` is the document of :func:`converters.metadata.build_metadata` (labels, descriptions,
    input contract, output calibration).
    """
    labels = [str(c) for c in meta["labels"]]
    descriptions = meta.get("descriptions") or {}
    files = {LABELS_FILE: _lines(labels)}
    if labels and all(descriptions.get(c) for c in labels):
        files[DISPLAY_NAMES_FILE] = _lines([descriptions[c] for c in labels])
    calibration = _score_calibration(meta.get("output_calibration"), len(labels))
    if calibration is not None:
        files[CALIBRATION_FILE] = calibration

    b = flatbuffers.Builder(1024)
    inp = meta["input"]
    lo, hi = (float(v) for v in inp.get("range", (0, 255)))
    input_tensor = _tensor(
        b, "image",
        f"RGB image, {inp['size'][0]}x{inp['size'][1]} px, values in [{lo:g}, {hi:g}]; "
        f"{inp.get('preprocessing_in_model') or 'no further scaling'}.",
        content=_image_content(b),
        units=[_normalization(b, [float(v) for v in inp.get("mean", [0.0])],
                              [float(v) for v in inp.get("std", [1.0])])],
        stats=_stats(b, [hi], [lo]), files=[])
    out_files = [_associated_file(b, LABELS_FILE, "Class codes, one per output score.", _FILE_AXIS_LABELS)]
    if DISPLAY_NAMES_FILE in files:
        out_files.append(_associated_file(b, DISPLAY_NAMES_FILE, "Class names in English.", _FILE_AXIS_LABELS,
                                          locale="en"))
    units = []
    if calibration is not None:
        out_files.append(_associated_file(b, CALIBRATION_FILE, "Per-class sigmoid parameters: the temperature "
                                          "and prior shift fitted on the validation split.",
                                          _FILE_SCORE_CALIBRATION))
        units.append(_score_calibration_unit(b))
    output_tensor = _tensor(b, "probability", "Softmax probability of each class.", content=_feature_content(b),
                            units=units, stats=_stats(b, [1.0], [0.0]), files=out_files)
    subgraph = _table(b, 10, [(0, b.CreateString("image_classifier"))],
                      vectors={2: [input_tensor], 3: [output_tensor]})
    root = _table(b, 8, [
        (0, b.CreateString(f"edge-derm {meta.get('name', 'model')} ({meta.get('quantization', '')})")),
        (1, b.CreateString("Skin-lesion image classifier; not a diagnosis: a triage aid for clinicians.")),
        (2, b.CreateString(str(meta.get("format_version", "")))),
        (4, b.CreateString("edge-derm")),
        (7, b.CreateString(MIN_PARSER_VERSION)),
    ], vectors={3: [subgraph]})
    b.Finish(root, file_identifier=FILE_IDENTIFIER)
    return bytes(b.Output()), files


def pack_associated_files(model: bytes, files: dict[str, bytes]) -> bytes:
    """``model`` with ``files`` appended as a zip archive (how the standard clients find them).

    The flatbuffer is untouched (interpreters ignore trailing bytes); the archive's offsets count
    from the start of the file, as the TFLite Support populator writes them.
    """
    buf = io.BytesIO()
    buf.write(model)
    with zipfile.ZipFile(buf, "a", compression=zipfile.ZIP_STORED) as zf:
        for name, data in files.items():
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))  # reproducible bytes
            zf.writestr(info, data)
    return buf.getvalue()


def read_associated_files(model: bytes) -> dict[str, bytes]:
    """The associated files zipped onto ``model`` ({} when there are none)."""
    try:
        with zipfile.ZipFile(io.BytesIO(model)) as zf:
            return {name: zf.read(name) for name in zf.namelist()}
    except zipfile.BadZipFile:
        return {}


def _lines(values: Sequence[str]) -> bytes:
    # no final newline: MediaPipe counts the empty line after it as one more class
    return "\n".join(v.replace("\n", " ") for v in values).encode("utf-8")


def _score_calibration(block: dict[str, Any] | None, n_classes: int) -> bytes | None:
    """``scale,slope,offset`` per class: ``sigmoid(log(p) / T + log_prior)`` (None: no calibration)."""
    if not block or block.get("temperature") is None:
        return None
    t = float(block["temperature"])
    if not (math.isfinite(t) and t > 0):
        return None
    prior = block.get("log_prior") or [0.0] * n_classes
    return _lines([f"1.0,{1.0 / t:.9g},{float(o):.9g}" for o in prior])


def _table(b: flatbuffers.Builder, n_slots: int, offsets: list[tuple[int, int]],
           vectors: dict[int, list[int]] | None = None, scalars: list[tuple[int, str, Any]] = ()) -> int:
    """One table: ``offsets`` are (slot, offset) pairs, ``vectors`` slot -> table offsets,
    ``scalars`` (slot, kind, value) with kind ``int8``/``uint8``/``float32``."""
    vecs = {}
    for slot, items in (vectors or {}).items():
        b.StartVector(4, len(items), 4)
        for item in reversed(items):
            b.PrependUOffsetTRelative(item)
        vecs[slot] = b.EndVector()
    b.StartObject(n_slots)
    for slot, off in [*offsets, *vecs.items()]:
        b.PrependUOffsetTRelativeSlot(slot, off, 0)
    for slot, kind, value in scalars:
        {"int8": b.PrependInt8Slot, "uint8": b.PrependUint8Slot,
         "float32": b.PrependFloat32Slot}[kind](slot, value, 0)
    return b.EndObject()


def _floats(b: flatbuffers.Builder, values: Sequence[float]) -> int:
    b.StartVector(4, len(values), 4)
    for v in reversed(values):
        b.PrependFloat32(float(v))
    return b.EndVector()


def _image_content(b: flatbuffers.Builder) -> int:
    props = _table(b, 2, [], scalars=[(0, "int8", _COLOR_RGB)])
    return _table(b, 3, [(1, props)], scalars=[(0, "uint8", _CONTENT_IMAGE)])


def _feature_content(b: flatbuffers.Builder) -> int:
    props = _table(b, 0, [])
    return _table(b, 3, [(1, props)], scalars=[(0, "uint8", _CONTENT_FEATURE)])


def _normalization(b: flatbuffers.Builder, mean: list[float], std: list[float]) -> int:
    options = _table(b, 2, [(0, _floats(b, mean)), (1, _floats(b, std))])
    return _table(b, 2, [(1, options)], scalars=[(0, "uint8", _UNIT_NORMALIZATION)])


def _score_calibration_unit(b: flatbuffers.Builder) -> int:
    # default score 0: a class whose calibration line is empty scores 0 (none is left empty here)
    options = _table(b, 2, [], scalars=[(0, "int8", _TRANSFORM_LOG), (1, "float32", 0.0)])
    return _table(b, 2, [(1, options)], scalars=[(0, "uint8", _UNIT_SCORE_CALIBRATION)])


def _stats(b: flatbuffers.Builder, high: list[float], low: list[float]) -> int:
    return _table(b, 2, [(0, _floats(b, high)), (1, _floats(b, low))])


def _associated_file(b: flatbuffers.Builder, name: str, description: str, kind: int, locale: str = "") -> int:
    offsets = [(0, b.CreateString(name)), (1, b.CreateString(description))]
    if locale:
        offsets.append((3, b.CreateString(locale)))
    return _table(b, 5, offsets, scalars=[(2, "int8", kind)])


def _tensor(b: flatbuffers.Builder, name: str, description: str, *, content: int, units: list[int], stats: int,
            files: list[int]) -> int:
    vectors = {4: units} if units else {}
    if files:
        vectors[6] = files
    return _table(b, 7, [(0, b.CreateString(name)), (1, b.CreateString(description)), (3, content), (5, stats)],
                  vectors=vectors)
