"""Evaluate a trained run on a dataset split (the same evaluator as training and the .tflite benchmark)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from edge_derm.artefacts import RunConfig
from edge_derm.errors import DataError, ModelError
from edge_derm.fsutil import check_output_dir, staged_dir


def read_run(run: str | os.PathLike) -> RunConfig:
    """The config.json of a run folder; ModelError when ``run`` is not one.

    The one reader of run folders (evaluate, convert, export use it).
    """
    run = Path(run)
    if run.suffix == ".tflite":
        raise ModelError(f"{run} is a .tflite model; evaluate it with `edge-derm benchmark {run} --data DIR`")
    path = run / RunConfig.FILENAME
    if not run.is_dir() or not path.is_file() or not (run / "model.keras").is_file():
        raise ModelError(f"{run} is not a run folder (needs config.json and model.keras); "
                         "train one with `edge-derm train`")
    try:
        return RunConfig.read(path)
    except DataError as exc:
        raise ModelError(str(exc)) from None


def evaluate_run(run: str | os.PathLike, data: str | os.PathLike, *, split: str = "test", bootstrap: int = 0,
                 out: str | os.PathLike | None = None, force: bool = False, seed: int = 0) -> tuple[dict[str, Any], Path]:
    """Evaluate ``run``'s model on ``data``'s ``split``; write metrics.json, report.md, confusion PNGs.

    Args:
        run: Run folder.
        data: Dataset folder; its classes must be among the run's.
        split: ``train``, ``val`` or ``test``.
        bootstrap: Bootstrap resamples for confidence intervals.
        out: Output folder (default ``<run>/eval-<dataset folder>-<split>``).
        force: Replace an existing output folder.
        seed: Bootstrap seed.

    Returns:
        ``(metrics, output folder)``.
    """
    from edge_derm.data.manifest import Manifest
    from edge_derm.evaluation import write_evaluation
    from edge_derm.models import load_model
    from edge_derm.training.data import taxonomy_triage
    from edge_derm.training.scoring import predict, score_with_calibration

    run = Path(run)
    cfg = read_run(run)
    manifest = Manifest.load(data)
    classes = list(cfg.classes)
    run_tax, data_tax = cfg.get("taxonomy"), manifest.info.get("taxonomy")
    if run_tax and data_tax and run_tax != data_tax:
        raise DataError(f"{run} classifies in taxonomy {run_tax!r} but {data} is in {data_tax!r} (classes "
                        f"{', '.join(manifest.classes)}); build the dataset with --taxonomy {run_tax}")
    unknown = [c for c in manifest.classes if c not in classes]
    if unknown:
        what = f"none of its classes ({', '.join(unknown)})" if len(unknown) == len(manifest.classes) \
            else f"class(es) {', '.join(unknown)}"
        raise DataError(f"{data} has {what} among the run's ({', '.join(classes)}); evaluate on a dataset "
                        "whose classes are among the run's")
    paths, labels = manifest.arrays(split)
    if not paths:
        raise DataError(f"{data} has no {split!r} images; choose another --split")
    index = {c: i for i, c in enumerate(classes)}
    y = np.array([index[manifest.classes[k]] for k in labels], dtype=np.int64)
    out = Path(out) if out is not None else run / f"eval-{Path(data).resolve().name}-{split}"
    inputs = [run / "model.keras", run / "config.json", data, *paths]
    check_output_dir(out, force, inputs)  # before the slow part
    model = load_model(run / "model.keras")
    probs = predict(model, paths, int(cfg.image_size), cfg.get("resize_mode", "nearest"), description="evaluating")
    triage = cfg.get("triage") or taxonomy_triage(cfg.get("taxonomy"), classes)
    metrics = score_with_calibration(y, probs, classes, triage,
                                     cfg.get("calibration"), bootstrap=bootstrap, seed=seed,
                                     dataset_classes=manifest.classes if manifest.classes != classes else None)
    metrics["split"] = split
    metrics["data"] = {"dir": str(Path(data).resolve()), "hash": manifest.hash}
    metrics["run"] = str(run.resolve())
    with staged_dir(out, force, inputs) as tmp:
        write_evaluation(tmp, metrics, title=f"{run.name} on {Path(data).resolve().name} ({split})")
    return metrics, out
