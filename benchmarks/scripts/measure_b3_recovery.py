"""Measure: EfficientNet-B3's post-training int8 collapse and its recovery by the recipe search (issue 12, item 4).

    python benchmarks/scripts/measure_b3_recovery.py --out b3-out [--shared ../shared] [--image-size 128]
        [--epochs 1] [--min-agreement 0.97] [--skip-search] [--diagnose] [--md benchmarks/results/b3_recovery.md]

No ImageNet weights for EfficientNet-B3 can be downloaded here, so each B3 is trained from scratch
(``--weights none --unfreeze full``, the recommended recipe otherwise), "as well as this machine
allows" on two datasets:

- ``synthetic``: ``edge-derm data synth`` (13 classes, ``--per-class`` images, the embedded synthetic
  lesions), split 80:20 by ``data build folder``;
- ``ham10000-dev``: ``../shared/data/ham10000-dev`` (dermai13, lesion-grouped split), when present.

Then, in fresh ``edge-derm`` processes: ``convert --quantize fp32 --quantize int8`` (the default int8
recipe; ``--keep-failed`` so that the collapsed file can be measured) and ``convert --quantize int8
--min-agreement A`` (the search). Every file is scored on all images of the dataset with one runtime:
top-1 agreement with fp32, melanoma / BCC images that change class, size, and latency (1 thread,
interleaved rounds, median). The CPU's ISA flags are recorded with the timings. Stages are reused
when their output exists (``--force`` redoes all). Progress and the table go to the log (stderr).
Runs from any folder (the default ``--shared`` is ``../shared`` beside the repository root); results: ``benchmarks/results/b3_recovery*.md``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

import numpy as np

import edge_derm  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow)
from measure_common import SHARED, SHARED_HELP, cpu_flags, edge_derm_cli, interleaved_median_ms, kernel_noise
from measure_fidelity import WATCH
from edge_derm.provenance import machine, versions

_log = logging.getLogger("measure_b3_recovery")


def build_data(name: str, out: Path, shared: Path, per_class: int, size: int) -> Path | None:
    """The dataset folder for ``name`` (built once), or None when its source is absent."""
    data = out / f"ds-{name}"
    if (data / "manifest.csv").is_file():
        return data
    if name == "synthetic":
        raw = out / "synth-raw"
        if not raw.is_dir():
            edge_derm_cli(["data", "synth", "--out", str(raw), "--per-class", str(per_class), "--size", str(size),
                           "--force"])
        edge_derm_cli(["data", "build", "folder", str(raw), "--out", str(data), "--taxonomy", "dermai13",
                       "--test-fraction", "0.2", "--force"])
        return data
    source = shared / "data/ham10000-dev"
    if not source.is_dir():
        _log.warning("%s is absent: %s skipped", source, name)
        return None
    edge_derm_cli(["data", "build", "ham10000", str(source), "--out", str(data), "--taxonomy", "dermai13", "--force"])
    return data


def score(files: dict[str, Path], data: Path, run: Path, rounds: int, runs: int) -> list[dict]:
    """Fidelity against fp32 on every image of ``data`` and interleaved latency of each file."""
    from edge_derm.converters.calibration import sample_images
    from edge_derm.converters.verify import fidelity
    from edge_derm.runtime import TFLiteModel
    from edge_derm.training.evaluate import read_run

    cfg = read_run(run)
    sample = sample_images(data, cfg.classes, int(cfg.image_size), cfg.get("resize_mode", "nearest"), n=None,
                           splits=("all",), purpose="fidelity", compact=True)
    models = {name: TFLiteModel(path, num_threads=1, check_hash=False) for name, path in files.items()}
    probs = {name: m.predict(sample.images) for name, m in models.items()}
    median_ms = interleaved_median_ms(models, np.asarray(sample.images[:1], dtype=np.float32), rounds, runs)
    watch = tuple(c for c in WATCH if c in cfg.classes)
    rows = []
    for name, path in files.items():
        fid = fidelity(probs["fp32"], probs[name], cfg.classes, watch)
        rows.append({"variant": name, "n": fid["n"], "top1_agreement": fid["top1_agreement"], "flips": fid["flips"],
                     "watch": {c: {"flipped": w["flipped"], "n": w["n"]} for c, w in fid["watch"].items()},
                     "mean_abs_diff": fid["mean_abs_diff"], "size_kib": round(path.stat().st_size / 1024, 1),
                     "latency_ms": round(median_ms[name], 3),
                     "latency_vs_fp32": round(median_ms[name] / median_ms["fp32"], 3),
                     "latency_vs_int8": round(median_ms[name] / median_ms["int8 (default)"], 3),
                     "float_ops": sorted(set(models[name].info.float_ops()))})
    return rows


def table(rows: list[dict]) -> str:
    out = ("| variant | top-1 agreement with fp32 | MM / BCC changed | mean abs dp | size KiB | ms (1 thread) | "
           "x fp32 | x int8 | float ops |\n|---|--:|--:|--:|--:|--:|--:|--:|---|\n")
    for r in rows:
        w = " / ".join(f"{v['flipped']}/{v['n']}" for v in r["watch"].values()) or "-"
        out += (f"| {r['variant']} | {100 * r['top1_agreement']:.2f} % ({r['flips']}) | {w} | {r['mean_abs_diff']:.4f} | "
                f"{r['size_kib']:.0f} | {r['latency_ms']:.3f} | {r['latency_vs_fp32']:.2f} | {r['latency_vs_int8']:.2f} | "
                f"{', '.join(r['float_ops']) or '-'} |\n")
    return out


def tried_table(search: dict) -> str:
    out = "| # | recipe | float layers / ops | top-1 agreement with Keras |\n|--:|---|---|--:|\n"
    for i, t in enumerate(search.get("tried", []), 1):
        r = t["recipe"]
        layers = ", ".join(x.split(";")[0].split("/")[1] if "/" in x else x for x in r.get("float_layers", [])) or "-"
        got = f"error: {t['error'][:80]}" if "error" in t else f"{100 * t['top1_agreement']:.2f} %"
        out += f"| {i} | {r['name']} | {layers} | {got} |\n"
    return out


def _group(tensor: str) -> str:
    """The Keras block a converted tensor belongs to (``block3`` for ``.../block3a_expand_conv/...``)."""
    import re

    m = re.search(r"/(block\d)", tensor)
    if m:
        return m.group(1)
    return next((g for g in ("stem", "top", "head") if f"/{g}" in tensor), "other")


def diagnose(run: Path, data: Path, n_calibration: int = 256, n_verify: int = 400, n_16x8: int = 120,
             seed: int = 0) -> dict:
    """Where the int8 error of a model comes from, with no search: calibrated once, then (a) only one
    group of layers (stem, block1..7, top, head) quantised, the rest float, (b) one group kept float, the
    rest int8, (c) float sensitivity of the Keras model itself (input noise of 0.5 grey levels, weight
    noise on every kernel) and its top-1/top-2 probability margins, (d) 16x8 (int16 activations, int8
    weights) on ``n_16x8`` images (its kernels are reference code: slow)."""
    import tf_keras as keras

    from edge_derm.converters.calibration import sample_images
    from edge_derm.converters.convert import keras_predict, load_keras, load_run
    from edge_derm.converters.presets import get_preset
    from edge_derm.converters.search import Calibrated, convert_16x8
    from edge_derm.runtime import TFLiteModel

    cfg = load_run(run)
    model = load_keras(run, cfg)
    classes, size, resize = cfg.classes, int(cfg.image_size), cfg.get("resize_mode", "nearest")
    calib = sample_images(data, classes, size, resize, n=n_calibration, seed=seed, splits=("train",))
    ver = sample_images(data, classes, size, resize, n=n_verify, seed=seed + 1, splits=("test",),
                        purpose="verification", compact=True)
    images = np.asarray(ver.images, dtype=np.float32)
    ref_probs = keras_predict(model, images)
    ref = ref_probs.argmax(1)
    cal = Calibrated(model, get_preset("int8"), calib.images)
    tmp = run.parent / f".{run.name}-diagnose.tflite"
    out: dict = {"n_verify": len(images), "n_calibration": len(calib.images)}
    out.update(_group_agreements(cal, images, ref, tmp))
    out.update(_float_sensitivity(model, images, ref_probs, np.random.default_rng(seed)))
    if n_16x8:
        _log.info("diagnose: 16x8 on %d images (reference kernels)", n_16x8)
        q16 = TFLiteModel(tmp, content=convert_16x8(model, get_preset("int8"), calib.images), check_hash=False)
        t = time.perf_counter()
        got = q16.predict(images[:n_16x8]).argmax(1)
        out["16x8"] = {"n": int(n_16x8), "agreement": float((got == ref[:n_16x8]).mean()),
                       "seconds_per_image": (time.perf_counter() - t) / n_16x8}
    keras.backend.clear_session()
    tmp.unlink(missing_ok=True)
    return out


def _group_agreements(cal, images: np.ndarray, ref: np.ndarray, tmp: Path) -> dict:
    """(a) and (b) of :func:`diagnose`: top-1 agreement with ``ref`` when only one layer group is int8 and
    when only one is float (per-channel, float I/O), every group in network order, and all of it int8.
    ``tmp``: the path the in-memory files are named by."""
    from ai_edge_litert.interpreter import Interpreter

    from edge_derm.runtime import TFLiteModel

    groups: dict[str, list[str]] = {}
    for d in Interpreter(model_content=cal.calibrated).get_tensor_details():
        if d["name"]:
            groups.setdefault(_group(d["name"]), []).append(d["name"])
    order = [g for g in ["stem", *(f"block{i}" for i in range(1, 8)), "top", "head", "other"] if g in groups]

    def agreement(float_nodes: list[str]) -> float:
        data_ = cal.quantize(per_channel=True, io="float32", float_nodes=float_nodes)
        return float((TFLiteModel(tmp, content=data_, check_hash=False).predict(images).argmax(1) == ref).mean())

    out: dict = {"all_int8": agreement([]), "groups": {g: len(groups[g]) for g in order}, "only_int8": {}, "float": {}}
    for g in order:
        _log.info("diagnose: %s", g)
        out["only_int8"][g] = agreement([n for h in order if h != g for n in groups[h]])
        out["float"][g] = agreement(groups[g])
    return out


def _float_sensitivity(model, images: np.ndarray, ref_probs: np.ndarray, rng: np.random.Generator) -> dict:
    """(c) of :func:`diagnose`: the Keras model's top-1/top-2 margins and its top-1 agreement with itself
    under input noise of 0.5 grey levels and under 0.1 % / 0.4 % weight noise on every kernel."""
    from edge_derm.converters.convert import keras_predict

    ref = ref_probs.argmax(1)
    top2 = np.sort(ref_probs, 1)[:, -2:]
    margin = top2[:, 1] - top2[:, 0]
    out = {"margin_median": float(np.median(margin)), "margin_below_0.02": float((margin < 0.02).mean())}
    noisy = np.clip(images + rng.normal(0, 0.5, images.shape), 0, 255).astype(np.float32)
    out["input_noise_0.5"] = float((keras_predict(model, noisy).argmax(1) == ref).mean())
    kernels = [layer for layer in model.layers if type(layer).__name__ in ("Conv2D", "DepthwiseConv2D", "Dense")]
    for sd in (0.001, 0.004):
        with kernel_noise(kernels, rng, sd):
            out[f"weight_noise_{sd}"] = float((keras_predict(model, images).argmax(1) == ref).mean())
    return out


def diagnosis_md(d: dict) -> str:
    rows = "".join(f"| {g} | {d['groups'][g]} | {100 * d['only_int8'][g]:.1f} % | {100 * d['float'][g]:.1f} % |\n"
                   for g in d["groups"])
    q16 = d.get("16x8")
    return (f"\n### Where the error comes from\n\nCalibrated once on {d['n_calibration']} training images; top-1 "
            f"agreement with the Keras model on {d['n_verify']} test images. Everything int8 (per-channel): "
            f"{100 * d['all_int8']:.1f} %.\n\n| group | tensors | only this group int8 | only this group float |\n"
            f"|---|--:|--:|--:|\n{rows}\nFloat sensitivity of the Keras model (no quantiser): input noise of 0.5 grey "
            f"levels {100 * d['input_noise_0.5']:.1f} %, 0.1 % weight noise on every kernel "
            f"{100 * d['weight_noise_0.001']:.1f} %, 0.4 % {100 * d['weight_noise_0.004']:.1f} %; median top-1/top-2 "
            f"probability margin {d['margin_median']:.3f} ({100 * d['margin_below_0.02']:.1f} % of images below 0.02).\n"
            + ("" if not q16 else f"\n16x8 (int16 activations, int8 weights): {100 * q16['agreement']:.1f} % agreement on "
               f"{q16['n']} images, {q16['seconds_per_image']:.2f} s per image (reference kernels).\n"))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=Path("b3-out"))
    ap.add_argument("--shared", type=Path, default=SHARED, help=SHARED_HELP)
    ap.add_argument("--datasets", nargs="+", default=["ham10000-dev", "synthetic"], choices=["synthetic", "ham10000-dev"])
    ap.add_argument("--image-size", type=int, default=128)
    ap.add_argument("--epochs", type=int, default=1, help="--epochs-per-block: the full-unfreeze step trains this many epochs per backbone block (B3: 7 blocks)")
    ap.add_argument("--per-class", type=int, default=60, help="synthetic images per class")
    ap.add_argument("--min-agreement", type=float, default=0.97)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--md", type=Path, help="also write the markdown (and a .json sibling) here")
    ap.add_argument("--force", action="store_true")
    ap.add_argument("--diagnose", action="store_true", help="also locate the int8 error of each B3 by layer group "
                    "and measure its float sensitivity and 16x8 (see diagnose())")
    ap.add_argument("--verify-size", type=int, default=None, help="convert's --verify-size: the search scores each "
                    "recipe on at most this many images (B3's 16x8 runs ~0.4 s per image); the table below is "
                    "always scored on every image")
    ap.add_argument("--skip-search", action="store_true", help="no --min-agreement search (it can run for hours on B3)")
    return ap.parse_args(argv)


def train_and_convert(args: argparse.Namespace, name: str, data: Path, out: Path) -> tuple[Path, dict[str, Path]]:
    """The B3 run for one dataset and its two convert folders (default int8, the search), each made once."""
    run = out / f"run-{name}"
    if args.force or not (run / "model.keras").is_file():
        edge_derm_cli(["train", "--data", str(data), "--backbone", "efficientnet_b3", "--weights", "none",
                       "--unfreeze", "full", "--image-size", str(args.image_size), "--epochs-per-block",
                       str(args.epochs), "--out", str(run), "--force"])
    common = ["--verify-data", str(data), "--keep-failed", "--force",
              *(["--verify-size", str(args.verify_size)] if args.verify_size else [])]
    folders = {"default": out / f"convert-{name}-default", "search": out / f"convert-{name}-search"}
    if args.force or not (folders["default"] / "model.json").is_file():
        edge_derm_cli(["convert", str(run), "--quantize", "fp32", "--quantize", "int8", "--out",
                       str(folders["default"]), *common], ok_codes=(0, 1))
    if not args.skip_search and (args.force or not (folders["search"] / "model.json").is_file()):
        edge_derm_cli(["convert", str(run), "--quantize", "int8", "--min-agreement", str(args.min_agreement),
                       "--out", str(folders["search"]), *common], ok_codes=(0, 1))
    return run, folders


def measure_dataset(args: argparse.Namespace, name: str, data: Path, out: Path) -> tuple[dict, str]:
    """Train, convert and score B3 on one dataset (and diagnose it with ``--diagnose``): its results entry
    and its markdown section."""
    run, folders = train_and_convert(args, name, data, out)
    searched = not args.skip_search and (folders["search"] / "model.json").is_file()
    doc = json.loads((folders["search"] / "model.json").read_text())["variants"]["int8"] if searched else None
    default = json.loads((folders["default"] / "model.json").read_text())["variants"]["int8"]
    files = {"fp32": folders["default"] / "model.fp32.tflite", "int8 (default)": folders["default"] / "model.int8.tflite"}
    if doc is not None:
        files[f"int8 search >= {args.min_agreement}: {doc['recipe']['name']}"] = folders["search"] / "model.int8.tflite"
    rows = score(files, data, run, args.rounds, args.runs)
    metrics = json.loads((run / "metrics.json").read_text())
    train_s = json.loads((run / "checkpoints" / "state.json").read_text()).get("train_seconds")
    epochs = max(0, len((run / "history.csv").read_text().strip().splitlines()) - 1)  # one row per epoch
    met = rows[-1]["top1_agreement"] >= args.min_agreement if doc is not None else None  # no search: no verdict
    result = {"rows": rows, "search": doc and doc["search"], "recipe": doc and doc["recipe"],
              "default_collapse": default.get("collapse"), "fp32_test_macro_f1": metrics["macro_f1"],
              "fp32_test_accuracy": metrics["accuracy"], "train_seconds": train_s,
              "epochs": epochs, "data": str(data.resolve()), "recovered_ge_bar": met}
    run_cfg = json.loads((run / "config.json").read_text())
    md = (f"\n## {name}\n\nB3 trained {epochs} epochs from scratch at {run_cfg['image_size']} px "
          f"(recipe {run_cfg['train'].get('recipe')}, lr schedule {run_cfg['train'].get('lr_schedule')}) "
          f"on `{data.resolve()}`"
          + (f" in {train_s / 60:.0f} min" if train_s else "")
          + f"; fp32 test accuracy {100 * metrics['accuracy']:.1f} %, macro F1 {100 * metrics['macro_f1']:.1f} %. "
          + ("" if met is None else f"Recovered to >= {100 * args.min_agreement:.0f} % agreement: "
             f"**{'met' if met else 'NOT met'}**.") + "\n\n"
          + table(rows))
    if doc is not None:
        md += (f"\n`convert --min-agreement {args.min_agreement}` tried (bar met: {doc['search']['met']}):\n\n"
               + tried_table(doc["search"]))
    else:
        md += ("\nThe `--min-agreement` search was not run (`--skip-search`).\n" if args.skip_search else
               "\nThe `--min-agreement` search wrote no model.json (see its log).\n")
    if args.diagnose:
        result["diagnosis"] = diagnose(run, data)
        md += diagnosis_md(result["diagnosis"])
    return result, md


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    out = args.out.resolve()
    args.shared = args.shared.resolve()  # absolute: the same folder whatever the working folder
    out.mkdir(parents=True, exist_ok=True)
    results: dict = {}
    md = (f"# EfficientNet-B3: int8 collapse and recovery ({args.image_size} px, from scratch)\n\n"
          f"{machine()['cpu']} ({machine()['cores_available']} cores available), SIMD flags: "
          f"{' '.join(cpu_flags()['simd'])}, load average {os.getloadavg()[0]:.1f}. Fidelity against the fp32 "
          f"file on every image of each dataset; latency: median of {args.rounds} x {args.runs} interleaved "
          "invokes, 1 thread.\n")
    for name in args.datasets:
        data = build_data(name, out, args.shared, args.per_class, args.image_size)
        if data is not None:
            results[name], section = measure_dataset(args, name, data, out)
            md += section
    command = "python benchmarks/scripts/measure_b3_recovery.py " + " ".join(sys.argv[1:] if argv is None else argv)
    doc = {"kind": "measure_b3_recovery", "image_size": args.image_size, "epochs": args.epochs,
           "min_agreement": args.min_agreement, "results": results, "machine": machine(), "cpu_isa": cpu_flags(),
           "load_average": os.getloadavg(), "versions": versions(), "command": command,
           "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    (out / "b3_recovery.json").write_text(json.dumps(doc, indent=2) + "\n")
    (out / "b3_recovery.md").write_text(md)
    if args.md:
        args.md.parent.mkdir(parents=True, exist_ok=True)
        args.md.write_text(f"<!-- {doc['command']} -->\n\n" + md)
        args.md.with_suffix(".json").write_text(json.dumps(doc, indent=2) + "\n")
    _log.info("%s", md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
