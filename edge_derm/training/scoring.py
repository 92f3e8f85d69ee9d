"""Scoring a trained model: predictions, the validation scores of each epoch, calibration, final evaluation.

One evaluator for training, ``edge-derm evaluate`` and the plans' forgetting matrix, so a figure means the
same wherever it appears. A leaf of ``edge_derm.training``: it imports no other training module except
``data`` (for the ``TrainingData`` type) and ``config``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from edge_derm.fsutil import write_json
from edge_derm.training.config import TrainConfig
from edge_derm.training.data import TrainingData

_log = logging.getLogger(__name__)

#: Batch size of every prediction pass (validation, calibration, evaluation).
EVAL_BATCH = 64


def predict(model, paths: list[str], image_size: int, resize_mode: str = "nearest",
            batch_size: int = EVAL_BATCH, description: str = "predicting") -> np.ndarray:
    """Class probabilities (N, C) for image files, in order, the last partial batch included."""
    from edge_derm.data.pipeline import make_dataset

    n_classes = int(model.output_shape[-1])
    if not paths:
        return np.zeros((0, n_classes), np.float32)
    labels = np.zeros(len(paths), dtype=np.int64)
    ds = make_dataset(list(paths), labels, n_classes, image_size, training=False, batch_size=batch_size,
                      resize_mode=resize_mode)
    _log.info("%s %d images", description, len(paths))
    # model.predict keeps one compiled predict function per model (no retracing per call).
    return np.asarray(model.predict(ds.map(lambda x, y: x), verbose=0), dtype=np.float32)


def loss_accuracy(probs: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of ``probs`` against integer ``labels`` (an epoch's val_* columns)."""
    p = np.clip(probs[np.arange(len(labels)), labels], 1e-7, 1.0)
    return float(-np.log(p).mean()), float((probs.argmax(1) == labels).mean())


def macro_f1(probs: np.ndarray, labels: np.ndarray) -> float:
    """Macro F1 over the classes present in ``labels`` (the validation split may lack a rare class)."""
    from sklearn.metrics import f1_score

    present = np.unique(labels)
    return float(f1_score(labels, probs.argmax(1), labels=present, average="macro", zero_division=0.0))


def calibrate(model, data: TrainingData, config: TrainConfig, out: Path | None) -> dict[str, Any] | None:
    """Fit the temperature and operating point on the val split; writes ``out/calibration.json`` (not when
    ``out`` is None: a non-chief worker)."""
    from edge_derm import calibration as cal

    if not config.calibrate:
        return None
    if data.val is None:
        _log.warning("no validation split: probabilities are not calibrated and no triage operating point is "
                     "stored (use val_fraction, e.g. --val-fraction 0.15)")
        return None
    probs = predict(model, data.val[0], config.image_size, config.resize_mode, description="calibrating")
    counts = np.bincount(data.train[1], minlength=len(data.classes)) if config.prevalence != "balanced" else None
    fitted = cal.fit(probs, data.val[1], data.classes, data.triage, target=config.triage_target, train_counts=counts,
                     prior_strength="fit" if config.prevalence == "fit" else 1.0)
    if fitted["referral_classes"] and fitted["threshold"] is None:
        _log.warning("the validation split has no image of %s: no triage operating point is stored",
                     ", ".join(fitted["referral_classes"]))
    if out is not None:
        write_json(out / "calibration.json", fitted)
    _log.info("temperature %.3f (validation ECE %.3f -> %.3f)", fitted["temperature"], fitted["val"]["ece_before"],
              fitted["val"]["ece_after"])
    return fitted


def evaluate_model(model, data: TrainingData, config: TrainConfig, out: Path,
                   calibration: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """Evaluate on the last dataset's test split and write metrics.json / report.md / confusion.png.

    With a ``calibration`` block the figures are of the calibrated probabilities (what the runtime shows),
    with the uncalibrated ECE and the operating point's test sensitivity / specificity beside them.
    """
    from edge_derm.evaluation import write_evaluation

    if data.test is None:
        _log.warning("%s has no test split; no metrics.json written", data.datasets[-1]["dir"])
        return None
    probs = predict(model, data.test[0], config.image_size, config.resize_mode, description="evaluating")
    metrics = score_with_calibration(data.test[1], probs, data.classes, data.triage, calibration,
                                     bootstrap=config.bootstrap, seed=config.seed)
    metrics["split"] = "test"
    metrics["data"] = data.datasets[-1]
    write_evaluation(out, metrics, title=f"{out.name}: {config.backbone} on {Path(data.datasets[-1]['dir']).name} (test)")
    return metrics


def score_with_calibration(labels: np.ndarray, probs: np.ndarray, classes: list[str], triage: dict | None,
                           calibration: dict[str, Any] | None, *, bootstrap: int = 0, seed: int = 0,
                           dataset_classes: list[str] | None = None) -> dict[str, Any]:
    """compute_metrics on the calibrated probabilities, plus ``calibration`` (ECE before/after) and
    ``operating_point`` (the stored threshold's sensitivity / specificity on these images).
    ``dataset_classes``: see :func:`edge_derm.evaluation.compute_metrics` (another domain's fewer classes)."""
    from edge_derm import calibration as cal
    from edge_derm.evaluation import compute_metrics, expected_calibration_error

    if not calibration:
        return compute_metrics(labels, probs, classes, triage=triage, bootstrap=bootstrap, seed=seed,
                               dataset_classes=dataset_classes)
    calibrated = cal.apply(probs, calibration["temperature"], calibration.get("log_prior"))
    metrics = compute_metrics(labels, calibrated, classes, triage=triage, bootstrap=bootstrap, seed=seed,
                              dataset_classes=dataset_classes)
    metrics["calibration"] = {
        "temperature": calibration["temperature"],
        "prevalence": calibration.get("prevalence", "balanced"),
        "ece_before": expected_calibration_error(probs.max(1), probs.argmax(1) == labels),
        "ece_after": metrics["ece"],
        "nll_before": cal.nll(probs, labels),
        "nll_after": cal.nll(calibrated, labels),
    }
    if calibration.get("threshold") is not None:
        mask = np.array([c in calibration["referral_classes"] for c in classes], dtype=bool)
        stats = cal.operating_stats(cal.referral_score(calibrated, mask), mask[np.asarray(labels)],
                                    calibration["threshold"])
        metrics["operating_point"] = {"referral_classes": calibration["referral_classes"],
                                      "target_sensitivity": calibration.get("target_sensitivity"), **stats}
    return metrics
