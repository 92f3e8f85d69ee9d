"""Keras -> TFLite bytes for each preset (TensorFlow imported lazily)."""

from __future__ import annotations

import logging
from typing import Callable, Iterable, Sequence

import numpy as np

from edge_derm.errors import ConversionError

from .presets import Preset

_log = logging.getLogger(__name__)


def representative_dataset(images: np.ndarray) -> Callable[[], Iterable[list[np.ndarray]]]:
    """A representative-dataset factory over float [N, S, S, 3] images, one image per step."""
    def gen():
        for img in images:
            yield [img[None].astype(np.float32)]

    return gen


def make_converter(model, preset: Preset, io: str = "float32", calibration: np.ndarray | None = None):
    """A configured ``tf.lite.TFLiteConverter`` for ``preset``, from the preset's settings alone.

    Raises:
        ConversionError: an integer preset without calibration images.
    """
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if preset.optimize:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if preset.supported_types:
        converter.target_spec.supported_types = [getattr(tf, t) for t in preset.supported_types]
    if preset.integer:
        if calibration is None or len(calibration) == 0:
            raise ConversionError(f"{preset.name} needs calibration images and none are usable; "
                                  "pass --calibration DIR with a dataset folder")
        converter.representative_dataset = representative_dataset(calibration)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        dtypes = {"int8": tf.int8, "uint8": tf.uint8, "float32": tf.float32}
        converter.inference_input_type = dtypes[io]
        converter.inference_output_type = dtypes[io]
    return converter


def convert(model, preset: Preset, io: str = "float32", calibration: np.ndarray | None = None) -> bytes:
    """Convert a Keras model with one preset; ConversionError (one line) when TFLite refuses."""
    converter = make_converter(model, preset, io, calibration)
    try:
        return bytes(converter.convert())
    except ConversionError:
        raise
    except Exception as exc:  # noqa: BLE001 - the converter raises many types; report one line
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConversionError(f"TFLite conversion ({preset.name}) failed: {first}") from exc


def convert_selective(model, preset: Preset, calibration: np.ndarray, float_nodes: Sequence[str]) -> bytes:
    """Full-integer conversion that keeps the ops producing ``float_nodes`` (tensor names) in float.

    ``op:TYPE`` entries keep every op of that TFLite type in float. Uses the quantisation
    debugger's denylists (selective quantisation); inputs and outputs stay float32.
    """
    import tensorflow as tf

    converter = make_converter(model, preset, "float32", calibration)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8, tf.lite.OpsSet.TFLITE_BUILTINS]
    nodes = [n for n in float_nodes if not n.startswith("op:")]
    ops = [n[3:] for n in float_nodes if n.startswith("op:")]
    options = tf.lite.experimental.QuantizationDebugOptions(denylisted_nodes=nodes, denylisted_ops=ops)
    try:
        debugger = tf.lite.experimental.QuantizationDebugger(
            converter=converter, debug_dataset=representative_dataset(calibration[:8]), debug_options=options)
        return bytes(debugger.get_nondebug_quantized_model())
    except Exception as exc:  # noqa: BLE001
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConversionError(f"selective quantisation failed: {first}") from exc
