"""Calibrated probabilities and the triage operating point (numpy only; scipy only to fit).

A run fits both on its validation split, never on test:

* **Temperature scaling** (Guo et al., 2017): ``p' = softmax(log p / T + b)``. One scalar ``T`` minimises
  the validation negative log-likelihood; it changes confidence, never the top-1 class. ``b`` is an
  optional log-prior shift (``prevalence = "dataset"``): a model trained on class-balanced batches has
  learnt uniform priors, and ``b_c = log(C * pi_c)`` restores the training set's class frequencies
  ``pi_c`` (this one *can* change the top-1 class; it is off by default). ``prevalence = "fit"`` scales
  that shift by the strength in [0, 1] (steps of 0.1) that maximises the validation macro F1: a model
  trained on balanced batches over-predicts rare classes, and full prior correction under-predicts them.
* **Triage operating point**: the referral score of an image is the calibrated probability of the
  referral group (the classes whose triage group is ``malignant``); an image is referred when its score
  is at least ``threshold``, chosen as the highest value whose sensitivity on the validation split
  reaches ``target`` (default 90 %).

The same :func:`apply` runs in training, conversion checks, :mod:`edge_derm.runtime`, ``predict`` and
the Android app (``OutputCalibration`` in ``ModelMetadata.kt``), from the ``calibration`` block of ``model.json``.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np

from edge_derm.errors import ConfigError

#: Triage groups whose probability is the referral score.
REFERRAL_GROUPS = ("malignant",)
_EPS = 1e-12


def apply(probs: np.ndarray, temperature: float = 1.0, log_prior: Sequence[float] | None = None) -> np.ndarray:
    """Calibrated probabilities ``softmax(log p / T + log_prior)`` of probability rows (N, C) or (C,)."""
    p = np.asarray(probs, dtype=np.float64)
    logits = np.log(np.clip(p, _EPS, 1.0)) / float(temperature)
    if log_prior is not None:
        logits = logits + np.asarray(log_prior, dtype=np.float64)
    logits -= logits.max(axis=-1, keepdims=True)
    e = np.exp(logits)
    return (e / e.sum(axis=-1, keepdims=True)).astype(np.float32)


def nll(probs: np.ndarray, labels: np.ndarray) -> float:
    """Mean negative log-likelihood of the true classes."""
    p = np.clip(np.asarray(probs, np.float64)[np.arange(len(labels)), labels], _EPS, 1.0)
    return float(-np.log(p).mean())


def fit_temperature(probs: np.ndarray, labels: np.ndarray, log_prior: Sequence[float] | None = None) -> float:
    """The temperature in [0.05, 20] that minimises the NLL of ``labels`` (bounded Brent search on log T)."""
    from scipy.optimize import minimize_scalar

    labels = np.asarray(labels, dtype=np.int64)
    if len(labels) == 0:
        raise ConfigError("cannot fit a temperature without validation images")
    res = minimize_scalar(lambda log_t: nll(apply(probs, math.exp(log_t), log_prior), labels),
                          bounds=(math.log(0.05), math.log(20.0)), method="bounded", options={"xatol": 1e-4})
    return float(math.exp(res.x))


def log_prior_shift(train_counts: Sequence[int]) -> list[float]:
    """``log(C * pi_c)``: moves balanced-batch probabilities to the training set's class frequencies."""
    counts = np.asarray(train_counts, dtype=np.float64)
    if counts.size == 0 or (counts <= 0).any():
        raise ConfigError("a prevalence correction needs at least one training image of every class")
    pi = counts / counts.sum()
    return [float(v) for v in np.log(len(counts) * pi)]


def referral_mask(classes: Sequence[str], triage: Mapping[str, str] | None) -> np.ndarray:
    """Boolean (C,): the classes whose triage group is a referral group."""
    triage = triage or {}
    return np.array([str(triage.get(c, "unknown")) in REFERRAL_GROUPS for c in classes], dtype=bool)


def referral_score(probs: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Probability of the referral group per image."""
    return np.asarray(probs, np.float64)[..., np.asarray(mask, bool)].sum(axis=-1)


def fit_threshold(scores: np.ndarray, positive: np.ndarray, target: float) -> float:
    """The highest threshold whose sensitivity (``score >= threshold`` among positives) reaches ``target``."""
    check_target(target)
    pos = np.sort(np.asarray(scores, np.float64)[np.asarray(positive, bool)])[::-1]
    if pos.size == 0:
        raise ConfigError("no referral-group image in the validation split; cannot choose an operating point")
    k = int(math.ceil(target * pos.size - 1e-9))  # positives that must be at or above the threshold
    return float(pos[max(k, 1) - 1])


def operating_stats(scores: np.ndarray, positive: np.ndarray, threshold: float) -> dict[str, Any]:
    """Sensitivity / specificity of ``score >= threshold`` and the referral rate."""
    scores = np.asarray(scores, np.float64)
    positive = np.asarray(positive, bool)
    refer = scores >= threshold
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    return {
        "threshold": float(threshold),
        "sensitivity": float((refer & positive).sum() / n_pos) if n_pos else None,
        "specificity": float((~refer & ~positive).sum() / n_neg) if n_neg else None,
        "referral_rate": float(refer.mean()) if refer.size else None,
        "positives": n_pos,
        "negatives": n_neg,
    }


def check_target(target: Any) -> float:
    """ConfigError unless ``target`` is a sensitivity strictly between 0 and 1."""
    if isinstance(target, bool) or not isinstance(target, (int, float)) or not math.isfinite(target) \
            or not 0 < target < 1:
        raise ConfigError(f"target sensitivity must be in (0, 1), e.g. 0.9, got {target!r}")
    return float(target)


def check(block: Mapping[str, Any] | None, n_classes: int) -> dict[str, Any] | None:
    """Validate a ``calibration`` block read from model.json or a run (ConfigError naming the bad field)."""
    if block is None:
        return None
    if not isinstance(block, Mapping):
        raise ConfigError("calibration must be an object with temperature, log_prior and threshold")
    t = block.get("temperature")
    if isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t) or t <= 0:
        raise ConfigError(f"calibration temperature must be a finite positive number, got {t!r}")
    prior = block.get("log_prior")
    if prior is not None:
        if (not isinstance(prior, (list, tuple)) or len(prior) != n_classes
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                           for v in prior)):
            raise ConfigError(f"calibration log_prior must be {n_classes} finite numbers, got {prior!r}")
    refer = block.get("referral_classes")
    if refer is not None and (not isinstance(refer, list) or not all(isinstance(c, str) for c in refer)):
        raise ConfigError(f"calibration referral_classes must be a list of class names, got {refer!r}")
    target = block.get("target_sensitivity")
    if target is not None:
        check_target(target)
    thr = block.get("threshold")
    if thr is not None and (isinstance(thr, bool) or not isinstance(thr, (int, float))
                            or not math.isfinite(thr) or not 0 <= thr <= 1):
        raise ConfigError(f"calibration threshold must be a probability in [0, 1], got {thr!r}")
    return dict(block)


def fit_prior_strength(probs: np.ndarray, labels: np.ndarray, shift: Sequence[float]) -> float:
    """The strength in {0, 0.1, ..., 1} of the prior ``shift`` with the best macro F1 (ties: the weaker).

    Each strength is scored as it ships: with the temperature fitted for it (the top-1 class of
    ``softmax(log p / T + s b)`` depends on T too).
    """
    from sklearn.metrics import f1_score

    labels = np.asarray(labels, np.int64)
    present = np.unique(labels)
    best, best_f1 = 0.0, -1.0
    for strength in np.round(np.linspace(0.0, 1.0, 11), 1):
        s_shift = strength * np.asarray(shift)
        pred = apply(probs, fit_temperature(probs, labels, s_shift), s_shift).argmax(1)
        f1 = f1_score(labels, pred, labels=present, average="macro", zero_division=0.0)
        if f1 > best_f1 + 1e-12:
            best, best_f1 = float(strength), float(f1)
    return best


def fit(val_probs: np.ndarray, val_labels: np.ndarray, classes: Sequence[str], triage: Mapping[str, str] | None,
        *, target: float, train_counts: Sequence[int] | None = None, prior_strength: float | str = 1.0) -> dict[str, Any]:
    """Fit temperature (+ optional prior shift) and the operating point on the validation split.

    Args:
        train_counts: Training images per class: a log-prior shift towards these frequencies is applied
            (None: no shift, the balanced-batch priors).
        prior_strength: Multiplies the shift; ``"fit"`` chooses it on validation (:func:`fit_prior_strength`).

    Returns the ``calibration`` block stored in the run and in every converted model's metadata.
    """
    from edge_derm.evaluation.metrics import expected_calibration_error

    val_labels = np.asarray(val_labels, np.int64)
    log_prior = log_prior_shift(train_counts) if train_counts is not None else None
    strength = None
    prevalence = "balanced"
    if log_prior is not None:
        prevalence = "fit" if prior_strength == "fit" else "dataset"
        strength = fit_prior_strength(val_probs, val_labels, log_prior) if prior_strength == "fit" \
            else float(prior_strength)
        log_prior = [strength * v for v in log_prior]
    temperature = fit_temperature(val_probs, val_labels, log_prior)
    cal = apply(val_probs, temperature, log_prior)

    def ece(p: np.ndarray) -> float:
        return expected_calibration_error(p.max(1), p.argmax(1) == val_labels)

    out: dict[str, Any] = {
        "method": "temperature",
        "fitted_on": "val",
        "n": int(len(val_labels)),
        "temperature": temperature,
        "log_prior": log_prior,
        "prevalence": prevalence,
        "prior_strength": strength,
        "val": {"nll_before": nll(val_probs, val_labels), "nll_after": nll(cal, val_labels),
                "ece_before": ece(np.asarray(val_probs)), "ece_after": ece(cal)},
        "referral_groups": list(REFERRAL_GROUPS),
        "referral_classes": None,
        "threshold": None,
        "target_sensitivity": float(target),
    }
    mask = referral_mask(classes, triage)
    if mask.any():
        out["referral_classes"] = [c for c, m in zip(classes, mask) if m]
        positive = mask[val_labels]
        if positive.any():
            scores = referral_score(cal, mask)
            out["threshold"] = fit_threshold(scores, positive, target)
            out["val"]["operating_point"] = operating_stats(scores, positive, out["threshold"])
    return out
