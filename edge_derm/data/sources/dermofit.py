"""``dermofit``: the Dermofit Image Library (``lesionlist.txt`` + ``<CLASS>/<ID>/<ID>.png``)."""

from __future__ import annotations

from pathlib import Path

from edge_derm.data.sources import SourceItem, register, require_dir
from edge_derm.errors import DataError


@register("dermofit", description="Dermofit Image Library: lesionlist.txt + <CLASS>/<ID>/<ID>.png")
def read(root: Path) -> list[SourceItem]:
    """List Dermofit's lesion images (never the ``<ID>mask.png`` masks); labels are class codes.

    ``lesionlist.txt`` has whitespace-separated ``number lesion-id class-code`` lines; class
    folders are matched case-insensitively. Each lesion is its own group.

    Raises:
        DataError: missing lesionlist.txt, a malformed line, or a class folder that does not exist.
    """
    require_dir(root, "dermofit")
    listing = root / "lesionlist.txt"
    if not listing.is_file():
        raise DataError(f"Dermofit lesionlist.txt not found in {root}; check that ROOT is the unpacked Dermofit folder")
    folders = {p.name.lower(): p.name for p in root.iterdir() if p.is_dir()}
    items = []
    for n, line in enumerate(listing.read_text(encoding="utf-8-sig", errors="replace").splitlines(), start=1):
        parts = line.split()
        if not parts or parts[0].startswith("#"):
            continue
        if len(parts) < 3 or not parts[0].isdigit():
            if n == 1 and not parts[0].isdigit():
                continue  # a header line
            raise DataError(f"{listing} line {n}: expected 'number lesion-id class-code', got {line.strip()!r}")
        lesion, code = parts[1], parts[2]
        folder = folders.get(code.lower())
        if folder is None:
            raise DataError(f"{listing} line {n}: no class folder {code!r} in {root}; is the library fully unpacked?")
        items.append(SourceItem(_image_path(root, folder, lesion), code.upper(), lesion))
    if not items:
        raise DataError(f"{listing} lists no lesions")
    return items


def _image_path(root: Path, folder: str, lesion: str) -> str:
    rel = f"{folder}/{lesion}/{lesion}.png"
    if not (root / rel).is_file() and (root / folder / lesion).is_dir():
        for p in (root / folder / lesion).iterdir():  # tolerate .PNG / case differences
            if p.name.lower() == f"{lesion.lower()}.png":
                return f"{folder}/{lesion}/{p.name}"
    return rel
