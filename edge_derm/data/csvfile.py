"""CSV tables with errors that name the line: the one CSV reader of the data package (no TensorFlow).

Python's ``csv.DictReader`` silently pads short rows, files long rows under a ``None`` key and lets
an unclosed quote swallow the rest of the file; here each of those is an error that names the line
the bad row starts on.
"""

from __future__ import annotations

import codecs
import csv
import io
from pathlib import Path
from typing import Iterable

from edge_derm.errors import DataError


def read_rows(path: Path, required: Iterable[str], *, hint: str, delimiter: str = ",",
              strip: bool = False) -> list[dict[str, str]]:
    """Rows of a CSV file as dicts keyed by the (stripped) header; blank lines are skipped.

    Raises:
        DataError: see :func:`read_numbered_rows`.
    """
    return [row for _, row in read_numbered_rows(path, required, hint=hint, delimiter=delimiter, strip=strip)]


def read_numbered_rows(path: Path, required: Iterable[str], *, hint: str, delimiter: str = ",",
                       strip: bool = False) -> list[tuple[int, dict[str, str]]]:
    """``(line the row starts on, row)`` for every row of a CSV file (see :func:`read_rows`).

    Raises:
        DataError: the file cannot be read, is not UTF-8, lacks a ``required`` column, is malformed, or
            has a row whose field count differs from the header's -- with the line it starts on and ``hint``.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot be read ({exc.strerror}); check its permissions") from exc
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        bom = len(codecs.BOM_UTF8) if raw.startswith(codecs.BOM_UTF8) else 0  # exc.start counts after it
        head = raw[:exc.start + bom]
        line = head.count(b"\n") + head.replace(b"\r\n", b"\n").count(b"\r") + 1  # \n, \r\n or a bare \r
        raise DataError(f"{path}: line {line} is not UTF-8 text ({exc.reason}); {hint}") from exc
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    start = 1
    try:
        header = next(reader, None)
        columns = [c.strip() for c in header or []]
        missing = [c for c in required if c not in columns]
        if missing:
            raise DataError(f"{path}: missing column(s) {', '.join(missing)} "
                            f"(found: {', '.join(columns) or 'none'}); {hint}")
        rows = []
        start = reader.line_num + 1
        for fields in reader:
            if any(f.strip() for f in fields):
                if len(fields) != len(columns):
                    spans = f", spanning lines {start}-{reader.line_num} (an unclosed quote?)" \
                        if reader.line_num > start else ""
                    raise DataError(f"{path}: line {start} has {len(fields)} field(s), the header has "
                                    f"{len(columns)}{spans}; {hint}")
                rows.append((start, dict(zip(columns, (f.strip() for f in fields) if strip else fields))))
            start = reader.line_num + 1
    except csv.Error as exc:
        raise DataError(f"{path}: malformed CSV at line {start} ({exc}); {hint}") from exc
    return rows
