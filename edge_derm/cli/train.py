"""CLI: ``edge-derm train``, ``edge-derm evaluate``, ``edge-derm experiment`` (thin)."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Any, List, Optional

import typer

from edge_derm.cli._choices import Split


class ResizeMode(str, Enum):
    nearest = "nearest"
    pad = "pad"


class Distribute(str, Enum):
    none = "none"
    mirrored = "mirrored"
    multiworker = "multiworker"


class Unfreeze(str, Enum):
    blockwise = "blockwise"
    full = "full"


def _parse_sets(values: List[str] | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in values or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise typer.BadParameter(f"expected KEY=VALUE, got {item!r}", param_hint="--set")
        out[key.strip()] = value.strip()
    return out


def _blocks(value: Optional[str]) -> Any:
    if value is None or value == "all":
        return value
    if value.isdigit():
        return int(value)
    raise typer.BadParameter(f"expected a number of blocks or 'all', got {value!r}")


def _options(**kw: Any) -> dict[str, Any]:
    """Training options the user gave (None = not given)."""
    out = {k: v.value if isinstance(v, Enum) else v for k, v in kw.items() if v is not None}
    return out


def _interrupted(out: Path) -> typer.Exit:
    typer.echo(f"error: interrupted; the completed steps in {out} are kept: "
               "run the same command with --resume to continue", err=True)
    return typer.Exit(130)


def train(
    out: Path = typer.Option(..., "--out", "-o", help="Run folder to write."),
    data: Optional[List[Path]] = typer.Option(None, "--data", "-d",
                                              help="Dataset folder (repeat to merge; the last one is evaluated)."),
    plan: Optional[str] = typer.Option(None, "--plan", help="Sequential plan: o, x, a, b, c or a .toml file."),
    sets: Optional[List[str]] = typer.Option(None, "--set", help="Plan parameter KEY=DIR (repeat), e.g. target=DIR."),
    backbone: Optional[str] = typer.Option(None, "--backbone", "-b", help="Backbone (edge-derm models list)."),
    alpha: Optional[float] = typer.Option(None, "--alpha", help="MobileNetV2 width multiplier."),
    image_size: Optional[int] = typer.Option(None, "--image-size", help="Input size in pixels (default 300)."),
    resize_mode: Optional[ResizeMode] = typer.Option(None, "--resize-mode", help="nearest (paper) or pad."),
    weights: Optional[str] = typer.Option(None, "--weights", help="imagenet, none, or a weights file."),
    epochs_per_block: Optional[int] = typer.Option(None, "--epochs-per-block", "-e", help="Epochs per step (3)."),
    blocks: Optional[str] = typer.Option(None, "--blocks", help="Backbone blocks to unfreeze, or 'all'."),
    unfreeze: Optional[Unfreeze] = typer.Option(
        None, "--unfreeze", help="blockwise (the paper's: head, then one more block per step) or full (every "
                                 "layer from epoch 1, lr 1e-3: the from-scratch recipe for --weights none)."),
    batch_multiple: Optional[int] = typer.Option(None, "--batch-multiple", help="Images per class per batch (1)."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Explicit batch size."),
    steps_per_epoch: Optional[int] = typer.Option(None, "--steps-per-epoch", help="Batches per epoch."),
    lr_head: Optional[float] = typer.Option(None, "--lr-head", help="Head learning rate (1e-4; full: 1e-3)."),
    lr_backbone: Optional[float] = typer.Option(None, "--lr-backbone",
                                                help="Backbone learning rate (1e-5; full: 1e-3)."),
    label_smoothing: Optional[float] = typer.Option(None, "--label-smoothing", help="Label smoothing (0)."),
    dropout: Optional[float] = typer.Option(None, "--dropout", help="Head dropout (0)."),
    augment: Optional[bool] = typer.Option(None, "--augment/--no-augment", help="Training augmentation (on)."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Seed (0)."),
    deterministic: Optional[bool] = typer.Option(None, "--deterministic/--no-deterministic",
                                                 help="Deterministic ops, so --resume reproduces the run (on)."),
    bootstrap: Optional[int] = typer.Option(None, "--bootstrap", help="Bootstrap resamples for intervals (0)."),
    distribute: Optional[Distribute] = typer.Option(None, "--distribute", help="none, mirrored or multiworker."),
    resume: bool = typer.Option(False, "--resume", help="Continue after the last completed step."),
    force: bool = typer.Option(False, "--force", help="Replace --out if it exists."),
) -> None:
    """Train a classifier block by block (or a sequential --plan) into a run folder."""
    opts = _options(backbone=backbone, alpha=alpha, image_size=image_size, resize_mode=resize_mode, weights=weights,
                    epochs_per_block=epochs_per_block, blocks=_blocks(blocks), unfreeze=unfreeze,
                    batch_multiple=batch_multiple, batch_size=batch_size, steps_per_epoch=steps_per_epoch,
                    lr_head=lr_head, lr_backbone=lr_backbone,
                    label_smoothing=label_smoothing, dropout=dropout, augment=augment, seed=seed,
                    deterministic=deterministic, bootstrap=bootstrap, distribute=distribute)
    if plan is not None:
        if data:
            raise typer.BadParameter("a plan names its own datasets; pass them with --set KEY=DIR", param_hint="--data")
        from edge_derm.training.sequential import load_plan, run_plan

        loaded = load_plan(plan, _parse_sets(sets), opts)
        try:
            result = run_plan(loaded, out, resume=resume, force=force)
        except KeyboardInterrupt:
            raise _interrupted(out) from None
    else:
        if sets:
            raise typer.BadParameter("--set only applies to --plan", param_hint="--set")
        if not data:
            raise typer.BadParameter("give a dataset folder (--data DIR) or a plan (--plan NAME)", param_hint="--data")
        from edge_derm.training.config import TrainConfig
        from edge_derm.training.trainer import train as train_run

        config = TrainConfig(data=[str(d) for d in data], **opts)
        try:
            result = train_run(config, out, resume=resume, force=force)
        except KeyboardInterrupt:
            raise _interrupted(out) from None
    _summary(result)


def _summary(result: dict[str, Any]) -> None:
    m = result.get("metrics")
    typer.echo(f"run: {result['out']}")
    if m:
        typer.echo(f"test: accuracy {100 * m['accuracy']:.1f} %, macro F1 {100 * m['macro_f1']:.1f} %, "
                   f"weighted F1 {100 * m['weighted_f1']:.1f} % (n={m['n']})")
    if result.get("forgetting"):
        from edge_derm.training.sequential import forgetting_markdown

        typer.echo(forgetting_markdown(result["forgetting"]))


def evaluate(
    run: Path = typer.Argument(..., help="Run folder (from edge-derm train)."),
    data: Path = typer.Option(..., "--data", "-d", help="Dataset folder to evaluate on."),
    split: Split = typer.Option(Split.test, "--split", help="Split to evaluate."),
    bootstrap: int = typer.Option(0, "--bootstrap", min=0, help="Bootstrap resamples for confidence intervals."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Output folder (default RUN/eval-<data>-<split>)."),
    force: bool = typer.Option(False, "--force", help="Replace the output folder."),
) -> None:
    """Evaluate a run's model on a dataset split: metrics.json, report.md, confusion matrices."""
    from edge_derm.evaluation import metrics_markdown
    from edge_derm.training.evaluate import evaluate_run

    metrics, where = evaluate_run(run, data, split=split.value, bootstrap=bootstrap, out=out, force=force)
    typer.echo(metrics_markdown(metrics))
    typer.echo(f"written: {where}")


def experiment(
    plans: List[str] = typer.Argument(..., help="Plans (o, x, a, b, c or .toml files)."),
    out: Path = typer.Option(..., "--out", "-o", help="Experiment folder."),
    sets: Optional[List[str]] = typer.Option(None, "--set", help="Plan parameter KEY=DIR (repeat)."),
    backbones: Optional[List[str]] = typer.Option(None, "--backbone", "-b", help="Run each plan with each backbone."),
    alpha: Optional[float] = typer.Option(None, "--alpha", help="MobileNetV2 width multiplier."),
    image_size: Optional[int] = typer.Option(None, "--image-size", help="Input size in pixels."),
    epochs_per_block: Optional[int] = typer.Option(None, "--epochs-per-block", "-e", help="Epochs per step."),
    steps_per_epoch: Optional[int] = typer.Option(None, "--steps-per-epoch", help="Batches per epoch."),
    bootstrap: Optional[int] = typer.Option(None, "--bootstrap", help="Bootstrap resamples for intervals."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Seed."),
    resume: bool = typer.Option(False, "--resume", help="Continue unfinished plans."),
    force: bool = typer.Option(False, "--force", help="Replace --out if it exists."),
) -> None:
    """Train several plans (x backbones) and compare them in one table (parameters, accuracy, F1)."""
    from edge_derm.training.experiment import comparison_markdown, run_experiment

    opts = _options(alpha=alpha, image_size=image_size, epochs_per_block=epochs_per_block,
                    steps_per_epoch=steps_per_epoch, bootstrap=bootstrap, seed=seed)
    try:
        rows = run_experiment(plans, out, params=_parse_sets(sets), backbones=backbones, overrides=opts,
                              resume=resume, force=force)
    except KeyboardInterrupt:
        raise _interrupted(out) from None
    typer.echo(comparison_markdown(rows))
    typer.echo(f"written: {out / 'comparison.md'}")


def register(app: typer.Typer) -> None:
    """Add ``train``, ``evaluate`` and ``experiment`` to the root app."""
    app.command("train")(train)
    app.command("evaluate")(evaluate)
    app.command("experiment")(experiment)
