"""Evaluation: the one evaluator (metrics), confusion-matrix and curve plots, markdown reports.

``metrics`` needs only numpy; matplotlib is imported lazily by the plot functions.
"""

from __future__ import annotations

from edge_derm.evaluation.metrics import compare_metrics, compute_metrics, expected_calibration_error, triage_view

__all__ = [
    "compare_metrics",
    "compute_metrics",
    "expected_calibration_error",
    "triage_view",
    "plot_confusion",
    "plot_history",
    "plot_latency_f1",
    "metrics_markdown",
    "write_evaluation",
]


def __getattr__(name: str):
    # Plots and reports are loaded on first use, so importing the evaluator stays light.
    if name in ("plot_confusion", "plot_history", "plot_latency_f1"):
        from edge_derm.evaluation import plots

        return getattr(plots, name)
    if name in ("metrics_markdown", "write_evaluation"):
        from edge_derm.evaluation import report

        return getattr(report, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
