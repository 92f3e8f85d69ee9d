"""``pad-ufes-20``: PAD-UFES-20 (``metadata.csv`` + ``imgs_part_{1,2,3}/PAT_*.png``)."""

from __future__ import annotations

from pathlib import Path

from edge_derm.data.sources import SourceItem, index_files, read_table, register, require_dir


@register("pad-ufes-20", description="PAD-UFES-20: metadata.csv + imgs_part_1/2/3")
def read(root: Path) -> list[SourceItem]:
    """List PAD-UFES-20; labels are ``diagnostic`` codes, groups ``patient_id``.

    Images are found by ``img_id`` under any ``imgs_part_*`` folder (also inside ``images/``
    and nested ``imgs_part_k/imgs_part_k/`` as some unpackers leave them).

    Raises:
        DataError: missing metadata file or columns.
    """
    require_dir(root, "pad-ufes-20")
    rows = read_table(root / "metadata.csv", ("patient_id", "lesion_id", "diagnostic", "img_id"),
                      "PAD-UFES-20 metadata.csv")
    bases = [root] + ([root / "images"] if (root / "images").is_dir() else [])
    dirs = [p for b in bases for p in b.iterdir() if p.is_dir() and p.name.lower().startswith("imgs_part")]
    found = index_files(root, dirs or [root], (".png", ".jpg"))  # no part folders: images anywhere under root
    items = []
    for r in rows:
        items.append(SourceItem(found.get(r["img_id"], f"imgs_part_1/{r['img_id']}"), r["diagnostic"],
                                r["patient_id"] or r["lesion_id"] or r["img_id"]))
    return items
