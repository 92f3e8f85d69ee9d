"""CLI: ``edge-derm train``, ``edge-derm evaluate``, ``edge-derm experiment`` (thin)."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Any, List, Optional

import typer

from edge_derm.cli._choices import Split
from edge_derm.errors import Interrupted


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


class LrSchedule(str, Enum):
    constant = "constant"
    cosine = "cosine"


class Prevalence(str, Enum):
    balanced = "balanced"
    dataset = "dataset"
    fit = "fit"


def _brightness(value: Optional[str]) -> Optional[list[float]]:
    if value is None:
        return None
    try:
        low, high = (float(v) for v in value.split(","))
    except ValueError:
        raise typer.BadParameter(f"expected LOW,HIGH (e.g. 0.8,1.2), got {value!r}", param_hint="--brightness") from None
    return [low, high]


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


def _interrupted(out: Path) -> Interrupted:
    if (Path(out) / "checkpoints" / "state.json").is_file() or (Path(out) / "plan.json").is_file():
        return Interrupted(f"interrupted; the completed steps in {out} are kept: "
                           "run the same command with --resume to continue")
    return Interrupted(f"interrupted before the first step finished; nothing was kept in {out}")


# The options of `edge-derm train`, one line each in its signature (None = not given: the recipe decides).
_Out = Annotated[Path, typer.Option("--out", "-o", help="Run folder to write.")]
_Data = Annotated[Optional[List[Path]], typer.Option(
    "--data", "-d", help="Dataset folder (repeat to merge; the last one is evaluated).")]
_Plan = Annotated[Optional[str], typer.Option("--plan",
                                              help="Sequential plan: o, o-blockwise, x, a, b, c or a .toml file.")]
_Recipe = Annotated[Optional[str], typer.Option("--recipe", help="recommended (default), paper, or a .toml file "
                                                                 "(edge-derm recipes); other options override it.")]
_Sets = Annotated[Optional[List[str]], typer.Option("--set", help="Plan parameter KEY=DIR (repeat), e.g. target=DIR.")]
_Backbone = Annotated[Optional[str], typer.Option("--backbone", "-b", help="Backbone (edge-derm models list).")]
_Alpha = Annotated[Optional[float], typer.Option("--alpha", help="MobileNetV2 width multiplier.")]
_ImageSize = Annotated[Optional[int], typer.Option("--image-size", help="Input size in pixels (default 300).")]
_Resize = Annotated[Optional[ResizeMode], typer.Option("--resize-mode", help="nearest (paper) or pad.")]
_Weights = Annotated[Optional[str], typer.Option("--weights", help="imagenet, none, or a weights file.")]
_Epochs = Annotated[Optional[int], typer.Option("--epochs-per-block", "-e", help="Epochs per step (3).")]
_Blocks = Annotated[Optional[str], typer.Option("--blocks", help="Backbone blocks to unfreeze, or 'all'.")]
_Unfreeze = Annotated[Optional[Unfreeze], typer.Option(
    "--unfreeze", help="blockwise (the paper's: head, then one more block per step) or full (every "
                       "layer from epoch 1, lr 1e-3: the from-scratch recipe for --weights none).")]
_BatchMultiple = Annotated[Optional[int], typer.Option("--batch-multiple",
                                                       help="Images per class per batch (recipe: 4; paper 1).")]
_BatchSize = Annotated[Optional[int], typer.Option("--batch-size", help="Explicit batch size.")]
_Steps = Annotated[Optional[int], typer.Option("--steps-per-epoch", help="Batches per epoch.")]
_LrHead = Annotated[Optional[float], typer.Option("--lr-head",
                                                  help="Head learning rate (recipe: 1e-3; paper 1e-4; full: 1e-3).")]
_LrBackbone = Annotated[Optional[float], typer.Option(
    "--lr-backbone", help="Backbone learning rate (recipe: 1e-4; paper 1e-5; full: 1e-3).")]
_LrSchedule = Annotated[Optional[LrSchedule], typer.Option("--lr-schedule", help="constant or cosine (with warm-up).")]
_Warmup = Annotated[Optional[float], typer.Option("--warmup-epochs", help="Warm-up epochs of each step.")]
_Smoothing = Annotated[Optional[float], typer.Option("--label-smoothing", help="Label smoothing.")]
_Dropout = Annotated[Optional[float], typer.Option("--dropout", help="Head dropout (0).")]
_Augment = Annotated[Optional[bool], typer.Option("--augment/--no-augment", help="Training augmentation (on).")]
_Brightness = Annotated[Optional[str], typer.Option("--brightness", help="Brightness factor range LOW,HIGH "
                                                                         "(paper 0.2,0.8; recommended 0.8,1.2).")]
_BnMomentum = Annotated[Optional[float], typer.Option("--bn-momentum",
                                                      help="BatchNorm momentum while a block trains (0 = keep).")]
_BnRecal = Annotated[Optional[int], typer.Option(
    "--bn-recalibration", help="Training images that re-estimate BatchNorm after each epoch (0 = off).")]
_SelectBest = Annotated[Optional[bool], typer.Option("--select-best/--last-epoch",
                                                     help="Keep the epoch with the best validation macro F1.")]
_ValFraction = Annotated[Optional[float], typer.Option(
    "--val-fraction", help="Grouped validation split carved from train when the data has none (0 = none).")]
_Calibrate = Annotated[Optional[bool], typer.Option("--calibrate/--no-calibrate",
                                                    help="Fit temperature + triage threshold on the val split.")]
_Prevalence = Annotated[Optional[Prevalence], typer.Option(
    "--prevalence", help="balanced, dataset (restore the training frequencies in the calibrated probabilities) "
                         "or fit (partly, as validation macro F1 prefers).")]
_TriageTarget = Annotated[Optional[float], typer.Option("--triage-target",
                                                        help="Target sensitivity of the referral group (0.9).")]
_Seed = Annotated[Optional[int], typer.Option("--seed", help="Seed (0).")]
_Deterministic = Annotated[Optional[bool], typer.Option(
    "--deterministic/--no-deterministic", help="Deterministic ops, so --resume reproduces the run (on).")]
_Bootstrap = Annotated[Optional[int], typer.Option("--bootstrap", help="Bootstrap resamples for intervals (0).")]
_Distribute = Annotated[Optional[Distribute], typer.Option(
    "--distribute", help="none, mirrored or multiworker (TF_CONFIG describes the cluster).")]
_Workers = Annotated[Optional[int], typer.Option(
    "--workers", min=1, help="With --distribute multiworker: start this many local workers (loopback TF_CONFIG; "
                             "a try-out on one machine).")]
_WorkerTimeout = Annotated[Optional[float], typer.Option(
    "--worker-timeout", min=1, help="multiworker: seconds to wait for every worker to join (300).")]
_Resume = Annotated[bool, typer.Option("--resume", help="Continue after the last completed step.")]
_Force = Annotated[bool, typer.Option("--force", help="Replace --out if it exists.")]


def train(out: _Out, data: _Data = None, plan: _Plan = None, recipe: _Recipe = None, sets: _Sets = None,
          backbone: _Backbone = None, alpha: _Alpha = None, image_size: _ImageSize = None,
          resize_mode: _Resize = None, weights: _Weights = None, epochs_per_block: _Epochs = None,
          blocks: _Blocks = None, unfreeze: _Unfreeze = None, batch_multiple: _BatchMultiple = None,
          batch_size: _BatchSize = None, steps_per_epoch: _Steps = None, lr_head: _LrHead = None,
          lr_backbone: _LrBackbone = None, lr_sched: _LrSchedule = None, warmup_epochs: _Warmup = None,
          label_smoothing: _Smoothing = None, dropout: _Dropout = None, augment: _Augment = None,
          brightness: _Brightness = None, bn_momentum: _BnMomentum = None, bn_recalibration: _BnRecal = None,
          select_best: _SelectBest = None, val_fraction: _ValFraction = None, calibrate: _Calibrate = None,
          prevalence: _Prevalence = None, triage_target: _TriageTarget = None, seed: _Seed = None,
          deterministic: _Deterministic = None, bootstrap: _Bootstrap = None, distribute: _Distribute = None,
          workers: _Workers = None, worker_timeout: _WorkerTimeout = None, resume: _Resume = False,
          force: _Force = False) -> None:
    """Train a classifier block by block (or a sequential --plan) into a run folder."""
    opts = _options(recipe=recipe, backbone=backbone, alpha=alpha, image_size=image_size, resize_mode=resize_mode,
                    weights=weights, epochs_per_block=epochs_per_block, blocks=_blocks(blocks), unfreeze=unfreeze,
                    batch_multiple=batch_multiple, batch_size=batch_size, steps_per_epoch=steps_per_epoch,
                    lr_head=lr_head, lr_backbone=lr_backbone, lr_schedule=lr_sched, warmup_epochs=warmup_epochs,
                    label_smoothing=label_smoothing, dropout=dropout, augment=augment,
                    brightness=_brightness(brightness), seed=seed, deterministic=deterministic,
                    bootstrap=bootstrap, distribute=distribute, bn_momentum=bn_momentum,
                    bn_recalibration=bn_recalibration, select_best=select_best, val_fraction=val_fraction,
                    calibrate=calibrate, prevalence=prevalence, triage_target=triage_target)
    if plan is not None:
        _check_plan_distribute(opts)
    if workers is not None:
        _check_workers(workers, opts)
    if plan is not None:
        result = _train_plan(plan, opts, data, sets, out, resume=resume, force=force)
    else:
        result = _train_one(opts, data, sets, out, workers, resume=resume, force=force, worker_timeout=worker_timeout)
    if result is not None:
        _summary(result)


def _train_plan(plan: str, opts: dict[str, Any], data: Optional[List[Path]], sets: Optional[List[str]], out: Path, *,
                resume: bool, force: bool) -> dict[str, Any]:
    """`train --plan`: load the plan with its --set values and train every stage."""
    if data:
        raise typer.BadParameter("a plan names its own datasets; pass them with --set KEY=DIR", param_hint="--data")
    from edge_derm.training.sequential import load_plan, run_plan

    loaded = load_plan(plan, _parse_sets(sets), opts)
    _check_plan_distribute(opts, loaded)
    try:
        return run_plan(loaded, out, resume=resume, force=force)
    except KeyboardInterrupt:
        raise _interrupted(out) from None


def _train_one(opts: dict[str, Any], data: Optional[List[Path]], sets: Optional[List[str]], out: Path,
               workers: Optional[int], *, resume: bool, force: bool,
               worker_timeout: Optional[float]) -> Optional[dict[str, Any]]:
    """`train --data`: one run, in this process or as ``workers`` local workers (then None: they report)."""
    if sets:
        raise typer.BadParameter("--set only applies to --plan", param_hint="--set")
    if not data:
        raise typer.BadParameter("give a dataset folder (--data DIR) or a plan (--plan NAME)", param_hint="--data")
    from edge_derm.training.config import TrainConfig
    from edge_derm.training.trainer import train as train_run

    config = TrainConfig(data=[str(d) for d in data], **opts)
    if workers is not None:
        _launch(config, out, workers, resume=resume, force=force, worker_timeout=worker_timeout)
        return None
    try:
        return train_run(config, out, resume=resume, force=force, worker_timeout=worker_timeout)
    except KeyboardInterrupt:
        raise _interrupted(out) from None


def _check_plan_distribute(opts: dict[str, Any], plan: Any = None) -> None:
    """A sequential plan cannot run under ``--distribute multiworker`` (given, or set by a stage of the plan).

    Every stage would form its own cluster, and every worker would write plan.json and the stage folders.
    """
    from edge_derm.errors import ConfigError

    stages = getattr(plan, "stages", None) or []
    if opts.get("distribute") == "multiworker" or any(s.config.distribute == "multiworker" for s in stages):
        raise ConfigError("a sequential --plan cannot run with --distribute multiworker (each stage would form its "
                          "own cluster and every worker would write the plan folder); train the stages one by one "
                          "with --data, or drop --distribute multiworker")


def _check_workers(workers: int, opts: dict[str, Any]) -> None:
    """--workers needs --distribute multiworker and no TF_CONFIG (a --plan with multiworker is refused earlier)."""
    import os

    if opts.get("distribute") != "multiworker":
        raise typer.BadParameter("--workers starts local workers for --distribute multiworker; pass both",
                                 param_hint="--workers")
    if os.environ.get("TF_CONFIG"):
        raise typer.BadParameter("--workers writes each local worker's TF_CONFIG itself; unset TF_CONFIG, or drop "
                                 "--workers to join the cluster that TF_CONFIG describes", param_hint="--workers")


def _launch(config: Any, out: Path, workers: int, *, resume: bool, force: bool,
            worker_timeout: Optional[float]) -> None:
    """Run the job as ``workers`` local processes (``train-worker``), worker 0 the chief."""
    import json
    import logging
    import sys
    import tempfile

    from edge_derm import progress
    from edge_derm.errors import EdgeDermError
    from edge_derm.training.launch import run_local_workers

    spec = {"config": config.to_dict(), "out": str(Path(out).resolve()), "resume": resume, "force": force,
            "worker_timeout": worker_timeout}
    with tempfile.TemporaryDirectory(prefix="edge-derm-launch-") as tmp:
        spec_path = Path(tmp) / "job.json"
        spec_path.write_text(json.dumps(spec), encoding="utf-8")
        root = ["--verbose"] if logging.getLogger().getEffectiveLevel() <= logging.INFO else []
        root += [] if progress.enabled() else ["--quiet"]
        command = [sys.executable, "-c", "from edge_derm.cli import entry; entry()", *root, "train-worker",
                   str(spec_path)]
        try:
            run = run_local_workers(command, workers)
        except KeyboardInterrupt:
            raise _interrupted(out) from None
    if run.message:
        raise EdgeDermError(run.message)
    if run.code:
        if run.first_failure:  # the chief's error line is printed; say what failed before it (not a second error)
            typer.echo(f"note: {run.first_failure}", err=True)
        raise typer.Exit(run.code if run.code > 0 else 1)  # the chief has printed its own error line


def train_worker(spec: Path = typer.Argument(..., help="Job file written by `edge-derm train --workers`.")) -> None:
    """One local worker of `edge-derm train --workers N` (TF_CONFIG set by the launcher)."""
    import json

    from edge_derm.training.config import TrainConfig
    from edge_derm.training.trainer import train as train_run

    job = json.loads(spec.read_text(encoding="utf-8"))
    config = TrainConfig.from_dict(job["config"])
    out = Path(job["out"])
    try:
        result = train_run(config, out, resume=job["resume"], force=job["force"],
                           worker_timeout=job.get("worker_timeout"))
    except KeyboardInterrupt:
        raise _interrupted(out) from None
    from edge_derm.training.distributed import cluster_from_env

    if cluster_from_env().is_chief:
        _summary(result)


def _summary(result: dict[str, Any]) -> None:
    m = result.get("metrics")
    typer.echo(f"run: {result['out']}")
    if m:
        typer.echo(f"test: accuracy {100 * m['accuracy']:.1f} %, macro F1 {100 * m['macro_f1']:.1f} %, "
                   f"weighted F1 {100 * m['weighted_f1']:.1f} % (n={m['n']})")
        cal, op = m.get("calibration"), m.get("operating_point")
        if cal:
            typer.echo(f"calibration: temperature {cal['temperature']:.2f}, test ECE {cal['ece_before']:.3f} -> "
                       f"{cal['ece_after']:.3f}")
        if op and op.get("sensitivity") is not None:
            spec = f"{100 * op['specificity']:.1f} %" if op.get("specificity") is not None else "-"
            typer.echo(f"triage: refer when P({' + '.join(op['referral_classes'])}) >= {op['threshold']:.3f}; test "
                       f"sensitivity {100 * op['sensitivity']:.1f} %, specificity {spec}")
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
    recipe: Optional[str] = typer.Option(None, "--recipe", help="recommended (default), paper, or a .toml file."),
    alpha: Optional[float] = typer.Option(None, "--alpha", help="MobileNetV2 width multiplier."),
    image_size: Optional[int] = typer.Option(None, "--image-size", help="Input size in pixels."),
    weights: Optional[str] = typer.Option(None, "--weights", help="imagenet, none, or a weights file "
                                                                  "(the first stage of each plan)."),
    unfreeze: Optional[Unfreeze] = typer.Option(None, "--unfreeze", help="blockwise or full."),
    epochs_per_block: Optional[int] = typer.Option(None, "--epochs-per-block", "-e", help="Epochs per step."),
    steps_per_epoch: Optional[int] = typer.Option(None, "--steps-per-epoch", help="Batches per epoch."),
    lr_head: Optional[float] = typer.Option(None, "--lr-head", help="Head learning rate."),
    lr_backbone: Optional[float] = typer.Option(None, "--lr-backbone", help="Backbone learning rate."),
    bootstrap: Optional[int] = typer.Option(None, "--bootstrap", help="Bootstrap resamples for intervals."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Seed."),
    resume: bool = typer.Option(False, "--resume", help="Continue unfinished plans."),
    force: bool = typer.Option(False, "--force", help="Replace --out if it exists."),
) -> None:
    """Train several plans (x backbones) and compare them in one table (parameters, accuracy, F1)."""
    from edge_derm.training.experiment import comparison_markdown, run_experiment

    opts = _options(recipe=recipe, alpha=alpha, image_size=image_size, weights=weights, unfreeze=unfreeze,
                    epochs_per_block=epochs_per_block, steps_per_epoch=steps_per_epoch, lr_head=lr_head,
                    lr_backbone=lr_backbone, bootstrap=bootstrap, seed=seed)
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
    app.command("train-worker", hidden=True)(train_worker)
    app.command("evaluate")(evaluate)
    app.command("experiment")(experiment)
