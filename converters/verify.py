"""Verification: read a written .tflite back and measure its fidelity to the reference model.

Fidelity needs no labels: every image counts. For each image the reference (Keras) model and the
file give class probabilities; :func:`fidelity` compares them (top-1 agreement, the flip matrix,
flips of the watched classes, mean/max |dp|, KL divergence) and :func:`verify_file` checks the file
that is actually on disk against its preset's documented tolerance (``presets.PRESETS``).

No TensorFlow here: the file is run with :mod:`edge_derm.runtime`; the reference probabilities are
computed by the caller.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from edge_derm.runtime import ModelInfo, TFLiteModel

from .metadata import tensor_io
from .presets import Preset, Tolerance
from edge_derm.tflite_format.standard import LABELS_FILE, read_associated_files

#: Probabilities are clipped here before KL (uint8 outputs round small probabilities to 0).
KL_EPS = 1e-6


def structural_failures(info: ModelInfo, preset: Preset, io: str, *, float_layers: bool = False) -> list[str]:
    """What makes the file not what ``preset`` claims (dtypes, integer ops); empty when sound."""
    failures = []
    tin, tout = tensor_io(info)
    for side, t in (("input", tin), ("output", tout)):
        if t["dtype"] != io:
            failures.append(f"{side} dtype is {t['dtype']}, expected {io}")
        if t["dtype"] in ("int8", "uint8", "int16") and not t["scale"]:
            failures.append(f"{side} is {t['dtype']} without quantisation parameters")
    share = info.integer_op_share()
    if preset.integer and not float_layers and share < preset.tolerance.min_integer_op_share:
        float_ops = sorted(set(info.float_ops()))
        failures.append(f"only {share:.0%} of ops run in integer (float: {', '.join(float_ops[:6])}); "
                        f"{preset.name} must be full-integer")
    if preset.integer and float_layers and share <= 0.0:
        failures.append("no op runs in integer")
    return failures


def fidelity(reference: np.ndarray, probs: np.ndarray, classes: Sequence[str],
             watch: Sequence[str] = ()) -> dict[str, Any]:
    """How closely ``probs`` follows ``reference`` (both [N, C] probabilities of the same images).

    Returns:
        ``n``, ``top1_agreement``, ``flips`` (count of images whose top-1 changed), ``flip_matrix``
        (C x C counts, row = the reference's top-1, column = the file's; the diagonal is agreement),
        ``per_class`` (for each class: images the reference assigns to it, how many of those change
        class, and the share), ``watch`` (the same for the watched classes present), ``mean_abs_diff``,
        ``max_abs_diff``, ``kl_mean`` and ``kl_max`` (KL(reference || file), nats).
    """
    reference = np.asarray(reference, dtype=np.float64)
    probs = np.asarray(probs, dtype=np.float64)
    if reference.shape != probs.shape or reference.ndim != 2 or reference.shape[1] != len(classes):
        raise ValueError(f"probabilities of shape {probs.shape} and {reference.shape} for {len(classes)} classes")
    n, c = reference.shape
    a, b = reference.argmax(1), probs.argmax(1)
    matrix = np.zeros((c, c), dtype=np.int64)
    np.add.at(matrix, (a, b), 1)
    per_class = {}
    for i, name in enumerate(classes):
        total = int(matrix[i].sum())
        changed = total - int(matrix[i, i])
        per_class[name] = {"n": total, "flipped": changed, "flip_rate": round(changed / total, 6) if total else 0.0,
                           "gained": int(matrix[:, i].sum()) - int(matrix[i, i])}
    diff = np.abs(probs - reference)
    p = np.clip(reference, KL_EPS, 1.0)
    q = np.clip(probs, KL_EPS, 1.0)
    p, q = p / p.sum(1, keepdims=True), q / q.sum(1, keepdims=True)
    kl = (p * np.log(p / q)).sum(1) if n else np.zeros(0)
    return {
        "n": int(n),
        "top1_agreement": round(float((a == b).mean()), 6) if n else 1.0,
        "flips": int((a != b).sum()),
        "flip_matrix": {"classes": list(classes), "counts": matrix.tolist()},
        "per_class": per_class,
        "watch": {w: per_class[w] for w in watch if w in per_class},
        "mean_abs_diff": round(float(diff.mean()), 6) if n else 0.0,
        "max_abs_diff": round(float(diff.max()), 6) if n else 0.0,
        "kl_mean": round(float(kl.mean()), 6) if n else 0.0,
        "kl_max": round(float(kl.max()), 6) if n else 0.0,
    }


def fidelity_failures(fid: dict[str, Any], tol: Tolerance, min_agreement: float | None = None) -> list[str]:
    """The tolerance rules ``fid`` breaks (empty when it passes).

    Args:
        fid: :func:`fidelity` output.
        tol: the preset's tolerance.
        min_agreement: a stricter top-1 agreement bar (``convert --min-agreement``); never a looser one.
    """
    failures = []
    bar = max(tol.min_top1_agreement, min_agreement or 0.0)
    if fid["top1_agreement"] < bar:
        failures.append(f"top-1 agreement {fid['top1_agreement']:.4f} < {bar} "
                        f"({fid['flips']} of {fid['n']} images changed class)")
    for name, w in fid["watch"].items():
        if w["n"] and w["flip_rate"] > tol.max_watch_flip_rate:
            failures.append(f"{w['flipped']} of {w['n']} {name} images changed class "
                            f"({w['flip_rate']:.1%} > {tol.max_watch_flip_rate:.1%})")
    if fid["mean_abs_diff"] > tol.mean_abs_diff:
        failures.append(f"mean |dp| {fid['mean_abs_diff']:.4f} > {tol.mean_abs_diff}")
    if tol.max_abs_diff is not None and fid["max_abs_diff"] > tol.max_abs_diff:
        failures.append(f"max |dp| {fid['max_abs_diff']:.4f} > {tol.max_abs_diff}")
    return failures


def verify_file(path: str | Path, preset: Preset, io: str, reference: np.ndarray, images: np.ndarray,
                classes: Sequence[str], *, labels: np.ndarray | None = None, watch: Sequence[str] = (),
                float_layers: bool = False, min_agreement: float | None = None,
                expected_metadata: dict[str, Any] | None = None) -> dict[str, Any]:
    """Verify the file on disk: read once, parse once, run those bytes, compare with ``reference``.

    Args:
        path: the written .tflite file (final bytes, metadata embedded).
        preset: the preset it claims to be.
        io: the input/output dtype it claims to have.
        reference: the reference model's probabilities on ``images``.
        images: every fidelity image, [N, S, S, 3] in [0, 255] (any numeric dtype).
        classes: the model's classes, in output order.
        labels: true class indices of ``images`` (-1 unknown), for accuracies when known.
        watch: classes whose flips are bounded separately.
        float_layers: selective quantisation (float ops allowed in an integer preset).
        min_agreement: a stricter agreement bar than the preset's.
        expected_metadata: what the file's embedded metadata must read back as.

    Returns:
        The ``verification`` block of ``model.json`` (:func:`fidelity` keys, ``sha256``, ``size_bytes``,
        ``integer_op_share``, ``tolerance``, ``passed``, ``failures``).
    """
    model = TFLiteModel(path, check_hash=False)  # reads and parses the file once; runs those bytes
    info = model.info
    failures = structural_failures(info, preset, io, float_layers=float_layers)
    if expected_metadata is not None and model.metadata != expected_metadata:
        failures.append("the embedded metadata does not read back as written")
    if expected_metadata is not None and \
            read_associated_files(model.content).get(LABELS_FILE, b"").decode("utf-8", "replace") != "\n".join(classes):
        failures.append(f"the standard metadata's {LABELS_FILE} does not read back as the model's classes")
    probs = model.predict(images)
    result: dict[str, Any] = fidelity(reference, probs, classes, watch)
    result.update(sha256=model.sha256, size_bytes=len(model.content),
                  integer_op_share=round(info.integer_op_share(), 6), n_ops=len(info.ops))
    if labels is not None and (np.asarray(labels) >= 0).any():
        known = np.asarray(labels) >= 0
        result["n_labelled"] = int(known.sum())
        result["accuracy_reference"] = round(float((reference.argmax(1)[known] == labels[known]).mean()), 6)
        result["accuracy_tflite"] = round(float((probs.argmax(1)[known] == labels[known]).mean()), 6)
        result["accuracy_drop"] = round(result["accuracy_reference"] - result["accuracy_tflite"], 6)
    failures += fidelity_failures(result, preset.tolerance, min_agreement)
    tolerance = preset.tolerance.as_dict()
    tolerance["min_top1_agreement"] = max(preset.tolerance.min_top1_agreement, min_agreement or 0.0)
    if float_layers:
        tolerance["min_integer_op_share"] = 0.0
    result["tolerance"] = tolerance
    result["passed"] = not failures
    result["failures"] = failures
    result["probs"] = probs  # for the caller (search, reports); dropped before model.json
    return result
