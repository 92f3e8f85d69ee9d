"""Benchmark output: results.csv, results.json (an ``artefacts.BenchmarkResults``), plots, and the rows of the
on-screen table and the domain-shift view.

Everything here is rendered from the rows; nothing is measured. Numbers are written by
:mod:`edge_derm.reporting.format` (the one set of formatting rules, shared with ``edge-derm report``).
"""

from __future__ import annotations

import csv
import io
import logging
from pathlib import Path
from typing import Any

from edge_derm import provenance
from edge_derm.artefacts import OK, BenchmarkResults, BenchmarkRow
from edge_derm.benchmarks.harness import BenchmarkResult
from edge_derm.errors import DataError
from edge_derm.fsutil import atomic_write_text, staged_dir
from edge_derm.reporting import format as fmt
from edge_derm.reporting.benchmark import latency

_log = logging.getLogger(__name__)

BASE_COLUMNS = ("model", "quantization", "format", "device", "threads", "status", "reason", "size_mb",
                "input_size", "accuracy", "macro_f1", "weighted_f1", "delta_accuracy", "delta_macro_f1",
                "delta_weighted_f1", "disagreement", "reference", "accuracy_source", "latency_median_ms",
                "latency_p90_ms", "latency_min_ms", "latency_mean_ms", "images_per_s", "speedup_vs_fp32",
                "slower_than_fp32", "peak_memory_mb",
                "delegate", "cpu_mask", "device_model", "soc", "android", "thermal_before", "thermal_after",
                "unreadable_images", "absent_class_predictions", "path")
CLASS_METRICS = ("sensitivity", "precision", "f1")


def flat_row(row: dict[str, Any], classes: list[str]) -> dict[str, Any]:
    """One CSV row: the scalar fields plus ``<metric>:<class>`` and ``delta_<metric>:<class>`` columns."""
    m, d = row.get("metrics") or {}, row.get("deltas") or {}
    out = {k: row.get(k) for k in BASE_COLUMNS}
    for k in ("accuracy", "macro_f1", "weighted_f1"):
        out[k] = m.get(k)
        out[f"delta_{k}"] = d.get(k)
    out["absent_class_predictions"] = (m.get("absent_class_predictions") or {}).get("fraction")
    for c in classes:
        pc, dc = (m.get("per_class") or {}).get(c, {}), (d.get("per_class") or {}).get(c, {})
        for k in CLASS_METRICS:
            out[f"{k}:{c}"] = pc.get(k)
        for k in CLASS_METRICS:
            out[f"delta_{k}:{c}"] = dc.get(k)
    return out


def row_classes(rows: list[dict[str, Any]]) -> list[str]:
    """The class list of the rows' metrics (first row that has one)."""
    for row in rows:
        if row.get("metrics"):
            return list(row["metrics"]["classes"])
    return []


def results_csv(rows: list[dict[str, Any]]) -> str:
    classes = row_classes(rows)
    flat = [flat_row(r, classes) for r in rows]
    buf = io.StringIO()
    columns = list(flat[0]) if flat else list(BASE_COLUMNS)
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for r in flat:
        writer.writerow({k: "" if v is None else (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})
    return buf.getvalue()


def results_document(result: BenchmarkResult) -> BenchmarkResults:
    """The ``results.json`` artefact of ``result`` (format 2: each row carries ``gate_passed`` when gates are
    set, as ``check_gates`` leaves it)."""
    return BenchmarkResults(rows=[BenchmarkRow.from_json(r, source=f"row {i}") for i, r in enumerate(result.rows)],
                            config=result.config.as_dict(),
                            gates={"passed": not result.gate_failures, "failures": result.gate_failures},
                            latency_warnings=result.latency_warnings,
                            extra={"devices": result.devices, "domains": result.domains,
                                   "versions": provenance.versions()})


def write_results(out: Path, result: BenchmarkResult, force: bool = False) -> list[Path]:
    """Write ``results.csv``, ``results.json`` and the plots into ``out`` (atomically; --force to replace)."""
    with staged_dir(out, force, result.config.inputs()) as tmp:
        atomic_write_text(tmp / "results.csv", results_csv(result.rows))
        results_document(result).write(tmp / "results.json")
        written = write_plots(tmp, result.rows)
    return [out / "results.csv", out / "results.json"] + [out / p.name for p in written]


# -- plots -----------------------------------------------------------------------------------

def write_plots(out: Path, rows: list[dict[str, Any]]) -> list[Path]:
    """Latency vs macro F1, per-class F1 per variant, per-class sensitivity deltas (those with data)."""
    written: list[Path] = []
    ok = [r for r in rows if r["status"] == OK and r.get("metrics")]
    if not ok:
        return written
    from edge_derm.evaluation import plots

    if not plots.available():
        _log.warning("no plots written: %s", plots.NO_MATPLOTLIB)
        return written
    from edge_derm.evaluation.plots import plot_latency_f1

    points = [{"label": f"{r['model']}", "latency_ms": latency(r),
               "macro_f1": r["metrics"]["macro_f1"], "group": f"{r['device']}, {r['threads']} thr",
               "size_bytes": r["size_mb"] * 1e6} for r in ok]
    try:
        plot_latency_f1(points, out / "latency_vs_macro_f1.png", title="Latency vs macro F1")
        written.append(out / "latency_vs_macro_f1.png")
    except DataError as exc:
        _log.info("no latency plot: %s", exc)
    # accuracy does not depend on the device or thread count: one bar group per model
    per_model = list({r["model"]: r for r in ok}.values())
    classes = row_classes(per_model)
    _bars(out / "per_class_f1.png", per_model, classes, lambda r, c: r["metrics"]["per_class"][c]["f1"],
          "F1 per class", "F1")
    written.append(out / "per_class_f1.png")
    with_delta = [r for r in per_model if r.get("deltas") and r["reference"] != r["model"]]
    if with_delta:
        _bars(out / "sensitivity_deltas.png", with_delta, classes,
              lambda r, c: _points(r["deltas"]["per_class"].get(c, {}).get("sensitivity")),
              "Sensitivity change against the reference", "points")
        written.append(out / "sensitivity_deltas.png")
    return written


def _points(delta: float | None) -> float | None:
    return None if delta is None else 100.0 * delta


def _bars(path: Path, rows: list[dict[str, Any]], classes: list[str], value, title: str, ylabel: str) -> None:
    """One bar per row (model) in each class's group (``value(row, class)``), written to ``path``."""
    from edge_derm.evaluation.plots import plot_class_bars

    plot_class_bars([(r["model"], [value(r, c) for c in classes]) for r in rows], classes, path, title, ylabel)


# -- table -----------------------------------------------------------------------------------

# short headers: the table must fit a 120-column terminal; the files carry every field in full
TABLE_COLUMNS = ("model", "quant", "device", "status", "MB", "acc%", "F1", "ΔF1", "diff%", "ms", "p90", "img/s",
                 "peakMB")
_SHORT_STATUS = {"failed validation": "invalid", "failed to load": "no load", "failed to run": "run fail"}


def failure_notes(rows: list[dict[str, Any]]) -> list[str]:
    """One line per distinct (model, device, reason) of rows that did not run (shown under the table)."""
    notes = [f"{r['model']} ({r['device']}): {r['status']}: {r['reason']}" for r in rows if r["status"] != OK]
    return list(dict.fromkeys(notes))


def absent_class_notes(rows: list[dict[str, Any]]) -> list[str]:
    """One line per model scored on a dataset with fewer classes: how often it predicted a class the dataset
    does not have (each such prediction is an error)."""
    notes = []
    for r in rows:
        absent = ((r.get("metrics") or {}).get("absent_class_predictions"))
        if absent:
            top = ", ".join(f"{c} {n}" for c, n in sorted(absent["by_class"].items(), key=lambda kv: -kv[1]) if n)
            notes.append(f"{r['model']}: predicted a class this dataset does not have: {100 * absent['fraction']:.1f} % "
                         f"of {r['metrics']['n']} images" + (f" ({top})" if top else ""))
    return list(dict.fromkeys(notes))


def table_rows(rows: list[dict[str, Any]]) -> list[list[str]]:
    """The on-screen table's cells, rendered from the rows (failure reasons go to :func:`failure_notes`)."""
    def num(v: Any, spec: str) -> str:
        return "" if v is None else format(v, spec)

    ms = fmt.ms  # 3 significant digits from tiny test models to 3-second phones; blank when not timed
    out = []
    for r in rows:
        m, d = r.get("metrics") or {}, r.get("deltas") or {}
        status = _SHORT_STATUS.get(r["status"], r["status"])
        name = r["model"][:-len(".tflite")] if r["model"].endswith(".tflite") else r["model"]
        acc = m.get("accuracy")
        dis = r.get("disagreement")
        out.append([name, r["quantization"], f"{r['device']} {r['threads']}t", status, num(r["size_mb"], ".2f" if r["size_mb"] >= 0.1 else ".1e"),
                    num(None if acc is None else 100 * acc, ".1f"), num(m.get("macro_f1"), ".3f"),
                    num(None if d.get("macro_f1") is None else 100 * d["macro_f1"], "+.2f"),
                    num(None if dis is None else 100 * dis, ".1f"),
                    ms(latency(r)),
                    ms(r["latency_p90_ms"]), num(r["images_per_s"], ".0f"), num(r["peak_memory_mb"], ".1f")])
    return out
