"""The benchmark parts of ``edge-derm report``: the summary table that leads the report, and the benchmark
section (quantisation comparison, per-class changes against the reference, domain shift, latency plot).

Rows are read as :class:`edge_derm.artefacts.BenchmarkRow`: the keys the harness writes, ``gate_passed``
for the gates, the row's own ``quantization``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from edge_derm.artefacts import OK, BenchmarkResults, BenchmarkRow, recorded_variant
from edge_derm.converters.presets import MODES
from edge_derm.errors import DataError
from edge_derm.reporting.document import Doc
from edge_derm.reporting.files import rel
from edge_derm.reporting.format import DASH, auto, mb, num, pct, pp, slug, verdict

#: Classes the summary shows the sensitivity of (melanoma and BCC: the ones a missed case makes dangerous).
SUMMARY_CLASSES = ("MM", "BCC")


def latency(row: BenchmarkRow | Mapping[str, Any]) -> Any:
    """The row's median latency (ms), else its mean (a phone build that prints no median); a BenchmarkRow or
    the harness's row dict."""
    median = row.get("latency_median_ms")
    return median if median is not None else row.get("latency_mean_ms")


def size_bytes(row: BenchmarkRow) -> float | None:
    """The row's file size in bytes."""
    return None if num(row.size_mb) is None else num(row.size_mb) * 1e6


def per_class(row: BenchmarkRow) -> dict[str, Any]:
    """The row's per-class figures (``metrics.per_class``), ``{}`` without metrics."""
    pc = (row.metrics or {}).get("per_class")
    return dict(pc) if isinstance(pc, Mapping) else {}


def is_reference(row: BenchmarkRow) -> bool:
    """Whether the row is its own reference."""
    return row.reference is not None and row.reference == row.model


def gate(row: BenchmarkRow) -> str:
    """``pass`` / ``FAIL`` of the row's gates; a dash when none were set."""
    return verdict(row.gate_passed)


def deltas(row: BenchmarkRow, rows: list[BenchmarkRow]) -> dict[str, Any] | None:
    """``compare_metrics`` deltas of a row: its own ``deltas``, else (a set the harness found no reference
    in) against the only fp32 row with figures on the same device and threads."""
    if isinstance(row.deltas, Mapping):
        return dict(row.deltas)
    if is_reference(row) or not per_class(row):
        return None
    same = [r for r in rows if r.quantization == "fp32" and r is not row and r.device == row.device
            and r.threads == row.threads and per_class(r)]
    if len(same) != 1:
        return None
    from edge_derm.evaluation.metrics import compare_metrics

    return compare_metrics(row.metrics, same[0].metrics)


def verification(row: BenchmarkRow, cache: dict[str, Any]) -> bool | None:
    """Whether the converter's verification of the benchmarked file passed (from the ``model.json`` beside
    it); None when there is no record of it."""
    if not row.path or not str(row.path).endswith(".tflite"):
        return None
    if row.path not in cache:
        try:
            cache[row.path] = recorded_variant(row.path)
        except DataError:
            cache[row.path] = None
    record = cache[row.path]
    return record.passed if record is not None else None


def latency_plot(doc: Doc, name: str, points: list[dict[str, Any]]) -> None:
    """The latency-vs-macro-F1 scatter; a note when it cannot be drawn."""
    from edge_derm.evaluation.plots import plot_latency_f1

    try:
        doc.img(name, plot_latency_f1(points, None), "latency vs macro F1")
    except DataError as exc:
        doc.p(f"Latency-vs-F1 plot not drawn: {exc}", "note")


def _point(row: BenchmarkRow, label: str, group: str) -> dict[str, Any]:
    macro = (row.metrics or {}).get("macro_f1")
    return {"label": label, "latency_ms": num(latency(row)), "macro_f1": num(macro),
            "size_bytes": num(size_bytes(row)), "group": group}


# -- the summary ------------------------------------------------------------------------------------------

def benchmark_summary(doc: Doc, path: Path, result: BenchmarkResults, root: Path) -> None:
    """The answer first: one row per variant (size, latency, macro F1, melanoma / BCC sensitivity, agreement
    with the reference, verification, gates) and the latency-vs-accuracy plot."""
    doc.h(1, "Summary")
    rows, cfg = result.rows, result.config or {}
    watch = [c for c in SUMMARY_CLASSES if any(c in per_class(r) for r in rows)]
    cache: dict[str, Any] = {}
    table, points = [], []
    for r in rows:
        dis = num(r.disagreement)
        ok = str(r.status or OK).lower() == OK
        table.append([f"{r.model}" + ("" if ok else f" ({r.status})"), f"{r.device} x{r.threads}",
                      mb(size_bytes(r)), auto(latency(r)), pct((r.metrics or {}).get("macro_f1")),
                      *(pct((per_class(r).get(c) or {}).get("sensitivity")) for c in watch),
                      "ref" if is_reference(r) else (DASH if dis is None else f"{100 * (1 - dis):.1f}"),
                      verdict(verification(r, cache)), gate(r)])
        points.append(_point(r, str(r.model), f"{r.device} x{r.threads}"))
    doc.table(["variant", "device", "size MB", "latency ms", "macro F1 %", *(f"{c} sens. %" for c in watch),
               "agreement w/ ref %", "verified", "gates"], table,
              ["l", "l"] + ["r"] * (4 + len(watch)) + ["l", "l"])
    doc.p(f"From {rel(path, root)}: {cfg.get('data') or 'no test data'} ({cfg.get('split', DASH)} split). "
          "Latency: median of the timed runs; agreement: same class as the reference (the fp32 model unless "
          "--reference named another); verified: the converter's "
          "fidelity check against the Keras model; details below.")
    latency_plot(doc, "summary_latency_f1.png", points)


# -- the section --------------------------------------------------------------------------------------------

def benchmark_section(doc: Doc, path: Path, result: BenchmarkResults, root: Path, prov: list) -> None:
    """A benchmark folder: settings, the quantisation comparison, per-class changes, domain shift, plot."""
    name = rel(path, root)
    doc.h(1, f"Benchmark: {name}")
    rows, cfg = result.rows, result.config or {}
    gates_cfg = cfg.get("gates") or {}
    if cfg.get("data") or cfg.get("device"):
        doc.kv([("test data", cfg.get("data")), ("split", cfg.get("split")), ("device", cfg.get("device")),
                ("threads", cfg.get("threads")),
                ("warm-up / timed runs", f"{cfg.get('warmup', DASH)} / {cfg.get('runs', DASH)}"),
                ("gates (largest allowed drop, points)", ", ".join(f"{k} ≤ {v}" for k, v in gates_cfg.items()) or "none")])
    if rows:
        label = _labeller(rows)
        per_model, points = _comparison(doc, rows, label)
        _gate_and_failure_notes(doc, result, label)
        _per_class_tables(doc, per_model)
        _domain_table(doc, result.get("domains") or [])
        latency_plot(doc, f"{slug(name)}_latency_f1.png", points)
    else:
        doc.p("results.json has no rows.", "note")
    prov.append((f"Benchmark: {name}", _provenance(result), []))


def _labeller(rows: list[BenchmarkRow]):
    """How a row's model is named in the section: its quantisation when that is unambiguous, else its name."""
    quant_of = {str(r.model): r.quantization for r in rows}
    unique = len(set(quant_of.values())) == len(quant_of)

    def label(r: BenchmarkRow) -> str:
        q = r.quantization
        return q if unique and q not in ("unknown", DASH) else str(r.model or q)

    return label


def _comparison(doc: Doc, rows: list[BenchmarkRow], label) -> tuple[dict, list]:
    """The quantisation comparison table; returns the per-model (row, deltas, is reference) of the rows with
    figures (accuracy does not depend on device or threads) and the plot's points."""
    doc.h(2, "Quantisation comparison")
    cache: dict[str, Any] = {}
    table, points, per_model = [], [], {}
    for r in rows:
        m, d, ref, dis = r.metrics or {}, deltas(r, rows), is_reference(r), num(r.disagreement)
        table.append([label(r), r.device, r.threads, r.status, mb(size_bytes(r)), auto(latency(r)),
                      auto(r.latency_p90_ms), auto(r.peak_memory_mb), pct(m.get("accuracy")), pct(m.get("macro_f1")),
                      pct(m.get("weighted_f1")), "ref" if ref else pp((d or {}).get("macro_f1")),
                      "ref" if ref else (DASH if dis is None else f"{100 * (1 - dis):.2f}"),
                      verdict(verification(r, cache)), gate(r)])
        group = f"{r.device or DASH}" + (f" x{r.threads}" if r.threads not in (None, "") else "")
        points.append(_point(r, label(r), group))
        if per_class(r) and label(r) not in per_model:
            per_model[label(r)] = (r, d, ref)
    doc.table(["model", "device", "threads", "status", "size MB", "latency median ms", "p90 ms", "peak MB",
               "accuracy %", "macro F1 %", "weighted F1 %", "Δ macro F1 pp", "agreement w/ ref %",
               "verified", "gate"], table, ["l", "l", "r", "l"] + ["r"] * 9 + ["l", "l"])
    doc.p("Δ and agreement are against the reference model (the float fp32 model unless --reference named "
          "another), in percentage points; 'verified' is the converter's check against the Keras model; "
          "latency is the median of timed runs after warm-up.")
    return per_model, points


def _gate_and_failure_notes(doc: Doc, result: BenchmarkResults, label) -> None:
    """The gate verdict, then one note per row that did not run."""
    failures = [str(f) for f in ((result.gates or {}).get("failures") or [])]
    if failures:
        doc.p("Gate failures: " + "; ".join(failures), "note")
    elif (result.config or {}).get("gates"):
        doc.p("Every gate holds.")
    for r in result.rows:
        if str(r.status or OK).lower() != OK:
            doc.p(f"{label(r)} ({r.device}): {r.status}: {r.reason or DASH}", "note")


def _per_class_tables(doc: Doc, per_model: dict) -> None:
    """Per-class sensitivity and F1 changes against the reference (points), and per-class F1 (%)."""
    classes: list[str] = []
    for r, _, _ in per_model.values():
        classes += [c for c in per_class(r) if c not in classes]
    if not classes:
        return
    if any(d for _, d, _ in per_model.values()):
        for metric, title in (("sensitivity", "sensitivity"), ("f1", "F1")):
            drows = []
            for lab, (r, d, ref) in per_model.items():
                pcd = (d or {}).get("per_class") or {}
                drows.append([lab] + ["ref" if ref else pp((pcd.get(c) or {}).get(metric)) for c in classes])
            doc.h(2, f"Per-class {title} change against the reference (pp)")
            doc.table(["model"] + classes, drows)
    doc.h(2, "Per-class F1 (%)")
    doc.table(["model"] + classes, [[lab] + [pct((per_class(r).get(c) or {}).get("f1")) for c in classes]
                                    for lab, (r, _, _) in per_model.items()])


def _domain_table(doc: Doc, domains: list) -> None:
    """The side-by-side view of the datasets the models were scored on (domain shift)."""

    domains = [d for d in domains if isinstance(d, Mapping) and isinstance(d.get("models"), Mapping)]
    if not domains:
        return
    doc.h(2, "Across datasets (domain shift)")
    doc.table(list(DOMAIN_COLUMNS), domain_rows(domains), ["l", "l"] + ["r"] * (len(DOMAIN_COLUMNS) - 2))
    doc.p("; ".join(f"data {i + 1}: {d.get('data')} (classes {', '.join(d.get('classes') or [])})"
                    for i, d in enumerate(domains))
          + ". Macro F1 and balanced accuracy are over each dataset's classes; 'absent' is the share of "
            "predictions of a class the dataset does not have (errors); 'agree' is against the reference.")


def _provenance(result: BenchmarkResults) -> dict[str, Any]:
    """The benchmark's provenance entry: its config, versions and devices."""
    out = dict(result.config or {})
    if result.get("versions") and not out.get("versions"):
        out["versions"] = result.get("versions")
    if result.get("devices"):
        out["devices"] = result.get("devices")
    return out


#: Columns of the side-by-side (domain-shift) view.
DOMAIN_COLUMNS = ("model", "data", "n", "F1", "bal", *(f"sens {c}" for c in SUMMARY_CLASSES), "ECE", "agree%", "absent%")


def domain_rows(domains: list[dict[str, Any]]) -> list[list[str]]:
    """Cells of the side-by-side view: for each model, one line per dataset (data 1 = the first --data); the
    model is named on every line, so that piped output can be filtered with grep."""
    def cell(v: Any) -> str:  # blank, not a dash: the terminal table and its TSV leave empty cells empty
        return pct(v, 1, none="")

    quant = {name: m.get("quantization") for d in domains for name, m in d["models"].items()}
    order = {q: i for i, q in enumerate(MODES)}  # fp32 first, then the quantised variants
    names = sorted(dict.fromkeys(name for d in domains for name in d["models"]),
                   key=lambda n: (order.get(quant[n], len(order)), n))
    out = []
    for name in names:
        for i, d in enumerate(domains):
            m = d["models"].get(name)
            if m is None:
                continue
            sens = m.get("sensitivity") or {}
            out.append([name, str(i + 1), str(m["n"]), cell(m["macro_f1"]), cell(m["balanced_accuracy"]),
                        *(cell(sens.get(c)) for c in SUMMARY_CLASSES), f"{m['ece']:.3f}", cell(m["agreement"]),
                        cell(m["absent_class_predictions"])])
    return out
