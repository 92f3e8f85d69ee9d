"""Build, merge and inspect dataset folders (``manifest.csv`` + ``dataset.json``); no TensorFlow.

``build_dataset`` reads a source in its native layout, maps its labels onto a taxonomy
(unmapped ones are dropped and counted), checks every image (unreadable ones are skipped and
listed in ``skipped.csv``, or fail the build with ``strict``), splits by group and writes the
folder atomically. ``merge_datasets`` joins built folders (the paper's strategy x).
"""

from __future__ import annotations

import csv
import io
import logging
import os
import statistics
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence


from edge_derm import progress
from edge_derm.data import images
from edge_derm.data.manifest import SPLITS, Manifest, Record, resolve_under, write_manifest
from edge_derm.data.sources import SourceItem, read_source
from edge_derm.data.split import check_fractions, split_groups
from edge_derm.data.taxonomy import Taxonomy, load_taxonomy
from edge_derm.errors import ConfigError, DataError
from edge_derm.fsutil import atomic_write_text, check_not_input, check_output_dir, staged_dir
from edge_derm.provenance import versions

_log = logging.getLogger(__name__)
SKIPPED_COLUMNS = ("path", "source_label", "reason")


def _workers() -> int:
    # Pillow releases the GIL while decoding, so threads overlap I/O and decoding.
    return max(1, min(8, os.cpu_count() or 1))


def _check(paths: Sequence[Path], max_pixels: int, description: str) -> list[tuple[int, int] | str]:
    """(width, height) per path, or the reason it is unreadable; in input order."""

    def one(p: Path) -> tuple[int, int] | str:
        try:
            return images.check_image(p, max_pixels)
        except images.ImageError as exc:
            return str(exc)

    out: list[tuple[int, int] | str] = []
    with progress.task(description, total=len(paths)) as advance, ThreadPoolExecutor(_workers()) as pool:
        for result in pool.map(one, paths, chunksize=16):
            out.append(result)
            advance(1)
    return out


def _size_stats(sizes: Iterable[tuple[int, int]]) -> dict[str, Any]:
    sizes = list(sizes)
    if not sizes:
        return {}
    ws, hs = [w for w, _ in sizes], [h for _, h in sizes]

    def stats(v: list[int]) -> dict[str, float]:
        return {"min": min(v), "median": statistics.median(v), "max": max(v)}

    return {"n": len(sizes), "width": stats(ws), "height": stats(hs),
            "distinct": len(set(sizes)), "most_common": list(Counter(sizes).most_common(1)[0][0])}


def _classes_in_order(taxonomy: Taxonomy, labels: Iterable[str]) -> list[str]:
    present = set(labels)
    if taxonomy.native:
        return sorted(present)
    return [c for c in taxonomy.classes if c in present]


def build_dataset(source: str, root: str | Path, out: str | Path, *, taxonomy: str = "dermai13",
                  test_fraction: float = 0.2, val_fraction: float = 0.0, seed: int = 0, strict: bool = False,
                  force: bool = False, max_pixels: int = images.DEFAULT_MAX_PIXELS,
                  **source_options: Any) -> Manifest:
    """Build a dataset folder from a source in its native layout.

    Args:
        source: registered source name (``folder``, ``csv``, ``derm7pt``, ``dermofit``,
            ``ham10000``, ``isic2019``, ``pad-ufes-20``).
        root: the unpacked dataset (for ``csv``: the CSV file or its folder).
        out: the dataset folder to write (replaced only with ``force``).
        taxonomy: ``dermai13``, ``native`` or a taxonomy .toml path.
        test_fraction, val_fraction: share of each class's images in ``test`` / ``val``.
        seed: split seed.
        strict: fail on the first unreadable image instead of skipping it.
        force: replace an existing ``out``.
        max_pixels: images above this many pixels are refused (decompression bombs).
        **source_options: the source's options (``modality``, ``official_split``).

    Returns:
        The written manifest.

    Raises:
        ConfigError: unknown source / taxonomy / option, bad fractions.
        DataError: missing root, metadata or images, paths escaping the root, unreadable images
            with ``strict``, a class left empty, fewer than two classes.
        OutputExistsError: ``out`` exists and ``force`` is false.
    """
    out = Path(out)
    check_fractions(test_fraction, val_fraction)
    tax = load_taxonomy(taxonomy)
    check_output_dir(out, force)  # fail before the (possibly long) scan
    items = read_source(source, root, **source_options)
    # The folder source reads its root whole (a rescan would read an output inside it); the others read
    # their metadata file and the images it lists. Either way every listed image is an input (a class
    # folder may be a link to images kept elsewhere).
    whole = [root] if source == "folder" or Path(root).is_file() else []
    check_not_input(out, whole)  # before the image checks
    root = Path(os.path.abspath(root))
    if not items:
        raise DataError(f"{root}: the {source} source lists no images")
    sel = _select(items, tax, source, root, max_pixels, strict)
    groups = [it.group or it.path for it, _ in sel.good]
    split_mode, splits, split_warnings = _assign_splits(sel, groups, root, test_fraction, val_fraction, seed)
    records = [Record(it.path, lab, it.source_label, source, grp, sp)
               for (it, lab), grp, sp in zip(sel.good, groups, splits)]
    info = _build_info(sel, source, source_options, tax, taxonomy, split_mode=split_mode, seed=seed,
                       fractions=(test_fraction, val_fraction), groups=groups, warnings=split_warnings,
                       max_pixels=max_pixels)
    with staged_dir(out, force, [*whole, *sel.paths]) as tmp:
        write_manifest(tmp, records, info)
        _write_skipped(tmp / "skipped.csv", sel.skipped)
    _log.info("wrote %s: %d images, %d classes, %d skipped", out, len(records), len(sel.classes), len(sel.skipped))
    return Manifest.load(out)


@dataclass
class _Selection:
    """The images a build keeps (``good``: item and taxonomy class) and what it left out, and why."""

    data_root: Path                          # the folder manifest paths are relative to
    paths: list[Path]                        # every listed image once (all are inputs of the build)
    good: list[tuple[SourceItem, str]]       # readable images with a taxonomy class
    classes: list[str]                       # the classes present, in the taxonomy's order
    dropped: Counter                         # source label -> images without a taxonomy class
    skipped: list[tuple[str, str, str]]      # unreadable images: (path, source label, reason)
    sizes: list[tuple[int, int]]             # (width, height) of every good image


def _select(items: list[SourceItem], tax: Taxonomy, source: str, root: Path, max_pixels: int,
            strict: bool) -> _Selection:
    """Map the source's labels onto the taxonomy, clean the paths and check every image.

    Raises:
        DataError: nothing maps, a path escapes the root, a listed image is missing, an unreadable image
            with ``strict``, a class whose images are all unreadable, fewer than two classes left.
    """
    data_root = root.parent if root.is_file() else root
    kept, dropped = _map_labels(items, tax, source, root)
    kept, paths = _normalise_paths(kept, data_root)
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise DataError(f"{len(missing)} listed image(s) are missing (first: {missing[0]}); "
                        f"check that ROOT is the complete, unpacked {source} dataset")
    good, skipped, sizes = _check_readable(kept, paths, max_pixels, strict)
    classes = _classes_in_order(tax, (lab for _, lab in good))
    if len(classes) < 2:
        raise DataError(f"only {len(classes)} class ({', '.join(classes)}) left after mapping onto "
                        f"{tax.name!r}; a classifier needs at least 2")
    return _Selection(data_root, paths, good, classes, dropped, skipped, sizes)


def _map_labels(items: list[SourceItem], tax: Taxonomy, source: str, root: Path
                ) -> tuple[list[tuple[SourceItem, str]], Counter]:
    """Each item with its taxonomy class; the labels without one are dropped and counted (and logged)."""
    dropped: Counter = Counter()
    kept: list[tuple[SourceItem, str]] = []
    for it in items:
        label = tax.map(source, it.source_label)
        if label is None:
            dropped[it.source_label or "<empty>"] += 1
        else:
            kept.append((it, label))
    if dropped:
        _log.warning("dropped %d image(s) whose labels are not in taxonomy %s: %s", sum(dropped.values()), tax.name,
                     ", ".join(f"{k} ({v})" for k, v in dropped.most_common()))
    if not kept:
        raise DataError(f"no label of {root} maps onto taxonomy {tax.name!r} (found: "
                        f"{', '.join(sorted(dropped)[:8])}); use --taxonomy native or a taxonomy file")
    return kept, dropped


def _check_readable(kept: list[tuple[SourceItem, str]], paths: list[Path], max_pixels: int, strict: bool
                    ) -> tuple[list[tuple[SourceItem, str]], list[tuple[str, str, str]], list[tuple[int, int]]]:
    """Split the images into readable ones (with their sizes) and skipped ones (with the reason).

    A class whose images are all unreadable is an error rather than a silently smaller taxonomy.
    """
    results = _check(paths, max_pixels, f"checking {len(paths)} images")
    good: list[tuple[SourceItem, str]] = []
    skipped: list[tuple[str, str, str]] = []
    sizes: list[tuple[int, int]] = []
    for (it, label), res in zip(kept, results):
        if isinstance(res, str):
            if strict:
                raise DataError(f"{res} (--strict); fix or remove the file, or build without --strict to skip it")
            skipped.append((it.path, it.source_label, res))
        else:
            good.append((it, label))
            sizes.append(res)
    if skipped:
        _log.warning("skipped %d unreadable image(s); see skipped.csv", len(skipped))
    emptied = sorted({lab for _, lab in kept} - {lab for _, lab in good})
    if emptied:
        first = next(res for (_, lab), res in zip(kept, results) if lab == emptied[0] and isinstance(res, str))
        raise DataError(f"class {emptied[0]!r} is left empty: all its images are unreadable (e.g. {first}); "
                        "fix the files or remove the class")
    return good, skipped, sizes


def _assign_splits(sel: _Selection, groups: list[str], root: Path, test_fraction: float, val_fraction: float,
                   seed: int) -> tuple[str, list[str], list[str]]:
    """The split mode (``official`` when the source gives every image its split, else ``random``), each
    image's split and the warnings. An official split is kept as given, with a warning for groups it
    puts on both sides; a random one is :func:`split_groups`'s.
    """
    official = [it.split for it, _ in sel.good]
    if all(official):
        leaks = _groups_on_both_sides(groups, official)
        warnings: list[str] = []
        if leaks:
            warnings.append(f"{len(leaks)} group(s) are in more than one official split (e.g. {leaks[0]})")
            _log.warning("%s", warnings[-1])
        return "official", official, warnings
    if any(official):
        raise DataError(f"{root}: only some images have an official split; give it for all or none")
    splits, warnings = split_groups([lab for _, lab in sel.good], groups, test_fraction=test_fraction,
                                    val_fraction=val_fraction, seed=seed)
    return "random", splits, warnings


def _build_info(sel: _Selection, source: str, source_options: dict[str, Any], tax: Taxonomy, taxonomy: str, *,
                split_mode: str, seed: int, fractions: tuple[float, float], groups: list[str],
                warnings: list[str], max_pixels: int) -> dict[str, Any]:
    """The dataset.json of a build, less what :func:`write_manifest` fills in (counts, n_images, hash)."""
    classes = sel.classes
    random_split = split_mode == "random"
    return {
        "kind": "dataset", "format_version": 1, "root": str(sel.data_root), "source": source,
        "source_options": {k: v for k, v in source_options.items() if v is not None and v is not False},
        "taxonomy": tax.name, "classes": classes,
        "descriptions": {c: tax.descriptions.get(c, c) for c in classes},
        "triage": {c: tax.triage_of(c) for c in classes},
        "taxonomy_file": str(Path(taxonomy).resolve()) if taxonomy.endswith(".toml") else None,
        "dropped": dict(sel.dropped.most_common()), "skipped": len(sel.skipped),
        "split": split_mode, "seed": seed,
        "test_fraction": fractions[0] if random_split else None,
        "val_fraction": fractions[1] if random_split else None,
        "groups": len(set(groups)), "warnings": warnings,
        "image_sizes": _size_stats(sel.sizes), "max_pixels": max_pixels, "versions": versions(),
    }


def _normalise_paths(kept: list[tuple[SourceItem, str]], data_root: Path
                     ) -> tuple[list[tuple[SourceItem, str]], list[Path]]:
    """Clean relative paths ("./a", "x/../a", absolute paths inside the root), first entry of repeats only.

    Raises:
        DataError: a path escapes the root.
    """
    out: dict[str, tuple[tuple[SourceItem, str], Path]] = {}
    for it, label in kept:
        path = resolve_under(data_root, it.path)
        rel = Path(os.path.relpath(path, data_root)).as_posix()
        if rel not in out:
            out[rel] = ((SourceItem(rel, it.source_label, it.group, it.split), label), path)
    if len(out) < len(kept):
        _log.warning("%d image(s) are listed more than once; keeping the first entry of each", len(kept) - len(out))
    return [v[0] for v in out.values()], [v[1] for v in out.values()]


def _groups_on_both_sides(groups: Sequence[str], splits: Sequence[str]) -> list[str]:
    seen: dict[str, set[str]] = defaultdict(set)
    for g, s in zip(groups, splits):
        seen[g].add(s)
    return sorted(g for g, s in seen.items() if len(s) > 1)


def _write_skipped(path: Path, rows: list[tuple[str, str, str]]) -> None:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(SKIPPED_COLUMNS)
    w.writerows(rows)
    atomic_write_text(path, buf.getvalue())


def image_id(path: str) -> str:
    """The id used to find the same image in two datasets: file stem, lower case, minus ``_downsampled``."""
    stem = Path(path).stem.lower()
    return stem[: -len("_downsampled")] if stem.endswith("_downsampled") else stem


def merge_datasets(dirs: Sequence[str | Path], out: str | Path, *, force: bool = False,
                   drop_duplicates: bool = False) -> Manifest:
    """Merge built dataset folders into one (each image keeps its split, source and group).

    Args:
        dirs: two or more dataset folders built with the same taxonomy.
        out: the merged folder to write.
        force: replace an existing ``out``.
        drop_duplicates: keep the first copy of an image id found in several datasets instead
            of failing (HAM10000 is inside ISIC 2019).

    Raises:
        ConfigError: fewer than two folders, or different taxonomies.
        DataError: a folder is not a dataset, or duplicate image ids across datasets.
        OutputExistsError: ``out`` exists and ``force`` is false.
    """
    out = Path(out)
    if len(dirs) < 2:
        raise ConfigError("merge needs at least two dataset folders")
    check_output_dir(out, force, dirs)
    manifests = [Manifest.load(d) for d in dirs]
    inputs = [p for m in manifests for p in m.inputs()]
    check_not_input(out, inputs)
    taxonomies = {m.info.get("taxonomy") for m in manifests}
    if len(taxonomies) > 1:
        raise ConfigError(f"cannot merge datasets of different taxonomies ({', '.join(sorted(map(str, taxonomies)))}); "
                          "rebuild them with the same --taxonomy")
    try:
        common = Path(os.path.commonpath([str(m.root) for m in manifests]))
    except ValueError as exc:  # different drives
        raise DataError(f"the datasets' roots share no common folder ({exc}); move them onto one drive") from exc
    records, n_dups = _merged_records(manifests, common, drop_duplicates)
    warnings = _cross_dataset_leaks(manifests, records)
    info = _merged_info(manifests, records, common, taxonomies.pop(), duplicates_dropped=n_dups, warnings=warnings)
    with staged_dir(out, force, inputs) as tmp:
        write_manifest(tmp, records, info)
        _write_skipped(tmp / "skipped.csv", [])
    return Manifest.load(out)


def _merged_records(manifests: list[Manifest], common: Path, drop_duplicates: bool) -> tuple[list[Record], int]:
    """Every dataset's rows, paths made relative to ``common``; an image id seen in an earlier dataset is a
    duplicate (an error, or with ``drop_duplicates`` dropped). Returns the rows and the number dropped."""
    owner: dict[str, int] = {}
    dups: list[tuple[str, int, int]] = []
    records: list[Record] = []
    for i, m in enumerate(manifests):
        for r in m.records:
            iid = image_id(r.path)
            first = owner.setdefault(iid, i)
            if first != i:
                dups.append((iid, first, i))
                continue
            rel = Path(os.path.relpath(m.resolve(r.path), common)).as_posix()
            records.append(Record(rel, r.label, r.source_label, r.source, r.group, r.split))
    if dups and not drop_duplicates:
        iid, a, b = dups[0]
        raise DataError(f"{len(dups)} image id(s) occur in more than one dataset (e.g. {iid} in {manifests[a].dir} "
                        f"and {manifests[b].dir}); HAM10000 is inside ISIC 2019: merge one of them, "
                        "or pass --drop-duplicates to keep the first copy")
    if dups:
        _log.warning("dropped %d duplicate image(s) found in more than one dataset", len(dups))
    return records, len(dups)


def _cross_dataset_leaks(manifests: list[Manifest], records: list[Record]) -> list[str]:
    """The warning (logged too) when a group id found in several datasets lands in different splits: a lesion
    split one way in one dataset and another way in another would leak."""
    sources_of: dict[str, set[int]] = defaultdict(set)
    for i, m in enumerate(manifests):
        for r in m.records:
            sources_of[r.group].add(i)
    cross = {g for g, s in sources_of.items() if len(s) > 1}
    leaks = [g for g in _groups_on_both_sides([r.group for r in records], [r.split for r in records]) if g in cross]
    warnings = []
    if leaks:
        warnings.append(f"{len(leaks)} group id(s) are in different splits in different datasets (e.g. {leaks[0]}); "
                        "the same lesion may be on both sides")
        _log.warning("%s", warnings[-1])
    return warnings


def _merged_info(manifests: list[Manifest], records: list[Record], common: Path, tax_name: Any, *,
                 duplicates_dropped: int, warnings: list[str]) -> dict[str, Any]:
    """The merged dataset.json, less what :func:`write_manifest` fills in: classes in the taxonomy's order,
    the inputs' dropped counts, descriptions and triage joined, and each input's hash."""
    labels = {r.label for r in records}
    try:
        tax = load_taxonomy(manifests[0].info.get("taxonomy_file") or str(tax_name))
        classes = _classes_in_order(tax, labels)
    except ConfigError:  # a taxonomy file that moved: keep first-seen order
        classes = list(dict.fromkeys(c for m in manifests for c in m.classes if c in labels))
    dropped: Counter = Counter()
    descriptions: dict[str, str] = {}
    triage: dict[str, str] = {}
    for m in manifests:
        dropped.update(m.info.get("dropped", {}))
        descriptions.update(m.info.get("descriptions", {}))
        triage.update(m.info.get("triage", {}))
    return {
        "kind": "dataset", "format_version": 1, "root": str(common), "source": "merged",
        "sources": [{"dir": str(m.dir.resolve()), "source": m.info.get("source"), "hash": m.hash,
                     "n_images": len(m.records)} for m in manifests],
        "taxonomy": tax_name, "classes": classes,
        "descriptions": {c: descriptions.get(c, c) for c in classes},
        "triage": {c: triage.get(c, "unknown") for c in classes},
        "dropped": dict(dropped.most_common()),
        "skipped": sum(int(m.info.get("skipped", 0)) for m in manifests),
        "duplicates_dropped": duplicates_dropped, "split": "kept", "seed": None, "test_fraction": None,
        "val_fraction": None, "groups": len({r.group for r in records}), "warnings": warnings,
        "versions": versions(),
    }


def resplit_dataset(dir: str | Path, out: str | Path, *, test_fraction: float = 0.2, val_fraction: float = 0.0,
                    seed: int = 0, force: bool = False) -> Manifest:
    """Write a copy of a dataset folder with a new seeded, stratified, grouped split.

    Raises:
        DataError: ``dir`` is not a dataset folder.
        ConfigError: bad fractions.
        OutputExistsError: ``out`` exists and ``force`` is false.
    """
    out = Path(out)
    check_fractions(test_fraction, val_fraction)
    check_output_dir(out, force, [dir])
    m = Manifest.load(dir)
    inputs = m.inputs()
    check_not_input(out, inputs)
    splits, warnings = split_groups([r.label for r in m.records], [r.group for r in m.records],
                                    test_fraction=test_fraction, val_fraction=val_fraction, seed=seed)
    records = [Record(r.path, r.label, r.source_label, r.source, r.group, s) for r, s in zip(m.records, splits)]
    info = {k: v for k, v in m.info.items() if k not in ("counts", "hash", "n_images")}
    info.update(root=str(m.root), split="random", seed=seed, test_fraction=test_fraction, val_fraction=val_fraction,
                warnings=warnings, resplit_from={"dir": str(m.dir.resolve()), "hash": m.hash}, versions=versions())
    skipped = m.dir / "skipped.csv"
    with staged_dir(out, force, inputs) as tmp:
        write_manifest(tmp, records, info)
        atomic_write_text(tmp / "skipped.csv", skipped.read_text(encoding="utf-8") if skipped.is_file()
                          else ",".join(SKIPPED_COLUMNS) + "\n")
    return Manifest.load(out)


def inspect_dataset(dir: str | Path, *, sizes: bool = True) -> dict[str, Any]:
    """Summarise a dataset folder: counts per class and split, groups, dropped labels, image sizes.

    Image sizes are read from the files' headers (fast); unreadable or missing files are counted.
    """
    m = Manifest.load(dir)
    counts = {c: {s: 0 for s in SPLITS} for c in m.classes}
    groups: dict[str, set[str]] = {s: set() for s in SPLITS}
    for r in m.records:
        counts[r.label][r.split] = counts[r.label].get(r.split, 0) + 1
        groups.setdefault(r.split, set()).add(r.group)
    summary: dict[str, Any] = {
        "dir": str(m.dir), "root": str(m.root), "source": m.info.get("source"), "taxonomy": m.info.get("taxonomy"),
        "classes": m.classes, "counts": counts, "n_images": len(m.records),
        "groups": {s: len(g) for s, g in groups.items()}, "dropped": m.info.get("dropped", {}),
        "skipped": m.info.get("skipped", 0), "hash": m.hash, "warnings": m.info.get("warnings", []),
        "triage": m.info.get("triage", {}),
    }
    if sizes:
        found, unreadable = [], []
        for r in progress.track(m.records, "reading image headers"):
            try:
                found.append(images.image_size(m.resolve(r.path)))
            except DataError as exc:  # missing, not an image, above the pixel limit (a decompression bomb)
                unreadable.append(str(exc))
        summary["image_sizes"] = _size_stats(found)
        summary["unreadable"] = len(unreadable)
        if unreadable:
            more = f" (and {len(unreadable) - 1} more)" if len(unreadable) > 1 else ""
            summary["warnings"] = [*summary["warnings"], f"{unreadable[0]}{more}; training on this dataset will "
                                   "stop there: fix or remove the file(s) and rebuild the dataset"]
    return summary
