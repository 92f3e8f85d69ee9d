"""Training data: one or more dataset folders turned into train / val / test arrays (no TensorFlow)."""

from __future__ import annotations

from dataclasses import dataclass, field
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
    train_groups: list[str] | None = None
    #: Where the val split came from: ``"dataset"`` (its own), ``"carved"`` (from train) or None.
    val_source: str | None = None
    #: Class descriptions from the datasets' own dataset.json (their taxonomy's names).
    descriptions: dict[str, str] = field(default_factory=dict)


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
    train = _concat(manifests, "train", index)
    train_groups: list[str] = []
    for i, m in enumerate(manifests):
        train_groups += [f"{i}:{r.group}" for r in m.subset("train") if index.get(r.label, -1) >= 0]
    if need_train:
        counts = np.bincount(train[1], minlength=len(classes))
        empty = [c for c, n in zip(classes, counts) if n == 0]
        if empty:
            raise DataError(f"class(es) {', '.join(empty)} have no training images in {', '.join(dirs)}; "
                            "add images or rebuild the dataset without them")
    val = _concat(manifests, "val", index)
    test = _split(manifests[-1], "test", index)
    taxonomy = manifests[-1].info.get("taxonomy")
    triage, descriptions = _triage_and_descriptions(manifests, classes)
    return TrainingData(
        classes=classes,
        taxonomy=taxonomy,
        triage=triage if any(g != "unknown" for g in triage.values()) else taxonomy_triage(taxonomy, classes),
        descriptions=descriptions,
        datasets=[{"dir": str(Path(m.dir).resolve()), "hash": m.hash} for m in manifests],
        train=train,
        val=val if len(val[0]) else None,
        test=test if len(test[0]) else None,
        train_groups=train_groups,
        val_source="dataset" if len(val[0]) else None,
    )


def _split(m: Manifest, name: str, index: dict[str, int]) -> tuple[list[str], np.ndarray]:
    """A split of one dataset with its labels renumbered to ``index`` (images of other classes left out)."""
    paths, labels = m.arrays(name)
    remap = np.array([index.get(c, -1) for c in m.classes], dtype=np.int64)
    mapped = remap[labels] if len(labels) else labels
    keep = mapped >= 0
    return [p for p, k in zip(paths, keep) if k], mapped[keep]


def _concat(manifests: list[Manifest], name: str, index: dict[str, int]) -> tuple[list[str], np.ndarray]:
    """The split ``name`` of every dataset, one after another (see :func:`_split`)."""
    paths: list[str] = []
    labels: list[np.ndarray] = []
    for m in manifests:
        p, y = _split(m, name, index)
        paths += p
        labels.append(y)
    return paths, np.concatenate(labels) if labels else np.zeros(0, np.int64)


def _triage_and_descriptions(manifests: list[Manifest], classes: list[str]) -> tuple[dict[str, str], dict[str, str]]:
    """The triage group of each class (``unknown`` when no dataset names one) and the class descriptions.

    Each dataset carries its taxonomy's triage and descriptions (dataset.json): a custom taxonomy file keeps
    them although no taxonomy of that name ships; older datasets fall back to the name (:func:`taxonomy_triage`).
    """
    own_triage: dict[str, str] = {}
    descriptions: dict[str, str] = {}
    for m in manifests:
        own_triage.update({str(k): str(v) for k, v in (m.info.get("triage") or {}).items() if v != "unknown"})
        descriptions.update({str(k): str(v) for k, v in (m.info.get("descriptions") or {}).items()})
    return ({c: own_triage.get(c, "unknown") for c in classes},
            {c: descriptions[c] for c in classes if c in descriptions})


def carve_validation(data: TrainingData, fraction: float, seed: int) -> list[str]:
    """Move ``fraction`` of each class's training images (whole groups) into a val split, in place.

    Only when the data has no val split of its own. Uses the project's grouped stratified split, so no
    lesion is on both sides. Returns warnings (e.g. a class with no validation image).
    """
    from edge_derm.data.split import split_groups

    if data.val is not None or fraction <= 0:
        return []
    paths, labels = data.train
    groups = data.train_groups if data.train_groups and len(data.train_groups) == len(paths) \
        else [str(i) for i in range(len(paths))]
    names = [data.classes[int(y)] for y in labels]
    splits, warnings = split_groups(names, groups, test_fraction=fraction, val_fraction=0.0, seed=seed)
    is_val = np.array([s == "test" for s in splits])
    if not is_val.any() or is_val.all():
        return warnings + [f"too few training groups to carve a {fraction:.0%} validation split; none used"]
    data.val = ([p for p, v in zip(paths, is_val) if v], labels[is_val])
    data.train = ([p for p, v in zip(paths, is_val) if not v], labels[~is_val])
    data.train_groups = [g for g, v in zip(groups, is_val) if not v]
    data.val_source = "carved"
    missing = [c for i, c in enumerate(data.classes) if not (data.val[1] == i).any()]
    if missing:
        warnings.append(f"the validation split has no image of {', '.join(missing)}: its macro F1 and "
                        "the operating point ignore them")
    return [w.replace("is not tested", "has no validation image") for w in warnings]


def taxonomy_triage(taxonomy: str | None, classes: list[str]) -> dict[str, str] | None:
    """The triage groups of ``classes`` in the shipped taxonomy ``taxonomy``; None when it names none."""
    if not taxonomy:
        return None
    try:
        from edge_derm.data.taxonomy import load_taxonomy

        tax = load_taxonomy(taxonomy)
    except Exception:  # a custom or missing taxonomy only loses the triage view
        return None
    triage = {c: tax.triage_of(c) for c in classes}
    return triage if any(g != "unknown" for g in triage.values()) else None
