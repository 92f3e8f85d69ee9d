"""CLI: ``edge-derm export android MODEL_OR_CONVERT_DIR`` (thin: parse, call edge_derm.export, render)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from edge_derm.cli._choices import Mode as Variant

export_app = typer.Typer(help="Put a converted model into an app.", no_args_is_help=True)


@export_app.command("android")
def android(
    model: Path = typer.Argument(..., help="A .tflite with edge-derm metadata, or a folder written by `edge-derm convert`."),
    app: Path = typer.Option(Path("android_demo"), "--app", help="The Android project folder."),
    variant: Optional[Variant] = typer.Option(
        None, "--variant", help="Which model.<variant>.tflite of a convert folder [default: int8, else the smallest there]."),
    samples: Optional[Path] = typer.Option(
        None, "--samples",
        help="Dataset folder (or its manifest.csv) or a folder of images for the instrumented test "
             "[default: the test split of the run's dataset, when on disk]."),
    per_class: int = typer.Option(2, "--per-class", help="Samples per label from a dataset folder."),
    max_samples: int = typer.Option(40, "--max-samples", help="At most this many samples in all."),
    allow_unverified: bool = typer.Option(False, "--allow-unverified", help="Export a variant that failed its conversion check."),
    force: bool = typer.Option(False, "--force", help="Replace the app's current model and samples."),
) -> None:
    """Copy a model, its labels.txt and model.json into the app's assets, plus test samples and expected results."""
    from edge_derm.errors import ConfigError
    from edge_derm.export import export_android

    if per_class < 1 or max_samples < 1:
        raise typer.BadParameter("--per-class and --max-samples must be at least 1")
    try:
        summary = export_android(model, app, variant=variant.value if variant else None, samples=samples,
                                 per_class=per_class, max_samples=max_samples,
                                 allow_unverified=allow_unverified, force=force)
    except ConfigError as exc:
        raise typer.BadParameter(str(exc)) from None
    typer.echo(f"exported {summary['source']} ({summary['variant']}, {summary['size_bytes'] / 1e6:.2f} MB, "
               f"{len(summary['labels'])} labels) into {summary['app']}")
    for f in summary["files"]:
        typer.echo(f"  {f}")
    if summary["samples"]:
        counts = ", ".join(f"{k} {v}" for k, v in summary["per_label"].items())
        typer.echo(f"instrumented-test samples: {summary['samples']} ({counts})")
    else:
        typer.echo("no instrumented-test samples (pass --samples DATASET to add some)")
    typer.echo(f"next: cd {summary['app']} && ./gradlew installDebug   (see {summary['app']}/README.md)")


def register(app: typer.Typer) -> None:
    """Add this module's commands to the root app."""
    app.add_typer(export_app, name="export")
