"""Measure: input-pipeline throughput against a MobileNetV2 training step, and CLI start-up.

    python benchmarks/scripts/measure_pipeline.py [--size 300] [--batches 40]
        [--train-steps 6] [--json out.json]

* Pipeline: ``edge_derm.data.pipeline.make_dataset(training=True)`` at ``size`` (300) with the
  paper's augmentation, class-balanced batches of 13, no cache, reading 600x450 JPEGs (the
  HAM10000 format; drawn by the synthetic generator). Images per second after a warm-up.
* Training step: MobileNetV2 (alpha 1.0, ``weights=None``, ``size`` px, the paper's head) with
  Adam and categorical cross-entropy, ``train_on_batch`` on batches of 13 held in memory.
  Images per second after a warm-up. The ratio pipeline / training step should be >= 3.
* Start-up: wall time of ``edge-derm --help`` (the console script, a fresh process, median of
  5) and whether the CLI imported TensorFlow. Goal < 1 s and no TensorFlow.

Both throughputs use every core TensorFlow sees, one after the other. Run from the repository root.
A script, not library code: it prints its table.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import edge_derm  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow)
from edge_derm.data.synth import CLASSES, render
from edge_derm.provenance import machine

NUM_CLASSES = len(CLASSES)


def make_jpegs(root: Path, per_class: int, seed: int = 0) -> tuple[list[str], np.ndarray]:
    """600x450 JPEGs of synthetic lesions, ``per_class`` per class."""
    from PIL import Image

    paths, labels = [], []
    for ci, cls in enumerate(CLASSES):
        (root / cls).mkdir(parents=True)
        for i in range(per_class):
            img = Image.fromarray(render(cls, i, 450, seed)).resize((600, 450), Image.BILINEAR)
            p = root / cls / f"{cls}_{i:03d}.jpg"
            img.save(p, quality=90)
            paths.append(str(p))
            labels.append(ci)
    return paths, np.array(labels)


def pipeline_throughput(paths, labels, size: int, batches: int, warmup: int = 5) -> float:
    from edge_derm.data.pipeline import AugmentConfig, make_dataset

    ds = make_dataset(paths, labels, NUM_CLASSES, size, training=True, augment=AugmentConfig(), seed=0)
    it = iter(ds)
    for _ in range(warmup):
        next(it)
    n = 0
    t0 = time.perf_counter()
    for _ in range(batches):
        x, _y = next(it)
        n += int(x.shape[0])
    return n / (time.perf_counter() - t0)


def build_mobilenet_v2(size: int):
    """The contract's classifier (``models.build_classifier``): MobileNetV2 alpha 1.0, random weights."""
    from edge_derm.models import build_classifier

    return build_classifier("mobilenet_v2", NUM_CLASSES, image_size=size, alpha=1.0, weights="none")


def train_step_throughput(size: int, steps: int, warmup: int = 2) -> float:
    import tf_keras as keras

    model = build_mobilenet_v2(size)
    model.compile(optimizer=keras.optimizers.Adam(1e-4), loss="categorical_crossentropy")
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (NUM_CLASSES, size, size, 3)).astype(np.float32)
    y = np.eye(NUM_CLASSES, dtype=np.float32)
    for _ in range(warmup):
        model.train_on_batch(x, y)
    t0 = time.perf_counter()
    for _ in range(steps):
        model.train_on_batch(x, y)
    return steps * NUM_CLASSES / (time.perf_counter() - t0)


def cli_startup(repeats: int = 5) -> dict:
    exe = Path(sys.executable).with_name("edge-derm")
    cmd = [str(exe), "--help"] if exe.exists() else [shutil.which("edge-derm") or "edge-derm", "--help"]
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        times.append(time.perf_counter() - t0)
    probe = ("import sys, contextlib, io\nfrom edge_derm.cli import main\n"
             "with contextlib.redirect_stdout(io.StringIO()): main(['--help'])\n"
             "print('tensorflow' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", probe], check=True, capture_output=True, text=True).stdout
    return {"help_seconds_median": statistics.median(times), "help_seconds_all": times,
            "tensorflow_imported": out.strip().splitlines()[-1] == "True"}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=300)
    ap.add_argument("--batches", type=int, default=40, help="pipeline batches to time (13 images each)")
    ap.add_argument("--train-steps", type=int, default=6)
    ap.add_argument("--per-class", type=int, default=12, help="source JPEGs per class")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args(argv)

    res = {"machine": machine(), "size": args.size}
    res["cli"] = cli_startup()  # first, before this process competes for the CPU
    with tempfile.TemporaryDirectory(prefix="edge derm pipeline ") as tmp:
        paths, labels = make_jpegs(Path(tmp), args.per_class)
        res["pipeline_images_per_s"] = pipeline_throughput(paths, labels, args.size, args.batches)
    res["train_step_images_per_s"] = train_step_throughput(args.size, args.train_steps)
    res["ratio"] = res["pipeline_images_per_s"] / res["train_step_images_per_s"]

    m = res["machine"]
    print(f"machine: {m['cpu']}, {m['cores_available']} cores available")
    print(f"pipeline (600x450 JPEG -> {args.size}px, augmented, balanced batches of 13): "
          f"{res['pipeline_images_per_s']:.1f} images/s")
    print(f"MobileNetV2 1.0 training step at {args.size}px, batch 13: {res['train_step_images_per_s']:.1f} images/s")
    print(f"ratio: {res['ratio']:.1f}x (goal >= 3x) {'OK' if res['ratio'] >= 3 else 'BELOW GOAL'}")
    cli = res["cli"]
    print(f"edge-derm --help: {cli['help_seconds_median']:.2f} s median (goal < 1 s), "
          f"TensorFlow imported: {cli['tensorflow_imported']}")
    if args.json:
        args.json.write_text(json.dumps(res, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
