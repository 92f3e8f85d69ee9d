"""The benchmark: one row per (model, device, threads), with status, accuracy, deltas and latency.

Per-class figures come from ``edge_derm.evaluation.compute_metrics`` (the evaluator training
uses). The .tflite path imports no TensorFlow; a Keras reference row (:func:`keras_row`, or
``BenchmarkConfig.keras``) imports it when that model is scored.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from edge_derm import progress
from edge_derm.artefacts import FAILED_LOAD, FAILED_RUN, OK, row_label
from edge_derm.benchmarks.config import BenchmarkConfig, Gate
from edge_derm.benchmarks.latency import PeakMemory, cpu_latency, open_model
from edge_derm.benchmarks.models import (KERAS, ModelEntry, describe, display_names, is_run_folder,  # noqa: F401
                                         keras_entry, open_predictor, resolve_models)
from edge_derm.errors import ConfigError, DataError, ModelError

_log = logging.getLogger(__name__)

EVAL_BATCH = 16


@dataclass
class EvalSet:
    """Labelled images to score: ``loader(path, size, mode)`` returns float32 (S, S, 3) in [0, 255]."""

    paths: list[str]
    labels: np.ndarray
    classes: list[str]
    loader: Callable[[str, int, str], np.ndarray]
    triage: dict[str, str] | None = None
    source: str = ""
    taxonomy: str | None = None

    @classmethod
    def from_manifest(cls, data_dir: Path, split: str) -> "EvalSet":
        """The ``split`` of a dataset folder (DataError when absent or empty)."""
        from edge_derm.data.images import load_for_model
        from edge_derm.data.manifest import Manifest

        manifest = Manifest.load(data_dir)
        paths, labels = manifest.arrays(split)
        if not paths:
            raise DataError(f"{data_dir} has no {split!r} images; choose another --split")
        triage = None
        try:
            from edge_derm.data.taxonomy import load_taxonomy

            triage = dict(load_taxonomy(manifest.info.get("taxonomy", "native")).triage) or None
        except Exception as exc:  # noqa: BLE001 - triage is optional decoration of the figures
            _log.info("no triage groups for %s: %s", data_dir, exc)
        return cls(paths, labels, manifest.classes, load_for_model, triage, f"{data_dir} ({split}, hash {manifest.hash})",
                   manifest.info.get("taxonomy"))


@dataclass
class BenchmarkResult:
    """Rows and gate failures of one run (``config`` as given)."""

    rows: list[dict[str, Any]]
    config: BenchmarkConfig
    gate_failures: list[str] = field(default_factory=list)
    devices: list[dict[str, Any]] = field(default_factory=list)
    latency_warnings: list[str] = field(default_factory=list)
    #: one summary per dataset (``config.data`` first, then ``config.domains``): see :func:`domain_summary`
    domains: list[dict[str, Any]] = field(default_factory=list)


# -- accuracy --------------------------------------------------------------------------------

def class_space(entry: ModelEntry, data: EvalSet) -> list[str]:
    """The class names the entry is scored in: the dataset's classes, then the model's classes the dataset
    lacks (another domain with fewer classes; predicting one of those is an error).

    Raises:
        DataError: the dataset has a class the model does not know, or the two use different taxonomies.
    """
    labels, classes = entry.labels, list(data.classes)
    if len(labels) == len(classes) and all(re.fullmatch(r"class_\d+", x) for x in labels):
        _log.warning("%s carries no labels; assuming the dataset's class order", entry.name)
        return classes
    if entry.taxonomy and data.taxonomy and entry.taxonomy != data.taxonomy:
        raise DataError(f"{entry.name} classifies in taxonomy {entry.taxonomy!r} but {data.source or 'the dataset'} "
                        f"is in {data.taxonomy!r} (classes {', '.join(classes)}); build the dataset with "
                        f"--taxonomy {entry.taxonomy}")
    unknown = [c for c in classes if c not in labels]
    if unknown:
        what = f"none of its classes ({', '.join(unknown)})" if len(unknown) == len(classes) \
            else f"class(es) {', '.join(unknown)}"
        raise DataError(f"{data.source or 'the dataset'} has {what} among {entry.name}'s ({', '.join(labels)}); "
                        "score a model on a dataset whose classes are among the model's")
    return classes + [c for c in labels if c not in classes]


def evaluate(entries: list[ModelEntry], data: EvalSet, threads: int) -> int:
    """Fill ``probs`` and ``metrics`` of every loadable entry; returns how many images were unreadable.

    Images are loaded once per (input size, resize mode) batch and fed to every model of that group,
    so memory stays one batch and decoding is not repeated per variant.
    """
    from edge_derm.evaluation import compute_metrics

    groups: dict[tuple[int, str], list[tuple[ModelEntry, Any, list[int]]]] = {}
    for e in entries:
        if e.status != OK:
            continue
        e.space = class_space(e, data)
        order = [e.labels.index(c) for c in e.space] if set(e.space) <= set(e.labels) else list(range(len(e.space)))
        try:
            model = open_predictor(e, threads)
        except ModelError as exc:
            e.status, e.reason = FAILED_LOAD, str(exc)
            continue
        groups.setdefault((e.input_size, e.resize_mode), []).append((e, model, order))
    bad: set[int] = set()
    for (size, mode), members in groups.items():
        outs = {id(e): np.full((len(data.paths), len(e.space)), np.nan, np.float32) for e, _, _ in members}
        starts = range(0, len(data.paths), EVAL_BATCH)
        for start in progress.track(starts, f"scoring {len(members)} model(s) at {size} px", total=len(starts)):
            idx, imgs = [], []
            for i in range(start, min(start + EVAL_BATCH, len(data.paths))):
                try:
                    imgs.append(data.loader(data.paths[i], size, mode))
                    idx.append(i)
                except DataError as exc:
                    if i not in bad:
                        _log.warning("skipping unreadable image: %s", exc)
                    bad.add(i)
            if not imgs:
                continue
            batch = np.stack(imgs)
            for e, model, order in members:
                outs[id(e)][idx] = model.predict(batch)[:, order]
        for e, _, _ in members:
            e.probs = outs[id(e)]
    keep = np.array([i not in bad for i in range(len(data.paths))], dtype=bool)
    if not keep.any():
        raise DataError(f"none of the {len(data.paths)} images of {data.source or 'the dataset'} could be read")
    for members in groups.values():
        for e, _, _ in members:
            e.probs = e.probs[keep]
            subset = data.classes if e.space != data.classes else None
            e.metrics = compute_metrics(data.labels[keep], e.probs, e.space, triage=data.triage,
                                        dataset_classes=subset)
    return len(bad)


def disagreement(entry: ModelEntry, ref: ModelEntry) -> float:
    """Share of images whose predicted class (by name: the two may be scored in different class spaces)
    differs from the reference's."""
    mine = np.asarray(entry.space, dtype=object)[entry.probs.argmax(1)]
    theirs = np.asarray(ref.space, dtype=object)[ref.probs.argmax(1)]
    return float(np.mean(mine != theirs))


def pick_reference(entries: list[ModelEntry], entry: ModelEntry, explicit: ModelEntry | None) -> ModelEntry | None:
    """The reference of ``entry``: ``explicit``, else the fp32 model beside it, else the only fp32 model."""
    if explicit is not None:
        return explicit
    fp32 = [e for e in entries if e.quantization == "fp32" and e.metrics is not None]
    beside = [e for e in fp32 if e.path.parent == entry.path.parent]
    if len(beside) == 1:
        return beside[0]
    return fp32[0] if len(fp32) == 1 else None


# -- gates -----------------------------------------------------------------------------------

def check_gate_classes(gates: list[Gate], classes: list[str]) -> None:
    """DataError for a per-class gate naming a class the dataset does not have."""
    for g in gates:
        if g.cls not in (None, "*") and g.cls not in classes:
            raise DataError(f"--max-drop {g.key}: class {g.cls!r} is not in the dataset ({', '.join(classes)})")


def check_gates(rows: list[dict[str, Any]], gates: list[Gate], classes: list[str]) -> list[str]:
    """One message per (row, gate) whose drop exceeds the allowance; ``[]`` when every gate holds."""
    check_gate_classes(gates, classes)
    failures: list[str] = []
    for row in rows:
        # the label names the row in the messages; the verdict itself is the row's gate_passed
        label = row_label(row["model"], row["device"], row["threads"])
        before = len(failures)
        row["gate_passed"] = False
        if row["status"] != OK or row.get("metrics") is None:
            failures.append(f"{label}: no figures to gate ({row['status']})")
            continue
        deltas = row.get("deltas")
        if deltas is None:
            failures.append(f"{label}: no reference to gate against; pass --reference MODEL")
            continue
        for g in gates:
            if g.cls is None:
                checks = [(g.key, deltas.get(g.metric))]
            else:
                names = classes if g.cls == "*" else [g.cls]
                checks = [(f"{g.metric}:{c}", deltas["per_class"].get(c, {}).get(g.metric)) for c in names]
            for key, delta in checks:
                if delta is None:  # undefined on either side (e.g. no test images of the class)
                    continue
                drop = -100.0 * delta
                if drop > g.max_drop + 1e-9:
                    failures.append(f"{label}: {key} dropped {drop:.2f} points against {row['reference']} "
                                    f"(allowed {g.max_drop:g})")
        row["gate_passed"] = len(failures) == before
    return failures


# -- the run ---------------------------------------------------------------------------------

def run_benchmark(config: BenchmarkConfig, data: EvalSet | None = None) -> BenchmarkResult:
    """Run the benchmark ``config`` describes.

    Args:
        config: what to measure.
        data: the labelled images (default: ``config.data``'s split; None and no ``config.data`` =
            latency only).

    Raises:
        ModelError, DataError, DeviceError, ConfigError: one-line problems with the inputs or device.
    """
    if config.gates and data is None and config.data is None:
        raise ConfigError("--max-drop needs accuracy figures; pass the test dataset with --data DIR")
    entries = model_entries(config)
    ref_entry = reference_entry(config, entries)
    if data is None and config.data is not None:
        data = EvalSet.from_manifest(config.data, config.split)
    unreadable = 0
    if data is not None:
        check_gate_classes(config.gates, data.classes)  # before minutes of measuring
        scored = entries + ([ref_entry] if ref_entry is not None and ref_entry not in entries else [])
        unreadable = evaluate(scored, data, _eval_threads(config))
        if ref_entry is not None and ref_entry.metrics is None:
            raise ModelError(f"--reference {config.reference}: {ref_entry.reason or 'could not be scored'}")
    accuracy_cols = {id(e): accuracy_columns(entries, e, ref_entry) for e in entries}
    domains = []  # before the timing: a dataset the models cannot be scored on fails now, not after
    if data is not None and config.domains:
        domains.append(domain_summary(entries, data, ref_entry))
        for extra in config.domains:
            domains.append(score_domain(entries, ref_entry, EvalSet.from_manifest(extra, config.split),
                                        _eval_threads(config)))
    rows, devices = _timed_rows(entries, config, accuracy_cols)
    for row in rows:
        row["unreadable_images"] = unreadable
        row["data"] = data.source if data is not None else None
    failures = check_gates(rows, config.gates, data.classes) if config.gates and data is not None else []
    return BenchmarkResult(rows, config, failures, devices, flag_slower_than_fp32(rows), domains)


def _eval_threads(config: BenchmarkConfig) -> int:
    """Interpreter threads for host-side scoring: an Android run's thread counts are the phone's, not this
    machine's."""
    from edge_derm.runtime import max_threads

    return config.eval_threads or min(max(config.threads), max_threads())


def model_entries(config: BenchmarkConfig) -> list[ModelEntry]:
    """The described models of ``config``: its .tflite files, then the Keras models of its run folders."""
    paths = resolve_models(config.models)
    entries = [describe(p, n) for p, n in zip(paths, display_names(paths))]
    return entries + [keras_entry(run) for run in config.keras]


def reference_entry(config: BenchmarkConfig, entries: list[ModelEntry]) -> ModelEntry | None:
    """The entry ``config.reference`` names (one of ``entries`` when it is among them; a run folder given with
    ``keras`` names its Keras model); None when no reference was given.

    Raises:
        ModelError: the reference cannot be loaded.
    """
    if config.reference is None:
        return None
    if is_run_folder(config.reference) and any(Path(k).resolve() == config.reference.resolve() for k in config.keras):
        target = (config.reference / "model.keras").resolve()
        return next(e for e in entries if e.format == KERAS and e.path == target)
    ref_path = resolve_models([config.reference])[0]
    ref_entry = next((e for e in entries if e.path == ref_path), None)
    if ref_entry is None:
        ref_entry = describe(ref_path, f"{ref_path.name} (reference)")
    if ref_entry.status != OK:
        raise ModelError(f"--reference {config.reference}: {ref_entry.reason}")
    return ref_entry


def accuracy_columns(entries: list[ModelEntry], entry: ModelEntry, ref_entry: ModelEntry | None) -> dict[str, Any]:
    """A row's accuracy fields: ``metrics``, and ``reference``, ``deltas`` and ``disagreement`` against the
    entry's reference (see :func:`pick_reference`) when it has one with figures."""
    from edge_derm.evaluation.metrics import compare_metrics

    ref = pick_reference(entries, entry, ref_entry) if entry.metrics is not None else None
    cols: dict[str, Any] = {"metrics": entry.metrics, "reference": None, "deltas": None, "disagreement": None}
    if ref is not None and ref.metrics is not None:
        cols["reference"] = ref.name
        cols["deltas"] = compare_metrics(entry.metrics, ref.metrics)
        cols["disagreement"] = disagreement(entry, ref)
    return cols


def _timed_rows(entries: list[ModelEntry], config: BenchmarkConfig,
                accuracy_cols: dict[int, dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The rows and the devices they ran on: .tflite models timed on this CPU or the phones; Keras models
    get host rows with accuracy only (they are the reference, not a deployable variant)."""
    tflite = [e for e in entries if e.format != KERAS]
    keras = [e for e in entries if e.format == KERAS]
    if config.device == "cpu":
        from edge_derm.benchmarks.flops import cpu_info

        info = cpu_info()
        devices = [{"device": "cpu", "model": info["model"], "cores": info["cores"], "mhz": info["mhz"]}]
        rows = [_cpu_row(e, threads, config, accuracy_cols[id(e)])
                for e in progress.track(tflite, "timing on this CPU") for threads in config.threads]
        rows += [_base_row(e, "cpu", threads, accuracy_cols[id(e)]) for e in keras for threads in config.threads]
    else:
        rows, devices = _android_rows(tflite, config, accuracy_cols)
        rows += [_base_row(e, "host", 1, accuracy_cols[id(e)]) for e in keras]
    return rows, devices


def keras_row(run_dir: str | Path, data: EvalSet | str | Path, *, split: str = "test",
              threads: int = 1) -> dict[str, Any]:
    """Score a run folder's Keras model (``config.json`` + ``model.keras``) as a benchmark row.

    The row is what ``edge-derm benchmark --keras RUN`` writes for it: ``format`` and ``quantization``
    ``keras``, device ``cpu``, no latency figures, ``metrics`` from the shared evaluator
    (``compute_metrics``) on the same images, loader and resize as the .tflite rows (so its figures and
    theirs are comparable). Use it instead of re-implementing evaluation; for the deltas and disagreement
    of .tflite rows against this model, run the benchmark with ``BenchmarkConfig(models=..., keras=[run_dir],
    reference=run_dir)``. Imports TensorFlow (the Keras model is loaded).

    Args:
        run_dir: the run folder.
        data: the labelled images, or a dataset folder whose ``split`` is scored.
        split: the split of a dataset folder.
        threads: unused by Keras; the row's ``threads`` field.

    Returns:
        The row (a ``BenchmarkRow``'s JSON fields), with ``reference`` / ``deltas`` None.

    Raises:
        ModelError: not a run folder, or its model cannot be loaded. DataError: the images cannot be scored.
    """
    if not isinstance(data, EvalSet):
        data = EvalSet.from_manifest(Path(data), split)
    entry = keras_entry(Path(run_dir))
    unreadable = evaluate([entry], data, threads)
    if entry.metrics is None:
        raise ModelError(f"{run_dir}: {entry.reason or 'the Keras model could not be scored'}")
    row = _base_row(entry, "cpu", threads, accuracy_columns([entry], entry, None))
    row.update(unreadable_images=unreadable, data=data.source)
    return row


def score_domain(entries: list[ModelEntry], ref_entry: ModelEntry | None, data: EvalSet, threads: int) -> dict[str, Any]:
    """Score copies of the entries on another dataset (the entries themselves keep their first dataset's
    figures) and summarise them with :func:`domain_summary`."""
    from dataclasses import replace

    copies = {id(e): replace(e, metrics=None, probs=None, space=[]) for e in entries if e.status == OK}
    ref_copy = None
    if ref_entry is not None:
        ref_copy = copies.get(id(ref_entry)) or replace(ref_entry, metrics=None, probs=None, space=[])
    scored = list(copies.values()) + ([ref_copy] if ref_copy is not None and id(ref_entry) not in copies else [])
    evaluate(scored, data, threads)
    return domain_summary(list(copies.values()), data, ref_copy)


def domain_summary(entries: list[ModelEntry], data: EvalSet, ref_entry: ModelEntry | None) -> dict[str, Any]:
    """Per model on one dataset: macro F1, balanced accuracy, watched-class sensitivity, ECE, agreement with
    the reference (fp32), and the share of predictions of classes the dataset does not have."""
    from edge_derm.converters.presets import WATCH_CLASSES

    watch = [c for c in WATCH_CLASSES if c in data.classes]
    models = {}
    for e in entries:
        if e.metrics is None:
            continue
        m = e.metrics
        ref = pick_reference(entries, e, ref_entry)
        models[e.name] = {
            "quantization": e.quantization, "n": m["n"], "macro_f1": m["macro_f1"],
            "balanced_accuracy": m["balanced_accuracy"], "ece": m["ece"],
            "sensitivity": {c: m["per_class"][c]["sensitivity"] for c in watch},
            "agreement": None if ref is None or ref.probs is None else 1.0 - disagreement(e, ref),
            "reference": None if ref is None else ref.name,
            "absent_class_predictions": (m.get("absent_class_predictions") or {}).get("fraction", 0.0),
        }
    return {"data": data.source, "classes": list(data.classes), "taxonomy": data.taxonomy, "models": models}


def flag_slower_than_fp32(rows: list[dict[str, Any]]) -> list[str]:
    """Mark each quantised row timed slower than its fp32 (same folder, device and threads).

    Sets ``speedup_vs_fp32`` (fp32 median / this median) and ``slower_than_fp32`` on every quantised
    row that has an fp32 partner, and returns one message per slower row: quantisation is meant to
    buy speed, so a slower variant is worth knowing about (small inputs, ops outside XNNPACK).
    """
    timed = [r for r in rows if r.get("status") == OK and r.get("latency_median_ms")]
    fp32 = {(str(Path(r["path"]).parent), r["device"], r["threads"]): r for r in timed if r["quantization"] == "fp32"}
    messages = []
    for r in timed:
        if r["quantization"] == "fp32":
            continue
        ref = fp32.get((str(Path(r["path"]).parent), r["device"], r["threads"]))
        if ref is None:
            continue
        r["speedup_vs_fp32"] = round(ref["latency_median_ms"] / r["latency_median_ms"], 4)
        r["slower_than_fp32"] = r["latency_median_ms"] > ref["latency_median_ms"]
        if r["slower_than_fp32"]:
            messages.append(f"{r['model']} ({r['device']}, {r['threads']} threads) is slower than {ref['model']}: "
                            f"{r['latency_median_ms']:.3f} ms vs {ref['latency_median_ms']:.3f} ms median")
    return messages


def _base_row(e: ModelEntry, device: str, threads: int, acc: dict[str, Any]) -> dict[str, Any]:
    """A row's fields before timing (every latency field None)."""
    return {"model": e.name, "path": str(e.path), "format": e.format, "quantization": e.quantization,
            "device": device, "threads": threads, "status": e.status, "reason": e.reason,
            "size_mb": e.size_mb, "input_size": e.input_size, "accuracy_source": "host",
            "latency_median_ms": None, "latency_p90_ms": None, "latency_min_ms": None, "latency_mean_ms": None,
            "images_per_s": None, "peak_memory_mb": None, **acc}


def _cpu_row(e: ModelEntry, threads: int, config: BenchmarkConfig, acc: dict[str, Any]) -> dict[str, Any]:
    row = _base_row(e, "cpu", threads, acc)
    if e.status != OK:
        return row
    try:
        with PeakMemory() as mem:
            model = open_model(e.path, threads)
            stats = cpu_latency(e.path, threads, config.warmup, config.runs, interp=model.interpreter)
    except (ModelError, RuntimeError, ValueError) as exc:
        row["status"], row["reason"] = FAILED_RUN, str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
        return row
    row.update(latency_median_ms=stats.median_ms, latency_p90_ms=stats.p90_ms, latency_min_ms=stats.min_ms,
               latency_mean_ms=stats.mean_ms, images_per_s=stats.images_per_s, peak_memory_mb=mem.delta_mb,
               runs=stats.runs)
    return row


def _android_rows(entries: list[ModelEntry], config: BenchmarkConfig,
                  accuracy_cols: dict[int, dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    from edge_derm.benchmarks.android import android_rows

    return android_rows(entries, config, lambda e, device, threads: _base_row(e, device, threads, accuracy_cols[id(e)]))
