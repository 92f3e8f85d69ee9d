"""``csv``: a CSV with at least ``path,label`` (optional ``group``, ``split``, ``modality``)."""

from __future__ import annotations

from pathlib import Path

from edge_derm.data.csvfile import read_numbered_rows
from edge_derm.data.sources import SourceItem, register
from edge_derm.errors import ConfigError, DataError

_SPLITS = {"train": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}


@register("csv", options=("modality",), description="a CSV with path,label[,group,split,modality]")
def read(root: Path, modality: str | None = None) -> list[SourceItem]:
    """List the rows of a CSV; ``root`` is the CSV file, or a folder holding exactly one CSV.

    Paths are relative to the CSV's folder (the dataset root). Without a ``group`` value the group
    is left empty and the build makes every such image its own group. A ``split`` column must be filled on every row or on none.
    ``modality`` keeps only the rows whose ``modality`` column equals it.

    Raises:
        DataError: no or several CSVs, missing columns, empty cells, unknown split names.
    """
    csv_path = _find_csv(root)
    numbered = read_numbered_rows(csv_path, ("path", "label"), hint="is this the right file?", strip=True)
    rows = [row for _, row in numbered]
    if not rows:
        raise DataError(f"{csv_path} has no rows; add path,label rows")
    has_group = "group" in rows[0]
    has_split = "split" in rows[0]
    if modality is not None:
        if "modality" not in rows[0]:
            raise ConfigError(f"--modality {modality} given but {csv_path} has no modality column")
        numbered = [(i, r) for i, r in numbered if r["modality"].lower() == modality.lower()]
        rows = [r for _, r in numbered]
        if not rows:
            raise DataError(f"{csv_path}: no rows with modality {modality!r}")
    splits = [r.get("split", "") for r in rows] if has_split else []
    if splits and any(splits) and not all(splits):
        raise DataError(f"{csv_path}: the split column is filled on some rows only; fill it on every row or drop it")
    items = []
    for i, r in numbered:
        if not r["path"] or not r["label"]:
            raise DataError(f"{csv_path} line {i}: empty path or label; fill or remove the row")
        split = ""
        if splits and r["split"]:
            split = _SPLITS.get(r["split"].lower(), "")
            if not split:
                raise DataError(f"{csv_path} line {i}: unknown split {r['split']!r}; use train, val or test")
        group = r.get("group", "") if has_group else ""
        items.append(SourceItem(r["path"].replace("\\", "/"), r["label"], group, split))
    return items


def _find_csv(root: Path) -> Path:
    if root.is_file():
        return root
    found = sorted(p for p in root.iterdir() if p.is_file() and p.suffix.lower() == ".csv")
    if len(found) != 1:
        what = "no CSV file" if not found else f"{len(found)} CSV files"
        raise DataError(f"{root} holds {what}; pass the CSV file itself as ROOT")
    return found[0]
