"""The tables of one evaluation (``compute_metrics`` output, like the paper's Tables V-VIII): the aggregate
figures, per class, confusion counts, triage groups, calibration and the triage operating point.

:func:`evaluation_blocks` is an evaluation's ``report.md`` (``edge-derm evaluate``);
:func:`metrics_blocks` is the test-metrics part of a run in ``edge-derm report``.
"""

from __future__ import annotations

from typing import Any, Mapping

from edge_derm.errors import DataError
from edge_derm.reporting.document import Doc
from edge_derm.reporting.format import DASH, fmt, interval, pct

def _per_class_align(header: list[str]) -> list[str]:
    """Alignment of the per-class table: index right, class name left, figures right."""
    return ["r", "l"] + ["r"] * (len(header) - 2)


def summary_rows(metrics: Mapping[str, Any]) -> list[list[str]]:
    """(metric, value %, 95 % interval) rows of the aggregate figures."""
    boot = metrics.get("bootstrap") or {}
    rows = [
        ["samples", str(metrics.get("n", DASH)), ""],
        ["accuracy", pct(metrics.get("accuracy")), ""],
        ["balanced accuracy", pct(metrics.get("balanced_accuracy")), ""],
        ["weighted F1", pct(metrics.get("weighted_f1")), ""],
        ["macro F1", pct(metrics.get("macro_f1")), interval(boot.get("macro_f1"))],
        ["expected calibration error", pct(metrics.get("ece")), ""],
    ]
    absent = metrics.get("absent_class_predictions")
    if absent:  # scored on a dataset with fewer classes than the model (another domain)
        rows.append(["predicted a class this dataset does not have", pct(absent["fraction"]), ""])
    tri = metrics.get("triage")
    if tri:
        rows.append(["triage accuracy", pct(tri.get("accuracy")), ""])
    return rows


def per_class_rows(metrics: Mapping[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the per-class table (index, class, sens., prec., F1, support[, CI])."""
    boot = (metrics.get("bootstrap") or {}).get("sensitivity")
    header = ["#", "Class", "Sens.", "Prec.", "F1", "Support"] + (["Sens. 95% CI"] if boot else [])
    rows = []
    for i, cls in enumerate(metrics.get("classes", []), 1):
        pc = metrics.get("per_class", {}).get(cls, {})
        row = [str(i), cls, pct(pc.get("sensitivity")), pct(pc.get("precision")), pct(pc.get("f1")),
               str(pc.get("support", DASH))]
        if boot:
            row.append(interval(boot.get(cls)))
        rows.append(row)
    return header, rows


#: Header and alignment of the triage-group table.
TRIAGE_HEADER = ["group", "Sens.", "Prec.", "F1", "Support", "classes"]
TRIAGE_ALIGN = ["l", "r", "r", "r", "r", "l"]


def triage_rows(tri: Mapping[str, Any]) -> list[list[str]]:
    """One row per triage group: sensitivity, precision, F1 (%), support, member classes."""
    rows = []
    for g in tri.get("groups", []):
        s = tri.get("per_group", {}).get(g, {})
        rows.append([g, pct(s.get("sensitivity")), pct(s.get("precision")), pct(s.get("f1")),
                     str(s.get("support", DASH)), ", ".join(tri.get("classes", {}).get(g, []))])
    return rows


def evaluation_blocks(doc: Doc, metrics: Mapping[str, Any], level: int = 1) -> None:
    """The tables of one evaluation (an evaluation's report.md): summary, per class, confusion counts,
    triage, calibration, operating point, bootstrap note; headings at ``level``."""
    classes = list(metrics.get("classes", []))
    doc.h(level, "Summary")
    doc.table(["metric", "%", "95% CI"], summary_rows(metrics))
    header, rows = per_class_rows(metrics)
    doc.h(level, "Per class")
    doc.table(header, rows, _per_class_align(header))
    cm = metrics.get("confusion")
    if cm:
        doc.h(level, "Confusion matrix (rows: true, columns: predicted)")
        doc.table(["true \\ pred"] + [str(i) for i in range(1, len(classes) + 1)],
                  [[f"{i} {c}"] + [str(v) for v in row] for i, (c, row) in enumerate(zip(classes, cm), 1)])
    tri = metrics.get("triage")
    if tri:
        doc.h(level, "Triage")
        doc.table(TRIAGE_HEADER, triage_rows(tri), TRIAGE_ALIGN)
        groups, tcm = tri.get("groups", []), tri.get("confusion")
        if tcm:
            doc.table(["true \\ pred"] + groups, [[g] + [str(v) for v in row] for g, row in zip(groups, tcm)])
    _calibration_and_operating_point(doc, metrics, level)
    if metrics.get("bootstrap"):
        b = metrics["bootstrap"]
        doc.p(f"Intervals: {b.get('level', 0.95):.0%} percentile bootstrap, {b.get('n')} resamples, "
              f"seed {b.get('seed', 0)}.")


def _calibration_and_operating_point(doc: Doc, metrics: Mapping[str, Any], level: int) -> None:
    """The calibration and triage operating point sections of an evaluation's report.md."""
    cal = metrics.get("calibration")
    if cal:
        doc.h(level, "Calibration")
        doc.p(f"Temperature {cal['temperature']:.3f} fitted on the validation split "
              f"(prevalence: {cal.get('prevalence', 'balanced')}); the figures above are of the calibrated "
              "probabilities.")
        doc.table(["", "ECE", "NLL"], [["before", f"{cal['ece_before']:.3f}", f"{cal['nll_before']:.3f}"],
                                       ["after", f"{cal['ece_after']:.3f}", f"{cal['nll_after']:.3f}"]])
    op = metrics.get("operating_point")
    if op:
        doc.h(level, "Triage operating point")
        doc.p(f"Refer when P({' + '.join(op['referral_classes'])}) >= {op['threshold']:.3f}, chosen on the "
              f"validation split for {100 * (op.get('target_sensitivity') or 0):.0f} % sensitivity.")
        doc.table(["sensitivity", "specificity", "referred", "positives", "negatives"],
                  [[pct(op.get("sensitivity")), pct(op.get("specificity")), pct(op.get("referral_rate")),
                    str(op["positives"]), str(op["negatives"])]])


def metrics_blocks(doc: Doc, metrics: Mapping[str, Any], name: str, level: int = 3) -> None:
    """A run's test metrics in ``edge-derm report``: summary, per class, triage, calibration, operating point
    and the confusion matrices (images named after ``name``)."""
    doc.table(["metric", "%", "95% CI"], summary_rows(metrics))
    header, rows = per_class_rows(metrics)
    doc.table(header, rows, _per_class_align(header))
    tri = metrics.get("triage")
    if tri:
        doc.h(level, "Triage view")
        trows = [[r[0], r[1], r[2], r[3], tri.get("per_group", {}).get(r[0], {}).get("support"), r[5]]
                 for r in triage_rows(tri)]
        doc.table(TRIAGE_HEADER, trows, TRIAGE_ALIGN)
    cal, op = metrics.get("calibration"), metrics.get("operating_point")
    if cal:
        doc.h(level, "Calibration (temperature fitted on the validation split)")
        doc.table(["", "temperature", "ECE", "NLL"],
                  [["before", "1", fmt(cal.get("ece_before"), 3), fmt(cal.get("nll_before"), 3)],
                   ["after", fmt(cal.get("temperature"), 3), fmt(cal.get("ece_after"), 3),
                    fmt(cal.get("nll_after"), 3)]])
    if op:
        doc.h(level, "Triage operating point (chosen on the validation split)")
        doc.table(["refer when", "target sens.", "sensitivity", "specificity", "referred"],
                  [[f"P({' + '.join(op.get('referral_classes') or [])}) >= {fmt(op.get('threshold'), 3)}",
                    pct(op.get("target_sensitivity"), 0), pct(op.get("sensitivity")), pct(op.get("specificity")),
                    pct(op.get("referral_rate"))]])
    _confusion_images(doc, metrics, name)


def _confusion_images(doc: Doc, metrics: Mapping[str, Any], name: str) -> None:
    """The confusion matrices (counts and row-normalised) as images; a note when they cannot be drawn."""
    if not (metrics.get("confusion") and metrics.get("classes")):
        return
    from edge_derm.evaluation.plots import plot_confusion

    try:
        doc.img(f"{name}_confusion.png", plot_confusion(metrics, None), "confusion matrix (counts)")
        doc.img(f"{name}_confusion_normalised.png", plot_confusion(metrics, None, normalised=True),
                "confusion matrix (row-normalised)")
    except DataError as exc:
        doc.p(f"Confusion matrix not drawn: {exc}", "note")
