"""``ham10000``: HAM10000 (``HAM10000_metadata.csv`` + ``HAM10000_images_part_{1,2}/<image_id>.jpg``)."""

from __future__ import annotations

from pathlib import Path

from edge_derm.data.sources import SourceItem, index_files, read_table, register, require_dir, subdirs_matching


@register("ham10000", description="HAM10000: HAM10000_metadata.csv + HAM10000_images_part_1/2")
def read(root: Path) -> list[SourceItem]:
    """List HAM10000; labels are ``dx`` codes, groups ``lesion_id``.

    Images are looked up by ``image_id`` + ``.jpg`` in the ``HAM10000_images_part_*`` folders
    (any case; Kaggle's duplicated lower-case copies resolve to the first folder in sorted order).

    Raises:
        DataError: missing metadata file or columns.
    """
    require_dir(root, "ham10000")
    rows = read_table(root / "HAM10000_metadata.csv", ("lesion_id", "image_id", "dx"), "HAM10000_metadata.csv")
    dirs = subdirs_matching(root, "ham10000_images_part")
    found = index_files(root, dirs or [root], (".jpg",))  # no part folders: images anywhere under root
    default_dir = dirs[0].name if dirs else "HAM10000_images_part_1"
    items = []
    for r in rows:
        name = f"{r['image_id']}.jpg"
        items.append(SourceItem(found.get(name, f"{default_dir}/{name}"), r["dx"], r["lesion_id"] or r["image_id"]))
    return items
