"""The one evaluator: classification metrics from true labels and predicted probabilities.

Used by training (Keras model) and by the .tflite benchmark, so every figure in a report comes
from the same code. numpy only (the runtime install has no scikit-learn); never imports TensorFlow or matplotlib.

Rule for classes absent from ``y_true`` (support 0): their sensitivity and F1 are undefined and
reported as ``None`` (JSON ``null``), their precision is ``0.0`` if the model predicted them
(every such prediction is wrong) and ``None`` otherwise, and they are left out of macro F1 and
balanced accuracy (which average over the classes present in ``y_true``). Weighted F1 gives them
weight 0 anyway. A class that is present but never predicted has precision 0.0 and F1 0.0.
So no metric is ever NaN and sklearn's undefined-metric warnings never fire.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from edge_derm.errors import DataError

#: Order in which triage groups are listed (groups not named here follow, sorted).
TRIAGE_ORDER = ("benign", "premalignant", "malignant", "uncertain", "unknown")

ECE_BINS = 15
BOOTSTRAP_LEVEL = 0.95


def compute_metrics(
    y_true: Sequence[int] | np.ndarray,
    probs: Sequence[Sequence[float]] | np.ndarray,
    classes: Sequence[str],
    *,
    triage: Mapping[str, str] | None = None,
    bootstrap: int = 0,
    seed: int = 0,
    dataset_classes: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Compute every reported metric for one model on one labelled set.

    Args:
        y_true: True class indices (N,), in ``classes`` order.
        probs: Predicted probabilities (N, C); the prediction is the arg-max of each row.
        classes: Class names, output order (C,).
        triage: Optional ``{class: "benign"|"premalignant"|"malignant"|"uncertain"}``; classes
            missing from it count as ``"unknown"``. ``None`` (or all-unknown) gives ``triage: None``.
        bootstrap: Number of bootstrap resamples for confidence intervals (0 = none).
        seed: Seed of the bootstrap resampling.
        dataset_classes: The classes the dataset has, when they are a subset of the model's ``classes``
            (another domain): predictions of the model's other classes are errors (they count against
            the true class, like any wrong prediction) and are also counted in ``absent_class_predictions``.

    Returns:
        A JSON-serialisable dict (fractions in [0, 1]); see docs/ARCHITECTURE.md for the keys.

    Raises:
        DataError: Empty input, mismatched shapes, labels out of range or non-finite probabilities.
    """
    y, p = _validate(y_true, probs, classes)
    if isinstance(bootstrap, bool) or not isinstance(bootstrap, (int, np.integer)) or bootstrap < 0:
        raise DataError(f"bootstrap must be a non-negative integer, got {bootstrap!r}")
    classes = [str(c) for c in classes]
    y_pred = p.argmax(axis=1)
    cm = _confusion(y, y_pred, len(classes))
    out: dict[str, Any] = {
        "n": int(len(y)),
        "classes": classes,
        **_scores_from_confusion(cm),  # accuracy, balanced_accuracy, macro_f1, weighted_f1
        "ece": expected_calibration_error(p.max(axis=1), y_pred == y),
        "per_class": _per_class(cm, classes),
        "confusion": cm.astype(int).tolist(),
        "confusion_normalised": _row_normalise(cm),
        "triage": triage_view(cm, classes, triage),
    }
    if dataset_classes is not None:
        absent = _absent_class_predictions(cm, classes, dataset_classes)
        if absent:
            out["absent_class_predictions"] = absent
    if bootstrap > 0:
        out["bootstrap"] = _bootstrap(y, y_pred, classes, int(bootstrap), seed)
    return out


def _confusion(y: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """The confusion matrix (rows = truth, columns = prediction) as integer counts."""
    return np.bincount(y * n_classes + y_pred, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def _per_class(cm: np.ndarray, classes: list[str]) -> dict[str, dict[str, Any]]:
    """Sensitivity, precision, F1 and support of every class, by the module's absent-class rule.

    Computed in numpy as sklearn's precision_recall_fscore_support(zero_division=0) does (tests compare the
    two): the runtime install (predict, benchmark) has no scikit-learn.
    """
    n_classes = len(classes)
    support, predicted, tp = cm.sum(axis=1), cm.sum(axis=0), np.diag(cm).astype(float)
    prec = np.divide(tp, predicted, out=np.zeros(n_classes), where=predicted > 0)
    rec = np.divide(tp, support, out=np.zeros(n_classes), where=support > 0)
    f1 = np.divide(2 * prec * rec, prec + rec, out=np.zeros(n_classes), where=(prec + rec) > 0)
    per_class: dict[str, dict[str, Any]] = {}
    for i, name in enumerate(classes):
        present = support[i] > 0
        per_class[name] = {
            "sensitivity": float(rec[i]) if present else None,
            "precision": float(prec[i]) if (present or predicted[i] > 0) else None,
            "f1": float(f1[i]) if present else None,
            "support": int(support[i]),
        }
    return per_class


def _absent_class_predictions(cm: np.ndarray, classes: list[str], dataset_classes: Sequence[str]
                              ) -> dict[str, Any] | None:
    """How often the model predicted a class the dataset does not have (another domain); None when the
    dataset has every class.

    Raises:
        DataError: a dataset class the model does not know.
    """
    unknown = [c for c in dataset_classes if c not in classes]
    if unknown:
        raise DataError(f"dataset class(es) {unknown} are not among the model's classes {classes}")
    absent = [i for i, c in enumerate(classes) if c not in set(dataset_classes)]
    if not absent:
        return None
    predicted = cm.sum(axis=0)
    by_class = {classes[i]: int(predicted[i]) for i in absent}
    count = sum(by_class.values())
    return {"count": count, "fraction": count / int(cm.sum()), "by_class": by_class}


def expected_calibration_error(confidence: np.ndarray, correct: np.ndarray, n_bins: int = ECE_BINS) -> float:
    """Expected calibration error over equal-width confidence bins.

    ECE = sum over bins of (bin count / N) * |accuracy in bin - mean confidence in bin|; bins are
    (lo, hi] except the first, which also holds 0.

    Args:
        confidence: Top-1 probability per sample (N,).
        correct: Whether the top-1 prediction is right (N,).
        n_bins: Number of equal-width bins over [0, 1].
    """
    confidence = np.asarray(confidence, dtype=np.float64)
    correct = np.asarray(correct, dtype=np.float64)
    if confidence.size == 0:
        return 0.0
    # (lo, hi] bins: a confidence equal to an inner edge falls in the lower bin.
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    idx = np.clip(np.searchsorted(edges[1:-1], confidence, side="left"), 0, n_bins - 1)
    ece = 0.0
    for b in range(n_bins):
        mask = idx == b
        if mask.any():
            ece += mask.sum() / confidence.size * abs(correct[mask].mean() - confidence[mask].mean())
    return float(ece)


def triage_view(cm: np.ndarray, classes: Sequence[str], triage: Mapping[str, str] | None) -> dict[str, Any] | None:
    """Collapse a class confusion matrix into triage groups (benign / malignant / ...).

    A sample's triage prediction is the group of its predicted class, so the triage confusion
    is a coarsening of the class confusion. Classes missing from ``triage`` count as ``"unknown"``.

    Returns:
        ``{groups, accuracy, per_group {g: {sensitivity, precision, f1, support}}, confusion}``,
        or ``None`` when ``triage`` is ``None`` or maps every class to ``"unknown"``.
    """
    if not triage:
        return None
    group_of = [str(triage.get(c, "unknown")) for c in classes]
    if all(g == "unknown" for g in group_of):
        return None
    present = set(group_of)
    groups = [g for g in TRIAGE_ORDER if g in present] + sorted(present - set(TRIAGE_ORDER))
    gi = np.array([groups.index(g) for g in group_of])
    k = len(groups)
    gcm = np.zeros((k, k), dtype=np.int64)
    cm = np.asarray(cm)
    for i in range(len(classes)):
        for j in range(len(classes)):
            gcm[gi[i], gi[j]] += cm[i, j]
    per_group = {}
    for i, g in enumerate(groups):
        s = _class_stats(gcm, i)
        per_group[g] = s
    total = int(gcm.sum())
    return {
        "groups": groups,
        "classes": {g: [c for c, cg in zip(classes, group_of) if cg == g] for g in groups},
        "accuracy": float(np.trace(gcm) / total) if total else 0.0,
        "per_group": per_group,
        "confusion": gcm.tolist(),
    }


def compare_metrics(metrics: Mapping[str, Any], reference: Mapping[str, Any]) -> dict[str, Any]:
    """Differences ``metrics - reference`` (e.g. an int8 model against its float model).

    Returns:
        ``{accuracy, macro_f1, weighted_f1, per_class {cls: {sensitivity, precision, f1}}}``;
        a delta is ``None`` where either side is undefined or the class is missing on one side.
    """
    def diff(a: Any, b: Any) -> float | None:
        return None if a is None or b is None else float(a) - float(b)

    out: dict[str, Any] = {k: diff(metrics.get(k), reference.get(k)) for k in ("accuracy", "macro_f1", "weighted_f1")}
    per = {}
    ref_pc = reference.get("per_class", {})
    for cls, row in metrics.get("per_class", {}).items():
        ref = ref_pc.get(cls, {})
        per[cls] = {k: diff(row.get(k), ref.get(k)) for k in ("sensitivity", "precision", "f1")}
    out["per_class"] = per
    return out


# -- internals ---------------------------------------------------------------------------------

def _validate(y_true: Any, probs: Any, classes: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(classes, str) or len(classes) == 0:
        raise DataError("compute_metrics needs a non-empty list of class names")
    if len(set(classes)) != len(classes):
        raise DataError(f"class names must be unique, got {list(classes)}")
    y = np.asarray(y_true)
    p = np.asarray(probs, dtype=np.float64)
    if y.ndim != 1 or y.size == 0:
        raise DataError(f"y_true must be a non-empty 1-D array of class indices, got shape {y.shape}")
    if not np.issubdtype(y.dtype, np.integer):
        if np.issubdtype(y.dtype, np.floating) and np.all(np.isfinite(y)) and np.all(y == np.round(y)):
            y = y.astype(np.int64)
        else:
            raise DataError(f"y_true must hold integer class indices, got dtype {y.dtype}")
    if p.ndim != 2 or p.shape != (y.size, len(classes)):
        raise DataError(f"probs must have shape ({y.size}, {len(classes)}) (samples, classes), got {p.shape}")
    if y.min() < 0 or y.max() >= len(classes):
        raise DataError(f"y_true holds index {int(y.max() if y.max() >= len(classes) else y.min())} "
                        f"outside 0..{len(classes) - 1} (classes: {len(classes)})")
    if not np.all(np.isfinite(p)):
        raise DataError("probs contain NaN or infinite values; check the model output")
    return y.astype(np.int64), p


def _class_stats(cm: np.ndarray, i: int) -> dict[str, Any]:
    """Sensitivity / precision / F1 / support of row/column ``i`` by the module's absent-class rule."""
    tp = float(cm[i, i])
    support = int(cm[i].sum())
    predicted = int(cm[:, i].sum())
    sens = tp / support if support else None
    if predicted:
        prec: float | None = tp / predicted
    else:
        prec = 0.0 if support else None
    if support:
        f1: float | None = 2 * tp / (support + predicted)
    else:
        f1 = None
    return {"sensitivity": sens, "precision": prec, "f1": f1, "support": support}


def _scores_from_confusion(cm: np.ndarray) -> dict[str, float]:
    """Aggregate scores from a confusion matrix (rows = truth), by the absent-class rule."""
    cm = np.asarray(cm, dtype=np.float64)
    n = cm.sum()
    support = cm.sum(axis=1)
    predicted = cm.sum(axis=0)
    tp = np.diag(cm)
    present = support > 0
    denom = support + predicted
    f1 = np.divide(2 * tp, denom, out=np.zeros_like(tp), where=denom > 0)
    rec = np.divide(tp, support, out=np.zeros_like(tp), where=present)
    return {
        "accuracy": float(tp.sum() / n) if n else 0.0,
        "balanced_accuracy": float(rec[present].mean()) if present.any() else 0.0,
        "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
        "weighted_f1": float((f1 * support).sum() / n) if n else 0.0,
    }


def _row_normalise(cm: np.ndarray) -> list[list[float]]:
    cm = np.asarray(cm, dtype=np.float64)
    rows = cm.sum(axis=1, keepdims=True)
    # A class with no true samples gets a row of zeros, not NaN.
    return np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0).tolist()


def paired_macro_f1_delta(y_true: np.ndarray, reference_pred: np.ndarray, pred: np.ndarray, n_classes: int,
                          n_boot: int = 2000, seed: int = 0) -> list[float] | None:
    """Paired percentile bootstrap interval of macro F1(pred) - macro F1(reference_pred).

    Both models are scored on the same resample of the images each time, so the interval is
    that of the difference, far narrower than two independent intervals (class labels 0..n-1;
    macro F1 by the absent-class rule of :func:`compute_metrics`).
    """
    y, ref, new = (np.asarray(a, dtype=np.int64) for a in (y_true, reference_pred, pred))
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, y.size, (n_boot, y.size))
    diff = np.empty(n_boot)
    for b, rows in enumerate(idx):
        scores = [_scores_from_confusion(np.bincount(y[rows] * n_classes + p[rows], minlength=n_classes ** 2)
                                         .reshape(n_classes, n_classes))["macro_f1"] for p in (new, ref)]
        diff[b] = scores[0] - scores[1]
    return _percentile_interval(diff)


def _percentile_interval(values: np.ndarray) -> list[float] | None:
    values = values[~np.isnan(values)]
    if values.size == 0:
        return None
    alpha = (1.0 - BOOTSTRAP_LEVEL) / 2
    lo, hi = np.quantile(values, [alpha, 1.0 - alpha])
    return [float(lo), float(hi)]


def _bootstrap(y: np.ndarray, y_pred: np.ndarray, classes: list[str], n_boot: int, seed: int) -> dict[str, Any]:
    """Percentile bootstrap intervals for macro F1 and per-class sensitivity (resampling samples)."""
    rng = np.random.default_rng(seed)
    n, c = y.size, len(classes)
    macro = np.empty(n_boot)
    sens = np.full((n_boot, c), np.nan)
    pair = y * c + y_pred
    for b in range(n_boot):
        idx = rng.integers(0, n, size=n)
        cm = np.bincount(pair[idx], minlength=c * c).reshape(c, c)
        macro[b] = _scores_from_confusion(cm)["macro_f1"]
        support = cm.sum(axis=1)
        ok = support > 0
        sens[b, ok] = np.diag(cm)[ok] / support[ok]
    original_support = np.bincount(y, minlength=c)
    sensitivity = {
        name: (_percentile_interval(sens[:, i]) if original_support[i] > 0 else None)
        for i, name in enumerate(classes)
    }
    return {
        "n": n_boot,
        "seed": int(seed),
        "level": BOOTSTRAP_LEVEL,
        "macro_f1": _percentile_interval(macro),
        "sensitivity": sensitivity,
    }
