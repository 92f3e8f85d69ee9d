"""The files of one evaluation: ``metrics.json``, ``report.md``, ``confusion.png``, ``confusion_normalised.png``.

The tables of ``compute_metrics`` output are drawn by :mod:`edge_derm.reporting.metrics` (the one report
renderer); the names below stay importable from here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from edge_derm.fsutil import atomic_write_text, write_json
from edge_derm.reporting.document import Doc, render_markdown
from edge_derm.reporting.metrics import evaluation_blocks

__all__ = ["metrics_markdown", "write_evaluation"]


def metrics_markdown(metrics: Mapping[str, Any], heading_level: int = 2) -> str:
    """Markdown tables of one evaluation: summary, per class, confusion counts, triage.

    Figures are percentages with two decimals, as in the paper; ``–`` marks an undefined value
    (e.g. the sensitivity of a class absent from the test set). Rendered by the shared document model
    (:mod:`edge_derm.reporting`); ``heading_level`` is the markdown level of its headings.
    """
    doc = Doc()
    evaluation_blocks(doc, metrics, level=heading_level - 1)
    return render_markdown(doc)


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
