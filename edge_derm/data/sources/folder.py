"""``folder``: a folder per class, ``<root>/<label>/**/*.jpg`` (a user's own data, the synthetic set)."""

from __future__ import annotations

import os
from pathlib import Path

from edge_derm.data.sources import IMAGE_EXTENSIONS, SourceItem, register, require_dir
from edge_derm.errors import DataError


@register("folder", description="a folder per class: ROOT/<label>/*.jpg|png")
def read(root: Path) -> list[SourceItem]:
    """List ``<root>/<label>/...`` images; the label is the class folder, the group the file stem.

    Hidden files and folders and files without an image extension are ignored. Images in
    sub-folders of a class folder belong to that class.

    Raises:
        DataError: no class folders, or a class folder without images.
    """
    require_dir(root, "folder")
    classes = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise DataError(f"{root} has no class folders; expected ROOT/<label>/<image>.jpg")
    items: list[SourceItem] = []
    for cls_dir in classes:
        found = []
        for dirpath, dirnames, filenames in os.walk(cls_dir, followlinks=True):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for fn in sorted(filenames):
                if not fn.startswith(".") and fn.lower().endswith(IMAGE_EXTENSIONS):
                    rel = Path(os.path.relpath(os.path.join(dirpath, fn), root)).as_posix()
                    found.append(SourceItem(rel, cls_dir.name, Path(fn).stem))
        if not found:
            raise DataError(f"class folder {cls_dir} has no images (class left empty); "
                            "add images or remove the folder")
        items.extend(found)
    return items
