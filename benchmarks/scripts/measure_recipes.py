"""Measure: the ``paper`` recipe against ``recommended`` (and ablations of it) on repeated grouped splits.

    python benchmarks/scripts/measure_recipes.py --out /tmp/recipes \\
        [--splits 5] [--image-size 128] [--variants paper recommended ...] [--ablation-splits 2] \\
        [--md benchmarks/results/recipes.md] [--quick]

``../shared/data/ham10000-dev`` (2049 images of 1494 lesions) is built once with the ``ham10000``
source (taxonomy dermai13), then re-split ``--splits`` times (seeds 0..K-1) into lesion-disjoint
80:20 train/test folders with ``edge-derm data split``'s function. Every variant trains MobileNetV2
alpha ``--alpha`` at ``--image-size`` px from the ImageNet file in ``../shared/weights`` on each split's
train part (the trainer carves its own grouped validation split out of it when the recipe asks) and is
scored once on the split's test part. A figure is the mean over splits with a 95 % t interval over
splits; differences are paired by split: ``recommended`` against ``paper``, ``cosine`` against
``recommended``, each ablation against ``cosine``.

Variants (``--variants``): ``paper`` and ``recommended`` (the shipped recipes), ``paper-tuned`` (the
paper's recipe with the README's former tuned flags: lr 1e-3 / 1e-4, 4 images per class per batch,
2 epochs per block), ``cosine`` (recommended with a linear warm-up of 0.5 epoch and cosine decay in
each step: the recipe before its schedule was measured), and ablations of ``cosine`` that undo one
choice each (``rec-darkening``: brightness 0.2-0.8; ``rec-no-bn``: no BatchNorm momentum /
re-estimation; ``rec-no-smoothing``; ``rec-last-epoch``: no best-epoch selection; ``rec-batch1``: one
image per class per batch), and ``rec-paper-lr``: ``recommended`` with the paper's learning rates
(1e-4 head / 1e-5 backbone), against ``recommended``. Ablations run on the first ``--ablation-splits`` splits only (time);
``--prevalence`` refits each ``recommended`` run's calibration post hoc with every ``prevalence``.

Finished runs in ``--out`` are reused, so a second call only trains what is missing. A script, not
library code: it prints its table and writes ``results.json`` / ``results.md`` into ``--out`` (and to
``--md`` and its ``.json`` sibling when given, with the command line on top; the repository's copy is
``benchmarks/results/recipes.md``). Runs from any folder: ``../shared`` beside the repository root (or
``$EDGE_DERM_SHARED``) holds the data.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import edge_derm  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow)
import measure_common as common

SHARED = Path(os.environ.get("EDGE_DERM_SHARED", common.SHARED))
HAM = SHARED / "data" / "ham10000-dev"


def weights_file(alpha: float) -> Path:
    return SHARED / "weights" / "keras" / "models" / f"mobilenet_v2_weights_tf_dim_ordering_tf_kernels_{alpha}_224_no_top.h5"


#: Variant -> TrainConfig options (besides data, backbone, size, weights, seed).
#: The recipe before its schedule was measured: recommended with a linear warm-up and cosine decay in each
#: step. The rec-* ablations undo one choice each from it (they were measured before the switch).
COSINE = {"recipe": "recommended", "lr_schedule": "cosine", "warmup_epochs": 0.5}
VARIANTS: dict[str, dict] = {
    "paper": {"recipe": "paper"},
    "recommended": {"recipe": "recommended"},
    "cosine": COSINE,
    "paper-tuned": {"recipe": "paper", "lr_head": 1e-3, "lr_backbone": 1e-4, "batch_multiple": 4,
                    "epochs_per_block": 2},
    "rec-darkening": {**COSINE, "brightness": [0.2, 0.8]},
    "rec-no-bn": {**COSINE, "bn_momentum": 0.0, "bn_recalibration": 0},
    "rec-no-smoothing": {**COSINE, "label_smoothing": 0.0},
    "rec-last-epoch": {**COSINE, "select_best": False},
    "rec-batch1": {**COSINE, "batch_multiple": 1},
    # measured after the switch to constant rates, so against recommended itself
    "rec-paper-lr": {"recipe": "recommended", "lr_head": 1e-4, "lr_backbone": 1e-5},
}
#: The reference each variant's paired differences are taken against.
REFERENCES = {"recommended": ("paper",), "cosine": ("recommended", "paper"), "paper-tuned": ("paper",),
              "rec-paper-lr": ("recommended",)}
ABLATION_BASE = "cosine"
#: (key in a row, label, unit) of the reported figures.
FIGURES = (("macro_f1", "macro F1", "%"), ("balanced_accuracy", "balanced acc.", "%"), ("accuracy", "accuracy", "%"),
           ("mm_sensitivity", "MM sens.", "%"), ("bcc_sensitivity", "BCC sens.", "%"),
           ("ece_before", "ECE raw", ""), ("ece", "ECE", ""), ("referral_sensitivity", "referral sens.", "%"),
           ("referral_specificity", "referral spec.", "%"), ("minutes", "run min", ""))
GOALS = {"macro_f1": 0.60, "balanced_accuracy": 0.65, "mm_sensitivity": 0.60, "referral_sensitivity": 0.90}


def t_interval(values: list[float]) -> tuple[float, float, float] | None:
    """Mean and 95 % Student-t interval of ``values`` (None when empty)."""
    from scipy import stats

    vals = [v for v in values if v is not None and math.isfinite(v)]
    if not vals:
        return None
    m = sum(vals) / len(vals)
    if len(vals) < 2:
        return m, float("nan"), float("nan")
    sd = (sum((v - m) ** 2 for v in vals) / (len(vals) - 1)) ** 0.5
    h = stats.t.ppf(0.975, len(vals) - 1) * sd / len(vals) ** 0.5
    return m, m - h, m + h


def row_from_run(run: Path) -> dict:
    """The figures of one finished run (metrics.json, config.json, checkpoints/state.json)."""
    m = json.loads((run / "metrics.json").read_text())
    state = json.loads((run / "checkpoints" / "state.json").read_text())
    rc = json.loads((run / "config.json").read_text())
    per = m["per_class"]
    op = m.get("operating_point") or {}
    cal = m.get("calibration") or {}
    return {
        "macro_f1": m["macro_f1"], "balanced_accuracy": m["balanced_accuracy"], "accuracy": m["accuracy"],
        "mm_sensitivity": per.get("MM", {}).get("sensitivity"), "bcc_sensitivity": per.get("BCC", {}).get("sensitivity"),
        "ece_before": cal.get("ece_before", m["ece"]), "ece": m["ece"], "temperature": cal.get("temperature"),
        "referral_sensitivity": op.get("sensitivity"), "referral_specificity": op.get("specificity"),
        "threshold": op.get("threshold"), "selected": rc.get("selected"), "n_test": m["n"],
        "minutes": state.get("wall_seconds", 0.0) / 60.0,
    }


def build_splits(work: Path, n: int) -> list[Path]:
    """``work/ds-ham`` and its re-splits ``work/split-<seed>`` (each built once)."""
    from edge_derm.data.build import build_dataset, resplit_dataset

    base = work / "ds-ham"
    if not (base / "manifest.csv").is_file():
        build_dataset("ham10000", HAM, base, taxonomy="dermai13", force=True)
    out = []
    for seed in range(n):
        d = work / f"split-{seed}"
        if not (d / "manifest.csv").is_file():
            resplit_dataset(base, d, test_fraction=0.2, seed=seed, force=True)
        out.append(d)
    return out


def train_variant(name: str, data: Path, run: Path, a: argparse.Namespace, seed: int) -> dict:
    from edge_derm.models._tf import keras
    from edge_derm.training.config import TrainConfig
    from edge_derm.training.trainer import train

    if (run / "metrics.json").is_file() and (run / "checkpoints" / "state.json").is_file():
        saved = json.loads((run / "config.json").read_text())["train"]
        from edge_derm.training.config import load_recipe

        # the recipe's resolved fields too: a run of an earlier version of a recipe is not reused as this one
        recipe = {k: v for k, v in load_recipe(VARIANTS[name]["recipe"]).items() if k != "description"}
        wanted = {"image_size": a.image_size, "alpha": a.alpha, "seed": seed,
                  **({"steps_per_epoch": 5} if a.quick else {}), **recipe, **VARIANTS[name]}
        differ = sorted(k for k, v in wanted.items() if saved.get(k) != v)
        if saved.get("bn_recalibration"):  # the per-epoch re-estimation replaces the moving averages before
            differ = [k for k in differ if k != "bn_momentum"]  # they are used: momentum changes no figure
        if differ or (saved.get("steps_per_epoch") is not None and not a.quick):
            raise SystemExit(f"error: {run} was trained with other settings ({', '.join(differ) or 'quick'}); "
                             "use another --out")
        return row_from_run(run)
    opts = dict(VARIANTS[name])
    if a.quick:
        opts.update(epochs_per_block=1, steps_per_epoch=5)
    cfg = TrainConfig(data=[str(data)], backbone="mobilenet_v2", alpha=a.alpha, image_size=a.image_size,
                      weights=str(weights_file(a.alpha)), seed=seed, **opts)
    keras.backend.clear_session()
    t0 = time.perf_counter()
    train(cfg, run, force=True)
    state_path = run / "checkpoints" / "state.json"
    state = json.loads(state_path.read_text())
    state["wall_seconds"] = time.perf_counter() - t0  # training + per-epoch validation + calibration + test
    state_path.write_text(json.dumps(state, indent=2))
    return row_from_run(run)


def prevalence_rows(run: Path, data: Path, a: argparse.Namespace, seed: int) -> dict[str, dict]:
    """Post hoc, on a finished ``recommended`` run: the calibration refitted on its own validation split with
    each ``prevalence`` (no retraining; the model and the carved split are the run's), scored on test."""
    import numpy as np

    from edge_derm import calibration as cal
    from edge_derm.models import load_model
    from edge_derm.training.config import TrainConfig
    from edge_derm.training.data import carve_validation, load_data
    from edge_derm.training.trainer import predict, score_with_calibration

    cfg = TrainConfig.from_dict(json.loads((run / "config.json").read_text())["train"])
    d = load_data([str(data)])
    carve_validation(d, cfg.val_fraction, cfg.seed)
    model = load_model(run / "model.keras")
    pv = predict(model, d.val[0], cfg.image_size, cfg.resize_mode)
    pt = predict(model, d.test[0], cfg.image_size, cfg.resize_mode)
    counts = np.bincount(d.train[1], minlength=len(d.classes))
    out = {}
    for name, kw in (("balanced", {}), ("dataset", {"train_counts": counts}),
                     ("fit", {"train_counts": counts, "prior_strength": "fit"})):
        block = cal.fit(pv, d.val[1], d.classes, d.triage, target=cfg.triage_target, **kw)
        m = score_with_calibration(d.test[1], pt, d.classes, d.triage, block)
        out[name] = {"macro_f1": m["macro_f1"], "balanced_accuracy": m["balanced_accuracy"], "accuracy": m["accuracy"],
                     "mm_sensitivity": m["per_class"]["MM"]["sensitivity"], "ece": m["ece"],
                     "prior_strength": block.get("prior_strength"),
                     "referral_sensitivity": (m.get("operating_point") or {}).get("sensitivity"),
                     "referral_specificity": (m.get("operating_point") or {}).get("specificity")}
    return out


def fmt(key: str, stat: tuple[float, float, float] | None) -> str:
    if stat is None:
        return "–"
    m, lo, hi = stat
    unit = next(u for k, _, u in FIGURES if k == key)
    scale = 100 if unit == "%" else 1
    digits = 1 if unit == "%" else (1 if key == "minutes" else 3)
    if math.isnan(lo):
        return f"{m * scale:.{digits}f}"
    return f"{m * scale:.{digits}f} ({lo * scale:.{digits}f} to {hi * scale:.{digits}f})"


def summarise(rows: dict[str, list[dict]]) -> dict:
    """Per variant: mean and interval of each figure; paired differences against paper / recommended."""
    out: dict = {}
    for name, rs in rows.items():
        entry = {"n_splits": len(rs), "figures": {k: t_interval([r[k] for r in rs]) for k, _, _ in FIGURES}}
        for ref in REFERENCES.get(name, (ABLATION_BASE,) if name.startswith("rec-") else ()):
            if ref == name or ref not in rows:
                continue
            by_split = {q.get("split", i): q for i, q in enumerate(rows[ref])}
            pairs = [(r, by_split[r.get("split", i)]) for i, r in enumerate(rs) if r.get("split", i) in by_split]
            entry[f"delta_vs_{ref}"] = {k: t_interval([r[k] - q[k] for r, q in pairs
                                                       if r[k] is not None and q[k] is not None])
                                        for k in ("macro_f1", "balanced_accuracy", "mm_sensitivity", "ece")}
        out[name] = entry
    return out


def markdown(summary: dict, rows: dict[str, list[dict]], meta: dict) -> str:
    """results.md: figures per variant, paired differences, post hoc prevalence, goals, per-split rows."""
    lines = [f"Machine: {meta['machine'].get('cpu', '?')}, {meta['machine'].get('cores_available', '?')} cores; "
             f"MobileNetV2 alpha {meta['alpha']} at {meta['image_size']} px from ImageNet; "
             f"ham10000-dev re-split {meta['splits']} times (seeds 0..{meta['splits'] - 1}, lesion-disjoint 80:20); "
             "mean over splits with a 95 % t interval over splits.", ""]
    head = ["variant", "splits"] + [label for _, label, _ in FIGURES]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, entry in summary.items():
        cells = [name, str(entry["n_splits"])] + [fmt(k, entry["figures"][k]) for k, _, _ in FIGURES]
        lines.append("| " + " | ".join(cells) + " |")
    lines += _delta_lines(summary)
    if meta.get("prevalence"):
        lines += _prevalence_lines(meta["prevalence"])
    if summary.get("recommended"):
        lines += _goal_lines(summary["recommended"])
    lines += _split_lines(rows)
    return "\n".join(lines) + "\n"


def _delta_lines(summary: dict) -> list[str]:
    """The paired-differences table: each variant against the recipe(s) it is compared with."""
    lines = ["", "Paired differences (same splits), percentage points for F1/accuracy/sensitivity:", "",
             "| variant | vs | Δ macro F1 | Δ balanced acc. | Δ MM sens. | Δ ECE |", "|---|---|---|---|---|---|"]
    for name, entry in summary.items():
        for ref in REFERENCES.get(name, (ABLATION_BASE,) if name.startswith("rec-") else ()):
            d = entry.get(f"delta_vs_{ref}")
            if not d:
                continue
            lines.append(f"| {name} | {ref} | " + " | ".join(
                fmt(k if k != "ece" else "ece", d[k]).replace("(", "(").strip() for k in
                ("macro_f1", "balanced_accuracy", "mm_sensitivity", "ece")) + " |")
    return lines


def _prevalence_lines(post: list[dict]) -> list[str]:
    """The post hoc prevalence table (``--prevalence``): one row per prevalence, mean over splits."""
    lines = ["", "`recommended` runs with the calibration refitted post hoc for each `prevalence` (same models, "
             "same validation splits; test figures, mean over splits with a 95 % t interval):", "",
             "| prevalence | macro F1 | balanced acc. | accuracy | MM sens. | ECE | referral sens. / spec. | "
             "prior strength |", "|---|---|---|---|---|---|---|---|"]
    for name in ("balanced", "dataset", "fit"):
        vals = {k: t_interval([p[name][k] for p in post]) for k in
                ("macro_f1", "balanced_accuracy", "accuracy", "mm_sensitivity", "ece", "referral_sensitivity",
                 "referral_specificity")}
        strengths = ", ".join("–" if p[name]["prior_strength"] is None else f"{p[name]['prior_strength']:.1f}"
                              for p in post)
        lines.append(f"| {name} | {fmt('macro_f1', vals['macro_f1'])} | {fmt('balanced_accuracy', vals['balanced_accuracy'])} | "
                     f"{fmt('accuracy', vals['accuracy'])} | {fmt('mm_sensitivity', vals['mm_sensitivity'])} | "
                     f"{fmt('ece', vals['ece'])} | {fmt('referral_sensitivity', vals['referral_sensitivity'])} / "
                     f"{fmt('referral_specificity', vals['referral_specificity'])} | {strengths} |")
    return lines


def _goal_lines(rec: dict) -> list[str]:
    """The goals for ``recommended`` (its summary entry), each met or not."""
    lines = ["", "Goals for `recommended` (mean over splits):", ""]
    for key, goal in GOALS.items():
        stat = rec["figures"].get(key)
        got = stat[0] if stat else None
        lines.append(f"- {key} ≥ {goal:.0%}: {'–' if got is None else f'{got:.1%}'} — "
                     f"{'**met**' if got is not None and got >= goal else '**not met**'}")
    stat = rec["figures"].get("ece")
    lines.append(f"- ECE ≤ 0.05 after temperature scaling: {stat[0]:.3f} — "
                 f"{'**met**' if stat and stat[0] <= 0.05 else '**not met**'}" if stat else "- ECE: –")
    stat = rec["figures"].get("minutes")
    lines.append(f"- training ≤ 15 min (the whole run: training, per-epoch validation, calibration, test): "
                 f"{stat[0]:.1f} min — {'**met**' if stat and stat[0] <= 15 else '**not met**'}"
                 if stat else "- training time: –")
    return lines


def _split_lines(rows: dict[str, list[dict]]) -> list[str]:
    """The per-split table: every run's test figures and the epoch it kept."""
    lines = ["", "Per split:", "", "| variant | split | macro F1 | balanced acc. | MM sens. | ECE raw → cal. | "
             "referral sens. / spec. | kept epoch |", "|---|---|---|---|---|---|---|---|"]
    for name, rs in rows.items():
        for i, r in enumerate(rs):
            sel = r.get("selected") or {}
            kept = f"step {sel.get('step')} ep {sel.get('epoch')}" if sel else "–"
            rs_ = "–" if r["referral_sensitivity"] is None else \
                f"{r['referral_sensitivity']:.1%} / {r['referral_specificity']:.1%}"
            mm = "–" if r["mm_sensitivity"] is None else f"{r['mm_sensitivity']:.1%}"
            lines.append(f"| {name} | {i} | {r['macro_f1']:.1%} | {r['balanced_accuracy']:.1%} | {mm} | "
                         f"{r['ece_before']:.3f} → {r['ece']:.3f} | {rs_} | {kept} |")
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True, help="Work folder (datasets, runs, results).")
    p.add_argument("--splits", type=int, default=5, help="Repeated grouped splits (seeds 0..K-1).")
    p.add_argument("--ablation-splits", type=int, default=2,
                   help="Splits the rec-* ablations are trained on (finished runs of further splits are included).")
    p.add_argument("--variants", nargs="+", default=["paper", "recommended"], choices=sorted(VARIANTS))
    p.add_argument("--alpha", type=float, default=0.35)
    p.add_argument("--image-size", type=int, default=128)
    p.add_argument("--md", type=Path, help="Also write the markdown (and a .json sibling) here.")
    p.add_argument("--quick", action="store_true", help="Smoke run: 1 epoch per block, 5 steps per epoch.")
    p.add_argument("--prevalence", action="store_true",
                   help="Also refit each recommended run's calibration with prevalence balanced/dataset/fit "
                        "(post hoc, no retraining) and report the test figures.")
    a = p.parse_args(argv)
    if not HAM.is_dir() or not weights_file(a.alpha).is_file():
        print(f"error: needs {HAM} and {weights_file(a.alpha)} (../shared)", file=sys.stderr)
        return 1
    from edge_derm import provenance

    a.out.mkdir(parents=True, exist_ok=True)
    splits = build_splits(a.out, a.splits)
    meta = {"machine": provenance.machine(), "versions": provenance.versions(), "alpha": a.alpha,
            "image_size": a.image_size, "splits": a.splits, "ablation_splits": a.ablation_splits,
            "variants": {v: VARIANTS[v] for v in a.variants},
            "command": "python benchmarks/scripts/measure_recipes.py " + " ".join(sys.argv[1:] if argv is None else argv)}
    # The main variants on every split first, then the ablations: partial results are useful early.
    jobs = [(name, i) for i in range(len(splits)) for name in a.variants if not name.startswith("rec-")]
    # Ablations: the first --ablation-splits splits, and any further split whose run is already finished.
    jobs += [(name, i) for i in range(len(splits)) for name in a.variants if name.startswith("rec-")
             and (i < a.ablation_splits or (a.out / "runs" / f"{name}-split{i}" / "metrics.json").is_file())]
    rows: dict[str, list[dict]] = {v: [] for v in a.variants}
    md = ""
    for name, i in jobs:
        run = a.out / "runs" / f"{name}-split{i}"
        print(f"[{time.strftime('%H:%M:%S')}] {name} on split {i} ...", flush=True)
        r = {**train_variant(name, splits[i], run, a, seed=i), "split": i}
        rows[name].append(r)
        print(f"    macro F1 {r['macro_f1']:.3f}, balanced acc {r['balanced_accuracy']:.3f}, "
              f"MM sens {r['mm_sensitivity']}, ECE {r['ece_before']:.3f} -> {r['ece']:.3f}, "
              f"{r['minutes']:.1f} min", flush=True)
        md = write_results(a, meta, {k: v for k, v in rows.items() if v})
    if a.prevalence and rows.get("recommended"):
        post = [prevalence_rows(a.out / "runs" / f"recommended-split{i}", splits[i], a, i)
                for i in range(len(rows["recommended"]))]
        meta["prevalence"] = post
        md = write_results(a, meta, {k: v for k, v in rows.items() if v})
    print(md)
    return 0


def write_results(a: argparse.Namespace, meta: dict, rows: dict[str, list[dict]]) -> str:
    summary = summarise(rows)
    md = markdown(summary, rows, meta)
    doc = {"meta": meta, "summary": summary, "rows": rows}
    (a.out / "results.json").write_text(json.dumps(doc, indent=2))
    (a.out / "results.md").write_text(md)
    if a.md:
        a.md.parent.mkdir(parents=True, exist_ok=True)
        a.md.write_text(f"<!-- {meta['command']} -->\n\n" + md)
        a.md.with_suffix(".json").write_text(json.dumps(doc, indent=2))
    return md


if __name__ == "__main__":
    sys.exit(main())
