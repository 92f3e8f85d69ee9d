"""Measure: EfficientNet-B3's post-training int8 collapse and its recovery by the recipe search (issue 12, item 4).

    .venv/bin/python benchmarks/measure_b3_recovery.py --out b3-out [--shared ../shared] [--image-size 128]
        [--epochs 1] [--min-agreement 0.97] [--md benchmarks/results/b3_recovery.md]

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
from edge_derm.benchmarks.measure_fidelity import REPO, WATCH, cpu_flags, edge_derm_cli, interleaved_median_ms
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
    sample = sample_images(data, cfg["classes"], int(cfg["image_size"]), cfg.get("resize_mode", "nearest"), n=None,
                           splits=("all",), purpose="fidelity", compact=True)
    models = {name: TFLiteModel(path, num_threads=1, check_hash=False) for name, path in files.items()}
    probs = {name: m.predict(sample.images) for name, m in models.items()}
    median_ms = interleaved_median_ms(models, np.asarray(sample.images[:1], dtype=np.float32), rounds, runs)
    watch = tuple(c for c in WATCH if c in cfg["classes"])
    rows = []
    for name, path in files.items():
        fid = fidelity(probs["fp32"], probs[name], cfg["classes"], watch)
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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=Path("b3-out"))
    ap.add_argument("--shared", type=Path, default=REPO.parent / "shared")
    ap.add_argument("--datasets", nargs="+", default=["ham10000-dev", "synthetic"], choices=["synthetic", "ham10000-dev"])
    ap.add_argument("--image-size", type=int, default=128)
    ap.add_argument("--epochs", type=int, default=1, help="--epochs-per-block: the full-unfreeze step trains this many epochs per backbone block (B3: 7 blocks)")
    ap.add_argument("--per-class", type=int, default=60, help="synthetic images per class")
    ap.add_argument("--min-agreement", type=float, default=0.97)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--md", type=Path, help="also write the markdown (and a .json sibling) here")
    ap.add_argument("--force", action="store_true")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    out = args.out.resolve()
    args.shared = args.shared.resolve()  # the edge-derm subprocesses run in the repository folder
    out.mkdir(parents=True, exist_ok=True)
    results: dict = {}
    md = (f"# EfficientNet-B3: int8 collapse and recovery ({args.image_size} px, from scratch)\n\n"
          f"{machine()['cpu']} ({machine()['cores_available']} cores available), SIMD flags: "
          f"{' '.join(cpu_flags()['simd'])}, load average {os.getloadavg()[0]:.1f}. Fidelity against the fp32 "
          f"file on every image of each dataset; latency: median of {args.rounds} x {args.runs} interleaved "
          "invokes, 1 thread.\n")
    for name in args.datasets:
        data = build_data(name, out, args.shared, args.per_class, args.image_size)
        if data is None:
            continue
        run = out / f"run-{name}"
        if args.force or not (run / "model.keras").is_file():
            edge_derm_cli(["train", "--data", str(data), "--backbone", "efficientnet_b3", "--weights", "none",
                           "--unfreeze", "full", "--image-size", str(args.image_size), "--epochs-per-block",
                           str(args.epochs), "--out", str(run), "--force"])
        common = ["--verify-data", str(data), "--keep-failed", "--force"]
        folders = {"default": out / f"convert-{name}-default", "search": out / f"convert-{name}-search"}
        if args.force or not (folders["default"] / "model.json").is_file():
            edge_derm_cli(["convert", str(run), "--quantize", "fp32", "--quantize", "int8", "--out",
                           str(folders["default"]), *common], ok_codes=(0, 1))
        if args.force or not (folders["search"] / "model.json").is_file():
            edge_derm_cli(["convert", str(run), "--quantize", "int8", "--min-agreement", str(args.min_agreement),
                           "--out", str(folders["search"]), *common], ok_codes=(0, 1))
        doc = json.loads((folders["search"] / "model.json").read_text())["variants"]["int8"]
        default = json.loads((folders["default"] / "model.json").read_text())["variants"]["int8"]
        files = {"fp32": folders["default"] / "model.fp32.tflite", "int8 (default)": folders["default"] / "model.int8.tflite",
                 f"int8 search >= {args.min_agreement}: {doc['recipe']['name']}": folders["search"] / "model.int8.tflite"}
        rows = score(files, data, run, args.rounds, args.runs)
        metrics = json.loads((run / "metrics.json").read_text())
        train_s = json.loads((run / "checkpoints" / "state.json").read_text()).get("train_seconds")
        epochs = max(0, len((run / "history.csv").read_text().strip().splitlines()) - 1)  # one row per epoch
        met = rows[-1]["top1_agreement"] >= args.min_agreement
        results[name] = {"rows": rows, "search": doc["search"], "recipe": doc["recipe"],
                         "default_collapse": default.get("collapse"), "fp32_test_macro_f1": metrics["macro_f1"],
                         "fp32_test_accuracy": metrics["accuracy"], "train_seconds": train_s,
                         "epochs": epochs, "data": str(data.resolve()), "recovered_ge_bar": met}
        run_cfg = json.loads((run / "config.json").read_text())
        md += (f"\n## {name}\n\nB3 trained {epochs} epochs from scratch at {run_cfg['image_size']} px "
               f"(recipe {run_cfg['train'].get('recipe')}, lr schedule {run_cfg['train'].get('lr_schedule')}) "
               f"on `{data.resolve()}`"
               + (f" in {train_s / 60:.0f} min" if train_s else "")
               + f"; fp32 test accuracy {100 * metrics['accuracy']:.1f} %, macro F1 {100 * metrics['macro_f1']:.1f} %. "
               f"Recovered to >= {100 * args.min_agreement:.0f} % agreement: **{'met' if met else 'NOT met'}**.\n\n"
               + table(rows) + f"\n`convert --min-agreement {args.min_agreement}` tried (bar met: "
               f"{doc['search']['met']}):\n\n" + tried_table(doc["search"]))
    doc = {"kind": "measure_b3_recovery", "image_size": args.image_size, "epochs": args.epochs,
           "min_agreement": args.min_agreement, "results": results, "machine": machine(), "cpu_isa": cpu_flags(),
           "load_average": os.getloadavg(), "versions": versions(), "command": " ".join(sys.argv),
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
