"""Calibration and verification images: seeded, class-stratified samples of a dataset folder.

Images are preprocessed with :func:`edge_derm.data.images.load_for_model`, exactly as at
evaluation and in the runtime. No TensorFlow here.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from edge_derm.data.images import load_for_model
from edge_derm.data.manifest import Manifest
from edge_derm.errors import ConversionError, DataError
from edge_derm.progress import track

_log = logging.getLogger(__name__)


@dataclass
class ImageSample:
    """Preprocessed images of one dataset with what they are.

    Attributes:
        images: float32 [N, S, S, 3] in [0, 255].
        labels: int indices into ``classes`` (-1 for a label the model does not know).
        classes: the model's classes.
        dataset: the dataset folder.
        dataset_hash: its manifest hash.
        split: the split(s) sampled.
        missing: model classes with no image in the sample.
        skipped: unreadable files left out.
    """

    images: np.ndarray
    labels: np.ndarray
    classes: list[str]
    dataset: str
    dataset_hash: str
    split: str
    missing: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    def summary(self) -> dict:
        counts = {c: int((self.labels == i).sum()) for i, c in enumerate(self.classes)}
        return {"dataset": self.dataset, "dataset_hash": self.dataset_hash, "split": self.split,
                "n": int(len(self.images)), "per_class": counts, "missing_classes": self.missing,
                "skipped_files": len(self.skipped)}


def stratified_indices(labels: Sequence, n: int, seed: int = 0) -> np.ndarray:
    """Seeded sample of up to ``n`` indices, proportional per label, every label represented.

    Each label gets its proportional share (largest remainders), and at least one item while
    ``n`` allows (rarest labels first). The result is sorted, so a seed always gives the same batch.
    """
    labels = np.asarray(labels)
    if n >= len(labels):
        return np.arange(len(labels))
    rng = np.random.default_rng(seed)
    keys = sorted(set(labels.tolist()))
    counts = np.array([(labels == k).sum() for k in keys])
    quota = np.zeros(len(keys), dtype=int)
    for i in np.argsort(counts, kind="stable")[:n]:  # one each first (the rarest, if n is tiny)
        quota[i] = 1
    rest = n - quota.sum()
    if rest > 0:
        room = counts - quota
        exact = rest * room / room.sum()
        extra = np.floor(exact).astype(int)
        for i in np.argsort(-(exact - extra), kind="stable")[:rest - extra.sum()]:
            extra[i] += 1
        quota += np.minimum(extra, room)
    chosen = [rng.choice(np.flatnonzero(labels == k), size=min(q, c), replace=False)
              for k, q, c in zip(keys, quota, counts)]
    return np.sort(np.concatenate(chosen).astype(np.int64))


def sample_images(dataset_dir: str | Path, classes: Sequence[str], image_size: int, resize_mode: str, *,
                  n: int | None, seed: int = 0, splits: Sequence[str] = ("train",), purpose: str = "calibration",
                  compact: bool = False) -> ImageSample:
    """Load a stratified sample of a dataset folder, preprocessed for the model.

    Args:
        dataset_dir: a dataset folder (manifest.csv + dataset.json).
        classes: the model's classes, in output order.
        image_size: model input size.
        resize_mode: ``nearest`` or ``pad``.
        n: sample size; None for every image of the split.
        seed: sampling seed.
        splits: splits to try in order; the first that has images is used (``all`` = every record,
            ``val+test`` = the union of those splits).
        purpose: for messages.
        compact: keep the images as uint8 when that loses nothing (whole pixel values), a quarter of
            the memory, for the large fidelity sets.

    Raises:
        ConversionError: no usable image.
    """
    manifest = Manifest.load(dataset_dir)
    records, split = _first_split(manifest, splits, purpose)
    index = {c: i for i, c in enumerate(classes)}
    rec_labels = [r.label for r in records]
    chosen = stratified_indices(rec_labels, len(rec_labels) if n is None else n, seed)
    images, labels, skipped = [], [], []
    for i in track(chosen.tolist(), f"loading {purpose} images"):
        rec = records[i]
        try:
            images.append(load_for_model(manifest.resolve(rec.path), image_size, resize_mode))
        except DataError as exc:
            skipped.append(rec.path)
            _log.warning("%s image skipped: %s", purpose, exc)
            continue
        labels.append(index.get(rec.label, -1))
    if not images:
        raise ConversionError(f"none of the {len(chosen)} {purpose} images in {manifest.dir} could be read; "
                              "check the dataset folder or pass --calibration DIR")
    labels_arr = np.asarray(labels, dtype=np.int64)
    missing = [c for i, c in enumerate(classes) if not (labels_arr == i).any()]
    if missing:
        _log.warning("%s data from %s has no image of: %s", purpose, manifest.dir, ", ".join(missing))
    return ImageSample(_stack(images, compact), labels_arr, list(classes), str(manifest.dir),
                       manifest.hash, split, missing, skipped)


def _first_split(manifest: Manifest, splits: Sequence[str], purpose: str) -> tuple[list, str]:
    """The records of the first of ``splits`` that has any, and its name; ConversionError when none has."""
    records, split = [], ""
    for split in splits:
        if split == "all":
            records = manifest.records
        else:
            records = [r for part in split.split("+") for r in manifest.subset(part)]
        if records:
            break
    if not records:
        raise ConversionError(f"no {purpose} images in {manifest.dir} (splits tried: {', '.join(splits)}); "
                              "pass --calibration DIR with a dataset that has images")
    return records, split


def _stack(images: list[np.ndarray], compact: bool) -> np.ndarray:
    """One array of the images: uint8 when ``compact`` and that loses nothing (whole values in 0..255), else float32."""
    stacked = np.stack(images)
    if compact and all(np.array_equal(im, np.rint(im)) for im in images) and stacked.min() >= 0 \
            and stacked.max() <= 255:
        return stacked.astype(np.uint8)
    return stacked.astype(np.float32)
