"""CLI: ``edge-derm data build|merge|split|inspect|synth`` (thin: parse, call edge_derm.data, render)."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import List, Optional

import typer

from edge_derm.data.sources import list_sources

data_app = typer.Typer(help="Build, merge, split, inspect and synthesise datasets (manifest folders).",
                       no_args_is_help=True)


# The registry is the one list of sources (importing it loads no source module, numpy or TensorFlow).
SourceName = Enum("SourceName", {name: name for name in list_sources()}, type=str)


class Modality(str, Enum):
    clinic = "clinic"
    derm = "derm"


def _fraction(value: float) -> float:
    if not 0.0 <= value < 1.0:
        raise typer.BadParameter(f"must be in [0, 1), got {value}")
    return value


def _console():
    from rich.console import Console

    return Console()


@data_app.command("build")
def build(
    source: SourceName = typer.Argument(..., help="Dataset layout to read."),
    root: Path = typer.Argument(..., help="The unpacked dataset (for csv: the CSV file or its folder)."),
    out: Path = typer.Option(..., "--out", "-o", help="Dataset folder to write."),
    taxonomy: str = typer.Option("dermai13", "--taxonomy", "-t",
                                 help="Target taxonomy: dermai13, edra5, dermofit10, native, or a .toml file."),
    test_fraction: float = typer.Option(0.2, "--test-fraction", callback=_fraction, help="Share of each class in test."),
    val_fraction: float = typer.Option(0.0, "--val-fraction", callback=_fraction, help="Share of each class in val."),
    seed: int = typer.Option(0, "--seed", help="Split seed."),
    strict: bool = typer.Option(False, "--strict", help="Fail on an unreadable image instead of skipping it."),
    force: bool = typer.Option(False, "--force", help="Replace --out if it exists."),
    modality: Optional[Modality] = typer.Option(None, "--modality", help="derm7pt / csv: clinic or derm images."),
    official_split: bool = typer.Option(False, "--official-split", help="derm7pt: use the release's own split."),
    max_pixels: int = typer.Option(64_000_000, "--max-pixels", min=1,
                                   help="Skip images with more pixels (decompression bombs)."),
) -> None:
    """Read a dataset in its native layout into a manifest folder (mapped, checked, split)."""
    from edge_derm.data.build import build_dataset

    options = {}
    if modality is not None:
        options["modality"] = modality.value
    if official_split:
        options["official_split"] = True
    m = build_dataset(source.value, root, out, taxonomy=taxonomy, test_fraction=test_fraction,
                      val_fraction=val_fraction, seed=seed, strict=strict, force=force, max_pixels=max_pixels,
                      **options)
    _render_counts(m.info, title=f"{out}  ({source.value} -> {m.info['taxonomy']})")


@data_app.command("merge")
def merge(
    dirs: List[Path] = typer.Argument(..., help="Dataset folders built with the same taxonomy."),
    out: Path = typer.Option(..., "--out", "-o", help="Merged dataset folder to write."),
    force: bool = typer.Option(False, "--force", help="Replace --out if it exists."),
    drop_duplicates: bool = typer.Option(False, "--drop-duplicates",
                                         help="Keep the first copy of an image found in several datasets."),
) -> None:
    """Merge dataset folders built with one taxonomy; every image keeps its split.

    The paper's strategy x: the target's images plus the public datasets' images of matching classes.
    """
    from edge_derm.data.build import merge_datasets

    m = merge_datasets(dirs, out, force=force, drop_duplicates=drop_duplicates)
    _console().print(f"merged {len(dirs)} datasets into {out}", soft_wrap=True)
    _render_counts(m.info, title=str(out))


@data_app.command("split")
def split(
    dir: Path = typer.Argument(..., help="A dataset folder (e.g. a merged one)."),
    out: Path = typer.Option(..., "--out", "-o", help="Dataset folder to write."),
    test_fraction: float = typer.Option(0.2, "--test-fraction", callback=_fraction, help="Share of each class in test."),
    val_fraction: float = typer.Option(0.0, "--val-fraction", callback=_fraction, help="Share of each class in val."),
    seed: int = typer.Option(0, "--seed", help="Split seed."),
    force: bool = typer.Option(False, "--force", help="Replace --out if it exists."),
) -> None:
    """Split a dataset folder anew (seeded, stratified, grouped); the images stay where they are."""
    from edge_derm.data.build import resplit_dataset

    m = resplit_dataset(dir, out, test_fraction=test_fraction, val_fraction=val_fraction, seed=seed, force=force)
    _render_counts(m.info, title=f"{out}  (re-split, seed {seed})")


@data_app.command("inspect")
def inspect(
    dir: Path = typer.Argument(..., help="A dataset folder."),
    no_sizes: bool = typer.Option(False, "--no-sizes", help="Skip reading image headers for size statistics."),
) -> None:
    """Show counts per class and split, dropped labels and image size statistics."""
    from edge_derm.data.build import inspect_dataset

    s = inspect_dataset(dir, sizes=not no_sizes)
    info = {"classes": s["classes"], "counts": s["counts"], "triage": s["triage"]}
    console = _console()
    _render_counts(info, title=f"{s['dir']}  ({s['source']}, {s['taxonomy']}, hash {s['hash']})", console=console)
    console.print(f"groups: train {s['groups'].get('train', 0)}, val {s['groups'].get('val', 0)}, "
                  f"test {s['groups'].get('test', 0)};  skipped at build: {s['skipped']};  root: {s['root']}")
    if s["dropped"]:
        from edge_derm.cli._tables import print_table

        print_table("dropped source labels (not in the taxonomy)", ("source label", "images"),
                    list(s["dropped"].items()), right=("images",), out=console)
    sizes = s.get("image_sizes")
    if sizes:
        w, h = sizes["width"], sizes["height"]
        console.print(f"image sizes ({sizes['n']} read, {s.get('unreadable', 0)} unreadable): "
                      f"width {w['min']}-{w['max']} (median {w['median']:g}), "
                      f"height {h['min']}-{h['max']} (median {h['median']:g}), "
                      f"{sizes['distinct']} distinct, most common {sizes['most_common'][0]}x{sizes['most_common'][1]}")
    elif not no_sizes:
        console.print(f"image sizes: no readable image ({s.get('unreadable', 0)} unreadable)")
    for w in s["warnings"]:
        console.print(f"warning: {w}")


@data_app.command("synth")
def synth(
    out: Path = typer.Option(..., "--out", "-o", help="Folder to write (<class>/<name>.png)."),
    per_class: Optional[int] = typer.Option(
        None, "--per-class", min=1,
        help="Images per class [default: 60]; with --paper-proportions the mean per class."),
    paper_proportions: bool = typer.Option(False, "--paper-proportions",
                                           help="Class sizes in the proportions of the paper's dataset."),
    size: int = typer.Option(128, "--size", min=16, max=1024, help="Image side in pixels."),
    seed: int = typer.Option(0, "--seed", min=0, help="Random seed (same seed, same images)."),
    workers: int = typer.Option(1, "--workers", min=0, help="Processes to draw with (0: one per CPU core)."),
    force: bool = typer.Option(False, "--force", help="Replace --out if it exists."),
) -> None:
    """Draw the synthetic lesion dataset for the 13 dermai13 classes (folder layout)."""
    from edge_derm.data.synth import generate_dataset

    kwargs = {"paper_proportions": paper_proportions, "size": size, "seed": seed, "force": force,
              "workers": workers}
    if per_class is not None:
        kwargs["per_class"] = per_class
    summary = generate_dataset(out, **kwargs)
    console = _console()
    counts = summary.get("counts", {})
    if counts:
        from edge_derm.cli._tables import print_table

        print_table(f"{out}  (synthetic, seed {seed}, {size} px)", ("class", "images"),
                    [*([c, n] for c, n in counts.items()), ["total", sum(counts.values())]], right=("images",),
                    out=console, bold_last=True)
    console.print(f"build it with: edge-derm data build folder {out} --out <dataset>")


def _render_counts(info: dict, title: str, console=None) -> None:
    from edge_derm.cli._tables import print_table

    console = console or _console()
    counts = info["counts"]
    splits = [s for s in ("train", "val", "test") if any(counts[c].get(s, 0) for c in info["classes"])]
    totals = {s: 0 for s in splits}
    rows = []
    for c in info["classes"]:
        row = [counts[c].get(s, 0) for s in splits]
        for s, n in zip(splits, row):
            totals[s] += n
        rows.append([c, info.get("triage", {}).get(c, ""), *row, sum(row)])
    rows.append(["total", "", *(totals[s] for s in splits), sum(totals.values())])
    print_table(title, ["class", "triage", *splits, "total"], rows, right=[*splits, "total"], out=console,
                bold_last=True)
    if info.get("dropped") and "n_images" in info:
        dropped = ", ".join(f"{k} ({v})" for k, v in info["dropped"].items())
        console.print(f"dropped (not in the taxonomy): {dropped}")
    if info.get("skipped"):
        console.print(f"skipped {info['skipped']} unreadable image(s): see skipped.csv")


def register(app: typer.Typer) -> None:
    """Add the ``data`` command group to the root app."""
    app.add_typer(data_app, name="data")
