"""Measure: does ImageNet pre-training matter? MobileNetV2 alpha 0.35, ImageNet vs from scratch.

    python benchmarks/scripts/measure_pretraining.py --out /tmp/pretraining \\
        [--image-size 224] [--epochs-per-block 3] [--steps-per-epoch N] [--bootstrap 1000] \\
        [--datasets synthetic ham10000] [--md benchmarks/results/pretraining.md] [--quick]

For each dataset (the synthetic default dataset, and ``../shared/data/ham10000-dev`` when it exists)
the script trains MobileNetV2 alpha 0.35 three times:

- ``imagenet``: the paper's block-wise schedule (the head, then blocks A, B, C, D,
  ``--epochs-per-block`` epochs each, lr 1e-4 head / 1e-5 backbone, class-balanced batches,
  augmentation) from the ImageNet weights file in ``../shared/weights`` (``--weights PATH``: no network);
- ``scratch (block-wise)``: the same schedule from random weights (the issue's comparison: a random
  backbone frozen at step 0 and then trained at 1e-5 stays near chance);
- ``scratch (full)``: the from-scratch recipe (``unfreeze = "full"``, plan ``o``): every layer
  trained from the first epoch at ``--lr-scratch`` (1e-3) for the same number of epochs
  (``--epochs-per-block`` x 5).

It reports the test macro F1 with a percentile bootstrap interval, accuracy, weighted F1 and
training images/s (the training loop only, no validation or evaluation), on the machine it ran on.
Finished runs in ``--out`` are reused, so a second call only trains what is missing.

Datasets are built with the project's own stages (``generate_dataset`` + the ``folder`` source;
the ``ham10000`` source; taxonomy dermai13; grouped 80:20 split, seed 0). ``--quick`` shrinks
everything (96 px, 1 epoch per block, 20 images per class, 10 steps per epoch) for a smoke run.

A script, not library code: it prints its table, and writes ``results.json`` and ``results.md``
into ``--out`` (and to ``--md`` / its ``.json`` sibling when given, with the command line on top; the
repository's copy is ``benchmarks/results/pretraining.md``). Run from the repository root: ``../shared``
(or ``$EDGE_DERM_SHARED``) is relative to it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import edge_derm  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow)
import measure_common as common

SHARED = Path(os.environ.get("EDGE_DERM_SHARED", common.SHARED))
WEIGHTS = SHARED / "weights" / "keras" / "models" / "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_224_no_top.h5"
HAM = SHARED / "data" / "ham10000-dev"


def machine() -> dict:
    """The machine this ran on (CPU model, cores, GPUs TensorFlow sees)."""
    import tensorflow as tf

    from edge_derm import provenance

    return {**provenance.machine(), "gpus": [d.name for d in tf.config.list_physical_devices("GPU")]}


def build_datasets(work: Path, names: list[str], per_class: int, synth_size: int) -> dict[str, Path]:
    """Dataset folders (built once, reused on a second run)."""
    from edge_derm.data.build import build_dataset
    from edge_derm.data.synth import generate_dataset

    out = {}
    if "synthetic" in names:
        images, ds = work / "synthetic-images", work / "synthetic"
        if not (ds / "dataset.json").is_file():
            if not images.is_dir():
                generate_dataset(images, per_class=per_class, size=synth_size, seed=0, workers=0)
            build_dataset("folder", images, ds, taxonomy="dermai13", test_fraction=0.2, seed=0)
        out["synthetic"] = ds
    if "ham10000" in names:
        if not HAM.is_dir():
            print(f"skipping ham10000: {HAM} is absent", file=sys.stderr)
        else:
            ds = work / "ham10000-dev"
            if not (ds / "dataset.json").is_file():
                build_dataset("ham10000", HAM, ds, taxonomy="dermai13", test_fraction=0.2, seed=0)
            out["ham10000"] = ds
    return out


def run_one(dataset: Path, label: str, weights: str, unfreeze: str, out: Path, args: argparse.Namespace) -> dict:
    """Train one run (or reuse a finished one) and return its row."""
    from edge_derm.training.config import TrainConfig
    from edge_derm.training.trainer import train

    lrs = (args.lr_head, args.lr_backbone) if unfreeze == "blockwise" else (args.lr_scratch, args.lr_scratch)
    # recipe "paper": the options these figures were measured with (before recipes existed)
    cfg = TrainConfig(data=[str(dataset)], recipe="paper", backbone="mobilenet_v2", alpha=0.35, image_size=args.image_size,
                      weights=weights, epochs_per_block=args.epochs_per_block, steps_per_epoch=args.steps_per_epoch,
                      bootstrap=args.bootstrap, seed=args.seed, deterministic=not args.no_deterministic,
                      lr_head=lrs[0], lr_backbone=lrs[1], unfreeze=unfreeze)
    t0 = time.perf_counter()
    resume = (out / "checkpoints" / "state.json").is_file()
    res = train(cfg, out, resume=resume, force=not resume)
    m = res["metrics"] or {}
    saved = out / "row.json"
    if resume and saved.is_file():  # a finished run reused: keep the wall time of the run that trained it
        return json.loads(saved.read_text())
    supports = [c["support"] for c in (m.get("per_class") or {}).values() if c.get("support")]
    share = max(supports) / sum(supports) if supports else None
    row = {
        "dataset": dataset.name, "weights": label, "unfreeze": cfg.unfreeze,
        "schedule": [f"{st['block']} x {st['epochs']}" for st in cfg.steps()],
        "lr": {"head": cfg.lr_head, "backbone": cfg.lr_backbone}, "n_classes": len(m.get("classes") or []),
        "chance_accuracy": (1 / len(m["classes"])) if m.get("classes") else None,
        "n_test": m.get("n"), "macro_f1": m.get("macro_f1"), "macro_f1_ci": (m.get("bootstrap") or {}).get("macro_f1"),
        "accuracy": m.get("accuracy"), "weighted_f1": m.get("weighted_f1"),
        "train_images_per_s": res["train_images_per_s"], "wall_s": round(time.perf_counter() - t0, 1),
        "run": str(out),
        # predicting the test set's most common class for every image
        "majority_accuracy": share, "majority_macro_f1": 2 * share / (1 + share) / len(supports) if share else None,
    }
    saved.write_text(json.dumps(row, indent=2) + "\n")
    return row


def markdown(rows: list[dict], info: dict) -> str:
    def pct(v):
        return "" if v is None else f"{100 * v:.1f} %"

    lines = [f"MobileNetV2 alpha 0.35, {info['image_size']} px. Block-wise rows: head, A, B, C, D x "
             f"{info['epochs_per_block']} epochs each, lr {info['lr_head']:g} head / {info['lr_backbone']:g} "
             f"backbone (the paper's). Full rows: every layer from the start for "
             f"{5 * info['epochs_per_block']} epochs, lr {info['lr_scratch']:g}. Steps/epoch "
             f"{info['steps_per_epoch'] or 'ceil(n/batch)'}, class-balanced batches (1 image per class), "
             f"augmentation on, seed {info['seed']}, {info['bootstrap']} bootstrap resamples. Machine: "
             f"{info['machine']['cpu']}, {info['machine']['cores_available']} cores (shared with other jobs), "
             f"GPUs: {', '.join(info['machine']['gpus']) or 'none'}.",
             "", "| dataset | weights (schedule) | test n | macro F1 (95 % CI) | accuracy | weighted F1 | "
             "1/C | majority class: acc. / macro F1 | train images/s | wall s |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        ci = r["macro_f1_ci"]
        ci_text = f" ({100 * ci[0]:.1f}-{100 * ci[1]:.1f})" if ci else ""
        rate = f"{r['train_images_per_s']:.1f}" if r["train_images_per_s"] else ""
        lines.append(f"| {r['dataset']} | {r['weights']} ({r['unfreeze']}) | {r['n_test']} | "
                     f"{pct(r['macro_f1'])}{ci_text} | {pct(r['accuracy'])} | {pct(r['weighted_f1'])} | "
                     f"{pct(r['chance_accuracy'])} | {pct(r.get('majority_accuracy'))} / "
                     f"{pct(r.get('majority_macro_f1'))} | {rate} | {r['wall_s']:.0f} |")
    lines += ["", "1/C: accuracy of a uniform guess. Majority class: accuracy and macro F1 of predicting the test "
              "set's most common class for every image (macro F1 averages the classes present in the test set). "
              "Train images/s counts the training loop only (warm-up batch, validation and evaluation excluded); "
              "block-wise rows train fewer layers per step, so they are faster per image. Wall s: the whole run "
              "(model build, training, evaluation with the bootstrap). Runs in `--out` are reused on a second call."]
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                epilog=f"Data and weights come from $EDGE_DERM_SHARED, else ../shared relative to the "
                                       f"repository root (here: {SHARED}).")
    p.add_argument("--out", type=Path, required=True, help="Results folder (runs and datasets go inside).")
    p.add_argument("--datasets", nargs="+", default=["synthetic", "ham10000"], choices=["synthetic", "ham10000"])
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--epochs-per-block", type=int, default=3)
    p.add_argument("--steps-per-epoch", type=int, default=None)
    p.add_argument("--per-class", type=int, default=60, help="Synthetic images per class.")
    p.add_argument("--synth-size", type=int, default=256, help="Synthetic image side in pixels.")
    p.add_argument("--bootstrap", type=int, default=1000)
    p.add_argument("--lr-head", type=float, default=1e-4, help="Head learning rate (the paper's 1e-4).")
    p.add_argument("--lr-backbone", type=float, default=1e-5, help="Backbone learning rate (the paper's 1e-5).")
    p.add_argument("--lr-scratch", type=float, default=1e-3,
                   help="Learning rate of every layer in the from-scratch (full) runs.")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--weights-file", type=Path, default=WEIGHTS)
    p.add_argument("--no-scratch-full", action="store_true",
                   help="Skip the from-scratch recipe (unfreeze = full, plan o's schedule).")
    p.add_argument("--md", type=Path, default=None,
                   help="Also write the table here (e.g. benchmarks/results/pretraining.md) and the rows "
                        "to its .json sibling, with the command line on top.")
    p.add_argument("--no-deterministic", action="store_true",
                   help="Allow non-deterministic (faster, or GPU-only) ops.")
    p.add_argument("--quick", action="store_true", help="Smoke-run sizes (96 px, 1 epoch/block, 10 steps/epoch).")
    args = p.parse_args(argv)
    if args.quick:
        args.image_size, args.epochs_per_block, args.per_class = 96, 1, 20
        args.steps_per_epoch, args.bootstrap, args.synth_size = args.steps_per_epoch or 10, min(args.bootstrap, 200), 128
    return args


def write_results(args: argparse.Namespace, rows: list[dict], info: dict) -> str:
    """results.json / results.md in ``--out`` (and ``--md`` with its .json sibling); the markdown."""
    (args.out / "results.json").write_text(json.dumps({"kind": "measure_pretraining", "info": info, "rows": rows},
                                                      indent=2) + "\n")
    md = markdown(rows, info)
    (args.out / "results.md").write_text(md)
    if args.md is not None:
        args.md.parent.mkdir(parents=True, exist_ok=True)
        args.md.write_text(f"# ImageNet pre-training vs from scratch\n\n```\n{info['command']}\n```\n\n{md}")
        args.md.with_suffix(".json").write_text(
            json.dumps({"kind": "measure_pretraining", "info": info, "rows": rows}, indent=2) + "\n")
    return md


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    command = " ".join([".venv/bin/python benchmarks/scripts/measure_pretraining.py",
                        *(argv if argv is not None else sys.argv[1:])])
    if not args.weights_file.is_file():
        print(f"error: ImageNet weights file not found: {args.weights_file} (see ../shared/weights/README.md)",
              file=sys.stderr)
        return 1
    os.environ.setdefault("EDGE_DERM_OFFLINE", "1")
    args.out.mkdir(parents=True, exist_ok=True)
    datasets = build_datasets(args.out / "data", args.datasets, args.per_class, args.synth_size)
    rows = []
    variants = [("imagenet", str(args.weights_file), "blockwise"), ("scratch", "none", "blockwise")]
    if not args.no_scratch_full:
        variants.append(("scratch", "none", "full"))
    for name, ds in datasets.items():
        for label, weights, unfreeze in variants:
            run_dir = args.out / "runs" / f"{name}-{label}-{unfreeze}"
            rows.append(run_one(ds, label, weights, unfreeze, run_dir, args))
            print(json.dumps(rows[-1]), flush=True)
    info = {"image_size": args.image_size, "epochs_per_block": args.epochs_per_block,
            "steps_per_epoch": args.steps_per_epoch, "bootstrap": args.bootstrap, "seed": args.seed,
            "lr_head": args.lr_head, "lr_backbone": args.lr_backbone, "lr_scratch": args.lr_scratch,
            "command": command, "synthetic": {"per_class": args.per_class, "size": args.synth_size},
            "machine": machine(), "weights_file": str(args.weights_file)}
    print(write_results(args, rows, info))
    return 0


if __name__ == "__main__":
    sys.exit(main())
