"""``derm7pt``: the EDRA / derm7pt release (``release_v0/meta/meta.csv`` + ``release_v0/images/``)."""

from __future__ import annotations

from pathlib import Path

from edge_derm.data.sources import SourceItem, read_table, register, require_dir
from edge_derm.errors import ConfigError, DataError

MODALITIES = ("clinic", "derm")
_SPLIT_FILES = {"train": "train_indexes.csv", "val": "valid_indexes.csv", "test": "test_indexes.csv"}


@register("derm7pt", options=("modality", "official_split"),
          description="derm7pt / EDRA release_v0 (--modality clinic|derm, --official-split)")
def read(root: Path, modality: str | None = None, official_split: bool = False) -> list[SourceItem]:
    """List one modality of derm7pt; labels are ``diagnosis`` strings, groups ``case_num``.

    ``root`` is the folder holding ``release_v0/`` or ``release_v0`` itself. Image paths are
    used exactly as ``meta.csv`` writes them (their case varies). With ``official_split`` the
    rows of ``meta/{train,valid,test}_indexes.csv`` (column ``indexes``, 0-based row numbers
    of meta.csv) give the splits.

    Raises:
        ConfigError: no or an unknown modality.
        DataError: missing meta.csv / index files / columns, a row in no or several index files.
    """
    if modality not in MODALITIES:
        raise ConfigError(f"derm7pt needs --modality clinic or derm (got {modality!r})")
    require_dir(root, "derm7pt")
    base = root / "release_v0" if (root / "release_v0").is_dir() else root
    prefix = "" if base == root else "release_v0/"
    rows = read_table(base / "meta" / "meta.csv", ("case_num", "diagnosis", modality), "derm7pt meta/meta.csv")
    splits = _official_splits(base, len(rows)) if official_split else [""] * len(rows)
    items = []
    for i, r in enumerate(rows):
        if not r[modality]:
            raise DataError(f"{base / 'meta' / 'meta.csv'} row {i}: empty {modality} path; is the file complete?")
        items.append(SourceItem(f"{prefix}images/{r[modality]}", r["diagnosis"], r["case_num"], splits[i]))
    return items


def _official_splits(base: Path, n: int) -> list[str]:
    splits = [""] * n
    for split, fname in _SPLIT_FILES.items():
        for r in read_table(base / "meta" / fname, ("indexes",), f"derm7pt official split meta/{fname}"):
            try:
                idx = int(float(r["indexes"]))
            except ValueError:
                raise DataError(f"{base / 'meta' / fname}: index {r['indexes']!r} is not a row number") from None
            if not 0 <= idx < n:
                raise DataError(f"{base / 'meta' / fname}: index {idx} is outside meta.csv's {n} rows")
            if splits[idx]:
                raise DataError(f"{base / 'meta'}: row {idx} is in both the {splits[idx]} and the {split} index files")
            splits[idx] = split
    missing = [i for i, s in enumerate(splits) if not s]
    if missing:
        raise DataError(f"{base / 'meta'}: {len(missing)} meta.csv row(s) are in no index file (first: {missing[0]}); "
                        "drop --official-split to split randomly")
    return splits
