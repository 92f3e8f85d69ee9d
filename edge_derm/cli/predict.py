"""CLI: ``edge-derm predict MODEL.tflite IMAGE...`` (no TensorFlow: the LiteRT runtime only)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer


def predict(
    model: Path = typer.Argument(..., help="A .tflite written by `edge-derm convert`."),
    images: List[Path] = typer.Argument(..., help="Image files to classify."),
    top_k: int = typer.Option(3, "--top-k", "-k", help="How many classes to show per image."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON document instead of a table."),
    threads: Optional[int] = typer.Option(None, "--threads", help="Interpreter threads [default: runtime's]."),
    raw: bool = typer.Option(False, "--raw", help="Show the model's raw probabilities (no temperature scaling)."),
) -> None:
    """Classify images with a .tflite model; unreadable images are reported and the rest still classified."""
    from edge_derm.runtime import TFLiteModel, top_k as topk

    if top_k < 1:
        raise typer.BadParameter("--top-k must be at least 1")
    m = TFLiteModel(model, num_threads=threads)
    k = min(top_k, m.num_classes)
    probs, errors = m.predict_files([str(p) for p in images])
    calibrated = not raw and bool(m.calibration)
    if calibrated:
        probs = m.calibrate(probs)
    referral = m.referral(probs) if calibrated else None
    results = []
    for i, (path, row) in enumerate(zip(images, probs)):
        if str(path) in errors:
            results.append({"image": str(path), "error": errors[str(path)]})
            continue
        r = {"image": str(path), "top": [{"label": lab, "probability": round(p, 6)}
                                         for lab, p in topk(row, m.labels, k)]}
        if referral is not None:
            r["referral"] = {"score": round(float(referral[0][i]), 6), "refer": bool(referral[1][i])}
        results.append(r)
    meta = m.metadata
    cal = m.calibration or {}
    if as_json:
        typer.echo(json.dumps({"model": str(model), "quantization": meta.get("quantization"),
                               "calibrated": calibrated,
                               "temperature": cal.get("temperature") if calibrated else None,
                               "referral_threshold": cal.get("threshold") if referral is not None else None,
                               "referral_classes": cal.get("referral_classes") if referral is not None else None,
                               "results": results}, indent=2))
    else:
        _render(results, meta)
        if referral is not None:
            typer.echo(f"refer = P({' + '.join(cal['referral_classes'])}) >= {cal['threshold']:.3f}, the operating "
                       f"point chosen on validation for {cal.get('target_sensitivity') or 0.9:.0%} sensitivity; "
                       "a research tool, not a diagnosis")
    if errors:
        for path, msg in errors.items():
            typer.echo(f"error: {msg}", err=True)
        raise typer.Exit(1)


def _render(results: list[dict], meta: dict) -> None:
    from edge_derm.cli._tables import print_table

    triage = meta.get("triage", {})
    with_referral = any("referral" in r for r in results)
    rows = []
    for r in results:
        if "error" in r:
            rows.append([r["image"], "unreadable (see below)", *([""] if with_referral else [])])
            continue
        cells = []
        for t in r["top"]:
            group = triage.get(t["label"])
            tag = f" [{group}]" if group and group != "unknown" else ""
            cells.append(f"{t['label']}{tag} {t['probability']:.1%}")
        extra = []
        if with_referral:
            ref = r["referral"]
            extra = [f"{'refer' if ref['refer'] else 'routine'} ({ref['score']:.1%})"]
        rows.append([r["image"], ", ".join(cells), *extra])
    print_table(None, ["image", "prediction", *(["triage"] if with_referral else [])], rows)


def register(app: typer.Typer) -> None:
    """Add ``predict`` to the root app."""
    app.command("predict")(predict)
