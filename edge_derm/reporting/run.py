"""The run section of ``edge-derm report``: the run's settings, its datasets (counts per split), training
curves, test metrics and the forgetting matrix of a sequential plan."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any, Mapping

from edge_derm.artefacts import DatasetInfo, RunConfig
from edge_derm.errors import DataError
from edge_derm.reporting.document import Doc
from edge_derm.reporting.files import hash_files, read_json, rel
from edge_derm.reporting.format import DASH, fmt, num, pct, slug
from edge_derm.reporting.metrics import metrics_blocks


def _weights_text(cfg: RunConfig) -> str:
    """What the run's weights were, in words (plus the demo's note on them, when the run carries one)."""
    weights = cfg.weights
    if weights in (None, "none"):
        text = "none: trained from scratch (no pre-trained weights)"
    elif weights == "imagenet":
        text = "imagenet: ImageNet pre-trained weights"
    else:
        text = f"{weights}"
    note = cfg.get("weights_note")
    return text + (f" ({note})" if note else "")


def run_section(doc: Doc, path: Path, cfg: RunConfig, raw: Mapping[str, Any], root: Path, seen: set[str],
                prov: list) -> None:
    """A run folder: settings, datasets, training curves, test metrics, forgetting; its provenance entry
    (``raw``: config.json as written)."""
    from edge_derm.evaluation.plots import plot_history

    name = rel(path, root)
    doc.h(1, f"Training run: {name}")
    doc.kv([("backbone", cfg.backbone), ("alpha", cfg.alpha), ("input size", cfg.image_size),
            ("resize", cfg.resize_mode), ("preprocessing", cfg.get("preprocessing")),
            ("weights", _weights_text(cfg)), ("taxonomy", cfg.taxonomy),
            ("classes", ", ".join(map(str, cfg.classes or [])) or None), ("seed", cfg.seed),
            ("parameters", cfg.get("params"))])
    data = cfg.data or []
    if data:
        doc.h(2, "Dataset")
        for d in data:
            if isinstance(d, Mapping) and d.get("dir"):
                dataset_section(doc, Path(d["dir"]), d.get("hash"), seen)
    hist = path / "history.csv"
    if hist.is_file():
        doc.h(2, "Training curves")
        try:
            rows = _read_history(hist)
            doc.img(f"{slug(name)}_history.png", plot_history(rows, None, title=f"{name}: per block step"),
                    "training curves")
            history_table(doc, rows)
        except (DataError, OSError, ValueError, csv.Error) as exc:
            doc.p(f"history.csv not plotted: {exc}", "note")
    if (path / "metrics.json").is_file():
        doc.h(2, "Test metrics")
        metrics = read_json(path / "metrics.json")
        if isinstance(metrics, Mapping):
            metrics_blocks(doc, metrics, slug(name))
    if (path / "forgetting.json").is_file():
        doc.h(2, "Forgetting across plan stages")
        forgetting_blocks(doc, path / "forgetting.json")
    prov.append((f"Run: {name}", dict(raw), [("config hash", cfg.config_hash)] +
                 [(f"dataset {i}", d.get("hash")) for i, d in enumerate(data) if isinstance(d, Mapping)] +
                 hash_files(path, ["model.keras"])))


def dataset_section(doc: Doc, ds_dir: Path, expected_hash: str | None, seen: set[str]) -> None:
    """A dataset folder (once per report): source, hash (flagged when it changed since training), counts."""
    key = str(ds_dir.resolve()) if ds_dir.exists() else str(ds_dir)
    if key in seen:
        doc.p(f"Dataset {ds_dir}: shown above.")
        return
    seen.add(key)
    try:
        info = DatasetInfo.read(ds_dir / DatasetInfo.FILENAME)
    except (OSError, DataError) as exc:
        doc.p(f"Dataset {ds_dir}: dataset.json not readable here ({type(exc).__name__}); counts not shown.",
              "note")
        return
    doc.h(3, f"Dataset: {info.get('source', ds_dir.name)}")
    doc.kv([("folder", str(ds_dir)), ("taxonomy", info.taxonomy), ("hash", info.hash),
            ("seed", info.seed), ("test fraction", info.get("test_fraction")),
            ("validation fraction", info.get("val_fraction")), ("skipped files", info.get("skipped"))])
    if expected_hash and info.hash and expected_hash != info.hash:
        doc.p(f"Warning: the run was trained on dataset hash {expected_hash}, but {ds_dir / DatasetInfo.FILENAME} "
              f"now has hash {info.hash}; the dataset changed since.", "note")
    _counts_table(doc, info)
    dropped = info.get("dropped") or {}
    if dropped:
        doc.p("Dropped source labels (not in the taxonomy): "
              + ", ".join(f"{k} ({v})" for k, v in sorted(dropped.items())) + ".")
    else:
        doc.p("No source labels were dropped.")


def _counts_table(doc: Doc, info: DatasetInfo) -> None:
    """Images per class and split (train, val, test first, then any other), with totals."""
    counts = info.counts or {}
    classes = list(info.classes or counts.keys())
    splits = [s for s in ("train", "val", "test") if any(isinstance(counts.get(c), Mapping) and s in counts[c]
                                                         for c in classes)]
    splits += sorted({s for c in classes if isinstance(counts.get(c), Mapping) for s in counts[c]} - set(splits))
    if not classes:
        return
    rows, totals = [], [0] * len(splits)
    for i, c in enumerate(classes, 1):
        cc = counts.get(c) if isinstance(counts.get(c), Mapping) else {}
        vals = [int(num(cc.get(s)) or 0) for s in splits]
        totals = [t + v for t, v in zip(totals, vals)]
        rows.append([i, c] + vals + [sum(vals)])
    rows.append(["", "total"] + totals + [sum(totals)])
    doc.table(["#", "class"] + splits + ["all"], rows, ["r", "l"] + ["r"] * (len(splits) + 1))


def _read_history(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return [dict(r) for r in csv.DictReader(fh)]


def history_table(doc: Doc, rows: list[dict[str, str]]) -> None:
    """Last epoch of each block step: the figures at the end of the step."""
    last: dict[tuple[str, str], dict[str, str]] = {}
    epochs: dict[tuple[str, str], int] = {}
    for r in rows:
        key = (str(r.get("stage") or ""), str(r.get("step", "")))
        last[key] = r
        epochs[key] = epochs.get(key, 0) + 1
    cols = [c for c in ("loss", "accuracy", "val_loss", "val_accuracy") if any(num(r.get(c)) is not None for r in rows)]
    if not last or not cols:
        return
    staged = any(k[0] for k in last)
    trows = [([k[0]] if staged else []) + [k[1], r.get("block") or DASH, epochs[k]] + [fmt(r.get(c), 4) for c in cols]
             for k, r in last.items()]
    head = (["stage"] if staged else []) + ["step", "block", "epochs"] + [f"{c} (end)" for c in cols]
    doc.table(head, trows, (["l"] if staged else []) + ["r", "l", "r"] + ["r"] * len(cols))


def forgetting_blocks(doc: Doc, path: Path) -> None:
    """The forgetting matrix of a sequential plan (``forgetting.json``)."""
    f: Any = read_json(path)
    names = f.get("stages") or []
    macro, acc = f.get("macro_f1") or [], f.get("accuracy") or []
    rows = []
    for i, name in enumerate(names):
        cells = []
        for j in range(len(names)):
            m = macro[i][j] if i < len(macro) and j < len(macro[i]) else None
            a = acc[i][j] if i < len(acc) and j < len(acc[i]) else None
            cells.append(DASH if m is None else f"{pct(m, 1)} ({pct(a, 1)})")
        rows.append([name] + cells)
    doc.p("Macro F1 % (accuracy %) of each stage's head on its own test set; rows: after training stage, "
          "columns: test set of stage.")
    doc.table(["after \\ test"] + list(names), rows)
