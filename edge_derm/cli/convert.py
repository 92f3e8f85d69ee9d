"""CLI: ``edge-derm convert RUN --quantize MODE ...`` (thin: parse, call the converter, render)."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import List, Optional

import typer

from edge_derm.converters.presets import IO_TYPES, PRESETS

# One table drives the choices: the presets.
Quantize = Enum("Quantize", {name: name for name in PRESETS}, type=str)
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
    verify_size: int = typer.Option(64, "--verify-size", help="Images in the fixed verification batch."),
    qat_epochs: int = typer.Option(1, "--qat-epochs", help="Quantisation-aware fine-tuning epochs."),
    qat_steps: Optional[int] = typer.Option(None, "--qat-steps", help="Steps per QAT epoch [default: one pass]."),
    qat_batch_size: Optional[int] = typer.Option(None, "--qat-batch-size",
                                                 help="QAT batch size [default: the run's training batch]."),
    float_layers: Optional[str] = typer.Option(
        None, "--float-layers", help="int8: keep layers in float: 'auto' (the worst), or comma-separated layer names and "
             "op:TYPE (every op of a type, e.g. op:LOGISTIC,op:MUL)."),
    collapse_threshold: float = typer.Option(
        0.05, "--collapse-threshold", help="int8 accuracy drop (fraction) that triggers the per-layer report."),
    keep_failed: bool = typer.Option(False, "--keep-failed", help="Write variants that fail verification."),
    seed: int = typer.Option(0, "--seed", help="Sampling and QAT seed."),
) -> None:
    """Convert a trained run to verified .tflite files with embedded metadata."""
    from edge_derm.converters.convert import ConvertConfig, convert_run
    from edge_derm.errors import ConfigError

    try:
        cfg = ConvertConfig(run=run, modes=[q.value for q in quantize], out=out, force=force,
                            io=io.value if io else None, calibration=calibration,
                            calibration_size=calibration_size, verify_size=verify_size, qat_epochs=qat_epochs,
                            qat_steps=qat_steps, qat_batch_size=qat_batch_size, float_layers=float_layers, collapse_threshold=collapse_threshold,
                            keep_failed=keep_failed, seed=seed)
    except ConfigError as exc:
        raise typer.BadParameter(str(exc)) from None
    doc = convert_run(cfg)
    _render(doc, cfg.out)


def _render(doc: dict, out: Path) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=escape(f"converted {doc['run']}"))
    for col in ("mode", "size KiB", "input", "output", "integer ops", "top-1 agree", "max |Δp|", "passed"):
        table.add_column(col)
    for mode, meta in doc["variants"].items():
        v = meta["verification"]
        table.add_row(mode, f"{meta['size_bytes'] / 1024:.1f}", meta["input"]["dtype"], meta["output"]["dtype"],
                      f"{v['integer_op_share']:.0%}", f"{v['top1_agreement']:.3f}", f"{v['max_abs_diff']:.4f}",
                      "yes" if v["passed"] else "NO")
    console = Console()
    console.print(table)
    for w in doc.get("warnings", []):
        typer.echo(f"warning: {w}", err=True)
    for mode, meta in doc["variants"].items():
        if "selective" in meta:
            full, sel = meta["selective"]["full_int8"], meta["selective"]["selective"]
            typer.echo(f"int8 with {len(meta['float_layers'])} float layer(s): accuracy "
                       f"{full.get('accuracy_tflite')} -> {sel.get('accuracy_tflite')}, size "
                       f"{full['size_bytes']} -> {sel['size_bytes']} B, latency {full['latency_ms']} -> "
                       f"{sel['latency_ms']} ms")
        elif "collapse" in meta:
            typer.echo(f"int8: per-layer error report in {out / meta['collapse']['report']}")
    typer.echo(f"wrote {out}")


def register(app: typer.Typer) -> None:
    """Add ``convert`` to the root app."""
    app.command("convert")(convert)
