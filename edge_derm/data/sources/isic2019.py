"""``isic2019``: ISIC 2019 training set (one-hot ground-truth CSV + metadata CSV + ``ISIC_2019_Training_Input/``)."""

from __future__ import annotations

import logging
from pathlib import Path

from edge_derm.data.sources import SourceItem, index_files, read_table, register, require_dir
from edge_derm.errors import DataError

_log = logging.getLogger(__name__)
CLASSES = ("MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC", "SCC", "UNK")
_GT = "ISIC_2019_Training_GroundTruth.csv"
_META = "ISIC_2019_Training_Metadata.csv"


@register("isic2019", description="ISIC 2019 training set: GroundTruth.csv + Metadata.csv + images")
def read(root: Path) -> list[SourceItem]:
    """List ISIC 2019; labels are the ground truth's one-hot column names, groups ``lesion_id``.

    File names come from the ``image`` column (some end in ``_downsampled``). Images without a
    lesion id (or without the metadata file, which is then warned about) are their own group.

    Raises:
        DataError: missing ground-truth file or columns, a row that is not one-hot.
    """
    require_dir(root, "isic2019")
    rows = read_table(root / _GT, ("image",) + CLASSES, _GT)
    lesions: dict[str, str] = {}
    if (root / _META).is_file():
        lesions = {r["image"]: r["lesion_id"] for r in read_table(root / _META, ("image", "lesion_id"), _META)}
    else:
        _log.warning("%s not found in %s: every image is its own group (lesions may straddle splits)", _META, root)
    img_dir = root / "ISIC_2019_Training_Input"
    found = index_files(root, [img_dir] if img_dir.is_dir() else [root], (".jpg", ".jpeg", ".png"))
    items = []
    for i, r in enumerate(rows, start=2):
        try:
            hot = [c for c in CLASSES if float(r[c] or 0) >= 0.5]
        except ValueError:
            raise DataError(f"{root / _GT} line {i}: non-numeric class value; is this the ground-truth file?") from None
        if len(hot) != 1:
            raise DataError(f"{root / _GT} line {i}: {r['image']} has {len(hot)} positive classes, expected exactly one")
        name = f"{r['image']}.jpg"
        default = f"{img_dir.name}/{name}" if img_dir.is_dir() else name
        items.append(SourceItem(found.get(name, default), hot[0], lesions.get(r["image"]) or r["image"]))
    return items
