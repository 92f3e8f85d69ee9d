"""Measure: what each quantisation mode costs in accuracy and buys in size (issue 4, "Measured").

    python benchmarks/scripts/measure_quantization.py --out quant-out [--quick]
        [--shared ../shared] [--image-size 224] [--epochs-per-block 3] [--batch-multiple N]
        [--lr-head X] [--lr-backbone X] [--qat-epochs 2] [--skip-efficientnet]
        [--effnet-image-size N] [--effnet-unfreeze full] [--effnet-epochs N] [--size-study] [--force]

1. ``edge-derm data build ham10000 ../shared/data/ham10000-dev`` (dermai13, lesion-grouped 80:20 split).
2. ``edge-derm train``: MobileNetV2 alpha 0.35, ImageNet weights from ``../shared/weights``
   (the 224 px file, which loads at any input size), the paper's block-wise schedule.
3. ``edge-derm convert`` with fp32, fp16, dynamic, int8 and qat (``--keep-failed``: a mode that
   fails verification is still measured, and says so), and int8 again with ``--float-layers
   auto`` (selective quantisation).
4. QAT's control: the run's model fine-tuned with QAT's exact schedule in float
   (:func:`edge_derm.converters.qat.finetune` with ``quantize=False``), so that what QAT's extra
   training changes is not credited to (or blamed on) quantisation.
5. Every model (Keras, the control and each .tflite through :class:`edge_derm.runtime.TFLiteModel`)
   on the whole test split with the one evaluator (``compute_metrics``): accuracy, macro F1,
   melanoma (MM) and BCC sensitivity, deltas in percentage points against Keras (qat also
   against its control); file sizes. Goals: int8 within 1 pp macro F1 of Keras, QAT within
   0.5 pp, int8 size <= 0.3 x fp32.
6. EfficientNet-B3 (weights none, trained with ``--unfreeze full``; ImageNet where
   ``--effnet-weights imagenet`` and the user has them): the same, to show whether PTQ
   collapses and what QAT or selective quantisation recovers.
7. ``--size-study``: int8/fp32 file size for MobileNetV2 alpha 0.35/0.5/1.0, EfficientNet-B3 and
   ResNet50 (random weights), with the per-channel quantisation parameters counted.

Every stage is reused when its output exists in ``--out`` (``--force`` redoes all). Writes
``quantization.json`` and ``quantization.md`` into ``--out`` and prints the tables. ``--quick``
(small images, a few steps) only checks that the whole chain runs: its figures are not results.
Runs from any folder (the default ``--shared`` is ``../shared`` beside the repository root); results: ``benchmarks/results/quantization.md``.
A script, not library code: it prints.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

import edge_derm  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow)
from measure_common import SHARED, SHARED_HELP, edge_derm_cli
from edge_derm.converters.presets import MODES, WATCH_CLASSES  # every mode and the watched classes, from the one table
from edge_derm.provenance import machine
from edge_derm.training.evaluate import read_run

FOCUS = WATCH_CLASSES  # melanoma and BCC: the classes a flip makes dangerous
#: ``convert --keep-failed`` exits 1 when a mode misses its fidelity bar but writes it: it is measured anyway.
KEPT = (0, 1)


def test_split(run: Path) -> tuple[np.ndarray, np.ndarray, list[str], dict | None]:
    """The run's whole test split, preprocessed as at evaluation: images, labels, classes, triage."""
    from edge_derm.data.images import load_for_model
    from edge_derm.data.manifest import Manifest
    from edge_derm.data.taxonomy import load_taxonomy

    cfg = read_run(run)
    classes, size, resize = cfg.classes, int(cfg.image_size), cfg.get("resize_mode", "nearest")
    manifest = Manifest.load(cfg.data[-1]["dir"])
    records = [r for r in manifest.subset("test") if r.label in classes]
    y = np.array([classes.index(r.label) for r in records])
    images = np.stack([load_for_model(manifest.resolve(r.path), size, resize) for r in records])
    try:
        triage = load_taxonomy(cfg.get("taxonomy", "native")).triage
    except Exception:  # noqa: BLE001 - triage is optional here
        triage = None
    return images, y, classes, triage


def float_control(run: Path, epochs: int, steps: int | None, learning_rate: float = 1e-5, seed: int = 0):
    """The run's model after QAT's own fine-tuning schedule in float (no fake-quant): QAT's control.

    Same data (the run's training split, class-balanced and augmented), batch, epochs, steps,
    learning rate, seed and frozen BatchNorm as ``edge-derm convert --quantize qat``; only quantisation differs.
    """
    from edge_derm.converters.convert import run_batch_size
    from edge_derm.converters.qat import finetune
    from edge_derm.data.manifest import Manifest
    from edge_derm.models import load_model

    cfg = read_run(run)
    manifest = Manifest.load(cfg.data[-1]["dir"])
    paths, labels = manifest.arrays("train")
    model = load_model(run / "model.keras")
    control, summary = finetune(model, paths, labels, len(cfg.classes), int(cfg.image_size),
                                cfg.get("resize_mode", "nearest"), epochs=epochs, learning_rate=learning_rate,
                                seed=seed, steps_per_epoch=steps, batch_size=run_batch_size(cfg), quantize=False)
    return control, summary


def evaluate(run: Path, convert_dir: Path, modes: list[str], extra: dict[str, Path] | None = None,
             controls: dict | None = None, relative: dict[str, tuple[str, str]] | None = None) -> list[dict]:
    """Keras and each .tflite on the run's test split: one row per model.

    ``controls``: further in-memory Keras models (name -> model), rows after "keras".
    ``relative``: row name -> (reference row name, key); that row also gets ``vs_<key>_*`` deltas
    (e.g. qat against the float control with the same fine-tuning).
    """
    from edge_derm.evaluation.metrics import compute_metrics
    from edge_derm.models import load_model
    from edge_derm.runtime import TFLiteModel

    images, y, classes, triage = test_split(run)
    preds: dict[str, np.ndarray] = {}

    def row(name: str, probs: np.ndarray, size_bytes: int | None, status: str) -> dict:
        preds[name] = probs.argmax(1)
        m = compute_metrics(y, probs, classes, triage=triage)
        out = {"model": name, "status": status, "n": m["n"], "accuracy": m["accuracy"], "macro_f1": m["macro_f1"],
               "weighted_f1": m["weighted_f1"], "size_bytes": size_bytes}
        for c in FOCUS:
            out[f"sensitivity_{c}"] = m["per_class"].get(c, {}).get("sensitivity")
        return out

    keras_model = load_model(run / "model.keras")
    t0 = time.perf_counter()
    rows = [row("keras", keras_model.predict(images, batch_size=32, verbose=0),
                (run / "model.keras").stat().st_size, "reference")]
    print(f"  keras evaluated on {len(y)} test images ({time.perf_counter() - t0:.0f} s)", flush=True)
    for name, model in (controls or {}).items():
        rows.append(row(name, model.predict(images, batch_size=32, verbose=0), None, "control"))
    files = {m: convert_dir / f"model.{m}.tflite" for m in modes}
    files.update(extra or {})
    for name, path in files.items():
        if not path.is_file():
            rows.append({"model": name, "status": "missing"})
            continue
        model = TFLiteModel(path)
        # The verification results are in the model.json beside the file (they describe the written file).
        doc_path = path.parent / "model.json"
        doc = json.loads(doc_path.read_text()) if doc_path.is_file() else {}
        record = next((v for q, v in (doc.get("variants") or {}).items()
                       if v.get("file", f"model.{q}.tflite") == path.name), model.metadata)
        passed = (record.get("verification") or {}).get("passed")
        rows.append(row(name, model.predict(images), path.stat().st_size,
                        "verified" if passed else "FAILED verification"))
    add_deltas(rows, relative)
    for r in rows[1:]:
        if r["model"] in preds:
            r.update(paired(y, preds["keras"], preds[r["model"]], len(classes)))
    for name, (ref_name, key) in (relative or {}).items():
        if name in preds and ref_name in preds:
            r = next(x for x in rows if x["model"] == name)
            r.update({f"vs_{key}_{k}": v for k, v in paired(y, preds[ref_name], preds[name], len(classes)).items()})
    return rows


def paired(y: np.ndarray, ref: np.ndarray, pred: np.ndarray, n_classes: int, n_boot: int = 2000,
           seed: int = 0) -> dict:
    """How far apart two models' predictions on the same images are, and how sure the Δ macro F1 is.

    ``changed``: images whose top-1 differs; ``gained``/``lost``: of those, now right / now wrong.
    ``delta_macro_f1_ci95_pp``: a paired percentile bootstrap (the same resampled images for
    both models) of macro F1 (pred) - macro F1 (ref), in percentage points. On a test split with
    classes of 5-7 images one flip moves macro F1 by 1-3 pp, so this interval says which
    differences the split can tell apart.
    """
    from edge_derm.evaluation.metrics import paired_macro_f1_delta

    lo, hi = paired_macro_f1_delta(y, ref, pred, n_classes, n_boot=n_boot, seed=seed)
    changed = ref != pred
    return {"changed": int(changed.sum()), "gained": int((changed & (pred == y)).sum()),
            "lost": int((changed & (ref == y)).sum()),
            "delta_macro_f1_ci95_pp": [round(100 * lo, 2), round(100 * hi, 2)]}


def add_deltas(rows: list[dict], relative: dict[str, tuple[str, str]] | None = None) -> None:
    """``delta_<metric>_pp`` against the first row (Keras); ``vs_<key>_<metric>_pp`` per ``relative``."""
    by = {r["model"]: r for r in rows}
    keys = ("accuracy", "macro_f1", *[f"sensitivity_{c}" for c in FOCUS])

    def diff(r: dict, ref: dict, prefix: str) -> None:
        for k in keys:
            if r.get(k) is not None and ref.get(k) is not None:
                r[f"{prefix}{k}_pp"] = round(100 * (r[k] - ref[k]), 2)

    for r in rows[1:]:
        if "macro_f1" in r:
            diff(r, rows[0], "delta_")
    for name, (ref_name, key) in (relative or {}).items():
        if name in by and ref_name in by and "macro_f1" in by[name] and "macro_f1" in by[ref_name]:
            diff(by[name], by[ref_name], f"vs_{key}_")


SELECTIVE = "int8 + float layers"
#: EfficientNet's swish (x * sigmoid(x)) and squeeze-excite gates, kept in float in a second selective row.
EFFNET_FLOAT_OPS = "op:LOGISTIC,op:MUL"
CONTROL = "keras + QAT schedule (float)"


def goals(rows: list[dict]) -> dict:
    """The issue's goals, each a measured figure and whether it is met.

    int8 within 1 pp macro F1 of Keras (all-integer, and with ``--float-layers auto``), QAT within
    0.5 pp (of Keras, and of the float control that had QAT's extra fine-tuning), int8 size <= 0.3 x fp32.
    "Within" means no worse by more than the margin; a gain meets it.
    """
    by = {r["model"]: r for r in rows}
    out: dict = {}
    for name, key in (("int8", "int8"), (SELECTIVE, "int8_float_layers")):
        if "delta_macro_f1_pp" in by.get(name, {}):
            out[f"{key}_delta_macro_f1_pp"] = by[name]["delta_macro_f1_pp"]
            out[f"{key}_within_1pp_macro_f1"] = by[name]["delta_macro_f1_pp"] >= -1.0
    if "delta_macro_f1_pp" in by.get("qat", {}):
        out["qat_delta_macro_f1_pp"] = by["qat"]["delta_macro_f1_pp"]
        out["qat_within_0.5pp_macro_f1"] = by["qat"]["delta_macro_f1_pp"] >= -0.5
    if "vs_control_macro_f1_pp" in by.get("qat", {}):
        out["qat_vs_control_macro_f1_pp"] = by["qat"]["vs_control_macro_f1_pp"]
        out["qat_within_0.5pp_of_control"] = by["qat"]["vs_control_macro_f1_pp"] >= -0.5
    if by.get("int8", {}).get("size_bytes") and by.get("fp32", {}).get("size_bytes"):
        ratio = by["int8"]["size_bytes"] / by["fp32"]["size_bytes"]
        out["int8_size_ratio"] = round(ratio, 3)
        out["int8_size_le_0.3x_fp32"] = ratio <= 0.3
    return out


def size_breakdown(data: bytes) -> dict:
    """Where a .tflite's bytes go: weight buffers by dtype and per-channel quantisation parameters.

    A per-channel quantised tensor stores, per output channel, a float32 scale and an int64 zero
    point (12 bytes): for thin networks (MobileNetV2 alpha 0.35: a 3x3 depthwise channel has 9
    one-byte weights) that is a large share of the int8 file.
    """
    from edge_derm.runtime import inspect_tflite

    info = inspect_tflite(data)
    itemsize = {"float32": 4, "float16": 2, "int8": 1, "uint8": 1, "int16": 2, "int32": 4, "int64": 8}
    produced = {t for op in info.ops for t in op.outputs} | set(info.inputs)
    by_dtype: dict[str, int] = {}
    channels = 0
    for t in info.tensors:
        if t.index not in produced and t.dtype in itemsize and all(d > 0 for d in t.shape):
            by_dtype[t.dtype] = by_dtype.get(t.dtype, 0) + int(np.prod(t.shape)) * itemsize[t.dtype]
        if len(t.scale) > 1:
            channels += len(t.scale)
    return {"size_bytes": len(data), "constant_bytes_by_dtype": by_dtype, "per_channel_scales": channels,
            "per_channel_param_bytes": 12 * channels}


def table(title: str, rows: list[dict]) -> str:
    def pct(v):
        return "" if v is None else f"{100 * v:.1f}"

    def pp(v):
        return "" if v is None else f"{v:+.1f}"

    lines = [f"### {title}", "",
             "| model | status | size KiB | accuracy % | macro F1 % | Δ macro F1 pp (95 % CI) | changed (+/-) "
             "| MM sens. % | Δ MM pp | BCC sens. % | Δ BCC pp |", "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        if "macro_f1" not in r:
            lines.append(f"| {r['model']} | {r['status']} | | | | | | | | | |")
            continue
        ci = r.get("delta_macro_f1_ci95_pp")
        delta = pp(r.get("delta_macro_f1_pp")) + (f" ({ci[0]:+.1f} to {ci[1]:+.1f})" if ci else "")
        changed = f"{r['changed']} (+{r['gained']}/-{r['lost']})" if "changed" in r else ""
        size = "" if r.get("size_bytes") is None else f"{r['size_bytes'] / 1024:.0f}"
        lines.append(f"| {r['model']} | {r['status']} | {size} | {pct(r['accuracy'])} | "
                     f"{pct(r['macro_f1'])} | {delta} | {changed} | {pct(r.get('sensitivity_MM'))} | "
                     f"{pp(r.get('delta_sensitivity_MM_pp'))} | {pct(r.get('sensitivity_BCC'))} | "
                     f"{pp(r.get('delta_sensitivity_BCC_pp'))} |")
    return "\n".join(lines) + "\n"


SIZE_STUDY = (("mobilenet_v2", 0.35), ("mobilenet_v2", 0.5), ("mobilenet_v2", 1.0), ("efficientnet_b3", None),
              ("resnet50", None))


def size_study(image_size: int = 224, n_classes: int = 7) -> list[dict]:
    """int8 / fp32 file size across backbone widths (random weights: size does not depend on training).

    Calibration is 8 random images: enough to give every tensor a range, and the ranges do not
    change the file's size.
    """
    from edge_derm.converters import tflite as tfl
    from edge_derm.converters.presets import get_preset
    from edge_derm.models import build_classifier

    calib = np.random.default_rng(0).uniform(0, 255, (8, image_size, image_size, 3)).astype(np.float32)
    rows = []
    for backbone, alpha in SIZE_STUDY:
        t0 = time.perf_counter()
        model = build_classifier(backbone, n_classes, image_size=image_size, alpha=alpha, weights="none")
        fp32 = tfl.convert(model, get_preset("fp32"))
        int8 = tfl.convert(model, get_preset("int8"), "uint8", calib)
        b = size_breakdown(int8)
        rows.append({"backbone": backbone, "alpha": alpha, "params": int(model.count_params()),
                     "fp32_bytes": len(fp32), "int8_bytes": len(int8), "ratio": round(len(int8) / len(fp32), 3),
                     "per_channel_scales": b["per_channel_scales"],
                     "per_channel_param_bytes": b["per_channel_param_bytes"],
                     "int8_without_per_channel_params_ratio": round(
                         (len(int8) - b["per_channel_param_bytes"]) / len(fp32), 3)})
        print(f"  size study {backbone} {alpha or ''}: int8 {rows[-1]['ratio']} x fp32 "
              f"({time.perf_counter() - t0:.0f} s)", flush=True)
    return rows


def size_table(rows: list[dict]) -> str:
    lines = ["### int8 size against fp32 by backbone width (random weights, 224 px, 7 classes)", "",
             "| backbone | parameters | fp32 KiB | int8 KiB | int8 / fp32 | per-channel scales | "
             "their bytes KiB | int8 / fp32 without them |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        name = r["backbone"] + (f" alpha {r['alpha']}" if r["alpha"] else "")
        lines.append(f"| {name} | {r['params']:,} | {r['fp32_bytes'] / 1024:.0f} | {r['int8_bytes'] / 1024:.0f} | "
                     f"{r['ratio']:.3f} | {r['per_channel_scales']:,} | {r['per_channel_param_bytes'] / 1024:.0f} | "
                     f"{r['int8_without_per_channel_params_ratio']:.3f} |")
    return "\n".join(lines) + "\n"


def measure_run(run: Path, title: str, a: argparse.Namespace, convert_common: list[str],
                float_ops: str | None = None) -> tuple[dict, str]:
    """Convert ``run`` in every mode (+ selective int8), train QAT's float control, evaluate all.

    ``float_ops``: a second selective int8 with ``--float-layers <float_ops>`` (op types, e.g.
    ``op:LOGISTIC,op:MUL``), as its own row.
    """
    from edge_derm.models import load_model

    conv, sel = run / "convert", run / "convert-selective"
    extra = {SELECTIVE: sel / "model.int8.tflite"}
    if float_ops:
        sel_ops = run / "convert-selective-ops"
        extra[f"int8 + float {float_ops}"] = sel_ops / "model.int8.tflite"
        if a.force or not (sel_ops / "model.json").is_file():
            edge_derm_cli(["convert", str(run), "--quantize", "int8", "--float-layers", float_ops, "--out",
                           str(sel_ops), *convert_common], ok_codes=KEPT)
    if a.force or not (conv / "model.json").is_file():
        edge_derm_cli(["convert", str(run), *sum((["--quantize", m] for m in MODES), []), "--out", str(conv),
                       *convert_common], ok_codes=KEPT)
    if a.force or not (sel / "model.json").is_file():
        edge_derm_cli(["convert", str(run), "--quantize", "int8", "--float-layers", "auto", "--out", str(sel),
                       *convert_common], ok_codes=KEPT)
    control_path = run / "qat-control.keras"
    if a.force or not control_path.is_file():
        t0 = time.perf_counter()
        control, summary = float_control(run, a.qat_epochs, a.qat_steps)
        control.save(control_path)
        (run / "qat-control.json").write_text(json.dumps(summary, indent=2) + "\n")
        print(f"  QAT's float control trained ({time.perf_counter() - t0:.0f} s)", flush=True)
    control = load_model(control_path)
    rows = evaluate(run, conv, list(MODES), extra, controls={CONTROL: control},
                    relative={"qat": (CONTROL, "control")})
    sel_meta = json.loads((sel / "model.json").read_text())["variants"]["int8"]
    full_meta = json.loads((conv / "model.json").read_text())["variants"]
    g = goals(rows)
    result = {"rows": rows, "goals": g, "float_layers": sel_meta.get("float_layers"),
              "selective": sel_meta.get("selective"), "collapse": full_meta["int8"].get("collapse"),
              "verification": {m: v.get("verification") for m, v in full_meta.items()},
              "int8_size_breakdown": size_breakdown((conv / "model.int8.tflite").read_bytes())}
    md = table(title, rows)
    qat = next((r for r in rows if r["model"] == "qat"), {})
    if "vs_control_macro_f1_pp" in qat:
        md += (f"\nqat against its float control (the same fine-tuning without fake-quant): "
               f"{qat['vs_control_macro_f1_pp']:+.1f} pp macro F1 (95 % CI {qat['vs_control_delta_macro_f1_ci95_pp'][0]:+.1f} "
               f"to {qat['vs_control_delta_macro_f1_ci95_pp'][1]:+.1f}; {qat['vs_control_changed']} images changed), MM {qat.get('vs_control_sensitivity_MM_pp', 0):+.1f} pp, "
               f"BCC {qat.get('vs_control_sensitivity_BCC_pp', 0):+.1f} pp.\n")
    if sel_meta.get("float_layers"):
        tr = sel_meta.get("selective") or {}
        md += (f"\nint8 + float layers keeps {len(sel_meta['float_layers'])} tensor(s) in float "
               f"({', '.join(sel_meta['float_layers'])}); on the verification batch: " + json.dumps(tr) + "\n")
    if float_ops:
        ops_meta = json.loads((run / "convert-selective-ops" / "model.json").read_text())["variants"]["int8"]
        result["selective_ops"] = {"float_layers": ops_meta.get("float_layers"), "selective": ops_meta.get("selective")}
        md += (f"\nint8 + float {float_ops} (every op of those types in float); on the verification batch: "
               + json.dumps(ops_meta.get("selective")) + "\n")
    md += "\nGoals: " + json.dumps(g) + "\n"
    return result, md


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--shared", type=Path, default=SHARED, help=SHARED_HELP)
    p.add_argument("--quick", action="store_true", help="tiny sizes: checks the chain runs, figures are not results")
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--epochs-per-block", type=int, default=3)
    p.add_argument("--steps-per-epoch", type=int, default=None)
    p.add_argument("--blocks", default=None, help="backbone blocks to unfreeze (train's --blocks)")
    p.add_argument("--batch-multiple", type=int, default=None, help="train's --batch-multiple (images per class)")
    p.add_argument("--lr-head", type=float, default=None, help="MobileNetV2 train's --lr-head")
    p.add_argument("--lr-backbone", type=float, default=None, help="MobileNetV2 train's --lr-backbone")
    p.add_argument("--qat-epochs", type=int, default=2)
    p.add_argument("--qat-steps", type=int, default=None)
    p.add_argument("--calibration-size", type=int, default=256)
    p.add_argument("--effnet-image-size", type=int, default=None, help="default: --image-size")
    p.add_argument("--effnet-weights", default="none")
    p.add_argument("--effnet-unfreeze", choices=("blockwise", "full"), default=None,
                   help="default: full with --effnet-weights none (block-wise cannot learn from random "
                        "weights), else blockwise")
    p.add_argument("--effnet-epochs", type=int, default=None,
                   help="EfficientNet epochs per step (default --epochs-per-block)")
    p.add_argument("--skip-efficientnet", action="store_true")
    p.add_argument("--size-study", action="store_true",
                   help="also measure int8/fp32 size for MobileNetV2 alpha 0.35/0.5/1.0, EfficientNet-B3, ResNet50")
    p.add_argument("--force", action="store_true", help="redo every stage (default: reuse finished ones)")
    a = p.parse_args(argv)
    if a.quick:
        a.image_size, a.epochs_per_block, a.steps_per_epoch = 64, 1, a.steps_per_epoch or 3
        a.qat_epochs, a.qat_steps, a.calibration_size, a.blocks = 1, a.qat_steps or 3, 32, a.blocks or "1"
    return a


def common_flags(a: argparse.Namespace, ds: Path) -> tuple[list[str], list[str]]:
    """The flags every ``edge-derm train`` and every ``edge-derm convert`` of the measurement gets."""
    train_common = ["--data", str(ds), "--force"]
    for flag, value in (("--steps-per-epoch", a.steps_per_epoch), ("--batch-multiple", a.batch_multiple)):
        if value:
            train_common += [flag, str(value)]
    convert_common = ["--calibration-size", str(a.calibration_size), "--qat-epochs", str(a.qat_epochs),
                      "--keep-failed", "--force"]
    if a.qat_steps:
        convert_common += ["--qat-steps", str(a.qat_steps)]
    return train_common, convert_common


def measure_mobilenet(a: argparse.Namespace, out: Path, train_common: list[str],
                      convert_common: list[str]) -> tuple[dict, str]:
    """MobileNetV2 alpha 0.35 with ImageNet weights from ``--shared``/weights (Keras' own cache layout; the
    224 px file loads at any input size: convolution weights do not depend on it), trained once, measured."""
    mnv2 = out / "runs" / "mobilenet_v2_a035"
    keras_home = a.shared / "weights" / "keras"
    weights_file = keras_home / "models" / "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_224_no_top.h5"
    weights = str(weights_file) if weights_file.is_file() else "imagenet"
    mnv2_lr = [x for flag, v in (("--lr-head", a.lr_head), ("--lr-backbone", a.lr_backbone)) if v
               for x in (flag, str(v))]
    if a.force or not (mnv2 / "model.keras").is_file():
        edge_derm_cli(["train", "--out", str(mnv2), "--recipe", "paper", "--backbone", "mobilenet_v2", "--alpha", "0.35",
                       "--weights", weights, "--image-size", str(a.image_size),
                       "--epochs-per-block", str(a.epochs_per_block), *(["--blocks", a.blocks] if a.blocks else []),
                       *mnv2_lr, *train_common], env={"KERAS_HOME": str(keras_home)})
    return measure_run(mnv2, f"MobileNetV2 alpha 0.35 (ImageNet), {a.image_size} px, HAM10000-dev test split", a,
                       convert_common)


def measure_efficientnet(a: argparse.Namespace, out: Path, train_common: list[str],
                         convert_common: list[str]) -> tuple[dict, str]:
    """EfficientNet-B3 (``--effnet-*``), trained once, measured with a second selective row (swish/SE ops float)."""
    eff = out / "runs" / "efficientnet_b3"
    size = a.effnet_image_size or a.image_size
    unfreeze = a.effnet_unfreeze or ("full" if a.effnet_weights == "none" else "blockwise")
    if a.force or not (eff / "model.keras").is_file():
        edge_derm_cli(["train", "--out", str(eff), "--recipe", "paper", "--backbone", "efficientnet_b3",
                       "--weights", a.effnet_weights,
                       "--image-size", str(size), "--unfreeze", unfreeze,
                       "--epochs-per-block", str(a.effnet_epochs or a.epochs_per_block),
                       *(["--blocks", a.blocks] if a.blocks and unfreeze == "blockwise" else []),
                       *train_common], env={"KERAS_HOME": str(a.shared / "weights" / "keras")})
    return measure_run(eff, f"EfficientNet-B3 (weights {a.effnet_weights}, {unfreeze}), {size} px, HAM10000-dev test split",
                       a, convert_common, float_ops=EFFNET_FLOAT_OPS)


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    data_src = a.shared / "data" / "ham10000-dev"
    if not data_src.is_dir():
        raise SystemExit(f"{data_src} not found; pass --shared DIR (the folder holding data/ and weights/)")
    out = a.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    ds = out / "data" / "ham10000-dev"
    if a.force or not (ds / "dataset.json").is_file():
        edge_derm_cli(["data", "build", "ham10000", str(data_src), "--out", str(ds), "--force"])
    train_common, convert_common = common_flags(a, ds)
    results: dict = {"kind": "measure_quantization", "machine": machine(), "quick": a.quick,
                     "args": {k: str(v) for k, v in vars(a).items()}, "models": {}}
    results["models"]["mobilenet_v2_a035"], md = measure_mobilenet(a, out, train_common, convert_common)
    if not a.skip_efficientnet:
        results["models"]["efficientnet_b3"], emd = measure_efficientnet(a, out, train_common, convert_common)
        md += "\n" + emd
    if a.size_study:
        study = out / "size-study.json"
        if a.force or not study.is_file():
            study.write_text(json.dumps(size_study(64 if a.quick else 224), indent=2) + "\n")
        results["size_study"] = json.loads(study.read_text())
        md += "\n" + size_table(results["size_study"])
    results["seconds"] = round(time.perf_counter() - t_start, 1)
    md = (f"## Quantisation ({'QUICK RUN: not results' if a.quick else 'measured'}; "
          f"{results['machine']['cpu']}, {results['machine']['cores_available']} cores)\n\n") + md
    (out / "quantization.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    (out / "quantization.md").write_text(md)
    print(md)
    print(f"wrote {out / 'quantization.json'} and {out / 'quantization.md'} in {results['seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
