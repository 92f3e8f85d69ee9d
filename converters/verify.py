"""Verification: read a .tflite back and check it against its Keras model on a fixed batch.

No TensorFlow here: the file is inspected with :mod:`edge_derm.runtime` and run with its interpreter;
the Keras probabilities are computed by the caller.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edge_derm.runtime import ModelInfo, TFLiteModel, inspect_tflite

from .metadata import tensor_io
from .presets import Preset


def structural_failures(info: ModelInfo, preset: Preset, io: str, *, float_layers: bool = False) -> list[str]:
    """What makes the file not what ``preset`` claims (dtypes, integer ops); empty when sound."""
    failures = []
    tin, tout = tensor_io(info)
    for side, t in (("input", tin), ("output", tout)):
        if t["dtype"] != io:
            failures.append(f"{side} dtype is {t['dtype']}, expected {io}")
        if t["dtype"] in ("int8", "uint8") and not t["scale"]:
            failures.append(f"{side} is {t['dtype']} without quantisation parameters")
    share = info.integer_op_share()
    if preset.integer and not float_layers and share < preset.tolerance.min_integer_op_share:
        float_ops = sorted(set(info.float_ops()))
        failures.append(f"only {share:.0%} of ops run in integer (float: {', '.join(float_ops[:6])}); "
                        f"{preset.name} must be full-integer")
    if preset.integer and float_layers and share <= 0.0:
        failures.append("no op runs in integer")
    return failures


def verify(path: str | Path, preset: Preset, io: str, keras_probs: np.ndarray, images: np.ndarray,
           labels: np.ndarray | None = None, *, float_layers: bool = False) -> dict[str, Any]:
    """Verify one converted file.

    Args:
        path: the .tflite file.
        preset: the preset it claims to be.
        io: the input/output dtype it claims to have.
        keras_probs: the Keras model's probabilities on ``images``.
        images: the fixed evaluation batch, float [N, S, S, 3] in [0, 255].
        labels: true class indices of ``images`` (-1 unknown), for accuracies.
        float_layers: selective quantisation (float ops allowed in an integer preset).

    Returns:
        The ``verification`` block of the metadata; ``passed`` is false with ``failures`` listed.
    """
    info = inspect_tflite(path)
    failures = structural_failures(info, preset, io, float_layers=float_layers)
    model = TFLiteModel(path)
    probs = model.predict(images)
    diff = np.abs(probs - keras_probs)
    agreement = float((probs.argmax(1) == keras_probs.argmax(1)).mean())
    tol = preset.tolerance
    result: dict[str, Any] = {
        "n": int(len(images)),
        "top1_agreement": round(agreement, 6),
        "max_abs_diff": round(float(diff.max()), 6),
        "mean_abs_diff": round(float(diff.mean()), 6),
        "integer_op_share": round(info.integer_op_share(), 6),
        "n_ops": len(info.ops),
    }
    if labels is not None and (labels >= 0).any():
        known = labels >= 0
        result["accuracy_keras"] = round(float((keras_probs.argmax(1)[known] == labels[known]).mean()), 6)
        result["accuracy_tflite"] = round(float((probs.argmax(1)[known] == labels[known]).mean()), 6)
        result["accuracy_drop"] = round(result["accuracy_keras"] - result["accuracy_tflite"], 6)
    if agreement < tol.min_top1_agreement:
        failures.append(f"top-1 agreement {agreement:.3f} < {tol.min_top1_agreement}")
    if result["max_abs_diff"] > tol.max_abs_diff:
        failures.append(f"max abs diff {result['max_abs_diff']:.4f} > {tol.max_abs_diff}")
    if result["mean_abs_diff"] > tol.mean_abs_diff:
        failures.append(f"mean abs diff {result['mean_abs_diff']:.4f} > {tol.mean_abs_diff}")
    tolerance = tol.as_dict()
    if float_layers:
        tolerance["min_integer_op_share"] = 0.0
    result["tolerance"] = tolerance
    result["passed"] = not failures
    result["failures"] = failures
    return result
