"""``edge-derm convert``: a run folder -> verified .tflite files with embedded metadata.

Writes (into a staged folder, renamed on success) ``model.<mode>.tflite`` per mode, ``labels.txt``,
``model.json`` and, when int8 is examined for collapse, ``debug.int8.csv`` (per-layer errors).
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge_derm import provenance
from edge_derm.errors import ConfigError, ConversionError, ModelError
from edge_derm.fsutil import (
    atomic_write_bytes,
    atomic_write_text,
    check_output_dir,
    staged_dir,
    write_json,
)
from edge_derm.progress import task
from edge_derm.runtime import inspect_tflite

from . import debug as qdebug
from .calibration import ImageSample, sample_images
from .metadata import build_metadata, embed_metadata
from .presets import IO_TYPES, MODES, get_preset, resolve_io
from .verify import verify

_log = logging.getLogger(__name__)
FORMAT_VERSION = 1


@dataclass
class ConvertConfig:
    """Settings of one ``edge-derm convert`` call.

    Attributes:
        run: the run folder (model.keras + config.json).
        modes: quantisation presets to produce, in order.
        out: output folder; default ``<run>/convert``.
        force: replace ``out`` if it exists.
        io: input/output dtype of the integer presets (``uint8`` default, ``int8``, ``float32``).
        calibration: dataset folder for calibration (and QAT); default the run's last dataset.
        calibration_size: calibration images (class-stratified, seeded).
        verify_size: images in the fixed verification batch (test split of the run's dataset).
        qat_epochs: quantisation-aware fine-tuning epochs.
        qat_steps: steps per QAT epoch (default: one pass over the training images).
        qat_batch_size: QAT batch size (default: the run's training batch, see :func:`run_batch_size`).
        qat_learning_rate: QAT learning rate (the paper's backbone rate).
        float_layers: ``auto`` or comma-separated layer names kept in float in int8 (selective).
        collapse_threshold: int8 accuracy drop (fraction) on the verification batch that triggers
            the per-layer report.
        keep_failed: write variants that fail verification (marked ``passed: false``) instead of stopping.
        seed: sampling and QAT seed.
    """

    run: Path
    modes: list[str] = field(default_factory=lambda: ["int8"])
    out: Path | None = None
    force: bool = False
    io: str | None = None
    calibration: Path | None = None
    calibration_size: int = 256
    verify_size: int = 64
    qat_epochs: int = 1
    qat_steps: int | None = None
    qat_batch_size: int | None = None
    qat_learning_rate: float = 1e-5
    float_layers: str | None = None
    collapse_threshold: float = 0.05
    keep_failed: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        self.run = Path(self.run)
        self.out = Path(self.out) if self.out is not None else self.run / "convert"
        if self.calibration is not None:
            self.calibration = Path(self.calibration)
        if not self.modes:
            raise ConfigError(f"no quantisation mode given; pass --quantize with one of {', '.join(MODES)}")
        for m in self.modes:
            get_preset(m)
        if len(set(self.modes)) != len(self.modes):
            raise ConfigError(f"--quantize repeats a mode ({', '.join(self.modes)}); give each once")
        if self.io is not None and self.io not in IO_TYPES:
            raise ConfigError(f"unknown --io {self.io!r}; use one of {', '.join(IO_TYPES)}")
        if self.io is not None and not any(get_preset(m).integer for m in self.modes):
            raise ConfigError("--io only applies to the integer modes; add --quantize int8 or qat, or drop --io")
        for name in ("calibration_size", "verify_size", "qat_epochs"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be at least 1")
        if self.qat_steps is not None and self.qat_steps < 1:
            raise ConfigError("--qat-steps must be at least 1")
        if self.qat_batch_size is not None and self.qat_batch_size < 1:
            raise ConfigError("--qat-batch-size must be at least 1")
        if not 0.0 <= self.collapse_threshold <= 1.0:
            raise ConfigError("--collapse-threshold is a fraction of accuracy between 0 and 1 (e.g. 0.05)")
        if self.float_layers is not None:
            if "int8" not in self.modes:
                raise ConfigError("--float-layers applies to int8; add --quantize int8")
            if self.io not in (None, "float32"):
                raise ConfigError("--float-layers keeps float layers, so input/output stay float32; drop --io")

    def as_dict(self) -> dict[str, Any]:
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(self).items()}


def load_run(run: Path) -> dict[str, Any]:
    """The run's ``config.json``; ModelError when ``run`` is not a run folder."""
    from edge_derm.training.evaluate import read_run

    return read_run(run)


def run_batch_size(run_cfg: dict[str, Any]) -> int:
    """The batch the run trained with: its explicit batch size, else classes x batch multiple."""
    schedule = run_cfg.get("schedule") or {}
    if schedule.get("batch_size"):
        return int(schedule["batch_size"])
    return int(schedule.get("batch_multiple") or 1) * len(run_cfg["classes"])


def load_keras(run: Path, run_cfg: dict[str, Any]):
    """Load ``model.keras`` and check it against the run config (classes, input size)."""
    import tf_keras as keras

    path = Path(run) / "model.keras"
    try:
        model = keras.models.load_model(path, safe_mode=True, compile=False)
    except Exception as exc:  # noqa: BLE001 - Keras raises many types for a bad file
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"{path}: cannot load the Keras model ({first[:200]}); the run folder is damaged") from None
    n_out = int(model.output_shape[-1])
    classes = run_cfg["classes"]
    if n_out != len(classes):
        raise ModelError(f"{run}: config.json lists {len(classes)} classes but the model has {n_out} outputs; "
                         "the run folder is inconsistent")
    shape = tuple(model.input_shape[1:])
    size = int(run_cfg["image_size"])
    if shape != (size, size, 3):
        raise ModelError(f"{run}: the model takes {shape} but config.json says image_size {size}")
    return model


def _latency_ms(path: Path, image: np.ndarray, runs: int = 10) -> float:
    from edge_derm.runtime import TFLiteModel

    model = TFLiteModel(path)
    model.set_input(image[None])
    model.invoke_raw()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        model.invoke_raw()
        times.append(time.perf_counter() - t0)
    return round(float(np.median(times)) * 1000, 3)


def _dataset_dir(run_cfg: dict[str, Any]) -> Path | None:
    data = run_cfg.get("data") or []
    return Path(data[-1]["dir"]) if data and data[-1].get("dir") else None


def _pick_dataset(cfg: ConvertConfig, run_cfg: dict[str, Any], purpose: str) -> Path:
    run_data = _dataset_dir(run_cfg)
    if purpose == "verification" and run_data is not None and run_data.is_dir():
        return run_data
    if cfg.calibration is not None:
        return cfg.calibration
    if run_data is None:
        raise ConversionError(f"{cfg.run}: config.json names no dataset for {purpose}; pass --calibration DIR")
    if not run_data.is_dir():
        raise ConversionError(f"the run's dataset {run_data} is missing (needed for {purpose}); "
                              "pass --calibration DIR with a dataset folder")
    return run_data


def convert_run(cfg: ConvertConfig) -> dict[str, Any]:
    """Convert, verify and write every requested mode; returns what ``model.json`` holds.

    Raises:
        ModelError: not a run folder or an inconsistent model.
        ConversionError: a conversion fails, or verification fails (unless ``keep_failed``).
        OutputExistsError: ``out`` exists and ``force`` is false.
    """
    from . import tflite as tfl

    run = cfg.run.resolve()
    run_cfg = load_run(run)
    check_output_dir(cfg.out, cfg.force)  # fail before the slow part
    classes = list(run_cfg["classes"])
    size = int(run_cfg["image_size"])
    mode_resize = run_cfg.get("resize_mode", "nearest")
    model = load_keras(run, run_cfg)

    eval_sample = sample_images(_pick_dataset(cfg, run_cfg, "verification"), classes, size, mode_resize,
                                n=cfg.verify_size, seed=cfg.seed, splits=("test", "val", "train", "all"),
                                purpose="verification")
    keras_probs = model.predict(eval_sample.images, batch_size=32, verbose=0)
    calib: ImageSample | None = None
    warnings: list[str] = []
    if any(get_preset(m).calibration for m in cfg.modes):
        splits = ("train", "all") if cfg.calibration is not None else ("train",)
        calib = sample_images(_pick_dataset(cfg, run_cfg, "calibration"), classes, size, mode_resize,
                              n=cfg.calibration_size, seed=cfg.seed, splits=splits, purpose="calibration")
        if calib.missing:
            warnings.append(f"calibration data has no image of: {', '.join(calib.missing)}")
    config_hash = provenance.hash_json(cfg.as_dict())
    versions = provenance.versions()
    variants: dict[str, Any] = {}
    with staged_dir(cfg.out, cfg.force) as tmp:
        for mode in cfg.modes:
            preset = get_preset(mode)
            io = "float32" if (mode == "int8" and cfg.float_layers) else resolve_io(preset, cfg.io)
            path = tmp / f"model.{mode}.tflite"
            extra: dict[str, Any] = {}
            source, reference = model, keras_probs
            with task(f"converting {mode}"):
                if mode == "qat":
                    source, extra["qat"] = _qat(cfg, run_cfg, model, classes, size, mode_resize)
                    reference = source.predict(eval_sample.images, batch_size=32, verbose=0)
                    extra["qat"]["agreement_with_run_model"] = round(
                        float((reference.argmax(1) == keras_probs.argmax(1)).mean()), 6)
                data = tfl.convert(source, preset, io, calib.images if calib is not None else None)
            atomic_write_bytes(path, data)
            result = verify(path, preset, io, reference, eval_sample.images, eval_sample.labels)
            if mode == "int8":
                data, result, extra = _int8_collapse(cfg, tmp, model, calib, eval_sample, keras_probs, preset,
                                                     path, data, result, extra)
            if calib is not None and preset.calibration:
                extra["calibration"] = calib.summary()
            if not result["passed"]:
                msg = f"{mode}: verification failed: {'; '.join(result['failures'])}"
                if not cfg.keep_failed:
                    hint = (" (int8 collapse? see the per-layer report with --keep-failed, try --float-layers auto "
                            "or --quantize qat)") if mode == "int8" else ""
                    raise ConversionError(msg + hint)
                warnings.append(msg)
            meta = build_metadata(run_config=run_cfg, run_dir=str(run), quantization=mode, info=inspect_tflite(data),
                                  verification=result, config_hash=config_hash, versions=versions, extra=extra)
            final = embed_metadata(data, meta)
            atomic_write_bytes(path, final)
            meta["size_bytes"] = len(final)
            variants[mode] = meta
        atomic_write_text(tmp / "labels.txt", "".join(f"{c}\n" for c in classes))
        doc = {"kind": "convert", "format_version": FORMAT_VERSION, "run": str(run), "config": cfg.as_dict(),
               "config_hash": config_hash, "verification_batch": eval_sample.summary(), "warnings": warnings,
               "variants": variants, "versions": versions}
        write_json(tmp / "model.json", doc)
    return doc


def _qat(cfg: ConvertConfig, run_cfg: dict[str, Any], model, classes: list[str], size: int, resize_mode: str):
    from edge_derm.data.manifest import Manifest

    from .qat import finetune

    data_dir = _pick_dataset(cfg, run_cfg, "QAT")
    manifest = Manifest.load(data_dir)
    paths, labels = manifest.arrays("train")
    if manifest.classes != classes:
        index = {c: i for i, c in enumerate(classes)}
        keep = [i for i, lab in enumerate(labels) if manifest.classes[lab] in index]
        paths = [paths[i] for i in keep]
        labels = np.array([index[manifest.classes[labels[i]]] for i in keep], dtype=np.int64)
    qmodel, summary = finetune(model, paths, labels, len(classes), size, resize_mode, epochs=cfg.qat_epochs,
                               learning_rate=cfg.qat_learning_rate, seed=cfg.seed, steps_per_epoch=cfg.qat_steps,
                               batch_size=cfg.qat_batch_size or run_batch_size(run_cfg))
    summary["dataset"] = str(manifest.dir)
    summary["dataset_hash"] = manifest.hash
    return qmodel, summary


def _int8_collapse(cfg, tmp: Path, model, calib, eval_sample, keras_probs, preset, path, data, result, extra):
    """Per-layer report when int8 collapses (or float layers are asked for), then selective quantisation."""
    from . import tflite as tfl

    drop = result.get("accuracy_drop", 0.0)
    collapsed = (not result["passed"]) or drop > cfg.collapse_threshold
    if not collapsed and cfg.float_layers is None:
        return data, result, extra
    if collapsed:
        _log.warning("int8 lost %.1f pp accuracy (top-1 agreement with Keras %.1f%%) on the verification "
                     "batch; writing a per-layer report", 100 * drop, 100 * result["top1_agreement"])
    with task("per-layer quantisation error (debugger)"):
        rows = qdebug.layer_report(model, calib.images)
    qdebug.write_report(rows, tmp / "debug.int8.csv")
    extra["collapse"] = {"detected": collapsed, "accuracy_drop": drop, "threshold": cfg.collapse_threshold,
                         "report": "debug.int8.csv",
                         "worst_layers": [{"tensor": r["tensor_name"], "rmse/scale": round(r["rmse/scale"], 4)}
                                          for r in rows[:5]]}
    if cfg.float_layers is None:
        return data, result, extra
    chosen = qdebug.choose_float_layers(rows, cfg.float_layers)
    full = {"size_bytes": len(data), "latency_ms": _latency_ms(path, eval_sample.images[0]),
            **{k: result.get(k) for k in ("top1_agreement", "accuracy_tflite", "accuracy_drop", "integer_op_share")}}
    with task(f"selective int8 ({len(chosen)} float layer(s))"):
        sel = tfl.convert_selective(model, preset, calib.images, chosen)
    atomic_write_bytes(path, sel)
    result = verify(path, preset, "float32", keras_probs, eval_sample.images, eval_sample.labels, float_layers=True)
    selective = {"size_bytes": len(sel), "latency_ms": _latency_ms(path, eval_sample.images[0]),
                 **{k: result.get(k) for k in ("top1_agreement", "accuracy_tflite", "accuracy_drop",
                                               "integer_op_share")}}
    extra["float_layers"] = chosen
    extra["selective"] = {"full_int8": full, "selective": selective}
    return sel, result, extra
