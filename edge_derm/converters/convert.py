"""``edge-derm convert``: a run folder -> verified .tflite files with embedded metadata.

Writes (into a staged folder, renamed on success) ``model.<mode>.tflite`` per mode that passes
verification, ``labels.txt``, ``model.json`` and, when int8 is examined for collapse,
``debug.int8.csv`` (per-layer errors).

Each mode is converted, its metadata embedded, the file written, and then the file on disk is
verified (read once, parsed once, run) against the reference model on every fidelity image: all
validation and test images of the run's dataset, or every image of ``--verify-data``. Its SHA-256
goes into ``model.json``. A mode that fails is reported and left out (kept, marked failed, with
``keep_failed``); the others are still written.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge_derm import provenance
from edge_derm.artefacts import RunConfig
from edge_derm.errors import ConfigError, ConversionError, DataError, ModelError
from edge_derm.fsutil import (
    atomic_write_bytes,
    atomic_write_text,
    check_output_dir,
    staged_dir,
    write_json,
)
from edge_derm.progress import task

from . import debug as qdebug
from .calibration import ImageSample, sample_images
from .metadata import build_metadata, embed_built_metadata
from .presets import IO_TYPES, MODES, WATCH_CLASSES, get_preset, resolve_io
from .verify import fidelity, fidelity_failures, verify_file

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
        verify_size: at most this many fidelity images (class-stratified, seeded); None: all of them.
        verify_data: dataset folder whose every image measures fidelity (same taxonomy and classes as
            the run); default the validation and test images of the run's last dataset.
        min_agreement: int8 must keep this top-1 agreement; searches recipes from the cheapest upward
            (:mod:`edge_derm.converters.search`) and raises int8's verification bar to it.
        watch: classes whose flips verification bounds separately (those the model has).
        qat_epochs: quantisation-aware fine-tuning epochs.
        qat_steps: steps per QAT epoch (default: one pass over the training images).
        qat_batch_size: QAT batch size (default: the run's training batch, see :func:`run_batch_size`).
        qat_learning_rate: QAT learning rate (the paper's backbone rate).
        float_layers: ``auto`` or comma-separated layer names kept in float in int8 (selective).
        collapse_threshold: int8 accuracy drop (fraction) on the labelled fidelity images that triggers
            the per-layer report.
        layer_report: write that per-layer report (``debug.int8.csv``, tens of seconds) when int8 fails or
            collapses; ``demo --quick`` turns it off.
        keep_failed: also write variants that fail verification (marked ``passed: false``); without it they
            are left out and the passing ones are still written.
        seed: sampling and QAT seed.
    """

    run: Path
    modes: list[str] = field(default_factory=lambda: ["int8"])
    out: Path | None = None
    force: bool = False
    io: str | None = None
    calibration: Path | None = None
    calibration_size: int = 256
    verify_size: int | None = None
    verify_data: Path | None = None
    min_agreement: float | None = None
    watch: list[str] = field(default_factory=lambda: list(WATCH_CLASSES))
    qat_epochs: int = 1
    qat_steps: int | None = None
    qat_batch_size: int | None = None
    qat_learning_rate: float = 1e-5
    float_layers: str | None = None
    collapse_threshold: float = 0.05
    layer_report: bool = True
    keep_failed: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        self.run = Path(self.run)
        self.out = Path(self.out) if self.out is not None else self.run / "convert"
        if self.calibration is not None:
            self.calibration = Path(self.calibration)
        if self.verify_data is not None:
            self.verify_data = Path(self.verify_data)
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
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be at least 1")
        if self.qat_steps is not None and self.qat_steps < 1:
            raise ConfigError("--qat-steps must be at least 1")
        if self.qat_batch_size is not None and self.qat_batch_size < 1:
            raise ConfigError("--qat-batch-size must be at least 1")
        if not 0.0 <= self.collapse_threshold <= 1.0:
            raise ConfigError("--collapse-threshold is a fraction of accuracy between 0 and 1 (e.g. 0.05)")
        if self.min_agreement is not None:
            if not 0.0 < self.min_agreement <= 1.0:
                raise ConfigError(f"--min-agreement {self.min_agreement:g} is outside (0, 1]; give a fraction "
                                  "of top-1 decisions to keep, e.g. 0.99")
            if "int8" not in self.modes:
                raise ConfigError("--min-agreement searches int8 recipes; add --quantize int8")
            if self.float_layers is not None:
                raise ConfigError("--min-agreement chooses float layers itself; drop --float-layers")
        if self.float_layers is not None:
            if "int8" not in self.modes:
                raise ConfigError("--float-layers applies to int8; add --quantize int8")
            if self.io not in (None, "float32"):
                raise ConfigError("--float-layers keeps float layers, so input/output stay float32; drop --io")

    def as_dict(self) -> dict[str, Any]:
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(self).items()}


def load_run(run: Path) -> RunConfig:
    """The run's ``config.json``; ModelError when ``run`` is not a run folder."""
    from edge_derm.training.evaluate import read_run

    return read_run(run)


def run_batch_size(run_cfg: dict[str, Any]) -> int:
    """The batch the run trained with: its explicit batch size, else classes x batch multiple."""
    schedule = run_cfg.get("schedule") or {}
    if schedule.get("batch_size"):
        return int(schedule["batch_size"])
    return int(schedule.get("batch_multiple") or 1) * len(run_cfg.classes)


def load_keras(run: Path, run_cfg: RunConfig):
    """The run's ``model.keras``, checked against its config (classes, input size)."""
    from edge_derm.models import load_model

    return load_model(Path(run) / "model.keras", num_classes=len(run_cfg.classes), image_size=int(run_cfg.image_size))


def _latency_ms(path: Path, image: np.ndarray, runs: int = 10, content: bytes | None = None) -> float:
    from edge_derm.runtime import TFLiteModel

    model = TFLiteModel(path, content=content, check_hash=False)
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


def convert_inputs(cfg: ConvertConfig, run: Path, run_cfg: dict[str, Any]) -> list[Path]:
    """What convert reads (``--out`` may not be, hold or lie inside any of it): the run's files, and the
    dataset folders (run data, ``--calibration``, ``--verify-data``) with their images."""
    from edge_derm.data.manifest import Manifest

    inputs = [run / name for name in ("model.keras", "config.json", "metrics.json", "checkpoints", "history.csv")]
    for d in {_dataset_dir(run_cfg), cfg.calibration, cfg.verify_data} - {None}:
        try:
            inputs += Manifest.load(d).inputs()
        except Exception:  # noqa: BLE001 - an unreadable dataset is reported where it is used
            inputs.append(Path(d))
    return inputs


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


def check_verify_data(path: Path, run_cfg: dict[str, Any]) -> None:
    """ConfigError unless ``path`` is a dataset folder of the run's taxonomy whose classes the model has."""
    from edge_derm.data.manifest import Manifest

    if not Path(path).is_dir():
        raise ConfigError(f"--verify-data {path} is not a folder; pass a dataset folder written by 'edge-derm data build'")
    try:
        manifest = Manifest.load(path)
    except DataError as exc:
        raise ConfigError(f"--verify-data {path}: {exc}") from None
    want = run_cfg.get("taxonomy", "native")
    have = manifest.info.get("taxonomy", "native")
    classes = list(run_cfg.classes)
    extra = [c for c in manifest.classes if c not in classes]
    if have != want or extra:
        what = f"taxonomy {have!r}" if have != want else f"classes the model lacks ({', '.join(extra[:5])})"
        raise ConfigError(f"--verify-data {path} has {what}; the run uses taxonomy {want!r} with classes "
                          f"{', '.join(classes)}: build it with --taxonomy {want}")


def fidelity_sample(cfg: ConvertConfig, run_cfg: dict[str, Any]) -> ImageSample:
    """The fidelity images: every image of ``--verify-data``, else the run dataset's validation + test images."""
    classes, size = list(run_cfg.classes), int(run_cfg.image_size)
    resize = run_cfg.get("resize_mode", "nearest")
    if cfg.verify_data is not None:
        return sample_images(cfg.verify_data, classes, size, resize, n=cfg.verify_size, seed=cfg.seed,
                             splits=("all",), purpose="verification", compact=True)
    data = _pick_dataset(cfg, run_cfg, "verification")
    sample = sample_images(data, classes, size, resize, n=cfg.verify_size, seed=cfg.seed,
                           splits=("val+test", "all"), purpose="verification", compact=True)
    if sample.split == "all":
        _log.warning("%s has no validation or test images; fidelity is measured on all its images", data)
    return sample


def keras_predict(model, images: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """Probabilities of a Keras model on images of any numeric dtype, batch by batch (float32 in)."""
    outs = [model.predict_on_batch(np.asarray(images[i:i + batch_size], dtype=np.float32))
            for i in range(0, len(images), batch_size)]
    return np.concatenate([np.asarray(o) for o in outs]) if outs else np.zeros((0, model.output_shape[-1]))


@dataclass
class _Made:
    """One mode's converted bytes, before they are embedded, written and verified."""

    data: bytes
    io: str
    reference: np.ndarray
    float_layers: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


class _Context:
    """What every mode of one convert call shares."""

    def __init__(self, cfg: ConvertConfig, run: Path, run_cfg: dict[str, Any], model, tmp: Path):
        self.cfg, self.run, self.run_cfg, self.model, self.tmp = cfg, run, run_cfg, model, tmp
        self.classes = list(run_cfg.classes)
        self.size = int(run_cfg.image_size)
        self.resize = run_cfg.get("resize_mode", "nearest")
        self.watch = [c for c in cfg.watch if c in self.classes]
        self.fid: ImageSample | None = None
        self.keras_probs: np.ndarray | None = None
        self.calib: ImageSample | None = None

    def score(self, data: bytes, reference: np.ndarray, tolerance, min_agreement: float | None = None) -> dict:
        """Fidelity of in-memory bytes (the search and collapse checks; the written file is verified later)."""
        from edge_derm.runtime import TFLiteModel

        probs = TFLiteModel(self.tmp / "candidate.tflite", content=data, check_hash=False).predict(self.fid.images)
        fid = fidelity(reference, probs, self.classes, self.watch)
        known = self.fid.labels >= 0
        if known.any():
            fid["accuracy_drop"] = round(float((reference.argmax(1)[known] == self.fid.labels[known]).mean()
                                               - (probs.argmax(1)[known] == self.fid.labels[known]).mean()), 6)
        fid["failures"] = fidelity_failures(fid, tolerance, min_agreement)
        fid["passed"] = not fid["failures"]
        return fid

    def calibration(self, name: str) -> tuple[np.ndarray, int] | None:
        """The search's calibration samples: ``default``, ``4x`` the default, ``all`` training images."""
        if name == "default":
            return self.calib.images, len(self.calib.images)
        n = self.cfg.calibration_size
        available = self._train_count()
        if name == "4x" and available > n:
            want: int | None = 4 * n
        elif name == "all" and available > 4 * n:
            want = None
        else:
            return None
        sample = sample_images(_pick_dataset(self.cfg, self.run_cfg, "calibration"), self.classes, self.size,
                               self.resize, n=want, seed=self.cfg.seed, splits=(self.calib.split,),
                               purpose="calibration")
        return sample.images, len(sample.images)

    def _train_count(self) -> int:
        from edge_derm.data.manifest import Manifest

        m = Manifest.load(_pick_dataset(self.cfg, self.run_cfg, "calibration"))
        return len(m.records) if self.calib.split == "all" else len(m.subset(self.calib.split))


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
    classes = list(run_cfg.classes)
    model = load_keras(run, run_cfg)
    fid = fidelity_sample(cfg, run_cfg)
    with task(f"reference (Keras) on {len(fid.images)} fidelity images"):
        keras_probs = keras_predict(model, fid.images)
    calib: ImageSample | None = None
    warnings: list[str] = []
    if any(get_preset(m).calibration for m in cfg.modes):
        splits = ("train", "all") if cfg.calibration is not None else ("train",)
        calib = sample_images(_pick_dataset(cfg, run_cfg, "calibration"), classes, int(run_cfg.image_size),
                              run_cfg.get("resize_mode", "nearest"), n=cfg.calibration_size, seed=cfg.seed,
                              splits=splits, purpose="calibration")
        if calib.missing:
            warnings.append(f"calibration data has no image of: {', '.join(calib.missing)}")
    if cfg.io == "int8":
        warnings.append("--io int8: MediaPipe Tasks and the other standard clients take uint8 or float32 input "
                        "only; keep the default (uint8) for files they must open")
    config_hash = provenance.hash_json(cfg.as_dict())
    versions = provenance.versions()
    variants: dict[str, Any] = {}
    summary: list[dict[str, Any]] = []
    failed: list[str] = []
    doc: dict[str, Any] = {}

    class _NothingPassed(Exception):
        pass

    try:
        with staged_dir(cfg.out, cfg.force, inputs) as tmp:
            ctx = _Context(cfg, run, run_cfg, model, tmp)
            ctx.fid, ctx.keras_probs, ctx.calib = fid, keras_probs, calib
            for mode in cfg.modes:
                preset = get_preset(mode)
                path = tmp / f"model.{mode}.tflite"
                try:
                    made = _make(ctx, mode)
                    min_agreement = cfg.min_agreement if mode == "int8" else None
                    tolerance = preset.tolerance.as_dict()
                    tolerance["min_top1_agreement"] = max(tolerance["min_top1_agreement"], min_agreement or 0.0)
                    planned = {"tolerance": tolerance, "images": len(fid.images),
                               "results": "model.json beside this file (measured on the file as written; "
                                          "with its SHA-256)"}

                    full: dict[str, Any] = {}

                    def make_meta(io_pair, mode=mode, made=made, planned=planned, full=full):
                        full.update(build_metadata(run_config=run_cfg, run_dir=str(run), quantization=mode,
                                                   io=io_pair, verification=planned, config_hash=config_hash,
                                                   versions=versions, extra=made.extra))
                        # the file travels (apps, phones): it names the run and datasets, it does not locate
                        # them; model.json beside it keeps the full paths for this machine
                        return provenance.without_host_paths(full)

                    final, embedded = embed_built_metadata(made.data, make_meta)
                    atomic_write_bytes(path, final)
                    del final
                    with task(f"verifying model.{mode}.tflite on {len(fid.images)} images"):
                        result = verify_file(path, preset, made.io, made.reference, fid.images, classes,
                                             labels=fid.labels, watch=ctx.watch, float_layers=made.float_layers,
                                             min_agreement=min_agreement, expected_metadata=embedded)
                    result.pop("probs")
                except (ConversionError, DataError, ModelError) as exc:
                    path.unlink(missing_ok=True)
                    failed.append(mode)
                    summary.append({"mode": mode, "status": "error", "failures": [str(exc)]})
                    warnings.append(f"{mode}: {exc}")
                    continue
                record = {**full, "file": path.name, "sha256": result["sha256"], "size_bytes": result["size_bytes"],
                          "verification": result}
                row = {"mode": mode, "top1_agreement": result["top1_agreement"], "n": result["n"],
                       "watch_flips": {k: f"{v['flipped']}/{v['n']}" for k, v in result["watch"].items()},
                       "mean_abs_diff": result["mean_abs_diff"], "kl_mean": result["kl_mean"],
                       "size_bytes": result["size_bytes"], "failures": result["failures"]}
                if result["passed"]:
                    variants[mode] = record
                    row["status"] = "passed"
                else:
                    failed.append(mode)
                    msg = f"{mode}: verification failed: {'; '.join(result['failures'])}"
                    if mode == "int8" and cfg.min_agreement is None:
                        msg += " (try --min-agreement 0.99 to search int8 recipes, or --quantize qat)"
                    warnings.append(msg)
                    if cfg.keep_failed:
                        variants[mode] = record
                        row["status"] = "failed (kept)"
                    else:
                        path.unlink()
                        row["status"] = "failed (left out)"
                summary.append(row)
            (tmp / "candidate.tflite").unlink(missing_ok=True)
            doc = {"kind": "convert", "format_version": FORMAT_VERSION, "run": str(run), "config": cfg.as_dict(),
                   "config_hash": config_hash, "verification_data": fid.summary(), "warnings": warnings,
                   "requested": list(cfg.modes), "failed": failed, "summary": summary,
                   "variants": variants, "versions": versions}
            if not variants:
                raise _NothingPassed
            atomic_write_text(tmp / "labels.txt", "".join(f"{c}\n" for c in classes))
            write_json(tmp / "model.json", doc)
    except _NothingPassed:
        doc["out"] = None
        return doc
    doc["out"] = str(cfg.out)
    return doc


def _make(ctx: _Context, mode: str) -> _Made:
    """Convert one mode (int8: with the recipe search or selective quantisation when asked)."""
    from . import tflite as tfl

    cfg = ctx.cfg
    preset = get_preset(mode)
    calib = ctx.calib
    io = resolve_io(preset, cfg.io)
    extra: dict[str, Any] = {}
    reference = ctx.keras_probs
    with task(f"converting {mode}"):
        if mode == "qat":
            source, extra["qat"] = _qat(cfg, ctx.run_cfg, ctx.model, ctx.classes, ctx.size, ctx.resize)
            reference = keras_predict(source, ctx.fid.images)
            extra["qat"]["agreement_with_run_model"] = round(
                float((reference.argmax(1) == ctx.keras_probs.argmax(1)).mean()), 6)
        else:
            source = ctx.model
        if mode == "int8" and cfg.min_agreement is not None:
            return _search(ctx, preset, io, extra)
        data = tfl.convert(source, preset, io, calib.images if calib is not None else None)
    if calib is not None and preset.calibration:
        extra["calibration"] = calib.summary()
    if mode == "int8":
        extra["recipe"] = {"name": f"per-channel, {len(calib.images)} calibration images", "per_channel": True,
                           "calibration": "default", "calibration_n": len(calib.images), "float_layers": [],
                           "activations": "int8", "io": io}
        return _int8_collapse(ctx, preset, _Made(data, io, reference, extra=extra))
    return _Made(data, io, reference, extra=extra)


def _search(ctx: _Context, preset, io: str, extra: dict[str, Any]) -> _Made:
    from . import search

    cfg = ctx.cfg
    bar = max(preset.tolerance.min_top1_agreement, cfg.min_agreement or 0.0)

    def score(data: bytes) -> dict[str, Any]:
        return ctx.score(data, ctx.keras_probs, preset.tolerance, cfg.min_agreement)

    def candidates(images: np.ndarray) -> list[str]:
        rows = qdebug.layer_report(ctx.model, images)
        qdebug.write_report(rows, ctx.tmp / "debug.int8.csv")
        return [r["tensor_name"] for r in rows]

    from . import tflite as tfl

    result = search.search_int8(ctx.model, preset, ctx.calibration, score, bar, io, candidates,
                                float_model=lambda: tfl.convert(ctx.model, get_preset("fp32")),
                                max_float_layers=search.MAX_FLOAT_LAYERS, n_candidates=search.SEARCH_CANDIDATES)
    pick = result.chosen or result.best
    if pick is None:
        raise ConversionError("int8: no recipe could be converted; see the warnings")
    extra["calibration"] = ctx.calib.summary()
    extra["calibration"]["n"] = pick.recipe.calibration_n
    extra["recipe"] = pick.recipe.as_dict()
    extra["search"] = result.summary(bar)
    if pick.recipe.float_layers:
        extra["float_layers"] = list(pick.recipe.float_layers)
    if (ctx.tmp / "debug.int8.csv").is_file():
        extra["collapse"] = {"report": "debug.int8.csv"}
    if result.chosen is None:
        _log.warning("int8: no recipe reached top-1 agreement %.3f; the best (%s) reached %.4f",
                     bar, pick.recipe.name, pick.agreement)
    return _Made(pick.data, pick.recipe.io, ctx.keras_probs,
                 float_layers=bool(pick.recipe.float_layers), extra=extra)


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


def _int8_collapse(ctx: _Context, preset, made: _Made) -> _Made:
    """Per-layer report when int8 collapses (or float layers are asked for), then selective quantisation."""
    from . import tflite as tfl

    cfg = ctx.cfg
    if not cfg.layer_report and cfg.float_layers is None:
        return made  # no per-layer diagnosis asked for (demo --quick): the verification still judges the file
    full = ctx.score(made.data, made.reference, preset.tolerance)
    drop = full.get("accuracy_drop", 0.0)
    collapsed = (not full["passed"]) or drop > cfg.collapse_threshold
    if not collapsed and cfg.float_layers is None:
        return made
    if collapsed:
        _log.warning("int8 changed %.1f%% of top-1 decisions (accuracy %+.1f pp) on %d images; writing a "
                     "per-layer report", 100 * (1 - full["top1_agreement"]), -100 * drop, full["n"])
    with task("per-layer quantisation error (debugger)"):
        rows = qdebug.layer_report(ctx.model, ctx.calib.images)
    qdebug.write_report(rows, ctx.tmp / "debug.int8.csv")
    made.extra["collapse"] = {"detected": collapsed, "top1_agreement": full["top1_agreement"],
                              "accuracy_drop": drop, "threshold": cfg.collapse_threshold, "report": "debug.int8.csv",
                              "worst_layers": [{"tensor": r["tensor_name"], "rmse/scale": round(r["rmse/scale"], 4)}
                                               for r in rows[:5]]}
    if cfg.float_layers is None:
        return made
    chosen = qdebug.choose_float_layers(rows, cfg.float_layers)
    image = np.asarray(ctx.fid.images[0], dtype=np.float32)
    before = {"size_bytes": len(made.data), "latency_ms": _latency_ms(ctx.tmp / "full.tflite", image,
                                                                      content=made.data),
              "top1_agreement": full["top1_agreement"], "accuracy_drop": drop, "integer_op_share": 1.0}
    with task(f"selective int8 ({len(chosen)} float layer(s))"):
        sel = tfl.convert_selective(ctx.model, preset, ctx.calib.images, chosen)
    sel_score = ctx.score(sel, made.reference, preset.tolerance)
    from edge_derm.runtime import inspect_tflite

    after = {"size_bytes": len(sel), "latency_ms": _latency_ms(ctx.tmp / "selective.tflite", image, content=sel),
             "top1_agreement": sel_score["top1_agreement"], "accuracy_drop": sel_score.get("accuracy_drop"),
             "integer_op_share": round(inspect_tflite(sel).integer_op_share(), 6)}
    made.extra["float_layers"] = chosen
    made.extra["selective"] = {"full_int8": before, "selective": after}
    made.extra["recipe"] = {**made.extra["recipe"], "name": f"selective, {len(chosen)} float layer(s) "
                            f"(--float-layers {cfg.float_layers})", "float_layers": chosen, "io": "float32"}
    return _Made(sel, "float32", made.reference, float_layers=True, extra=made.extra)
