"""Run .tflite classifiers without TensorFlow.

The interpreter comes from ai-edge-litert, else tflite-runtime, else ``tf.lite`` (the only path
that would import TensorFlow, and only when neither runtime is installed). Files are checked by
the pure-Python, bounds-checked flatbuffer walk of :mod:`edge_derm.tflite_format` (:func:`inspect_tflite`)
*before* any interpreter sees them, so a truncated or corrupt file is a ModelError, never a crash; the
embedded ``edge_derm_metadata`` (:func:`read_metadata`) is read there too.

When a convert folder's ``model.json`` sits beside the model, it records the SHA-256 of every file
it verified; :class:`TFLiteModel` refuses a file whose bytes no longer match (a damaged copy, or a
file swapped after verification), so what runs is what was verified.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Sequence

import numpy as np

from edge_derm.errors import DataError, ModelError
from edge_derm.tflite_format.reader import (  # noqa: F401 - the runtime's public names, re-exported
    FILE_IDENTIFIER,
    METADATA_NAME,
    ModelInfo,
    decode_metadata,
    inspect_bytes,
    read_model,
    inspect_tflite,
    read_metadata,
    validate_tflite,
)

_log = logging.getLogger(__name__)


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


def sha256_bytes(data: bytes) -> str:
    """Hex SHA-256 of ``data`` (what ``model.json`` records for each file)."""
    return hashlib.sha256(data).hexdigest()


def recorded_sha256(path: str | Path) -> str | None:
    """The SHA-256 that the ``model.json`` beside ``path`` records for it; None when nothing is recorded.

    ``model.json`` is either a convert folder's document (``variants``, each with ``file`` and
    ``sha256``) or the flat metadata of one model (``edge-derm export android``), which applies when its
    ``file`` names this file.

    Read through :func:`edge_derm.artefacts.recorded_variant` (the one lookup of a file's record).

    Raises:
        ModelError: ``model.json`` is there but is not valid JSON, or not a document of either type.
    """
    from edge_derm.artefacts import recorded_variant

    try:
        record = recorded_variant(path)
    except DataError as exc:
        raise ModelError(f"{exc} (the model.json beside the model; convert again or remove it)") from None
    return record.sha256 if record is not None else None


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
        self.content, label = (bytes(content), str(self.path)) if content is not None else read_model(self.path)
        self.sha256 = sha256_bytes(self.content)
        if check_hash:
            expected = recorded_sha256(self.path)
            if expected and expected != self.sha256:
                raise ModelError(f"{self.path}: SHA-256 {self.sha256[:12]}... differs from the {expected[:12]}... that "
                                 f"{self.path.parent / 'model.json'} recorded at conversion; the file was changed or "
                                 "damaged, convert again")
        self.info = inspect_bytes(self.content, label)
        self.metadata: dict = decode_metadata(self.info, label) or {}
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
