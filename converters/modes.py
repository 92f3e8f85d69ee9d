"""Converting one mode: the preset's conversion, QAT fine-tuning first when the preset trains, the int8
recipe search (``--min-agreement``), and the collapse check with selective quantisation (``--float-layers``).

Each returns a :class:`_Made` (bytes not yet embedded, written or verified); :mod:`.convert` does the rest.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge_derm.artefacts import RunConfig
from edge_derm.errors import ConversionError
from edge_derm.progress import task

from . import debug as qdebug
from .calibration import ImageSample, sample_images
from .config import ConvertConfig
from .inputs import keras_predict, pick_dataset, run_batch_size
from .presets import get_preset, resolve_io
from .verify import fidelity, fidelity_failures

_log = logging.getLogger(__name__)


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

    def __init__(self, cfg: ConvertConfig, run: Path, run_cfg: RunConfig, model, tmp: Path):
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
        sample = sample_images(pick_dataset(self.cfg, self.run_cfg, "calibration"), self.classes, self.size,
                               self.resize, n=want, seed=self.cfg.seed, splits=(self.calib.split,),
                               purpose="calibration")
        return sample.images, len(sample.images)

    def _train_count(self) -> int:
        from edge_derm.data.manifest import Manifest

        m = Manifest.load(pick_dataset(self.cfg, self.run_cfg, "calibration"))
        return len(m.records) if self.calib.split == "all" else len(m.subset(self.calib.split))


def _latency_ms(path: Path, image: np.ndarray, runs: int = 10, content: bytes | None = None) -> float:
    """Median latency (ms) of one invoke on ``image`` (one warm-up call), with the harness's timer."""
    from edge_derm.benchmarks.latency import time_calls
    from edge_derm.runtime import TFLiteModel

    model = TFLiteModel(path, content=content, check_hash=False)
    model.set_input(image[None])
    return round(time_calls(model.invoke_raw, 1, runs).median_ms, 3)


def _make(ctx: _Context, mode: str) -> _Made:
    """Convert one mode as its preset says: fine-tuned first when it trains, by recipe search when it has
    recipes and ``--min-agreement`` is given, then the collapse check when the preset has one."""
    from . import tflite as tfl

    cfg = ctx.cfg
    preset = get_preset(mode)
    calib = ctx.calib
    io = resolve_io(preset, cfg.io)
    extra: dict[str, Any] = {}
    reference = ctx.keras_probs
    with task(f"converting {mode}"):
        if preset.training:
            source, extra["qat"] = _qat(cfg, ctx.run_cfg, ctx.model, ctx.classes, ctx.size, ctx.resize)
            reference = keras_predict(source, ctx.fid.images)
            extra["qat"]["agreement_with_run_model"] = round(
                float((reference.argmax(1) == ctx.keras_probs.argmax(1)).mean()), 6)
        else:
            source = ctx.model
        if preset.recipes and cfg.min_agreement is not None:
            return _search(ctx, preset, io, extra)
        data = tfl.convert(source, preset, io, calib.images if calib is not None else None)
    if calib is not None and preset.calibration:
        extra["calibration"] = calib.summary()
    if preset.recipes:
        extra["recipe"] = {"name": f"per-channel, {len(calib.images)} calibration images", "per_channel": True,
                           "calibration": "default", "calibration_n": len(calib.images), "float_layers": [],
                           "activations": "int8", "io": io}
    made = _Made(data, io, reference, extra=extra)
    return _int8_collapse(ctx, preset, made) if preset.collapse_check else made


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


def _qat(cfg: ConvertConfig, run_cfg: RunConfig, model, classes: list[str], size: int, resize_mode: str):
    from edge_derm.data.manifest import Manifest

    from .qat import finetune

    data_dir = pick_dataset(cfg, run_cfg, "QAT")
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
