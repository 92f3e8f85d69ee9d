"""Measure: what each quantisation mode costs in accuracy and buys in size (issue 4, "Measured").

    .venv/bin/python -m edge_derm.benchmarks.measure_quantization --out quant-out [--quick]
        [--shared ../shared] [--image-size 224] [--epochs-per-block 3] [--steps-per-epoch N]
        [--qat-epochs 2] [--skip-efficientnet] [--force]

1. ``edge-derm data build ham10000 ../shared/data/ham10000-dev`` (dermai13, lesion-grouped 80:20 split).
2. ``edge-derm train``: MobileNetV2 alpha 0.35, ImageNet weights from ``../shared/weights``
   (the 224 px file, which loads at any input size), the paper's block-wise schedule.
3. ``edge-derm convert`` with fp32, fp16, dynamic, int8 and qat (``--keep-failed``: a mode that
   fails verification is still measured, and says so).
4. Every model (Keras and each .tflite, through :class:`edge_derm.runtime.TFLiteModel`) on the
   whole test split with the one evaluator (``compute_metrics``): accuracy, macro F1, melanoma
   (MM) and BCC sensitivity, deltas in percentage points against Keras; file sizes.
   Goals: int8 within 1 pp macro F1 of Keras, QAT within 0.5 pp, int8 size <= 0.3 x fp32.
5. EfficientNet-B3 (weights none; ImageNet where ``--effnet-weights imagenet`` and the user has
   them): same, plus int8 with ``--float-layers auto`` (selective), to show whether PTQ
   collapses and what QAT or selective quantisation recovers.

Writes ``quantization.json`` and ``quantization.md`` into ``--out`` and prints the tables.
``--quick`` (small images, a few steps) only checks that the whole chain runs: its figures are
not results. A script, not library code: it prints.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

import edge_derm  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow)

REPO = Path(__file__).resolve().parents[1]
MODES = ("fp32", "fp16", "dynamic", "int8", "qat")
FOCUS = ("MM", "BCC")


from edge_derm.provenance import machine  # noqa: E402


def edge_derm_cli(args: list[str], env: dict | None = None) -> None:
    """Run one ``edge-derm`` command in a fresh process; stop the script if it fails."""
    cmd = [sys.executable, "-c", "from edge_derm.cli import entry; entry()", "--quiet", *args]
    print("$ edge-derm " + " ".join(args), flush=True)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env={**os.environ, **(env or {})}, cwd=REPO)
    if proc.returncode != 0:
        raise SystemExit(f"edge-derm {args[0]} failed (exit {proc.returncode})")
    print(f"  ({time.perf_counter() - t0:.0f} s)", flush=True)


def evaluate(run: Path, convert_dir: Path, modes: list[str], extra: dict[str, Path] | None = None) -> list[dict]:
    """Keras and each .tflite on the run's test split: one row per model."""
    import tf_keras as keras

    from edge_derm.data.images import load_for_model
    from edge_derm.data.manifest import Manifest
    from edge_derm.data.taxonomy import load_taxonomy
    from edge_derm.evaluation.metrics import compute_metrics
    from edge_derm.runtime import TFLiteModel

    cfg = json.loads((run / "config.json").read_text())
    classes, size, resize = cfg["classes"], int(cfg["image_size"]), cfg.get("resize_mode", "nearest")
    manifest = Manifest.load(cfg["data"][-1]["dir"])
    records = [r for r in manifest.subset("test") if r.label in classes]
    y = np.array([classes.index(r.label) for r in records])
    images = np.stack([load_for_model(manifest.resolve(r.path), size, resize) for r in records])
    try:
        triage = load_taxonomy(cfg.get("taxonomy", "native")).triage
    except Exception:  # noqa: BLE001 - triage is optional here
        triage = None

    def row(name: str, probs: np.ndarray, size_bytes: int | None, status: str) -> dict:
        m = compute_metrics(y, probs, classes, triage=triage)
        out = {"model": name, "status": status, "n": m["n"], "accuracy": m["accuracy"], "macro_f1": m["macro_f1"],
               "weighted_f1": m["weighted_f1"], "size_bytes": size_bytes}
        for c in FOCUS:
            out[f"sensitivity_{c}"] = m["per_class"].get(c, {}).get("sensitivity")
        return out

    keras_model = keras.models.load_model(run / "model.keras", compile=False)
    t0 = time.perf_counter()
    rows = [row("keras", keras_model.predict(images, batch_size=32, verbose=0),
                (run / "model.keras").stat().st_size, "reference")]
    print(f"  keras evaluated on {len(y)} test images ({time.perf_counter() - t0:.0f} s)", flush=True)
    files = {m: convert_dir / f"model.{m}.tflite" for m in modes}
    files.update(extra or {})
    for name, path in files.items():
        if not path.is_file():
            rows.append({"model": name, "status": "missing"})
            continue
        model = TFLiteModel(path)
        passed = model.metadata.get("verification", {}).get("passed")
        rows.append(row(name, model.predict(images), path.stat().st_size,
                        "verified" if passed else "FAILED verification"))
    ref = rows[0]
    for r in rows[1:]:
        if "macro_f1" in r:
            for k in ("accuracy", "macro_f1", *[f"sensitivity_{c}" for c in FOCUS]):
                if r.get(k) is not None and ref.get(k) is not None:
                    r[f"delta_{k}_pp"] = round(100 * (r[k] - ref[k]), 2)
    return rows


def goals(rows: list[dict]) -> dict:
    by = {r["model"]: r for r in rows}
    out = {}
    if "int8" in by and "delta_macro_f1_pp" in by["int8"]:
        out["int8_within_1pp_macro_f1"] = abs(min(by["int8"]["delta_macro_f1_pp"], 0)) <= 1.0
    if "qat" in by and "delta_macro_f1_pp" in by["qat"]:
        out["qat_within_0.5pp_macro_f1"] = abs(min(by["qat"]["delta_macro_f1_pp"], 0)) <= 0.5
    if by.get("int8", {}).get("size_bytes") and by.get("fp32", {}).get("size_bytes"):
        ratio = by["int8"]["size_bytes"] / by["fp32"]["size_bytes"]
        out["int8_size_ratio"] = round(ratio, 3)
        out["int8_size_le_0.3x_fp32"] = ratio <= 0.3
    return out


def table(title: str, rows: list[dict]) -> str:
    def pct(v):
        return "" if v is None else f"{100 * v:.1f}"

    def pp(v):
        return "" if v is None else f"{v:+.1f}"

    lines = [f"### {title}", "",
             "| model | status | size KiB | accuracy % | macro F1 % | Δ macro F1 pp | MM sens. % | Δ MM pp "
             "| BCC sens. % | Δ BCC pp |", "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        if "macro_f1" not in r:
            lines.append(f"| {r['model']} | {r['status']} | | | | | | | | |")
            continue
        lines.append(f"| {r['model']} | {r['status']} | {r['size_bytes'] / 1024:.0f} | {pct(r['accuracy'])} | "
                     f"{pct(r['macro_f1'])} | {pp(r.get('delta_macro_f1_pp'))} | {pct(r.get('sensitivity_MM'))} | "
                     f"{pp(r.get('delta_sensitivity_MM_pp'))} | {pct(r.get('sensitivity_BCC'))} | "
                     f"{pp(r.get('delta_sensitivity_BCC_pp'))} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--shared", type=Path, default=REPO.parent / "shared")
    p.add_argument("--quick", action="store_true", help="tiny sizes: checks the chain runs, figures are not results")
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--epochs-per-block", type=int, default=3)
    p.add_argument("--steps-per-epoch", type=int, default=None)
    p.add_argument("--blocks", default=None, help="backbone blocks to unfreeze (train's --blocks)")
    p.add_argument("--qat-epochs", type=int, default=2)
    p.add_argument("--qat-steps", type=int, default=None)
    p.add_argument("--calibration-size", type=int, default=256)
    p.add_argument("--effnet-image-size", type=int, default=None, help="default: --image-size")
    p.add_argument("--effnet-weights", default="none")
    p.add_argument("--skip-efficientnet", action="store_true")
    p.add_argument("--force", action="store_true", help="redo every stage (default: reuse finished ones)")
    a = p.parse_args(argv)
    if a.quick:
        a.image_size, a.epochs_per_block, a.steps_per_epoch = 64, 1, a.steps_per_epoch or 3
        a.qat_epochs, a.qat_steps, a.calibration_size, a.blocks = 1, a.qat_steps or 3, 32, a.blocks or "1"
    data_src = a.shared / "data" / "ham10000-dev"
    if not data_src.is_dir():
        raise SystemExit(f"{data_src} not found; pass --shared DIR (the folder holding data/ and weights/)")
    out = a.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    ds = out / "data" / "ham10000-dev"
    if a.force or not (ds / "dataset.json").is_file():
        edge_derm_cli(["data", "build", "ham10000", str(data_src), "--out", str(ds), "--force"])
    train_common = ["--data", str(ds), "--image-size", str(a.image_size),
                    "--epochs-per-block", str(a.epochs_per_block), "--force"]
    if a.steps_per_epoch:
        train_common += ["--steps-per-epoch", str(a.steps_per_epoch)]
    if a.blocks:
        train_common += ["--blocks", a.blocks]
    convert_common = ["--calibration-size", str(a.calibration_size), "--qat-epochs", str(a.qat_epochs),
                      "--keep-failed", "--force"]
    if a.qat_steps:
        convert_common += ["--qat-steps", str(a.qat_steps)]
    results: dict = {"kind": "measure_quantization", "machine": machine(), "quick": a.quick,
                     "args": {k: str(v) for k, v in vars(a).items()}, "models": {}}

    # MobileNetV2 alpha 0.35, ImageNet weights from ../shared/weights (Keras' own cache layout).
    mnv2 = out / "runs" / "mobilenet_v2_a035"
    keras_home = a.shared / "weights" / "keras"
    # The 224 px file loads at any input size (convolution weights do not depend on it).
    weights_file = keras_home / "models" / "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_224_no_top.h5"
    weights = str(weights_file) if weights_file.is_file() else "imagenet"
    if a.force or not (mnv2 / "model.keras").is_file():
        edge_derm_cli(["train", "--out", str(mnv2), "--backbone", "mobilenet_v2", "--alpha", "0.35",
                       "--weights", weights, *train_common], env={"KERAS_HOME": str(keras_home)})
    conv = mnv2 / "convert"
    if a.force or not (conv / "model.json").is_file():
        edge_derm_cli(["convert", str(mnv2), *sum((["--quantize", m] for m in MODES), []), "--out", str(conv),
                       *convert_common])
    rows = evaluate(mnv2, conv, list(MODES))
    results["models"]["mobilenet_v2_a035"] = {"rows": rows, "goals": goals(rows)}
    md = table("MobileNetV2 alpha 0.35 (ImageNet), HAM10000-dev test split", rows)
    md += "\nGoals: " + json.dumps(goals(rows)) + "\n"

    if not a.skip_efficientnet:
        eff = out / "runs" / "efficientnet_b3"
        size = a.effnet_image_size or a.image_size
        if a.force or not (eff / "model.keras").is_file():
            edge_derm_cli(["train", "--out", str(eff), "--backbone", "efficientnet_b3", "--weights", a.effnet_weights,
                           *[x if x != str(a.image_size) else str(size) for x in train_common]],
                          env={"KERAS_HOME": str(keras_home)})
        econv = eff / "convert"
        if a.force or not (econv / "model.json").is_file():
            edge_derm_cli(["convert", str(eff), "--quantize", "fp32", "--quantize", "int8", "--quantize", "qat",
                           "--out", str(econv), *convert_common])
        sel = eff / "convert-selective"
        if a.force or not (sel / "model.json").is_file():
            edge_derm_cli(["convert", str(eff), "--quantize", "int8", "--float-layers", "auto", "--out", str(sel),
                           *convert_common])
        erows = evaluate(eff, econv, ["fp32", "int8", "qat"], {"int8 + float layers": sel / "model.int8.tflite"})
        sel_meta = json.loads((sel / "model.json").read_text())["variants"]["int8"]
        results["models"]["efficientnet_b3"] = {"rows": erows, "goals": goals(erows),
                                                "selective": sel_meta.get("selective"),
                                                "float_layers": sel_meta.get("float_layers"),
                                                "collapse": sel_meta.get("collapse")}
        md += "\n" + table(f"EfficientNet-B3 (weights {a.effnet_weights}), HAM10000-dev test split", erows)
        if sel_meta.get("selective"):
            md += "\nSelective int8 trade-off: " + json.dumps(sel_meta["selective"]) + "\n"
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
