"""The instrumented test's samples: which images, written as PNG, and the host's expected results for them.

Samples are stored as PNG so the phone decodes exactly the pixels the host used; the expectations are the
host runtime's predictions (:class:`edge_derm.runtime.TFLiteModel`, as ``edge-derm predict``) for the same
.tflite and PNGs, in the form ExpectedResults.kt reads.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_derm import provenance
from edge_derm.errors import DataError
from edge_derm.export.app import MODEL_ASSET
from edge_derm.export.metadata import FORMAT_VERSION

_log = logging.getLogger(__name__)

#: Largest side of a bundled sample; bigger images are downscaled once, before the host predicts on them.
MAX_SAMPLE_SIDE = 1024
_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}


@dataclass
class Sample:
    """An image to bundle, with its true label when known."""

    path: Path
    label: str | None



def select_samples(source: Path, labels: list[str], per_class: int, max_samples: int) -> list[Sample]:
    """Up to ``per_class`` images of each model label from a dataset folder (its test split first),
    or up to ``max_samples`` images from a plain folder (label = parent folder name when it is a label)."""
    from edge_derm.data.manifest import Manifest

    source = Path(source)
    if source.is_file() and source.name == "manifest.csv":
        source = source.parent
    if (source / "manifest.csv").is_file():
        manifest = Manifest.load(source)
        known = set(labels)
        for split in ("test", "val", "train"):
            rows = [r for r in manifest.subset(split) if r.label in known]
            if rows:
                break
        picked: list[Sample] = []
        count: dict[str, int] = {}
        for r in sorted(rows, key=lambda r: (labels.index(r.label), r.path)):
            if count.get(r.label, 0) < per_class:
                count[r.label] = count.get(r.label, 0) + 1
                picked.append(Sample(manifest.resolve(r.path), r.label))
        return picked[:max_samples]
    if not source.is_dir():
        raise DataError(f"samples not found: {source}; pass a dataset folder (manifest.csv) or a folder of images")
    files = sorted(p for p in source.rglob("*") if p.is_file() and p.suffix.lower() in _IMAGE_SUFFIXES)
    return [Sample(p, p.parent.name if p.parent.name in labels else None) for p in files[:max_samples]]


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)[:40] or "x"


def write_samples(samples: list[Sample], out_dir: Path) -> list[Sample]:
    """Write each sample as ``out_dir/NNN_label.png`` (EXIF applied, at most MAX_SAMPLE_SIDE); unreadable ones are skipped."""
    import numpy as np
    from PIL import Image

    from edge_derm.data.images import load_rgb

    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Sample] = []
    for s in samples:
        try:
            rgb = load_rgb(s.path)
        except DataError as exc:
            _log.warning("sample skipped: %s", exc)
            continue
        im = Image.fromarray(np.ascontiguousarray(rgb))
        if max(im.size) > MAX_SAMPLE_SIDE:
            im.thumbnail((MAX_SAMPLE_SIDE, MAX_SAMPLE_SIDE), Image.LANCZOS)
        target = out_dir / f"{len(written):03d}_{_safe(s.label or s.path.stem)}.png"
        im.save(target, format="PNG")
        written.append(Sample(target, s.label))
    return written


def prob_tolerance(meta: dict[str, Any]) -> float:
    """How far the phone's probabilities may be from the host's (different CPU kernels, same model)."""
    out = meta["output"]
    if out["dtype"] != "float32":
        return max(0.03, 4.0 * float(out["scale"]))  # a few quantisation steps
    return {"fp32": 0.01, "fp16": 0.02}.get(meta.get("quantization"), 0.03)


def expected_results(model: Path, meta: dict[str, Any], samples: list[Sample], base: Path) -> dict[str, Any]:
    """Host predictions for the written samples, in the form ExpectedResults.kt reads."""
    from edge_derm import runtime

    tfl = runtime.TFLiteModel(model)
    paths = [s.path for s in samples]
    probs, errors = tfl.predict_files(paths)
    if errors:
        path, msg = next(iter(errors.items()))
        raise DataError(f"could not classify {len(errors)} sample(s), e.g. {path}: {msg}")
    labels = list(meta["labels"])
    rows = []
    for s, p in zip(samples, probs):
        rows.append({"file": s.path.relative_to(base).as_posix(), "label": s.label,
                     "top1": labels[int(p.argmax())], "probs": [float(x) for x in p]})
    return {"format_version": FORMAT_VERSION, "generated_by": "edge-derm export android",
            "model": MODEL_ASSET, "model_sha256": tfl.sha256, "quantization": meta.get("quantization"),
            "labels": labels, "input": {"size": meta["input"]["size"], "resize": meta["input"]["resize"]},
            "tolerance": {"prob_atol": prob_tolerance(meta)}, "samples": rows,
            "versions": provenance.versions()}
