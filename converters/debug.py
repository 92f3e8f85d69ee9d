"""Quantisation collapse: per-layer error report and the choice of layers to keep in float.

Swish / squeeze-excite networks (EfficientNet) are known to collapse under post-training int8.
The report comes from ``tf.lite.experimental.QuantizationDebugger`` (one row per quantised
tensor, ``rmse/scale`` = error in units of the quantisation step); the worst layers can then be
denylisted (selective quantisation, :func:`edge_derm.converters.tflite.convert_selective`).
"""

from __future__ import annotations

import csv
import io
import logging
import math
import re
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from edge_derm.errors import ConfigError, ConversionError
from edge_derm.fsutil import atomic_write_text

from .presets import get_preset
from .tflite import make_converter, representative_dataset

_log = logging.getLogger(__name__)

#: Layers kept in float by ``--float-layers auto``: the worst by rmse/scale, at most this many ...
AUTO_MAX_LAYERS = 5
#: ... and only those whose error exceeds this many quantisation steps.
AUTO_MIN_RMSE_SCALE = 0.5


def layer_report(model, calibration: np.ndarray, n: int = 16) -> list[dict[str, Any]]:
    """Per-layer quantisation error of full-integer PTQ, worst first."""
    import tensorflow as tf

    converter = make_converter(model, get_preset("int8"), "float32", calibration)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8, tf.lite.OpsSet.TFLITE_BUILTINS]
    try:
        debugger = tf.lite.experimental.QuantizationDebugger(
            converter=converter, debug_dataset=representative_dataset(calibration[:n]))
        debugger.run()
        buf = io.StringIO()
        debugger.layer_statistics_dump(buf)
    except Exception as exc:  # noqa: BLE001
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConversionError(f"quantisation debugger failed: {first}") from exc
    rows = []
    for row in csv.DictReader(io.StringIO(buf.getvalue())):
        out: dict[str, Any] = {"op_name": row["op_name"], "tensor_name": row["tensor_name"],
                               "tensor_idx": int(row["tensor_idx"])}
        for key in ("num_elements", "stddev", "mean_error", "max_abs_error", "mean_squared_error",
                    "scale", "zero_point"):
            out[key] = float(row[key]) if row.get(key) not in (None, "") else float("nan")
        rmse = math.sqrt(out["mean_squared_error"]) if out["mean_squared_error"] >= 0 else float("nan")
        out["rmse/scale"] = rmse / out["scale"] if out["scale"] else float("nan")
        out["range"] = out["scale"] * 255.0
        rows.append(out)
    rows.sort(key=lambda r: -(r["rmse/scale"] if math.isfinite(r["rmse/scale"]) else -1.0))
    return rows


def write_report(rows: Sequence[dict[str, Any]], path: Path) -> None:
    """Write the per-layer report as CSV (worst first)."""
    if not rows:
        atomic_write_text(path, "")
        return
    buf = io.StringIO()
    writer = csv.DictWriter(buf, list(rows[0].keys()), lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})
    atomic_write_text(path, buf.getvalue())


def _segments(tensor_name: str) -> set[str]:
    return {s for part in tensor_name.split(";") for s in re.split(r"[/:]", part) if s}


def choose_float_layers(rows: Sequence[dict[str, Any]], spec: str) -> list[str]:
    """Tensor names to keep in float.

    Args:
        rows: :func:`layer_report` rows.
        spec: ``auto`` (the worst layers, see AUTO_MAX_LAYERS / AUTO_MIN_RMSE_SCALE) or a
            comma-separated list of Keras layer names, TFLite tensor names and ``op:TYPE`` entries
            (every op of a TFLite type, e.g. ``op:LOGISTIC,op:MUL`` for EfficientNet's swish and
            squeeze-excite gates, whose error adds up over hundreds of tensors that no single
            worst layer shows). ``op:`` entries are returned as ``op:TYPE``.

    Raises:
        ConfigError: a name that matches no quantised layer.
    """
    if spec.strip() == "auto":
        worst = [r for r in rows if math.isfinite(r["rmse/scale"]) and r["rmse/scale"] >= AUTO_MIN_RMSE_SCALE]
        chosen = [r["tensor_name"] for r in worst[:AUTO_MAX_LAYERS]]
        if not chosen and rows:
            chosen = [rows[0]["tensor_name"]]
        return chosen
    names = [n.strip() for n in spec.split(",") if n.strip()]
    if not names:
        raise ConfigError("--float-layers is empty; give 'auto' or comma-separated layer names")
    chosen: list[str] = []
    op_types = sorted({r["op_name"] for r in rows})
    for name in names:
        if name.lower().startswith("op:"):
            op = name[3:].strip().upper()
            if op not in op_types:
                raise ConfigError(f"--float-layers: no quantised op of type {op!r}; "
                                  f"the model has {', '.join(op_types)}")
            if f"op:{op}" not in chosen:
                chosen.append(f"op:{op}")
            continue
        hits = [r["tensor_name"] for r in rows if r["tensor_name"] == name or name in _segments(r["tensor_name"])]
        if not hits:
            known = ", ".join(sorted({s for r in rows[:10] for s in _segments(r["tensor_name"])})[:8])
            raise ConfigError(f"--float-layers: {name!r} matches no quantised layer; "
                              f"see the per-layer report for names (e.g. {known})")
        chosen += [h for h in hits if h not in chosen]
    return chosen
