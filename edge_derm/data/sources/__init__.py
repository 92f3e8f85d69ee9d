"""Dataset sources: readers of the public datasets' native layouts, registered by name.

Each source is one module with a ``read(root, **options) -> list[SourceItem]`` function
registered with :func:`register`. A source only lists what the release says (image path,
the dataset's own label, group id, official split); it does not open images or map labels —
:mod:`edge_derm.data.build` does that. No TensorFlow here.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

from edge_derm.data.csvfile import read_rows
from edge_derm.errors import ConfigError, DataError

#: File extensions read as images by the folder-style sources (lower case).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif")

# name -> module (imported on first use, so `edge-derm --help` stays fast).
_MODULES = {
    "folder": "folder",
    "csv": "csv_source",
    "derm7pt": "derm7pt",
    "dermofit": "dermofit",
    "ham10000": "ham10000",
    "isic2019": "isic2019",
    "pad-ufes-20": "pad_ufes20",
}
_REGISTRY: dict[str, "SourceSpec"] = {}


@dataclass(frozen=True)
class SourceItem:
    """One image listed by a source.

    Attributes:
        path: POSIX path relative to the dataset root, as the release writes it.
        source_label: the dataset's own label (e.g. ``nv``, ``basal cell carcinoma``).
        group: lesion / patient / case id; images of one group never straddle splits
            (``""``: none known, the image is its own group).
        split: official split (``train``/``val``/``test``) or ``""`` when the source has none.
    """

    path: str
    source_label: str
    group: str
    split: str = ""


@dataclass(frozen=True)
class SourceSpec:
    """A registered source: its name, reader and accepted options."""

    name: str
    read: Callable[..., list[SourceItem]]
    options: tuple[str, ...] = ()
    description: str = ""


def register(name: str, options: Iterable[str] = (), description: str = ""):
    """Decorator registering a ``read(root, **options)`` function under ``name``."""

    def deco(fn: Callable[..., list[SourceItem]]) -> Callable[..., list[SourceItem]]:
        _REGISTRY[name] = SourceSpec(name, fn, tuple(options), description or (fn.__doc__ or "").split("\n")[0])
        return fn

    return deco


def list_sources() -> list[str]:
    """Names of the registered sources."""
    return list(_MODULES)


def get_source(name: str) -> SourceSpec:
    """The source registered as ``name``; ConfigError listing the known names otherwise."""
    if name not in _MODULES:
        raise ConfigError(f"unknown source {name!r}; use one of: {', '.join(_MODULES)}")
    if name not in _REGISTRY:
        importlib.import_module(f"{__name__}.{_MODULES[name]}")
    return _REGISTRY[name]


def read_source(name: str, root: str | Path, **options: Any) -> list[SourceItem]:
    """List the images of dataset ``name`` unpacked at ``root``.

    Raises:
        ConfigError: unknown source or an option the source does not take.
        DataError: missing root, metadata file or columns.
    """
    spec = get_source(name)
    given = {k: v for k, v in options.items() if v is not None and v is not False}
    unknown = sorted(set(given) - set(spec.options))
    if unknown:
        takes = ", ".join(f"--{o.replace('_', '-')}" for o in spec.options) or "no options"
        raise ConfigError(f"source {name!r} does not take {', '.join('--' + u.replace('_', '-') for u in unknown)} "
                          f"(it takes {takes})")
    root = Path(root)
    if not root.exists():
        raise DataError(f"dataset root not found: {root}; pass the folder the {name} release was unpacked to")
    return spec.read(root, **given)


# ---------------------------------------------------------------------------- helpers for the source modules


def require_dir(root: Path, name: str) -> Path:
    """``root`` if it is a folder, DataError otherwise."""
    if not root.is_dir():
        raise DataError(f"{root} is not a folder; pass the folder the {name} release was unpacked to")
    return root


def read_table(path: Path, required: Iterable[str], what: str, delimiter: str = ",") -> list[dict[str, str]]:
    """Read a CSV file into dicts (values stripped), checking that ``required`` columns exist.

    Raises:
        DataError: the file is missing, unreadable, or lacks a required column (named).
    """
    if not path.is_file():
        raise DataError(f"{what} not found: {path}; check that ROOT is the unpacked dataset folder")
    return read_rows(path, required, hint="is this the right file?", delimiter=delimiter, strip=True)


def index_files(root: Path, dirs: Iterable[Path], suffixes: tuple[str, ...] | None = None) -> dict[str, str]:
    """Map file name -> POSIX path relative to ``root`` for every file under ``dirs`` (recursive).

    Walks folders in sorted order so that a name present twice (e.g. Kaggle's duplicated
    HAM10000 folders) resolves the same way on every machine: the first one wins.
    """
    found: dict[str, str] = {}
    for d in sorted(dirs):
        for dirpath, dirnames, filenames in os.walk(d, followlinks=True):
            dirnames.sort()
            for fn in sorted(filenames):
                if suffixes is not None and not fn.lower().endswith(suffixes):
                    continue
                found.setdefault(fn, Path(os.path.relpath(os.path.join(dirpath, fn), root)).as_posix())
    return found


def subdirs_matching(root: Path, prefix: str) -> list[Path]:
    """Immediate sub-folders of ``root`` whose lower-case name starts with ``prefix``."""
    return sorted(p for p in root.iterdir() if p.is_dir() and p.name.lower().startswith(prefix))
