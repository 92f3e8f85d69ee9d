"""Reading what a report shows besides the artefact documents (metrics.json, history.csv, forgetting.json),
and naming and hashing files for it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from edge_derm.errors import DataError


def read_json(path: Path) -> Any:
    """The parsed JSON of ``path``; DataError (one line) when it is not valid JSON."""
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except json.JSONDecodeError as exc:
        raise DataError(f"{path} is not valid JSON ({exc.msg}, line {exc.lineno}); regenerate it") from None


def rel(path: Path, root: Path) -> str:
    """``path`` relative to the report's folder (its own name when it is that folder)."""
    try:
        r = path.resolve().relative_to(root.resolve())
        return path.resolve().name if str(r) == "." else str(r)
    except ValueError:
        return str(path)


def file_size(path: Path) -> int | None:
    """Size in bytes, None when the file cannot be read."""
    try:
        return path.stat().st_size
    except OSError:
        return None


def hash_files(folder: Path, names: list[str]) -> list[tuple[str, str]]:
    """``("sha256 <name>", first 16 hex digits)`` of each of ``names`` present in ``folder``."""
    from edge_derm.provenance import hash_file

    out = []
    for n in names:
        p = folder / n
        if p.is_file():
            try:
                out.append((f"sha256 {n}", hash_file(p)[:16]))
            except OSError:
                pass
    return out
