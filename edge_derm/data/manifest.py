"""The manifest: the one dataset form every later stage reads (no TensorFlow).

A dataset folder holds ``manifest.csv`` (``path,label,source_label,source,group,split``; paths
relative to the dataset root) and ``dataset.json`` (root, taxonomy, classes, counts, ...), which is an
:class:`edge_derm.artefacts.DatasetInfo`: it is written and read through that type only, so its ``kind`` and
``format_version`` are checked in one place.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
from collections import Counter
from dataclasses import astuple, dataclass, fields
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np

from edge_derm.artefacts import DatasetInfo
from edge_derm.data.csvfile import read_rows
from edge_derm.errors import DataError
from edge_derm.fsutil import atomic_write_text, read_json

COLUMNS = ("path", "label", "source_label", "source", "group", "split")
SPLITS = ("train", "val", "test")
#: The layout of ``dataset.json`` this edge-derm writes (kept here for older imports).
FORMAT_VERSION = DatasetInfo.FORMAT_VERSION


@dataclass
class Record:
    """One image of a dataset."""

    path: str
    label: str
    source_label: str
    source: str
    group: str
    split: str


def resolve_under(root: Path, rel: str) -> Path:
    """Join ``rel`` to ``root``; DataError when the result escapes ``root``."""
    # Lexical check (abspath folds "..") rather than resolve(): datasets often sit behind
    # symlinks, and a symlink placed inside the root is the user's choice, not an escape.
    root = Path(os.path.abspath(root))
    candidate = Path(os.path.abspath(root / rel))
    if candidate != root and root not in candidate.parents:
        raise DataError(f"path {rel!r} escapes the dataset root {root}; fix the manifest or CSV entry")
    return candidate


def records_hash(records: Iterable[Record]) -> str:
    """Content hash of the rows (order independent), used to trace results to data."""
    h = hashlib.sha256()
    for row in sorted(astuple(r) for r in records):
        h.update("\x1f".join(row).encode())
        h.update(b"\n")
    return h.hexdigest()[:16]


def count_by_class_split(records: Iterable[Record], classes: list[str]) -> dict[str, dict[str, int]]:
    c = Counter((r.label, r.split) for r in records)
    return {cls: {s: c.get((cls, s), 0) for s in SPLITS} for cls in classes}


class Manifest:
    """A dataset folder loaded into memory.

    ``dataset`` is the folder's :class:`~edge_derm.artefacts.DatasetInfo`; ``info`` is the same document as a
    plain dict (``dataset.to_json()``) for the callers that read keys by name.
    """

    def __init__(self, dir: Path, info: DatasetInfo | Mapping[str, Any], records: list[Record]):
        self.dir = Path(dir)
        self.dataset = info if isinstance(info, DatasetInfo) else dataset_info(info)
        self.info = self.dataset.to_json()
        self.records = records
        self.root = Path(self.dataset.root)
        if not self.root.is_absolute():
            self.root = (self.dir / self.root).resolve()

    @classmethod
    def load(cls, dir: str | Path) -> "Manifest":
        """Read ``manifest.csv`` and ``dataset.json`` from ``dir``.

        Raises:
            DataError: not a dataset folder, a dataset.json that is not a valid dataset document
                (including a newer ``format_version``), a bad manifest row or a label not in ``classes``.
        """
        dir = Path(dir)
        csv_path, json_path = dir / "manifest.csv", dir / "dataset.json"
        if not dir.is_dir():
            raise DataError(f"dataset folder not found: {dir}; build one with `edge-derm data build`")
        if not csv_path.is_file() or not json_path.is_file():
            raise DataError(f"{dir} is not a dataset folder (needs manifest.csv and dataset.json); "
                            "build one with `edge-derm data build`")
        info = _read_dataset_json(json_path)
        rows = read_rows(csv_path, COLUMNS, hint="rebuild the dataset")
        records = [Record(*(row[c] for c in COLUMNS)) for row in rows]
        unknown = sorted({r.label for r in records} - set(info.classes))
        if unknown:
            raise DataError(f"{csv_path}: labels {unknown} are not in dataset.json classes; rebuild the dataset")
        return cls(dir, info, records)

    @property
    def classes(self) -> list[str]:
        return list(self.info["classes"])

    @property
    def hash(self) -> str:
        return self.info.get("hash") or records_hash(self.records)

    def resolve(self, rel: str) -> Path:
        """Absolute path of a manifest entry; DataError if it escapes the root."""
        return resolve_under(self.root, rel)

    def inputs(self) -> list[Path]:
        """What a command that reads this dataset reads: the dataset folder and every image it lists
        (for :func:`edge_derm.fsutil.check_not_input`)."""
        return [self.dir, *(self.resolve(r.path) for r in self.records)]

    def subset(self, split: str) -> list[Record]:
        if split not in SPLITS:
            raise DataError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}")
        return [r for r in self.records if r.split == split]

    def arrays(self, split: str) -> tuple[list[str], np.ndarray]:
        """Absolute paths and integer labels (indices into ``classes``) of one split."""
        index = {c: i for i, c in enumerate(self.classes)}
        rows = self.subset(split)
        return [str(self.resolve(r.path)) for r in rows], np.array([index[r.label] for r in rows], dtype=np.int64)


def dataset_info(doc: Mapping[str, Any], *, source: str = "") -> DatasetInfo:
    """The :class:`DatasetInfo` of a parsed dataset.json (or of the dict a builder is about to write).

    A document without ``kind`` is one written before documents carried it: it is read as a dataset.
    Everything else (a wrong kind, a missing or newer ``format_version``, missing ``root``/``classes``)
    is the one-line DataError of :meth:`DatasetInfo.from_json`.
    """
    return DatasetInfo.from_json(doc, source=source)


def _read_dataset_json(json_path: Path) -> DatasetInfo:
    """Read and check a folder's dataset.json: a dataset document whose root and classes are usable."""
    try:
        doc = read_json(json_path)
    except (ValueError, OSError) as exc:  # UnicodeDecodeError is a ValueError
        raise DataError(f"{json_path}: invalid JSON ({exc}); rebuild the dataset") from exc
    if not isinstance(doc, dict):
        raise DataError(f"{json_path}: expected a JSON object, found {type(doc).__name__}; rebuild the dataset")
    for key in ("root", "classes"):
        if key not in doc:
            raise DataError(f"{json_path}: missing key {key!r}; rebuild the dataset")
    info = dataset_info(doc, source=str(json_path))
    if not isinstance(info.root, str) or not info.root:
        raise DataError(f"{json_path}: 'root' must be a folder path; rebuild the dataset")
    classes = info.classes
    if not isinstance(classes, list) or not all(isinstance(c, str) and c for c in classes) \
            or len(set(classes)) != len(classes):
        raise DataError(f"{json_path}: 'classes' must be a list of distinct class names; rebuild the dataset")
    return info


def write_manifest(out_dir: Path, records: list[Record], info: Mapping[str, Any]) -> dict[str, Any]:
    """Write ``manifest.csv`` and ``dataset.json`` (as a :class:`DatasetInfo`); fills counts, n_images and
    hash. Returns the info written, as a dict."""
    out_dir = Path(out_dir)
    classes = list(info["classes"])
    info = dict(info)
    info.setdefault("format_version", FORMAT_VERSION)
    info["counts"] = count_by_class_split(records, classes)
    info["n_images"] = len(records)
    info["hash"] = records_hash(records)
    dataset = dataset_info(info, source=str(out_dir / "dataset.json"))
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow([f.name for f in fields(Record)])
    for r in records:
        writer.writerow(astuple(r))
    atomic_write_text(out_dir / "manifest.csv", buf.getvalue())
    dataset.write(out_dir / "dataset.json")
    return dataset.to_json()
