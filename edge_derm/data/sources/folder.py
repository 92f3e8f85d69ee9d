"""``folder``: a folder per class, ``<root>/<label>/**/*.jpg`` (a user's own data, the synthetic set)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from edge_derm.data.sources import IMAGE_EXTENSIONS, SourceItem, register, require_dir
from edge_derm.errors import DataError

_log = logging.getLogger(__name__)


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
    # Symbolic links are followed (a class folder may link to images kept elsewhere), but a folder is
    # read once, never a folder that holds a class folder (a loop such as ``ln -s .. MM/up``) or lies
    # in another class's folder, and a file once: a link must not copy images or relabel another class.
    real_classes = [Path(os.path.realpath(c)) for c in classes]
    seen_dirs: set[str] = set()
    seen_files: set[str] = set()
    skipped_dirs: list[str] = []
    skipped_files = 0
    for cls_dir, real_cls in zip(classes, real_classes):
        found = []
        for dirpath, dirnames, filenames in os.walk(cls_dir, followlinks=True):
            real = Path(os.path.realpath(dirpath))
            other = any(real.is_relative_to(c) and not real_cls.is_relative_to(c) and not real.is_relative_to(real_cls)
                        for c in real_classes if c != real_cls)
            loops = any(c.is_relative_to(real) for c in real_classes) and real != real_cls
            if str(real) in seen_dirs or other or loops:
                skipped_dirs.append(os.path.relpath(dirpath, root))
                dirnames[:] = []
                continue
            seen_dirs.add(str(real))
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for fn in sorted(filenames):
                if not fn.startswith(".") and fn.lower().endswith(IMAGE_EXTENSIONS):
                    real_file = os.path.realpath(os.path.join(dirpath, fn))
                    if real_file in seen_files:
                        skipped_files += 1
                        continue
                    seen_files.add(real_file)
                    rel = Path(os.path.relpath(os.path.join(dirpath, fn), root)).as_posix()
                    found.append(SourceItem(rel, cls_dir.name, Path(fn).stem))
        if not found:
            raise DataError(f"class folder {cls_dir} has no images (class left empty); "
                            "add images or remove the folder")
        items.extend(found)
    if skipped_dirs or skipped_files:
        _log.warning("symbolic links: skipped %d folder(s) that loop back into the dataset, lie in another class's "
                     "folder or were already read (e.g. %s) and %d file(s) already listed",
                     len(skipped_dirs), skipped_dirs[0] if skipped_dirs else "-", skipped_files)
    return items
