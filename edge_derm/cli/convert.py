"""CLI: ``edge-derm convert RUN --quantize MODE ...`` (thin: parse, call the converter, render)."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import List, Optional

import typer

from edge_derm.cli._choices import Mode as Quantize
from edge_derm.converters.presets import IO_TYPES, PRESETS

# One table drives the choices: the presets.
IoType = Enum("IoType", {name: name for name in IO_TYPES}, type=str)

_MODES_HELP = "; ".join(f"{p.name}: {p.description}" for p in PRESETS.values())


def convert(
    run: Path = typer.Argument(..., help="Run folder written by `edge-derm train` (model.keras + config.json)."),
    quantize: List[Quantize] = typer.Option(..., "--quantize", help=f"Mode, repeatable. {_MODES_HELP}."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Output folder [default: RUN/convert]."),
    force: bool = typer.Option(False, "--force", help="Replace the output folder if it exists."),
    io: Optional[IoType] = typer.Option(None, "--io", help="Input/output dtype of int8 and qat [default: uint8]."),
    calibration: Optional[Path] = typer.Option(
        None, "--calibration", help="Dataset folder for calibration and QAT [default: the run's last dataset]."),
    calibration_size: int = typer.Option(256, "--calibration-size", help="Calibration images (stratified, seeded)."),
    verify_size: Optional[int] = typer.Option(
        None, "--verify-size", help="At most this many fidelity images (stratified) [default: all of them]."),
    verify_data: Optional[Path] = typer.Option(
        None, "--verify-data", help="Dataset folder (same taxonomy and classes) whose every image measures fidelity "
             "[default: the validation + test images of the run's dataset]."),
    min_agreement: Optional[float] = typer.Option(
        None, "--min-agreement", help="int8: search recipes from the cheapest upward (calibration size, per-channel, "
             "float layers chosen by their effect on the output, 16x8) for this top-1 agreement, e.g. 0.99."),
    qat_epochs: int = typer.Option(1, "--qat-epochs", help="Quantisation-aware fine-tuning epochs."),
    qat_steps: Optional[int] = typer.Option(None, "--qat-steps", help="Steps per QAT epoch [default: one pass]."),
    qat_batch_size: Optional[int] = typer.Option(None, "--qat-batch-size",
                                                 help="QAT batch size [default: the run's training batch]."),
    float_layers: Optional[str] = typer.Option(
        None, "--float-layers", help="int8: keep layers in float: 'auto' (the worst), or comma-separated layer names and "
             "op:TYPE (every op of a type, e.g. op:LOGISTIC,op:MUL)."),
    collapse_threshold: float = typer.Option(
        0.05, "--collapse-threshold", help="int8 accuracy drop (fraction) that triggers the per-layer report."),
    keep_failed: bool = typer.Option(False, "--keep-failed",
                                     help="Also write variants that fail verification (marked failed)."),
    seed: int = typer.Option(0, "--seed", help="Sampling and QAT seed."),
) -> None:
    """Convert a trained run to verified .tflite files with embedded metadata.

    Exit code 1 when any requested mode failed (the passing ones are still written).
    """
    from edge_derm.converters.convert import ConvertConfig, convert_run

    # ConfigError (bad values) propagates: one line, exit code 1.
    cfg = ConvertConfig(run=run, modes=[q.value for q in quantize], out=out, force=force,
                        io=io.value if io else None, calibration=calibration,
                        calibration_size=calibration_size, verify_size=verify_size, verify_data=verify_data,
                        min_agreement=min_agreement, qat_epochs=qat_epochs, qat_steps=qat_steps,
                        qat_batch_size=qat_batch_size, float_layers=float_layers,
                        collapse_threshold=collapse_threshold, keep_failed=keep_failed, seed=seed)
    doc = convert_run(cfg)
    _render(doc, cfg.out)
    if doc["failed"]:
        raise typer.Exit(1)


def _render(doc: dict, out: Path) -> None:
    from edge_derm.cli._tables import print_table

    n = doc["verification_data"]["n"]
    columns = ("mode", "status", "size KiB", "input", "top-1 agree", "watched flips", "mean |Δp|", "KL", "recipe")
    rows = []
    for row in doc["summary"]:
        meta = doc["variants"].get(row["mode"], {})
        size = f"{row['size_bytes'] / 1024:.1f}" if row.get("size_bytes") else "-"
        flips = ", ".join(f"{k} {v}" for k, v in (row.get("watch_flips") or {}).items()) or "-"
        rows.append([row["mode"], row["status"], size, (meta.get("input") or {}).get("dtype", "-"),
                     f"{row['top1_agreement']:.4f}" if "top1_agreement" in row else "-", flips,
                     f"{row['mean_abs_diff']:.4f}" if "mean_abs_diff" in row else "-",
                     f"{row['kl_mean']:.4f}" if "kl_mean" in row else "-",
                     (meta.get("recipe") or {}).get("name", "")])
    print_table(f"converted {doc['run']} (fidelity on {n} images)", columns, rows,
                right=("size KiB", "top-1 agree", "mean |Δp|", "KL"))
    for w in doc.get("warnings", []):
        typer.echo(f"warning: {w}", err=True)
    for mode, meta in doc["variants"].items():
        if "selective" in meta:
            full, sel = meta["selective"]["full_int8"], meta["selective"]["selective"]
            typer.echo(f"int8 with {len(meta['float_layers'])} float layer(s): top-1 agreement "
                       f"{full.get('top1_agreement')} -> {sel.get('top1_agreement')}, size "
                       f"{full['size_bytes']} -> {sel['size_bytes']} B, latency {full['latency_ms']} -> "
                       f"{sel['latency_ms']} ms")
        if "search" in meta:
            s = meta["search"]
            typer.echo(f"int8 recipe search (top-1 agreement >= {s['min_agreement']}): "
                       f"{'met by' if s['met'] else 'NOT met; best was'} {s['recipe']['name']} "
                       f"after {len(s['tried'])} tries")
        if "collapse" in meta and doc.get("out"):
            typer.echo(f"int8: per-layer error report in {out / meta['collapse']['report']}")
    if doc.get("out"):
        typer.echo(f"wrote {out}" + (f" (left out: {', '.join(m for m in doc['failed'] if m not in doc['variants'])})"
                                     if any(m not in doc["variants"] for m in doc["failed"]) else ""))
    else:
        typer.echo(f"error: no mode passed verification; nothing written to {out} "
                   "(--keep-failed writes failed modes, marked failed)", err=True)


def register(app: typer.Typer) -> None:
    """Add ``convert`` to the root app."""
    app.command("convert")(convert)
