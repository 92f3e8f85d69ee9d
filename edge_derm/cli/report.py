"""CLI: ``edge-derm report DIR`` renders report.html + report.md for a run, convert, benchmark or demo folder."""

from __future__ import annotations

from pathlib import Path

import typer


def report(
    folder: Path = typer.Argument(..., help="A run, convert or benchmark folder, or a demo folder holding several."),
    out: Path = typer.Option(None, "--out", "-o", help="Where to write the report (default: FOLDER itself)."),
    force: bool = typer.Option(False, "--force", help="Replace report files in an --out other than FOLDER."),
) -> None:
    """Render one self-contained report.html (images embedded, no network) and report.md."""
    from edge_derm.report import write_report

    paths = write_report(folder, out, force=force)
    typer.echo(f"report: {paths['html']}")
    typer.echo(f"markdown: {paths['markdown']}")


def register(app: typer.Typer) -> None:
    """Add this module's commands to the root app."""
    app.command("report")(report)
