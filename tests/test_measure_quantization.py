"""benchmarks/scripts/measure_quantization.py: goals, deltas and the int8 size breakdown (the arithmetic
behind the figures in benchmarks/results/quantization.md)."""

from __future__ import annotations

import numpy as np
import pytest

import measure_quantization as mq


def _row(name, macro_f1, size=None, mm=0.5, bcc=0.5, acc=0.6):
    return {"model": name, "status": "x", "accuracy": acc, "macro_f1": macro_f1, "sensitivity_MM": mm,
            "sensitivity_BCC": bcc, "size_bytes": size}


def test_deltas_against_keras_and_qat_against_its_control():
    rows = [_row("keras", 0.50, 2000), _row(mq.CONTROL, 0.56), _row("fp32", 0.50, 1000),
            _row("int8", 0.489, 301, mm=0.4), _row("qat", 0.553, 310)]
    mq.add_deltas(rows, {"qat": (mq.CONTROL, "control")})
    by = {r["model"]: r for r in rows}
    assert by["int8"]["delta_macro_f1_pp"] == pytest.approx(-1.1)
    assert by["int8"]["delta_sensitivity_MM_pp"] == pytest.approx(-10.0)
    assert by["qat"]["delta_macro_f1_pp"] == pytest.approx(5.3)
    assert by["qat"]["vs_control_macro_f1_pp"] == pytest.approx(-0.7)
    assert "vs_control_macro_f1_pp" not in by["int8"]
    g = mq.goals(rows)
    # int8 lost 1.1 pp: not within 1 pp; qat gained against Keras but lost 0.7 pp against its control.
    assert g["int8_within_1pp_macro_f1"] is False
    assert g["qat_within_0.5pp_macro_f1"] is True
    assert g["qat_within_0.5pp_of_control"] is False
    assert g["int8_size_ratio"] == pytest.approx(0.301) and g["int8_size_le_0.3x_fp32"] is False


def test_goals_boundaries_and_selective_row():
    rows = [_row("keras", 0.50), _row("fp32", 0.50, 1000), _row("int8", 0.49, 300), _row(mq.SELECTIVE, 0.495, 400)]
    mq.add_deltas(rows)
    g = mq.goals(rows)
    assert g["int8_within_1pp_macro_f1"] is True  # exactly -1.0 pp is within
    assert g["int8_float_layers_within_1pp_macro_f1"] is True
    assert g["int8_size_le_0.3x_fp32"] is True  # exactly 0.3 x
    assert "qat_within_0.5pp_macro_f1" not in g


def test_table_shows_control_without_size_and_missing_rows():
    rows = [_row("keras", 0.5, 2048), _row(mq.CONTROL, 0.52), {"model": "qat", "status": "missing"}]
    mq.add_deltas(rows)
    md = mq.table("t", rows)
    assert f"| {mq.CONTROL} | x |  | 60.0 | 52.0 | +2.0 |  |" in md
    assert "| qat | missing |" in md and "| keras | x | 2 |" in md


def test_size_breakdown_counts_per_channel_parameters(cv_converted):
    fp32 = mq.size_breakdown((cv_converted / "model.fp32.tflite").read_bytes())
    int8 = mq.size_breakdown((cv_converted / "model.int8.tflite").read_bytes())
    assert fp32["per_channel_scales"] == 0 and fp32["constant_bytes_by_dtype"].get("float32", 0) > 0
    assert int8["per_channel_scales"] > 0 and int8["per_channel_param_bytes"] == 12 * int8["per_channel_scales"]
    # every float parameter is still there: weights as one int8 byte each, biases as int32
    # (both models also hold the same int32 shape constants)
    b8, b32 = int8["constant_bytes_by_dtype"], fp32["constant_bytes_by_dtype"]
    assert b8["int8"] + (b8["int32"] - b32.get("int32", 0)) // 4 == b32["float32"] // 4
    assert int8["size_bytes"] < fp32["size_bytes"]


def test_size_study_rows_for_one_backbone(monkeypatch):
    monkeypatch.setattr(mq, "SIZE_STUDY", (("tiny", None),))
    rows = mq.size_study(image_size=32, n_classes=3)
    (r,) = rows
    assert r["backbone"] == "tiny" and r["params"] > 0
    assert r["ratio"] == pytest.approx(r["int8_bytes"] / r["fp32_bytes"], abs=1e-3)
    assert r["int8_without_per_channel_params_ratio"] < r["ratio"]
    assert "| tiny |" in mq.size_table(rows)
    assert np.isfinite(r["ratio"])


def test_paired_counts_flips_and_bootstraps_the_delta():
    from sklearn.metrics import f1_score

    rng = np.random.default_rng(1)
    y = rng.integers(0, 4, 300)
    ref = np.where(rng.random(300) < 0.7, y, rng.integers(0, 4, 300))
    same = mq.paired(y, ref, ref.copy(), 4)
    assert same["changed"] == 0 and same["delta_macro_f1_ci95_pp"] == [0.0, 0.0]
    worse = ref.copy()
    right = np.flatnonzero(ref == y)[:30]
    worse[right] = (y[right] + 1) % 4  # 30 right answers made wrong
    r = mq.paired(y, ref, worse, 4)
    assert r["changed"] == 30 and r["lost"] == 30 and r["gained"] == 0
    lo, hi = r["delta_macro_f1_ci95_pp"]
    true = 100 * (f1_score(y, worse, average="macro") - f1_score(y, ref, average="macro"))
    assert lo < true < hi < 0  # the interval holds the real difference and excludes no change
    # the evaluator's macro F1 (which the bootstrap resamples) is sklearn's here (every class present)
    from edge_derm.evaluation.metrics import compute_metrics

    probs = np.eye(4)[worse]
    assert compute_metrics(y, probs, list("abcd"))["macro_f1"] == pytest.approx(f1_score(y, worse, average="macro"))
