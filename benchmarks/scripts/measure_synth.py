"""Measure: how hard the synthetic dataset is for a small plain CNN.

    python benchmarks/scripts/measure_synth.py [--per-class 130] [--train 100] [--size 64]
        [--epochs 30] [--seed 0] [--json out.json]

Generates ``per_class`` images of each of the 13 dermai13 classes with
``edge_derm.data.synth.generate_dataset``, keeps the first ``train`` per class for training and
the rest for testing, trains a small plain tf_keras CNN (4 conv blocks, GAP, softmax; no
augmentation) and reports test accuracy and macro F1 against chance (1/13). The generator's goal:
far above chance, well below 100 %. Also reports the generator's speed.

Scored with the project's evaluator (``edge_derm.evaluation.compute_metrics``). Run from the repository
root. A script, not library code: it prints its table.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import edge_derm  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow)
from edge_derm.data.images import load_for_model
from edge_derm.data.synth import CLASSES, generate_dataset
from edge_derm.evaluation.metrics import compute_metrics


def small_cnn(size: int, num_classes: int):
    """A plain CNN: 4 x (conv-BN-ReLU, conv-BN-ReLU, max-pool), GAP, dense softmax."""
    import tf_keras as keras

    inp = keras.Input((size, size, 3))
    x = keras.layers.Rescaling(1 / 127.5, offset=-1)(inp)
    for filters in (24, 48, 96, 160):
        for _ in range(2):
            x = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False)(x)
            x = keras.layers.BatchNormalization()(x)
            x = keras.layers.ReLU()(x)
        x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dropout(0.3)(x)
    out = keras.layers.Dense(num_classes, activation="softmax")(x)
    return keras.Model(inp, out)


def load(root: Path, per_class: int, train: int, size: int):
    xs = {"train": [], "test": []}
    ys = {"train": [], "test": []}
    for ci, cls in enumerate(CLASSES):
        files = sorted((root / cls).glob("*.png"))
        if len(files) != per_class:
            raise SystemExit(f"expected {per_class} images in {root / cls}, found {len(files)}")
        for i, f in enumerate(files):
            part = "train" if i < train else "test"
            xs[part].append(load_for_model(f, size))
            ys[part].append(ci)
    return ({k: np.stack(v) for k, v in xs.items()}, {k: np.array(v) for k, v in ys.items()})


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--per-class", type=int, default=130)
    ap.add_argument("--train", type=int, default=100, help="images per class for training (rest: test)")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=1, help="generator processes")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args(argv)
    if not 0 < args.train < args.per_class:
        ap.error("--train must be between 1 and --per-class - 1")

    import tensorflow as tf
    import tf_keras as keras

    tf.keras.utils.set_random_seed(args.seed)
    with tempfile.TemporaryDirectory(prefix="edge derm synth ") as tmp:
        root = Path(tmp) / "synth"
        t0 = time.perf_counter()
        generate_dataset(root, per_class=args.per_class, size=args.size, seed=args.seed, workers=args.workers)
        gen_s = time.perf_counter() - t0
        x, y = load(root, args.per_class, args.train, args.size)

    n_cls = len(CLASSES)
    model = small_cnn(args.size, n_cls)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    t0 = time.perf_counter()
    hist = model.fit(x["train"], y["train"], epochs=args.epochs, batch_size=32, shuffle=True, verbose=2,
                     validation_data=(x["test"], y["test"]))
    train_s = time.perf_counter() - t0
    test = compute_metrics(y["test"], model.predict(x["test"], batch_size=128, verbose=0), CLASSES)
    train = compute_metrics(y["train"], model.predict(x["train"], batch_size=128, verbose=0), CLASSES)
    cm = test["confusion"]
    # every class has test images (per_class > train), so each sensitivity is defined
    per_class_recall = {cls: test["per_class"][cls]["sensitivity"] for cls in CLASSES}
    res = {
        "images_generated": args.per_class * n_cls, "size": args.size,
        "generator_images_per_min": args.per_class * n_cls / gen_s * 60, "generator_workers": args.workers,
        "train_images": int(len(y["train"])), "test_images": int(len(y["test"])), "epochs": args.epochs,
        "train_accuracy": train["accuracy"],
        "test_accuracy": test["accuracy"],
        "test_macro_f1": test["macro_f1"],
        "chance": 1 / n_cls, "train_seconds": train_s,
        "val_accuracy_per_epoch": [round(v, 3) for v in hist.history["val_accuracy"]],
        "test_recall_per_class": per_class_recall,
    }
    print(f"generator: {res['generator_images_per_min']:.0f} images/min at {args.size}px "
          f"({args.workers} worker(s))")
    print(f"small CNN, {args.epochs} epochs on {res['train_images']} images: "
          f"train acc {res['train_accuracy']:.3f}, test acc {res['test_accuracy']:.3f}, "
          f"test macro F1 {res['test_macro_f1']:.3f}, chance {res['chance']:.3f}")
    print("per-class test recall: " + ", ".join(f"{k} {v:.2f}" for k, v in per_class_recall.items()))
    print("confusion (rows = truth):\n" + "\n".join(f"{c:>9} " + " ".join(f"{v:3d}" for v in row)
                                                    for c, row in zip(CLASSES, cm)))
    if args.json:
        args.json.write_text(json.dumps(res, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
