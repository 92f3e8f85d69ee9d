"""Training data: one or more dataset folders turned into train / val / test arrays (no TensorFlow)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge_derm.data.manifest import Manifest
from edge_derm.errors import DataError


@dataclass
class TrainingData:
    """Paths and label indices of each split, over the union of the datasets' classes."""

    classes: list[str]
    taxonomy: str | None
    triage: dict[str, str] | None
    datasets: list[dict[str, Any]]
    train: tuple[list[str], np.ndarray]
    val: tuple[list[str], np.ndarray] | None
    test: tuple[list[str], np.ndarray] | None


def load_data(dirs: list[str], *, need_train: bool = True, merge: str = "union") -> TrainingData:
    """Load dataset folders; train/val are concatenated, test is the last folder's.

    With ``merge="last"`` only the last folder's classes are kept (other folders contribute
    their images of those classes); with ``"union"`` the classes of all folders.

    Raises:
        DataError: Not a dataset folder, datasets with different taxonomies, or a class with no
            training image.
    """
    manifests = [Manifest.load(d) for d in dirs]
    taxonomies = {m.info.get("taxonomy") for m in manifests}
    if len(taxonomies) > 1:
        raise DataError(f"datasets use different taxonomies ({', '.join(sorted(map(str, taxonomies)))}); "
                        "rebuild them with the same --taxonomy")
    classes: list[str] = []
    for m in (manifests[-1:] if merge == "last" else manifests):
        classes += [c for c in m.classes if c not in classes]
    index = {c: i for i, c in enumerate(classes)}

    def split(m: Manifest, name: str) -> tuple[list[str], np.ndarray]:
        paths, labels = m.arrays(name)
        remap = np.array([index.get(c, -1) for c in m.classes], dtype=np.int64)
        mapped = remap[labels] if len(labels) else labels
        keep = mapped >= 0
        return [p for p, k in zip(paths, keep) if k], mapped[keep]

    def concat(name: str) -> tuple[list[str], np.ndarray]:
        paths: list[str] = []
        labels: list[np.ndarray] = []
        for m in manifests:
            p, y = split(m, name)
            paths += p
            labels.append(y)
        return paths, np.concatenate(labels) if labels else np.zeros(0, np.int64)

    train = concat("train")
    if need_train:
        counts = np.bincount(train[1], minlength=len(classes))
        empty = [c for c, n in zip(classes, counts) if n == 0]
        if empty:
            raise DataError(f"class(es) {', '.join(empty)} have no training images in {', '.join(dirs)}; "
                            "add images or rebuild the dataset without them")
    val = concat("val")
    test = split(manifests[-1], "test")
    taxonomy = manifests[-1].info.get("taxonomy")
    return TrainingData(
        classes=classes,
        taxonomy=taxonomy,
        triage=_triage(taxonomy, classes),
        datasets=[{"dir": str(Path(m.dir).resolve()), "hash": m.hash} for m in manifests],
        train=train,
        val=val if len(val[0]) else None,
        test=test if len(test[0]) else None,
    )


def _triage(taxonomy: str | None, classes: list[str]) -> dict[str, str] | None:
    if not taxonomy:
        return None
    try:
        from edge_derm.data.taxonomy import load_taxonomy

        tax = load_taxonomy(taxonomy)
    except Exception:  # a custom or missing taxonomy only loses the triage view
        return None
    triage = {c: tax.triage_of(c) for c in classes}
    return triage if any(g != "unknown" for g in triage.values()) else None
