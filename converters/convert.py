"""``edge-derm convert``: a run folder -> verified .tflite files with embedded metadata.

Writes (into a staged folder, renamed on success) ``model.<mode>.tflite`` per mode that passes
verification, ``labels.txt``, ``model.json`` (an :class:`edge_derm.artefacts.ConvertResult`) and, when
int8 is examined for collapse, ``debug.int8.csv`` (per-layer errors).

Each mode is converted as its preset says (:mod:`.modes`), its metadata embedded, the file written, and
then the file on disk is verified (read once, parsed once, run) against the reference model on every
fidelity image: all validation and test images of the run's dataset, or every image of ``--verify-data``.
Its SHA-256 goes into ``model.json``. A mode that fails is reported and left out (kept, marked failed,
with ``keep_failed``); the others are still written.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge_derm import provenance
from edge_derm.artefacts import ConvertResult, RunConfig, VariantRecord
from edge_derm.errors import ConversionError, DataError, ModelError
from edge_derm.fsutil import atomic_write_bytes, atomic_write_text, check_output_dir, staged_dir
from edge_derm.progress import task

from .calibration import ImageSample, sample_images
from .config import ConvertConfig
from .inputs import (  # noqa: F401 - public names other modules import from here
    check_verify_data,
    convert_inputs,
    fidelity_sample,
    keras_predict,
    load_keras,
    load_run,
    pick_dataset,
    run_batch_size,
)
from .metadata import build_metadata, embed_built_metadata
from .modes import _Context, _make
from .presets import get_preset
from .verify import verify_file

_log = logging.getLogger(__name__)

__all__ = ["ConvertConfig", "check_verify_data", "convert_inputs", "convert_run",
           "fidelity_sample", "keras_predict", "load_keras", "load_run", "run_batch_size"]


@dataclass
class _Outcome:
    """What the modes of one call have produced so far (``model.json``'s lists)."""

    variants: dict[str, VariantRecord] = field(default_factory=dict)
    summary: list[dict[str, Any]] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def convert_run(cfg: ConvertConfig) -> dict[str, Any]:
    """Convert, write and verify every requested mode; returns what ``model.json`` holds.

    A mode that fails (conversion or verification) is listed in ``failed`` and ``summary`` and left
    out, unless ``keep_failed``; the passing modes are written. When no file is left to write, the
    output folder is not created and ``doc["out"]`` is None.

    Raises:
        ModelError: not a run folder or an inconsistent model.
        ConfigError: bad ``--verify-data``.
        ConversionError: no usable calibration or verification images.
        OutputExistsError: ``out`` exists and ``force`` is false.
    """
    run = cfg.run.resolve()
    run_cfg = load_run(run)
    inputs = convert_inputs(cfg, run, run_cfg)  # loaded once: checked now and again when the output is staged
    check_output_dir(cfg.out, cfg.force, inputs)  # fail before the slow part
    if cfg.verify_data is not None:
        check_verify_data(cfg.verify_data, run_cfg)
    model = load_keras(run, run_cfg)
    fid = fidelity_sample(cfg, run_cfg)
    with task(f"reference (Keras) on {len(fid.images)} fidelity images"):
        keras_probs = keras_predict(model, fid.images)
    outcome = _Outcome()
    calib = _calibration_sample(cfg, run_cfg, outcome.warnings)
    if cfg.io == "int8":
        outcome.warnings.append("--io int8: MediaPipe Tasks and the other standard clients take uint8 or float32 "
                                "input only; keep the default (uint8) for files they must open")
    config_hash = provenance.hash_json(cfg.as_dict())
    versions = provenance.versions()
    result: ConvertResult | None = None

    class _NothingPassed(Exception):
        pass

    try:
        with staged_dir(cfg.out, cfg.force, inputs) as tmp:
            ctx = _Context(cfg, run, run_cfg, model, tmp)
            ctx.fid, ctx.keras_probs, ctx.calib = fid, keras_probs, calib
            for mode in cfg.modes:
                _convert_mode(ctx, mode, outcome, config_hash, versions)
            result = ConvertResult(run=str(run), requested=list(cfg.modes), failed=outcome.failed,
                                   summary=outcome.summary, variants=outcome.variants,
                                   extra={"config": cfg.as_dict(), "config_hash": config_hash,
                                          "verification_data": fid.summary(), "warnings": outcome.warnings,
                                          "versions": versions})
            if not outcome.variants:
                raise _NothingPassed
            atomic_write_text(tmp / "labels.txt", "".join(f"{c}\n" for c in ctx.classes))
            result.write(tmp / ConvertResult.FILENAME)
    except _NothingPassed:
        return {**result.to_json(), "out": None}
    return {**result.to_json(), "out": str(cfg.out)}


def _calibration_sample(cfg: ConvertConfig, run_cfg: RunConfig, warnings: list[str]) -> ImageSample | None:
    """The calibration images, when a requested preset needs them (a missing class is a warning)."""
    if not any(get_preset(m).calibration for m in cfg.modes):
        return None
    splits = ("train", "all") if cfg.calibration is not None else ("train",)
    calib = sample_images(pick_dataset(cfg, run_cfg, "calibration"), list(run_cfg.classes),
                          int(run_cfg.image_size), run_cfg.get("resize_mode", "nearest"), n=cfg.calibration_size,
                          seed=cfg.seed, splits=splits, purpose="calibration")
    if calib.missing:
        warnings.append(f"calibration data has no image of: {', '.join(calib.missing)}")
    return calib


def _convert_mode(ctx: _Context, mode: str, outcome: _Outcome, config_hash: str, versions: dict[str, str]) -> None:
    """Convert, embed, write and verify one mode, and record how it went in ``outcome``.

    A conversion or verification error is one ``error`` row; a file that fails verification is removed
    (kept and marked with ``keep_failed``).
    """
    cfg = ctx.cfg
    preset = get_preset(mode)
    path = ctx.tmp / f"model.{mode}.tflite"
    min_agreement = cfg.min_agreement if preset.recipes else None
    try:
        made = _make(ctx, mode)
        full, embedded = _write_variant(ctx, mode, made, path, min_agreement, config_hash, versions)
        with task(f"verifying model.{mode}.tflite on {len(ctx.fid.images)} images"):
            result = verify_file(path, preset, made.io, made.reference, ctx.fid.images, ctx.classes,
                                 labels=ctx.fid.labels, watch=ctx.watch, float_layers=made.float_layers,
                                 min_agreement=min_agreement, expected_metadata=embedded)
        result.pop("probs")
    except (ConversionError, DataError, ModelError) as exc:
        path.unlink(missing_ok=True)
        outcome.failed.append(mode)
        outcome.summary.append({"mode": mode, "status": "error", "failures": [str(exc)]})
        outcome.warnings.append(f"{mode}: {exc}")
        return
    record = VariantRecord.from_json({**full, "file": path.name, "sha256": result["sha256"],
                                      "size_bytes": result["size_bytes"], "verification": result},
                                     source=f"model.{mode}.tflite metadata")
    row = {"mode": mode, "top1_agreement": result["top1_agreement"], "n": result["n"],
           "watch_flips": {k: f"{v['flipped']}/{v['n']}" for k, v in result["watch"].items()},
           "mean_abs_diff": result["mean_abs_diff"], "kl_mean": result["kl_mean"],
           "size_bytes": result["size_bytes"], "failures": result["failures"]}
    if result["passed"]:
        outcome.variants[mode] = record
        row["status"] = "passed"
    else:
        outcome.failed.append(mode)
        msg = f"{mode}: verification failed: {'; '.join(result['failures'])}"
        if preset.recipes and cfg.min_agreement is None:
            msg += " (try --min-agreement 0.99 to search int8 recipes, or --quantize qat)"
        outcome.warnings.append(msg)
        if cfg.keep_failed:
            outcome.variants[mode] = record
            row["status"] = "failed (kept)"
        else:
            path.unlink()
            row["status"] = "failed (left out)"
    outcome.summary.append(row)


def _write_variant(ctx: _Context, mode: str, made: _Made, path: Path, min_agreement: float | None,
                   config_hash: str, versions: dict[str, str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Embed the metadata into ``made``'s bytes and write the file; returns (full, embedded) metadata.

    The file travels (apps, phones): what it embeds names the run and datasets, it does not locate them;
    ``model.json`` beside it keeps the full paths for this machine (``full``).
    """
    tolerance = get_preset(mode).tolerance.as_dict()
    tolerance["min_top1_agreement"] = max(tolerance["min_top1_agreement"], min_agreement or 0.0)
    planned = {"tolerance": tolerance, "images": len(ctx.fid.images),
               "results": "model.json beside this file (measured on the file as written; with its SHA-256)"}
    full: dict[str, Any] = {}

    def make_meta(io_pair):
        full.update(build_metadata(run_config=ctx.run_cfg, run_dir=str(ctx.run), quantization=mode, io=io_pair,
                                   verification=planned, config_hash=config_hash, versions=versions,
                                   extra=made.extra))
        return provenance.without_host_paths(full)

    final, embedded = embed_built_metadata(made.data, make_meta)
    atomic_write_bytes(path, final)
    return full, embedded
