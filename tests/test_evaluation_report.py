"""Plots and markdown/file output of the evaluator."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from edge_derm.errors import DataError
from edge_derm.evaluation import (compute_metrics, metrics_markdown, plot_confusion, plot_history,
                                  plot_latency_f1, write_evaluation)

PNG = b"\x89PNG\r\n\x1a\n"
CLASSES = ["SebKer", "Nev", "MM"]


@pytest.fixture()
def metrics():
    y = [0, 0, 0, 1, 1, 2]
    pred = [0, 0, 1, 1, 2, 2]
    probs = np.full((6, 3), 0.1)
    probs[np.arange(6), pred] = 0.8
    return compute_metrics(y, probs, CLASSES, triage={"SebKer": "benign", "Nev": "benign", "MM": "malignant"},
                           bootstrap=20)


def test_markdown_tables(metrics):
    md = metrics_markdown(metrics)
    # per-class row like the paper: sens. / prec. / F1 in percent with two decimals
    assert "| 1 | SebKer | 66.67 | 100.00 | 80.00 | 3 |" in md
    assert "| 3 | MM | 100.00 | 50.00 | 66.67 | 1 |" in md
    assert "| 1 SebKer | 2 | 1 | 0 |" in md  # confusion counts
    assert "| macro F1 | 65.56 | [" in md
    assert "## Triage" in md and "| malignant |" in md


def test_markdown_dash_for_undefined():
    m = compute_metrics([0, 0], np.array([[0.9, 0.1, 0.0], [0.2, 0.1, 0.7]]), CLASSES)
    md = metrics_markdown(m)
    assert "| 2 | Nev | – | – | – | 0 |" in md
    assert "| 3 | MM | – | 0.00 | – | 0 |" in md
    assert "Triage" not in md


def test_write_evaluation(tmp_path, metrics):
    out = tmp_path / "eval dir"
    paths = write_evaluation(out, metrics, "tiny run")
    assert sorted(p.name for p in out.iterdir()) == ["confusion.png", "confusion_normalised.png",
                                                      "metrics.json", "report.md"]
    assert json.loads(paths["metrics"].read_text())["macro_f1"] == pytest.approx(metrics["macro_f1"])
    assert paths["confusion"].read_bytes().startswith(PNG)
    assert paths["confusion_normalised"].read_bytes() != paths["confusion"].read_bytes()
    text = paths["report"].read_text()
    assert text.startswith("# tiny run\n") and "confusion.png" in text


def test_plot_confusion_rejects_bad_metrics(tmp_path):
    with pytest.raises(DataError, match="confusion"):
        plot_confusion({"classes": ["a"]}, tmp_path / "x.png")
    with pytest.raises(DataError, match="shape"):
        plot_confusion({"classes": ["a", "b"], "confusion": [[1]]}, tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


def test_plot_history_tolerates_missing_columns(tmp_path):
    rows = [{"epoch": "1", "step": "0", "block": "head", "loss": "1.2", "accuracy": "0.4"},
            {"epoch": "2", "step": "0", "block": "head", "loss": "1.0", "accuracy": ""},
            {"epoch": "1", "step": "1", "block": "A", "loss": "0.8", "accuracy": "0.6", "val_loss": "0.9"}]
    data = plot_history(rows, tmp_path / "h.png", title="curves")
    assert data.startswith(PNG) and (tmp_path / "h.png").read_bytes() == data
    with pytest.raises(DataError, match="no numeric"):
        plot_history([{"epoch": "1", "step": "0"}], tmp_path / "none.png")


def test_plot_latency_f1(tmp_path):
    pts = [{"label": "fp32", "latency_ms": 10.0, "macro_f1": 0.8, "size_bytes": 4e6, "group": "cpu x1"},
           {"label": "int8", "latency_ms": 4.0, "macro_f1": 0.79, "size_bytes": 1e6, "group": "cpu x1"},
           {"label": "failed", "latency_ms": None, "macro_f1": None}]
    assert plot_latency_f1(pts, tmp_path / "l.png").startswith(PNG)
    with pytest.raises(DataError, match="latency"):
        plot_latency_f1(pts[2:], None)


def test_metrics_import_is_light():
    code = ("import sys, edge_derm.evaluation; from edge_derm.evaluation import compute_metrics;"
            "bad=[m for m in ('tensorflow','matplotlib') if m in sys.modules]; print(bad); sys.exit(bool(bad))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr
