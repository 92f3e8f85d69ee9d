"""CLI: ``edge-derm models list`` (thin: the backbone registry, rendered as a table)."""

from __future__ import annotations

import typer

models_app = typer.Typer(help="Backbones that edge-derm can train.", no_args_is_help=True)


@models_app.command("list")
def list_models(
    params: bool = typer.Option(True, "--params/--no-params",
                                help="Build each backbone (no weights) to count its parameters (a few seconds)."),
) -> None:
    """Show each backbone with its parameters, default input size, preprocessing and blocks."""
    from edge_derm.cli._tables import print_table
    from edge_derm.models import count_params, create_backbone, list_specs

    rows = []
    for spec in list_specs():
        n = ""
        if params:
            n = f"{count_params(create_backbone(spec.name, image_size=spec.default_size)) / 1e6:.2f} M"
        alpha = f"{spec.default_alpha} ({', '.join(map(str, spec.alphas))})" if spec.alphas else "-"
        blocks = ", ".join(spec.block_names[: spec.paper_blocks + 1]) + " (+ rest)"
        rows.append([spec.name, n, f"{spec.default_size} px", alpha, spec.preprocessing, blocks])
    print_table("backbones", ("name", "params", "input", "alpha", "preprocessing (inside the model)",
                              "blocks (head first)"), rows, right=("params",))


def recipes() -> None:
    """Show the training recipes (TOML presets: edge_derm/training/recipes) and how they differ."""
    from edge_derm.cli._tables import print_table
    from edge_derm.training.config import RECIPE_FIELDS, list_recipes, load_recipe

    names = list(list_recipes())
    loaded = {n: load_recipe(n) for n in names}
    rows = []
    for key in RECIPE_FIELDS:
        values = [loaded[n].get(key) for n in names]
        if all(v is None for v in values):
            continue
        rows.append([key, *("-" if v is None else str(v) for v in values)])
    print_table("recipes (edge-derm train --recipe NAME; other options override)",
                ["option", *(n + (" (default)" if n == "recommended" else "") for n in names)], rows)
    for n, description in list_recipes().items():
        typer.echo(f"{n}: {description}")


def register(app: typer.Typer) -> None:
    """Add ``models`` and ``recipes`` to the root app."""
    app.add_typer(models_app, name="models")
    app.command("recipes")(recipes)
