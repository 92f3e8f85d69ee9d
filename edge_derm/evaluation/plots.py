"""Plots for evaluation, training and benchmark reports (PNG, matplotlib Agg imported lazily).

Every function renders in memory and writes the file atomically, so a failed plot never leaves
a half-written PNG; each also returns the PNG bytes (handy for embedding in HTML).
"""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

from edge_derm.errors import DataError
from edge_derm.fsutil import atomic_write_bytes


#: Why a plot is missing in the runtime install (matplotlib comes with the ``train`` extra).
NO_MATPLOTLIB = "plots need matplotlib, which the runtime install leaves out: pip install 'edge-derm[train]'"


def available() -> bool:
    """Whether matplotlib is installed (plots are skipped with a note when it is not)."""
    import importlib.util

    return importlib.util.find_spec("matplotlib") is not None


def _pyplot():
    if not available():
        raise DataError(NO_MATPLOTLIB)
    import matplotlib

    matplotlib.use("Agg", force=True)  # headless; no display or GUI toolkit
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path | None) -> bytes:
    plt = _pyplot()
    buf = io.BytesIO()
    try:
        fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    finally:
        plt.close(fig)
    data = buf.getvalue()
    if path is not None:
        atomic_write_bytes(Path(path), data)
    return data


def plot_confusion(metrics: Mapping[str, Any], path: Path | None, normalised: bool = False,
                   title: str | None = None) -> bytes:
    """Draw the confusion matrix of ``compute_metrics`` output (rows = truth, columns = predicted).

    Args:
        metrics: A dict with ``classes`` and ``confusion`` (and ``confusion_normalised``).
        path: PNG file to write (None: only return the bytes).
        normalised: Row-normalised fractions instead of counts.
        title: Figure title (default names the kind of matrix).

    Returns:
        The PNG bytes.
    """
    import numpy as np

    classes = list(metrics.get("classes") or [])
    key = "confusion_normalised" if normalised else "confusion"
    if not classes or key not in metrics:
        raise DataError(f"metrics have no '{key}' or 'classes'; compute them with compute_metrics")
    cm = np.asarray(metrics[key], dtype=float)
    if cm.shape != (len(classes), len(classes)):
        raise DataError(f"'{key}' has shape {cm.shape}, expected {len(classes)}x{len(classes)}")
    plt = _pyplot()
    n = len(classes)
    side = max(4.0, 0.55 * n + 2.5)
    fig, ax = plt.subplots(figsize=(side + 1.0, side))
    vmax = 1.0 if normalised else max(cm.max(), 1.0)
    im = ax.imshow(cm, cmap="Blues", vmin=0.0, vmax=vmax)
    cbar = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    if not normalised:
        from matplotlib.ticker import MaxNLocator

        cbar.ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xticks(range(n), labels=classes, rotation=45, ha="right")
    ax.set_yticks(range(n), labels=classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title or ("confusion matrix (row-normalised)" if normalised else "confusion matrix (counts)"))
    fontsize = 9 if n <= 10 else 8
    for i in range(n):
        for j in range(n):
            v = cm[i, j]
            if v == 0 and n > 8:
                continue  # a big matrix reads better with its zero cells left blank
            text = f"{v:.2f}" if normalised else f"{int(v)}"
            ax.text(j, i, text, ha="center", va="center", fontsize=fontsize,
                    color="white" if v > 0.6 * vmax else "black")
    return _save(fig, path)


def _float(v: Any) -> float | None:
    if v is None or v == "":
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def plot_history(rows: Sequence[Mapping[str, Any]], path: Path | None, title: str | None = None) -> bytes:
    """Training curves: loss and accuracy per epoch over all block steps, a band per step.

    Args:
        rows: History rows (e.g. from ``history.csv``) with ``loss`` and/or ``accuracy`` and optionally
            ``val_loss``, ``val_accuracy``, ``step``, ``block``, ``epoch``, ``stage``. Missing columns or empty
            cells are skipped.
        path: PNG file to write (None: only return the bytes).
        title: Figure title.

    Returns:
        The PNG bytes.

    Raises:
        DataError: No row has a numeric loss or accuracy.
    """
    series = {k: [_float(r.get(k)) for r in rows] for k in ("loss", "val_loss", "accuracy", "val_accuracy")}
    if not rows or all(v is None for vals in series.values() for v in vals):
        raise DataError("training history has no numeric loss or accuracy column to plot")
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator

    x = list(range(1, len(rows) + 1))  # global epoch index across steps
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    for ax, (metric, label) in zip(axes, (("loss", "loss"), ("accuracy", "accuracy"))):
        for key, style in ((metric, "-o"), (f"val_{metric}", "--s")):
            pts = [(xi, v) for xi, v in zip(x, series[key]) if v is not None]
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], style, markersize=3, label=key)
        ax.set_xlabel("epoch (all block steps)")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    # One band per block step (alternately shaded), labelled with the block name.
    # A step is identified by (stage, step): sequential plans restart the steps in every stage.
    steps = [f"{r.get('stage', '')}/{r.get('step', '')}" for r in rows]
    blocks = [("{}: ".format(r["stage"]) if r.get("stage") and r.get("step") in (0, "0") else "")
              + str(r.get("block") or r.get("step") or "") for r in rows]
    if len(set(steps)) > 1:
        start, band = 0, 0
        for i in range(1, len(rows) + 1):
            if i < len(rows) and steps[i] == steps[start]:
                continue
            for ax in axes:
                if band % 2:
                    ax.axvspan(start + 0.5, i + 0.5, color="0.92", zorder=0)
                ax.text((start + i + 1) / 2, 1.0, blocks[start], transform=ax.get_xaxis_transform(),
                        ha="center", va="bottom", fontsize=7, color="0.35")
            start, band = i, band + 1
    if title:
        fig.suptitle(title, y=1.06)
    return _save(fig, path)


def plot_latency_f1(points: Sequence[Mapping[str, Any]], path: Path | None, title: str | None = None) -> bytes:
    """Scatter of latency (ms, x) against macro F1 (y), one labelled point per model variant.

    Args:
        points: Dicts with ``label``, ``latency_ms``, ``macro_f1`` and optionally ``group``
            (one colour per group, e.g. device/threads) and ``size_bytes`` (marker area).
            Points without both numbers are skipped.
        path: PNG file to write (None: only return the bytes).
        title: Figure title.

    Returns:
        The PNG bytes.

    Raises:
        DataError: No point has both a latency and a macro F1.
    """
    pts = [p for p in points if _float(p.get("latency_ms")) is not None and _float(p.get("macro_f1")) is not None]
    if not pts:
        raise DataError("no benchmark row has both a latency and a macro F1 to plot")
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    groups = list(dict.fromkeys(str(p.get("group", "")) for p in pts))
    sizes = [_float(p.get("size_bytes")) for p in pts]
    max_size = max((s for s in sizes if s), default=None)
    for gi, group in enumerate(groups):
        sel = [(p, s) for p, s in zip(pts, sizes) if str(p.get("group", "")) == group]
        ax.scatter([_float(p["latency_ms"]) for p, _ in sel], [_float(p["macro_f1"]) for p, _ in sel],
                   s=[40 + 260 * (s / max_size) if (s and max_size) else 60 for _, s in sel],
                   alpha=0.75, label=group or None, color=f"C{gi % 10}", edgecolors="black", linewidths=0.5)
        for p, _ in sel:
            ax.annotate(str(p.get("label", "")), (_float(p["latency_ms"]), _float(p["macro_f1"])),
                        textcoords="offset points", xytext=(6, 4), fontsize=8)
    ax.margins(x=0.2, y=0.15)  # room for the labels
    ax.set_xlabel("latency, median (ms)")
    ax.set_ylabel("macro F1")
    ax.grid(alpha=0.3)
    if any(groups):
        ax.legend(fontsize=8)
    ax.set_title(title or "latency vs macro F1 (marker area ~ model size)")
    return _save(fig, path)


def plot_class_bars(series: Sequence[tuple[str, Sequence[float | None]]], classes: Sequence[str], path: Path | None,
                    title: str, ylabel: str) -> bytes:
    """Grouped bars: one group per class, one bar per (label, values) series (a missing value draws as 0).

    Used for per-class F1 per variant and per-class sensitivity changes against the reference.

    Returns:
        The PNG bytes.
    """
    plt = _pyplot()
    n = max(1, len(series))
    width = 0.8 / n
    fig, ax = plt.subplots(figsize=(max(6.0, 0.9 * len(classes) + 2), 4.5))
    for i, (label, vals) in enumerate(series):
        xs = [k + (i - (n - 1) / 2) * width for k in range(len(classes))]
        ax.bar(xs, [0.0 if v is None else v for v in vals], width, label=label, color=f"C{i % 10}")
    ax.set_xticks(range(len(classes)))
    ax.set_xticklabels(classes, rotation=30, ha="right")
    ax.axhline(0, color="black", linewidth=0.6)
    ax.set_title(title)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize="small")
    fig.tight_layout()
    return _save(fig, path)
