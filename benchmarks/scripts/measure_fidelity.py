"""Measure: int8 fidelity methods side by side (issue 12, "Measured").

    python benchmarks/scripts/measure_fidelity.py --out fidelity-out [--shared ../shared]
        [--run RUN] [--image-size 128] [--min-agreement 0.99] [--skip-qat] [--force]

1. ``edge-derm data build ham10000 ../shared/data/ham10000-dev`` (dermai13, lesion-grouped split) and,
   unless ``--run`` names a trained run, ``edge-derm train``: MobileNetV2 alpha 0.35, ImageNet
   weights from ``../shared/weights``, block-wise, 2 epochs per block, 4 images per class per batch,
   lr 1e-3 head / 1e-4 backbone.
2. ``edge-derm convert`` (fresh processes, fidelity on all 2049 images with ``--verify-data``):
   fp32/fp16/dynamic/int8 (the default recipe), int8 with ``--io int8``, int8 with
   ``--min-agreement`` (the recipe search) and, unless ``--skip-qat``, qat (1 epoch).
3. The search's other rungs as files of their own (per-tensor, larger calibration samples, 16x8),
   made with the same library calls the search uses, so every method is in one table.
4. Every file on all images of the dataset with one runtime (``TFLiteModel``): top-1 agreement with
   fp32, melanoma and BCC images (those fp32 assigns to the class) that change class, mean |dp|,
   macro F1 on the test split against fp32's, size, and latency (1 thread, median, the rounds of all
   files interleaved in one process so that load on the machine hits them alike; warm-up first).
   The CPU's ISA flags are recorded with the timings.

Writes ``fidelity.json`` and ``fidelity.md`` into ``--out`` and prints the table (the repository's copies:
``benchmarks/results/fidelity*.md``). Stages are reused when their output exists (``--force`` redoes all).
Runs from any folder (the default ``--shared`` is ``../shared`` beside the repository root). A script, not library code: it prints.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

import edge_derm  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow)
from measure_common import SHARED, SHARED_HELP, cpu_flags, edge_derm_cli, interleaved_median_ms, kernel_noise
from edge_derm.converters.presets import WATCH_CLASSES
from edge_derm.provenance import machine, versions

WEIGHTS = "weights/keras/models/mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_224_no_top.h5"
WATCH = WATCH_CLASSES  # melanoma and BCC, from the preset table


def extra_recipes(run: Path, data: Path, out: Path, calibration_size: int) -> dict[str, Path]:
    """Files for the search rungs that the search itself did not need to write."""
    from edge_derm.converters.calibration import sample_images
    from edge_derm.converters.presets import get_preset
    from edge_derm.converters.search import Calibrated, convert_16x8
    from edge_derm.models import load_model
    from edge_derm.training.evaluate import read_run

    cfg = read_run(run)
    classes, size, resize = cfg.classes, int(cfg.image_size), cfg.get("resize_mode", "nearest")
    model = load_model(run / "model.keras")
    preset = get_preset("int8")
    out.mkdir(parents=True, exist_ok=True)
    files: dict[str, Path] = {}
    for label, n in (("default", calibration_size), ("4x", 4 * calibration_size), ("all", None)):
        names = {"default": [("int8 per-tensor", False)], "4x": [(f"int8 per-channel, {4 * calibration_size} calib", True)],
                 "all": [("int8 per-channel, all train calib", True)]}[label]
        todo = [(name, pc) for name, pc in names if not (out / f"{name}.tflite").is_file()]
        if label == "all" and not (out / "int8 16x8.tflite").is_file():
            todo.append(("int8 16x8", None))
        for name, _ in names:
            files[name] = out / f"{name}.tflite"
        if label == "all":
            files["int8 16x8"] = out / "int8 16x8.tflite"
        if not todo:
            continue
        sample = sample_images(data, classes, size, resize, n=n, seed=0, splits=("train",))
        print(f"  calibrating on {len(sample.images)} training images ({label})", flush=True)
        cal = Calibrated(model, preset, sample.images)
        for name, per_channel in todo:
            t0 = time.perf_counter()
            blob = convert_16x8(model, preset, sample.images) if per_channel is None else \
                cal.quantize(per_channel=per_channel, io="uint8")
            (out / f"{name}.tflite").write_bytes(blob)
            print(f"  {name}: {len(blob)} B ({time.perf_counter() - t0:.0f} s)", flush=True)
    return files


def all_images(run: Path, data: Path):
    """Every image of ``data`` preprocessed for the run (manifest order), which of them are in the test split,
    the run's classes and its taxonomy's triage."""
    from edge_derm.converters.calibration import sample_images
    from edge_derm.data.manifest import Manifest
    from edge_derm.data.taxonomy import load_taxonomy
    from edge_derm.training.evaluate import read_run

    cfg = read_run(run)
    classes, size, resize = cfg.classes, int(cfg.image_size), cfg.get("resize_mode", "nearest")
    sample = sample_images(data, classes, size, resize, n=None, splits=("all",), purpose="fidelity", compact=True)
    records = Manifest.load(data).records  # sample_images keeps the manifest order when it takes every image
    if len(records) != len(sample.images):
        raise SystemExit(f"{len(records) - len(sample.images)} unreadable images in {data}; fix the dataset first")
    is_test = np.array([r.split == "test" for r in records])
    return sample, is_test, classes, load_taxonomy(cfg.get("taxonomy", "native")).triage


def watch_counts(fid: dict) -> dict:
    """The watched classes' flips from ``converters.verify.fidelity``: flipped, n and rate per class."""
    return {c: {"flipped": w["flipped"], "n": w["n"], "flip_rate": w["flip_rate"]} for c, w in fid["watch"].items()}


def measure(files: dict[str, Path], run: Path, data: Path, rounds: int, runs: int) -> tuple[list[dict], dict]:
    """Fidelity against fp32 on every image, macro F1 on the test split, interleaved latency."""
    from edge_derm.converters.verify import fidelity
    from edge_derm.evaluation.metrics import compare_metrics, compute_metrics
    from edge_derm.runtime import TFLiteModel

    sample, is_test, classes, triage = all_images(run, data)
    probs = {}
    models = {}
    for name, path in files.items():
        m = TFLiteModel(path, num_threads=1, check_hash=False)
        models[name] = m
        probs[name] = m.predict(sample.images)
        print(f"  scored {name} on {len(sample.images)} images", flush=True)
    ref = probs["fp32"]
    y = sample.labels
    top2 = np.sort(ref, axis=1)[:, -2:]
    margin = top2[:, 1] - top2[:, 0]  # how far each fp32 decision is from a tie
    ref_metrics = compute_metrics(y[is_test], ref[is_test], classes, triage=triage)
    # Latency: interleaved rounds, 1 thread, median of all timed invokes per file.
    median_ms = interleaved_median_ms(models, np.asarray(sample.images[:1], dtype=np.float32), rounds, runs)
    rows = []
    for name, path in files.items():
        fid = fidelity(ref, probs[name], classes, WATCH)
        met = compute_metrics(y[is_test], probs[name][is_test], classes, triage=triage)
        ms = median_ms[name]
        rows.append({
            "method": name, "file": str(path), "size_kib": round(path.stat().st_size / 1024, 1),
            "n": fid["n"], "top1_agreement": fid["top1_agreement"], "flips": fid["flips"], "watch": watch_counts(fid),
            "mean_abs_diff": fid["mean_abs_diff"], "kl_mean": fid["kl_mean"],
            "macro_f1_test": met["macro_f1"], "delta_macro_f1_pp": round(100 * compare_metrics(met, ref_metrics)["macro_f1"], 2),
            "accuracy_test": met["accuracy"], "latency_ms": round(ms, 3), "latency_vs_fp32": round(ms / median_ms["fp32"], 3),
            "input_dtype": models[name].input_details["dtype"].__name__,
            "float_ops": sorted(set(models[name].info.float_ops())),
            "n_ops": len(models[name].info.ops),
            "flips_by_fp32_margin": {f"<{t}": int(((probs[name].argmax(1) != ref.argmax(1)) & (margin < t)).sum())
                                     for t in (0.05, 0.1, 0.2)},
        })
    return rows, {"n_test": int(is_test.sum()), "n_images": int(len(y)), "fp32_macro_f1_test": ref_metrics["macro_f1"],
                  "fp32_margin_share": {f"<{t}": round(float((margin < t).mean()), 4) for t in (0.05, 0.1, 0.2)},
                  "fp32_margin_median": round(float(np.median(margin)), 4)}


def qat_vs_control(run: Path, data: Path, qat_file: Path, epochs: int = 1) -> dict:
    """QAT against its float control: the run's model fine-tuned with QAT's exact schedule in float
    (``measure_quantization.float_control``). QAT changes the weights, so its file is compared
    with the model that had the same extra training without quantisation: top-1 agreement on every image
    and macro F1 on the test split (QAT's file, its control in Keras, and the fp32 run it started from)."""
    from measure_quantization import float_control
    from edge_derm.converters.verify import fidelity
    from edge_derm.evaluation.metrics import compare_metrics, compute_metrics
    from edge_derm.runtime import TFLiteModel

    sample, is_test, classes, triage = all_images(run, data)
    control, summary = float_control(run, epochs, None)
    images = np.asarray(sample.images, dtype=np.float32)
    p_control = control.predict(images, batch_size=64, verbose=0)
    p_qat = TFLiteModel(qat_file, num_threads=2, check_hash=False).predict(sample.images)
    fid = fidelity(p_control, p_qat, classes, WATCH)
    y = sample.labels
    met = {name: compute_metrics(y[is_test], p[is_test], classes, triage=triage)
           for name, p in (("control", p_control), ("qat", p_qat))}
    return {"epochs": epochs, "control_training": summary, "top1_agreement": fid["top1_agreement"],
            "flips": fid["flips"], "watch": watch_counts(fid),
            "macro_f1_control": met["control"]["macro_f1"], "macro_f1_qat": met["qat"]["macro_f1"],
            "delta_macro_f1_pp": round(100 * compare_metrics(met["qat"], met["control"])["macro_f1"], 2)}


def latency_sweep(sizes: list[int], out: Path, rounds: int, runs: int, widths: tuple[float, ...] = (0.35,)) -> list[dict]:
    """fp32 vs int8 (uint8 I/O, int8 I/O) latency and size of MobileNetV2 with the paper's head, random
    weights (latency does not depend on the values), at each input size and width; interleaved, 1 thread."""
    import tf_keras as keras

    from edge_derm.converters import tflite as tfl
    from edge_derm.converters.presets import get_preset
    from edge_derm.models import build_classifier
    from edge_derm.runtime import TFLiteModel

    rows = []
    for size, alpha in [(s, a) for a in widths for s in sizes]:
        folder = out / (f"sweep-{size}" if alpha == 0.35 else f"sweep-{size}-a{alpha}")
        folder.mkdir(parents=True, exist_ok=True)
        variants = {"fp32": ("fp32", "float32"), "int8 (uint8 I/O)": ("int8", "uint8"),
                    "int8 (int8 I/O)": ("int8", "int8"), "int8 (float I/O)": ("int8", "float32")}
        paths = {name: folder / f"{name.replace(' ', '_').replace('/', '')}.tflite" for name in variants}
        if not all(p.is_file() for p in paths.values()):
            keras.utils.set_random_seed(0)
            model = build_classifier("mobilenet_v2", 7, image_size=size, alpha=alpha, weights="none")
            calib = np.random.default_rng(0).uniform(0, 255, (16, size, size, 3)).astype(np.float32)
            for name, (mode, io) in variants.items():
                if not paths[name].is_file():
                    paths[name].write_bytes(tfl.convert(model, get_preset(mode), io, calib if mode == "int8" else None))
                    print(f"  sweep {size} px, alpha {alpha}: converted {name}", flush=True)
        models = {name: TFLiteModel(p, num_threads=1, check_hash=False) for name, p in paths.items()}
        image = np.random.default_rng(1).uniform(0, 255, (1, size, size, 3)).astype(np.float32)
        median_ms = interleaved_median_ms(models, image, rounds, runs)
        fp32 = median_ms["fp32"]
        for name, m in models.items():
            ms = median_ms[name]
            rows.append({"size": size, "alpha": alpha, "variant": name, "latency_ms": round(ms, 3), "vs_fp32": round(ms / fp32, 3),
                         "size_kib": round(paths[name].stat().st_size / 1024, 1), "ops": len(m.info.ops),
                         "edge_ops": [o.name for o in m.info.ops if o.name in ("QUANTIZE", "DEQUANTIZE")]})
    return rows


def sensitivity(run: Path, data: Path, weights: Path | None, n: int = 512, top: int = 8, seed: int = 0) -> dict:
    """Why post-training int8 tops out: how much the float model's output moves under weight noise of
    about int8's size, per layer, with no quantiser involved.

    On ``n`` stratified images of the dataset (all splits): top-1 agreement of the fp32 Keras model with
    itself after (a) multiplicative Gaussian noise of 1 % on one convolution kernel at a time (per-channel
    int8 rounds a kernel's weights by up to 0.4 % of its channel's largest one, more for small weights),
    (b) 0.1 % noise on every kernel at once and (c) input noise of 0.5 grey levels. The ``top`` most
    sensitive layers are also perturbed in the ImageNet backbone the run started from (``weights``), and
    the relative change of its pooled features is reported beside the fine-tuned model's: a layer that is
    fragile before fine-tuning is fragile by architecture, not by training.
    """
    from edge_derm.converters.calibration import sample_images
    from edge_derm.models import build_classifier, load_model
    from edge_derm.training.evaluate import read_run

    cfg = read_run(run)
    classes, size, resize = cfg.classes, int(cfg.image_size), cfg.get("resize_mode", "nearest")
    images = sample_images(data, classes, size, resize, n=n, seed=seed, splits=("all",), purpose="sensitivity").images
    images = np.asarray(images, dtype=np.float32)
    model = load_model(run / "model.keras")
    rng = np.random.default_rng(seed)  # one stream, drawn in this order: per layer, all kernels, input
    ref = model.predict(images, batch_size=128, verbose=0).argmax(1)
    kernels = [layer for layer in model.layers if type(layer).__name__ in ("Conv2D", "DepthwiseConv2D", "Dense")]
    per_layer = []
    for layer in kernels:
        with kernel_noise([layer], rng, 0.01):
            per_layer.append({"layer": layer.name, "agreement": _agreement(model, images, ref)})
    per_layer.sort(key=lambda r: r["agreement"])
    with kernel_noise(kernels, rng, 0.001):
        all_layers = _agreement(model, images, ref)
    noisy = np.clip(images + rng.normal(0, 0.5, images.shape), 0, 255).astype(np.float32)
    input_noise = float((model.predict(noisy, batch_size=128, verbose=0).argmax(1) == ref).mean())
    init = None
    if weights is not None and Path(weights).is_file() and cfg.get("backbone") == "mobilenet_v2" \
            and f"_{cfg.get('alpha')}_" in Path(weights).name:
        init = build_classifier("mobilenet_v2", len(classes), image_size=size, alpha=cfg.get("alpha"), weights=str(weights))
    names = {layer.name for layer in model.layers}
    for row in per_layer[:top]:
        if row["layer"].startswith("head_") or "head_conv" not in names:  # features: what enters the head
            continue
        row["feature_change"] = _feature_change(model, row["layer"], images, seed)
        if init is not None:
            row["feature_change_imagenet"] = _feature_change(init, row["layer"], images, seed)
    return {"n_images": len(images), "per_layer": per_layer, "all_kernels_0.1pct": all_layers,
            "input_noise_0.5": input_noise}


def _agreement(model, images: np.ndarray, ref: np.ndarray) -> float:
    """Share of ``images`` whose top-1 under ``model`` (as it is now) equals ``ref``."""
    return float((model.predict(images, batch_size=128, verbose=0).argmax(1) == ref).mean())


def _feature_change(model, name: str, images: np.ndarray, seed: int) -> float:
    """Mean relative change of the pooled features entering the head (``head_conv``'s input) when layer
    ``name``'s kernel gets 1 % noise (a fresh generator from ``seed``, so both models get the same draw)."""
    import tf_keras as keras

    feats = keras.Model(model.inputs, model.get_layer("head_conv").input)
    base = feats.predict(images, batch_size=128, verbose=0).mean((1, 2))
    with kernel_noise([model.get_layer(name)], np.random.default_rng(seed), 0.01):
        moved = feats.predict(images, batch_size=128, verbose=0).mean((1, 2))
    return float((np.linalg.norm(moved - base, axis=1) / np.maximum(np.linalg.norm(base, axis=1), 1e-12)).mean())


def sensitivity_table(sens: dict, top: int = 8) -> str:
    out = (f"On {sens['n_images']} images, no quantiser involved: the fp32 Keras model's top-1 agreement with itself "
           f"after 0.1 % weight noise on every kernel: {100 * sens['all_kernels_0.1pct']:.1f} %; after input noise of "
           f"0.5 grey levels: {100 * sens['input_noise_0.5']:.1f} %. The most sensitive layers under 1 % noise on "
           "their kernel alone (feature change: mean relative change of the pooled backbone features, fine-tuned "
           "model / the ImageNet backbone it started from):\n\n"
           "| layer | top-1 agreement | feature change (fine-tuned) | feature change (ImageNet) |\n|---|--:|--:|--:|\n")
    for r in sens["per_layer"][:top]:
        fc, fi = r.get("feature_change"), r.get("feature_change_imagenet")
        out += (f"| {r['layer']} | {100 * r['agreement']:.1f} % | {'-' if fc is None else f'{100 * fc:.1f} %'} | "
                f"{'-' if fi is None else f'{100 * fi:.1f} %'} |\n")
    return out


def sweep_table(rows: list[dict]) -> str:
    fp32_kib = {(r["size"], r.get("alpha", 0.35)): r["size_kib"] for r in rows if r["variant"] == "fp32"}
    out = ("| alpha | input | variant | ms (1 thread) | x fp32 | size KiB | size x fp32 | QUANTIZE/DEQUANTIZE ops |\n"
           "|--:|--:|---|--:|--:|--:|--:|--:|\n")
    return out + "\n".join(f"| {r.get('alpha', 0.35)} | {r['size']} | {r['variant']} | {r['latency_ms']:.3f} | "
                            f"{r['vs_fp32']:.2f} | {r['size_kib']:.0f} | "
                            f"{r['size_kib'] / fp32_kib[(r['size'], r.get('alpha', 0.35))]:.2f} | "
                            f"{len(r['edge_ops'])} |" for r in rows) + "\n"


def goals(rows: list[dict], sweep: list[dict]) -> dict:
    """Issue 12's goals, met or not, for the int8 file that ``convert --min-agreement`` ships (the row
    whose method starts with ``int8 search``) and the default int8; latency goals from the sweep."""
    out: dict = {}
    for key, prefix in (("search", "int8 search"), ("default", "int8 per-channel (default")):
        r = next((r for r in rows if r["method"].startswith(prefix)), None)
        if r is None:
            continue
        out[f"{key}_agreement_ge_99"] = r["top1_agreement"] >= 0.99
        out[f"{key}_mm_bcc_changed_le_1pct"] = all(w["flip_rate"] <= 0.01 for w in r["watch"].values())
        out[f"{key}_macro_f1_within_1pp"] = abs(r["delta_macro_f1_pp"]) <= 1.0
    by = {(r["size"], r["variant"]): r for r in sweep if r.get("alpha", 0.35) == 0.35}
    if (224, "int8 (uint8 I/O)") in by:
        out["int8_le_0.6x_fp32_at_224"] = by[(224, "int8 (uint8 I/O)")]["vs_fp32"] <= 0.6
    sizes = sorted({r["size"] for r in sweep if r.get("alpha", 0.35) == 0.35})
    if sizes:
        out["int8_never_slower_than_fp32"] = all(by[(s, "int8 (uint8 I/O)")]["vs_fp32"] <= 1.0 for s in sizes)
    return out


def search_table(search: dict) -> str:
    """Every recipe ``convert --min-agreement`` tried, in order (agreement with the Keras model)."""
    out = ("| # | recipe | float layers | top-1 agreement with Keras | MM / BCC changed | size KiB |\n"
           "|--:|---|---|--:|--:|--:|\n")
    for i, t in enumerate(search["tried"], 1):
        r = t["recipe"]
        layers = ", ".join(x.split(";")[0].split("/")[1] if "/" in x else x for x in r.get("float_layers", [])) or "-"
        if "error" in t:
            out += f"| {i} | {r['name']} | {layers} | error: {t['error'][:80]} | | |\n"
            continue
        w = t.get("watch_flips", {})
        out += (f"| {i} | {r['name']} | {layers} | {100 * t['top1_agreement']:.2f} % | {w.get('MM', '-')} / "
                f"{w.get('BCC', '-')} | {t['size_bytes'] / 1024:.0f} |\n")
    return out


def table(rows: list[dict]) -> str:
    head = ("| method | top-1 agreement with fp32 | MM changed | BCC changed | mean abs dp | macro F1 test (d pp) | "
            "size KiB | ms (1 thread) | x fp32 |\n|---|--:|--:|--:|--:|--:|--:|--:|--:|\n")
    lines = []
    for r in rows:
        w = r["watch"]
        lines.append(f"| {r['method']} | {100 * r['top1_agreement']:.2f} % ({r['flips']}) | "
                     f"{w['MM']['flipped']}/{w['MM']['n']} ({100 * w['MM']['flip_rate']:.1f} %) | "
                     f"{w['BCC']['flipped']}/{w['BCC']['n']} ({100 * w['BCC']['flip_rate']:.1f} %) | "
                     f"{r['mean_abs_diff']:.4f} | {100 * r['macro_f1_test']:.1f} % ({r['delta_macro_f1_pp']:+.1f}) | "
                     f"{r['size_kib']:.0f} | {r['latency_ms']:.3f} | {r['latency_vs_fp32']:.2f} |")
    return head + "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=Path("fidelity-out"))
    ap.add_argument("--shared", type=Path, default=SHARED, help=SHARED_HELP)
    ap.add_argument("--run", type=Path, default=None, help="a trained run to use instead of training one")
    ap.add_argument("--image-size", type=int, default=128)
    ap.add_argument("--min-agreement", type=float, default=0.99)
    ap.add_argument("--calibration-size", type=int, default=256)
    ap.add_argument("--skip-qat", action="store_true")
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--sweep", default="128,224", help="input sizes of the fp32/int8 latency sweep ('' for none)")
    ap.add_argument("--widths", default="0.35,0.5,1.0", help="MobileNetV2 widths of the sweep's size/latency rows")
    ap.add_argument("--recipe", default="recommended",
                    help="training recipe of the run (paper: with the README's former tuned flags, 2 epochs per "
                         "block, 4 images per class, lr 1e-3 / 1e-4)")
    ap.add_argument("--skip-sensitivity", action="store_true")
    ap.add_argument("--force", action="store_true")
    return ap.parse_args(argv)


def prepare(args: argparse.Namespace, out: Path) -> tuple[Path, Path]:
    """Stage 1: the dataset and (unless ``--run``) the trained run, each made once; their folders."""
    data = out / "ds-ham"
    if args.force or not (data / "manifest.csv").is_file():
        edge_derm_cli(["data", "build", "ham10000", str(args.shared / "data/ham10000-dev"), "--out", str(data),
                       "--taxonomy", "dermai13", "--val-fraction", "0.1", "--force"])
    run = args.run.resolve() if args.run else out / "run"
    if args.run is None and (args.force or not (run / "model.keras").is_file()):
        tuned = (["--epochs-per-block", "2", "--batch-multiple", "4", "--lr-head", "1e-3", "--lr-backbone", "1e-4"]
                 if args.recipe == "paper" else [])
        edge_derm_cli(["train", "--data", str(data), "--recipe", args.recipe, "--backbone", "mobilenet_v2",
                       "--alpha", "0.35", "--weights", str(args.shared / WEIGHTS), "--image-size", str(args.image_size),
                       *tuned, "--out", str(run), "--force"])
    return data, run


def convert_stages(args: argparse.Namespace, out: Path, data: Path, run: Path) -> list[str]:
    """Stage 2: one ``edge-derm convert`` folder per stage (``convert-<stage>``), each made once; the stages."""
    common = ["--verify-data", str(data), "--keep-failed", "--force", "--calibration-size", str(args.calibration_size)]
    stages = {
        "default": ["--quantize", "fp32", "--quantize", "fp16", "--quantize", "dynamic", "--quantize", "int8"],
        "io-int8": ["--quantize", "int8", "--io", "int8"],
        "search": ["--quantize", "int8", "--min-agreement", str(args.min_agreement)],
    }
    if not args.skip_qat:
        stages["qat"] = ["--quantize", "qat", "--qat-epochs", "1"]
    for stage, flags in stages.items():
        folder = out / f"convert-{stage}"
        if args.force or not (folder / "model.json").is_file():
            edge_derm_cli(["convert", str(run), *flags, "--out", str(folder), *common], ok_codes=(0, 1))
    return list(stages)


def method_files(args: argparse.Namespace, out: Path, extra: dict[str, Path], search: dict) -> dict[str, Path]:
    """Every method of the table (row name -> .tflite), in the table's order."""
    files = {"fp32": out / "convert-default/model.fp32.tflite", "fp16": out / "convert-default/model.fp16.tflite",
             "dynamic": out / "convert-default/model.dynamic.tflite",
             "int8 per-channel (default, uint8 I/O)": out / "convert-default/model.int8.tflite",
             "int8 per-channel, int8 I/O": out / "convert-io-int8/model.int8.tflite", **extra,
             f"int8 search >= {args.min_agreement}: {search['recipe']['name']}": out / "convert-search/model.int8.tflite"}
    if not args.skip_qat:
        files["qat (1 epoch)"] = out / "convert-qat/model.qat.tflite"
    return files


def convert_verification(out: Path, stages: list[str]) -> dict:
    """What each convert stage's own verification said about each variant (from its model.json)."""
    verified = {}
    for stage in stages:
        doc = json.loads((out / f"convert-{stage}/model.json").read_text())
        verified[stage] = {m: {"passed": v["verification"]["passed"], "top1_agreement_vs_keras":
                               v["verification"]["top1_agreement"], "failures": v["verification"]["failures"],
                               "recipe": v.get("recipe", {}).get("name")} for m, v in doc["variants"].items()}
    return verified


def markdown(args: argparse.Namespace, result: dict, cpu: dict, recipe: str | None) -> str:
    """fidelity.md: the method table, the search's rungs, QAT vs its control, sensitivity, sweep, goals."""
    control, sens, sweep, search = result["qat_vs_control"], result["sensitivity"], result["latency_sweep"], result["search"]
    return (f"# int8 fidelity methods: MobileNetV2 alpha 0.35, {args.image_size} px, ham10000-dev\n\n"
            f"Model: `{Path(result['run']).name}`, recipe {recipe or 'paper (legacy)'}.\n\n"
            f"Fidelity against the fp32 file on all {result['n_images']} images; macro F1 on the {result['n_test']} test "
            f"images (fp32: {100 * result['fp32_macro_f1_test']:.1f} %); "
            f"fp32 top-1 margin (p1 - p2): median {result['fp32_margin_median']}, share of images below 0.05 / 0.1 / 0.2: "
            f"{' / '.join(f'{100 * v:.1f} %' for v in result['fp32_margin_share'].values())}. Latency: median of "
            f"{args.rounds} x {args.runs} interleaved invokes, 1 thread, {machine()['cpu']} "
            f"({machine()['cores_available']} cores available), "
            f"load average {os.getloadavg()[0]:.1f}; SIMD flags: {' '.join(cpu['simd'])}.\n\n" + table(result["rows"])
            + f"\n## The recipes `convert --min-agreement {args.min_agreement}` tried (bar met: {search['met']})\n\n"
            + search_table(search)
            + ("" if control is None else
               f"\n## QAT against its float control\n\nThe run's model fine-tuned {control['epochs']} epoch(s) with QAT's "
               f"schedule in float (the control) vs the QAT file: top-1 agreement {100 * control['top1_agreement']:.2f} % "
               f"({control['flips']} images), MM changed {control['watch']['MM']['flipped']}/{control['watch']['MM']['n']}, "
               f"BCC changed {control['watch']['BCC']['flipped']}/{control['watch']['BCC']['n']}; macro F1 on test: "
               f"control {100 * control['macro_f1_control']:.1f} %, QAT {100 * control['macro_f1_qat']:.1f} % "
               f"({control['delta_macro_f1_pp']:+.1f} pp).\n")
            + ("" if sens is None else "\n## Why post-training int8 tops out: float sensitivity\n\n" + sensitivity_table(sens))
            + ("\n## fp32 vs int8 latency and size by input size and width (MobileNetV2, random weights)\n\n"
               + sweep_table(sweep) if sweep else "")
            + "\n## Goals\n\n" + "".join(f"- {k}: {'met' if v else 'NOT met'}\n" for k, v in result["goals"].items()))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    data, run = prepare(args, out)
    stages = convert_stages(args, out, data, run)
    extra = extra_recipes(run, data, out / "recipes", args.calibration_size)
    search = json.loads((out / "convert-search/model.json").read_text())["variants"]["int8"]
    files = method_files(args, out, extra, search)
    cpu = cpu_flags()
    rows, info = measure(files, run, data, args.rounds, args.runs)
    sizes = [int(x) for x in args.sweep.split(",") if x.strip()]
    widths = tuple(float(x) for x in args.widths.split(",") if x.strip()) or (0.35,)
    sweep = latency_sweep(sizes, out, args.rounds, args.runs, widths) if sizes else []
    sens = None if args.skip_sensitivity else sensitivity(run, data, args.shared / WEIGHTS)
    control = None if args.skip_qat else qat_vs_control(run, data, out / "convert-qat/model.qat.tflite")
    result = {"kind": "measure_fidelity", "run": str(run), "data": str(data), "image_size": args.image_size,
              "min_agreement": args.min_agreement, "rows": rows, **info, "search": search["search"],
              "goals": goals(rows, sweep), "sensitivity": sens, "qat_vs_control": control,
              "convert_verification": convert_verification(out, stages), "latency_sweep": sweep, "machine": machine(),
              "cpu_isa": cpu, "load_average": os.getloadavg(),
              "versions": versions(), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    (out / "fidelity.json").write_text(json.dumps(result, indent=2) + "\n")
    md = markdown(args, result, cpu, read_run(run).get("train", {}).get("recipe"))
    (out / "fidelity.md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
