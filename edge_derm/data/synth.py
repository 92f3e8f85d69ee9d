"""Synthetic lesion-like photographs for the 13 dermai13 classes (numpy + Pillow, no TensorFlow).

Each image is drawn procedurally: a skin background (Fitzpatrick I-VI tone, blotches, pores),
one lesion (or a cluster) whose class shows in learnable cues that resemble real ones (colour
and its variegation, border irregularity, asymmetry, size, texture, scale, elevation and
shading, vascular red, class-typical structures), and nuisances that do not depend on the class
(lighting and white balance, exposure, blur, noise, JPEG artefacts, framing, hairs, rulers,
surgical-marker ink). Class parameter ranges overlap on purpose, so the task is learnable but
not trivial (see benchmarks/scripts/measure_synth.py).

Every image has its own seed, derived from ``(seed, class index, image index)``, so the output
does not depend on the order or the number of worker processes. The drawing itself is
:mod:`edge_derm.data.synth_draw`; this module holds the class cue table and writes the dataset.
"""

from __future__ import annotations

import logging
import math
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from edge_derm import progress
from edge_derm.data.synth_draw import Cue, Painter
from edge_derm.errors import ConfigError
from edge_derm.fsutil import staged_dir, write_json

_log = logging.getLogger(__name__)

GENERATOR_VERSION = 1

#: dermai13 class ids, in the taxonomy's order.
CLASSES = ("SebKer", "ActKer", "Nev", "MolCont", "Haem", "UncNeop", "Drmfib", "SLent", "PenFib",
           "VWart", "OtMalNeop", "BCC", "MM")

#: The paper's image counts per class (macro + anatomical), used by ``paper_proportions``.
PAPER_COUNTS = {"SebKer": 1186, "ActKer": 519, "Nev": 618, "MolCont": 71, "Haem": 70, "UncNeop": 246,
                "Drmfib": 141, "SLent": 48, "PenFib": 115, "VWart": 192, "OtMalNeop": 116, "BCC": 56,
                "MM": 52}

#: Fewest images a class gets with ``paper_proportions`` (so it can still be split 80:20).
MIN_PER_CLASS = 5

#: Each class's cue ranges (see ``Cue``); the classes overlap on purpose.
_CUES: dict[str, Cue] = {
    "SebKer": Cue(size=(0.25, 0.55), colours=((120, 82, 52), (78, 52, 34), (160, 120, 80)),
                   varieg=(0.15, 0.45), ellip=(0.05, 0.3), asym=(0.0, 0.1), irr=(0.02, 0.07),
                   sharp=(18, 40), elev=(0.2, 0.5), texture=(0.15, 0.35), scale=(0.0, 0.15),
                   feats={"milia": 0.6, "comedo": 0.5}),
    "ActKer": Cue(size=(0.2, 0.45), colours=((196, 112, 100), (178, 96, 84), (214, 150, 130)),
                   opacity=(0.45, 0.75), varieg=(0.1, 0.35), ellip=(0.05, 0.3), asym=(0.0, 0.15),
                   irr=(0.04, 0.12), sharp=(4, 10), elev=(0.0, 0.15), texture=(0.05, 0.15),
                   scale=(0.25, 0.6), feats={"vessels": 0.15}),
    "Nev": Cue(size=(0.15, 0.35), colours=((112, 72, 46), (88, 56, 36)), varieg=(0.0, 0.15),
                ellip=(0.0, 0.15), asym=(0.0, 0.05), irr=(0.0, 0.03), sharp=(15, 35),
                elev=(0.0, 0.35), texture=(0.0, 0.05), feats={"globules": 0.3}),
    "MolCont": Cue(size=(0.06, 0.12), colours=((226, 186, 176), (236, 210, 200)),
                    opacity=(0.45, 0.75), varieg=(0.0, 0.15), ellip=(0.0, 0.1), irr=(0.0, 0.03),
                    sharp=(14, 30), elev=(0.5, 0.9), shiny=(0.3, 0.6), blobs=(2, 7),
                    feats={"umbilic": 0.8}),
    "Haem": Cue(size=(0.15, 0.4), colours=((180, 30, 50), (120, 20, 60), (200, 60, 70)),
                 opacity=(0.7, 0.95), varieg=(0.1, 0.35), varieg_cells=4, ellip=(0.0, 0.2),
                 asym=(0.0, 0.1), irr=(0.02, 0.06), sharp=(18, 40), elev=(0.3, 0.7),
                 shiny=(0.2, 0.5), blobs=(1, 3), feats={"lacunae": 0.6}),
    "UncNeop": Cue(size=(0.15, 0.35), colours=((190, 50, 55), (160, 40, 45), (215, 120, 110)),
                    opacity=(0.65, 0.9), varieg=(0.1, 0.35), ellip=(0.0, 0.2), asym=(0.0, 0.12),
                    irr=(0.03, 0.08), sharp=(14, 30), elev=(0.4, 0.8), shiny=(0.3, 0.6),
                    texture=(0.02, 0.1), feats={"collarette": 0.6, "crust": 0.35}),
    "Drmfib": Cue(size=(0.1, 0.25), colours=((150, 98, 74), (120, 78, 58)), opacity=(0.5, 0.8),
                   varieg=(0.0, 0.15), ellip=(0.0, 0.2), asym=(0.0, 0.06), irr=(0.01, 0.04),
                   sharp=(6, 14), elev=(0.1, 0.3), feats={"centre_white": 0.85}),
    "SLent": Cue(size=(0.25, 0.55), colours=((165, 118, 78), (140, 98, 64)), opacity=(0.45, 0.75),
                  varieg=(0.0, 0.2), ellip=(0.1, 0.35), asym=(0.05, 0.15), irr=(0.05, 0.12),
                  sharp=(14, 30), elev=(0.0, 0.05)),
    "PenFib": Cue(size=(0.08, 0.18), colours=((190, 150, 125), (150, 110, 85)), opacity=(0.3, 0.6),
                   varieg=(0.0, 0.2), ellip=(0.1, 0.4), asym=(0.0, 0.1), irr=(0.01, 0.04),
                   sharp=(16, 35), elev=(0.8, 1.0), texture=(0.02, 0.12), blobs=(1, 2),
                   feats={"stalk": 0.9}),
    "VWart": Cue(size=(0.12, 0.3), colours=((200, 180, 160), (170, 150, 135)), opacity=(0.35, 0.65),
                  varieg=(0.0, 0.2), ellip=(0.0, 0.2), asym=(0.0, 0.1), irr=(0.04, 0.1),
                  sharp=(14, 30), elev=(0.4, 0.8), texture=(0.3, 0.6), scale=(0.05, 0.25),
                  blobs=(1, 3), feats={"black_dots": 0.75}),
    "OtMalNeop": Cue(size=(0.25, 0.5), colours=((188, 92, 82), (150, 60, 55), (205, 160, 120)),
                      opacity=(0.55, 0.85), varieg=(0.2, 0.5), ellip=(0.05, 0.3), asym=(0.05, 0.2),
                      irr=(0.05, 0.14), sharp=(8, 20), elev=(0.15, 0.45), texture=(0.05, 0.2),
                      scale=(0.15, 0.45), feats={"crust": 0.6, "ulcer": 0.35, "vessels": 0.25}),
    "BCC": Cue(size=(0.15, 0.35), colours=((214, 160, 158), (196, 130, 130), (120, 80, 75)),
                opacity=(0.45, 0.75), varieg=(0.05, 0.25), ellip=(0.0, 0.25), asym=(0.0, 0.12),
                irr=(0.02, 0.08), sharp=(12, 28), elev=(0.2, 0.5), shiny=(0.2, 0.5),
                feats={"rim": 0.7, "vessels": 0.75, "ulcer": 0.3, "globules": 0.2}),
    "MM": Cue(size=(0.25, 0.55), colours=((92, 58, 40), (40, 28, 26), (150, 105, 72), (104, 110, 132),
                                           (178, 88, 80)),
               opacity=(0.75, 0.95), varieg=(0.3, 0.65), varieg_cells=6, ellip=(0.05, 0.3),
               asym=(0.1, 0.3), irr=(0.06, 0.16), sharp=(8, 24), elev=(0.0, 0.3),
               texture=(0.0, 0.08), feats={"globules": 0.5, "regression": 0.45}),
}


def generate_dataset(out: str | Path, *, per_class: int = 60, paper_proportions: bool = False,
                     size: int = 128, seed: int = 0, force: bool = False,
                     workers: int = 1) -> dict[str, Any]:
    """Write a synthetic dataset as ``<out>/<class id>/<class id>_<nnnnn>.png`` (the folder layout).

    The folder is built in a temporary sibling and renamed on success; ``synth.json`` records
    the arguments and the counts.

    Args:
        out: Output folder.
        per_class: Images per class; with ``paper_proportions`` the mean per class.
        paper_proportions: Distribute ``13 * per_class`` images in the ratios of the paper's
            class counts (at least ``MIN_PER_CLASS`` each).
        size: Image side in pixels (16-1024).
        seed: Same seed, same pixels.
        force: Replace an existing ``out``.
        workers: Processes to draw with (0 = one per CPU core); the output does not depend on it.

    Returns:
        A summary: ``{"kind": "synthetic", "out", "classes", "counts", "total", "size", "seed", ...}``.

    Raises:
        ConfigError: a bad argument.
        OutputExistsError: ``out`` exists and ``force`` is false.
    """
    if not isinstance(per_class, int) or per_class < 1:
        raise ConfigError(f"per_class must be a positive integer, got {per_class!r}")
    if not isinstance(size, int) or not 16 <= size <= 1024:
        raise ConfigError(f"size must be an integer between 16 and 1024 pixels, got {size!r}")
    if not isinstance(seed, int) or seed < 0:
        raise ConfigError(f"seed must be a non-negative integer, got {seed!r}")
    if not isinstance(workers, int) or workers < 0:
        raise ConfigError(f"workers must be 0 (one per core) or a positive integer, got {workers!r}")
    counts = class_counts(per_class, paper_proportions)
    jobs = [(seed, ci, i, size) for ci, cls in enumerate(CLASSES) for i in range(counts[cls])]
    n_workers = (os.cpu_count() or 1) if workers == 0 else workers
    n_workers = max(1, min(n_workers, len(jobs) // 64 or 1))
    out = Path(out)
    with staged_dir(out, force) as tmp:
        for cls in CLASSES:
            (tmp / cls).mkdir()
        if n_workers == 1:
            for job in progress.track(jobs, "drawing synthetic lesions"):
                _write_one(tmp, job)
        else:
            _write_parallel(tmp, jobs, n_workers)
        summary = {"kind": "synthetic", "generator_version": GENERATOR_VERSION, "out": str(out.resolve()),
                   "classes": list(CLASSES), "counts": counts, "total": len(jobs), "size": size,
                   "seed": seed, "per_class": per_class, "paper_proportions": paper_proportions}
        write_json(tmp / "synth.json", summary)
    _log.info("wrote %d synthetic images to %s", len(jobs), out)
    return summary


def class_counts(per_class: int, paper_proportions: bool = False) -> dict[str, int]:
    """Images per class: ``per_class`` each, or ``13 * per_class`` in the paper's ratios."""
    if not paper_proportions:
        return {cls: per_class for cls in CLASSES}
    total = per_class * len(CLASSES)
    paper_total = sum(PAPER_COUNTS.values())
    return {cls: max(MIN_PER_CLASS, round(total * PAPER_COUNTS[cls] / paper_total)) for cls in CLASSES}


def render(class_id: str, index: int, size: int = 128, seed: int = 0) -> np.ndarray:
    """Draw one image of ``class_id`` as uint8 RGB (size, size, 3); pure function of its arguments."""
    if class_id not in _CUES:
        raise ConfigError(f"unknown synthetic class {class_id!r}; use one of {', '.join(CLASSES)}")
    ci = CLASSES.index(class_id)
    rng = np.random.default_rng(np.random.SeedSequence([seed, ci, index, GENERATOR_VERSION]))
    return Painter(rng, size).paint(_CUES[class_id])


def _write_one(root: Path, job: tuple[int, int, int, int]) -> None:
    seed, ci, i, size = job
    cls = CLASSES[ci]
    img = render(cls, i, size, seed)
    Image.fromarray(img).save(root / cls / f"{cls}_{i:05d}.png", optimize=False, compress_level=1)


def _write_chunk(root: str, jobs: list[tuple[int, int, int, int]]) -> int:
    for job in jobs:
        _write_one(Path(root), job)
    return len(jobs)


def _write_parallel(root: Path, jobs: list, n_workers: int) -> None:
    import multiprocessing

    chunk = max(16, math.ceil(len(jobs) / (n_workers * 8)))
    chunks = [jobs[k:k + chunk] for k in range(0, len(jobs), chunk)]
    # spawn, not fork: the caller may have TensorFlow (and its threads) loaded.
    ctx = multiprocessing.get_context("spawn")
    with progress.task("drawing synthetic lesions", total=len(jobs)) as advance:
        with ProcessPoolExecutor(n_workers, mp_context=ctx) as pool:
            for n in pool.map(_write_chunk, [str(root)] * len(chunks), chunks):
                advance(n)
