"""Markdown tables of ``compute_metrics`` output (like the paper's Tables V-VIII) and the files
of one evaluation: ``metrics.json``, ``report.md``, ``confusion.png``, ``confusion_normalised.png``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from edge_derm.fsutil import atomic_write_text, write_json

DASH = "–"


def pct(v: Any, digits: int = 2) -> str:
    """A fraction as a percentage string (``0.4979`` -> ``49.79``); ``None`` -> an en dash."""
    if v is None:
        return DASH
    try:
        return f"{100.0 * float(v):.{digits}f}"
    except (TypeError, ValueError):
        return DASH


def interval(ci: Any) -> str:
    """A ``[lo, hi]`` fraction interval as ``[lo, hi]`` percentages, or an en dash."""
    if not ci or len(ci) != 2 or ci[0] is None or ci[1] is None:
        return DASH
    return f"[{pct(ci[0], 1)}, {pct(ci[1], 1)}]"


def md_table(header: list[str], rows: list[list[Any]], align: list[str] | None = None) -> str:
    """A GitHub-flavoured markdown table; ``align`` items are ``l`` or ``r`` (default: first l, rest r)."""
    align = align or ["l"] + ["r"] * (len(header) - 1)

    def cell(v: Any) -> str:
        return str(v).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(cell(h) for h in header) + " |",
             "|" + "|".join(":---" if a == "l" else "---:" for a in align) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


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


def metrics_markdown(metrics: Mapping[str, Any], heading_level: int = 2) -> str:
    """Markdown tables of one evaluation: summary, per class, confusion counts, triage.

    Figures are percentages with two decimals, as in the paper; ``–`` marks an undefined value
    (e.g. the sensitivity of a class absent from the test set).
    """
    h = "#" * heading_level
    classes = list(metrics.get("classes", []))
    parts = [f"{h} Summary", "", md_table(["metric", "%", "95% CI"], summary_rows(metrics)), ""]
    header, rows = per_class_rows(metrics)
    parts += [f"{h} Per class", "", md_table(header, rows, ["r", "l"] + ["r"] * (len(header) - 2)), ""]
    cm = metrics.get("confusion")
    if cm:
        parts += [f"{h} Confusion matrix (rows: true, columns: predicted)", "",
                  md_table(["true \\ pred"] + [str(i) for i in range(1, len(classes) + 1)],
                           [[f"{i} {c}"] + [str(v) for v in row] for i, (c, row) in enumerate(zip(classes, cm), 1)]),
                  ""]
    tri = metrics.get("triage")
    if tri:
        groups = tri.get("groups", [])
        trows = []
        for g in groups:
            s = tri.get("per_group", {}).get(g, {})
            members = ", ".join(tri.get("classes", {}).get(g, []))
            trows.append([g, pct(s.get("sensitivity")), pct(s.get("precision")), pct(s.get("f1")),
                          str(s.get("support", DASH)), members])
        parts += [f"{h} Triage", "",
                  md_table(["group", "Sens.", "Prec.", "F1", "Support", "classes"], trows,
                           ["l", "r", "r", "r", "r", "l"]), ""]
        tcm = tri.get("confusion")
        if tcm:
            parts += [md_table(["true \\ pred"] + groups, [[g] + [str(v) for v in row] for g, row in zip(groups, tcm)]),
                      ""]
    cal = metrics.get("calibration")
    if cal:
        parts += [f"{h} Calibration", "",
                  f"Temperature {cal['temperature']:.3f} fitted on the validation split "
                  f"(prevalence: {cal.get('prevalence', 'balanced')}); the figures above are of the calibrated "
                  "probabilities.", "",
                  md_table(["", "ECE", "NLL"], [["before", f"{cal['ece_before']:.3f}", f"{cal['nll_before']:.3f}"],
                                               ["after", f"{cal['ece_after']:.3f}", f"{cal['nll_after']:.3f}"]]), ""]
    op = metrics.get("operating_point")
    if op:
        parts += [f"{h} Triage operating point", "",
                  f"Refer when P({' + '.join(op['referral_classes'])}) >= {op['threshold']:.3f}, chosen on the "
                  f"validation split for {100 * (op.get('target_sensitivity') or 0):.0f} % sensitivity.", "",
                  md_table(["sensitivity", "specificity", "referred", "positives", "negatives"],
                           [[pct(op.get("sensitivity")), pct(op.get("specificity")), pct(op.get("referral_rate")),
                             str(op["positives"]), str(op["negatives"])]]), ""]
    if metrics.get("bootstrap"):
        b = metrics["bootstrap"]
        parts += [f"Intervals: {b.get('level', 0.95):.0%} percentile bootstrap, {b.get('n')} resamples, "
                  f"seed {b.get('seed', 0)}.", ""]
    return "\n".join(parts)


def write_evaluation(dir: Path, metrics: Mapping[str, Any], title: str) -> dict[str, Path]:
    """Write ``metrics.json``, ``report.md``, ``confusion.png`` and ``confusion_normalised.png``.

    Each file is written atomically; existing files of these names in ``dir`` are replaced (callers
    guard the folder itself, e.g. with ``staged_dir``). ``dir`` is created if missing.

    Returns:
        ``{"metrics": path, "report": path, "confusion": path, "confusion_normalised": path}``.
    """
    from edge_derm.evaluation.plots import plot_confusion

    dir = Path(dir)
    dir.mkdir(parents=True, exist_ok=True)
    paths = {"metrics": dir / "metrics.json", "report": dir / "report.md",
             "confusion": dir / "confusion.png", "confusion_normalised": dir / "confusion_normalised.png"}
    plot_confusion(metrics, paths["confusion"], normalised=False, title=f"{title}: confusion (counts)")
    plot_confusion(metrics, paths["confusion_normalised"], normalised=True, title=f"{title}: confusion (row-normalised)")
    write_json(paths["metrics"], dict(metrics))
    md = (f"# {title}\n\n" + metrics_markdown(metrics) +
          "\n![confusion matrix, counts](confusion.png)\n\n"
          "![confusion matrix, row-normalised](confusion_normalised.png)\n")
    atomic_write_text(paths["report"], md)
    return paths
