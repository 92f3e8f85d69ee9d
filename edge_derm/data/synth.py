"""Synthetic lesion-like photographs for the 13 dermai13 classes (numpy + Pillow, no TensorFlow).

Each image is drawn procedurally: a skin background (Fitzpatrick I-VI tone, blotches, pores),
one lesion (or a cluster) whose class shows in learnable cues that resemble real ones (colour
and its variegation, border irregularity, asymmetry, size, texture, scale, elevation and
shading, vascular red, class-typical structures), and nuisances that do not depend on the class
(lighting and white balance, exposure, blur, noise, JPEG artefacts, framing, hairs, rulers,
surgical-marker ink). Class parameter ranges overlap on purpose, so the task is learnable but
not trivial (see benchmarks/measure_synth.py).

Every image has its own seed, derived from ``(seed, class index, image index)``, so the output
does not depend on the order or the number of worker processes.
"""

from __future__ import annotations

import io
import logging
import math
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from edge_derm import progress
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

# Approximate skin reflectance (sRGB) for Fitzpatrick types I..VI.
_FITZPATRICK = np.array([[241, 210, 192], [230, 188, 162], [208, 162, 128], [174, 126, 92],
                         [128, 88, 62], [84, 58, 44]], dtype=np.float32)


@dataclass(frozen=True)
class _Cue:
    """Parameter ranges of one class; each image draws uniformly inside them."""

    size: tuple[float, float]                 # lesion radius, fraction of the half-width (close-up)
    colours: tuple[tuple[int, int, int], ...]  # first = base; the others appear by variegation
    opacity: tuple[float, float] = (0.7, 0.95)
    varieg: tuple[float, float] = (0.0, 0.2)   # share of the lesion covered by the other colours
    varieg_cells: int = 5                      # spatial frequency of the variegation
    ellip: tuple[float, float] = (0.0, 0.15)
    asym: tuple[float, float] = (0.0, 0.08)
    irr: tuple[float, float] = (0.01, 0.05)   # high-harmonic border irregularity
    sharp: tuple[float, float] = (12.0, 30.0)  # edge sharpness (higher = well demarcated)
    elev: tuple[float, float] = (0.0, 0.2)
    texture: tuple[float, float] = (0.0, 0.05)
    shiny: tuple[float, float] = (0.0, 0.1)
    scale: tuple[float, float] = (0.0, 0.0)   # white keratotic scale
    blobs: tuple[int, int] = (1, 1)           # number of papules in the lesion (cluster)
    feats: dict[str, float] = field(default_factory=dict)  # structure -> probability


_CUES: dict[str, _Cue] = {
    "SebKer": _Cue(size=(0.25, 0.55), colours=((120, 82, 52), (78, 52, 34), (160, 120, 80)),
                   varieg=(0.15, 0.45), ellip=(0.05, 0.3), asym=(0.0, 0.1), irr=(0.02, 0.07),
                   sharp=(18, 40), elev=(0.2, 0.5), texture=(0.15, 0.35), scale=(0.0, 0.15),
                   feats={"milia": 0.6, "comedo": 0.5}),
    "ActKer": _Cue(size=(0.2, 0.45), colours=((196, 112, 100), (178, 96, 84), (214, 150, 130)),
                   opacity=(0.45, 0.75), varieg=(0.1, 0.35), ellip=(0.05, 0.3), asym=(0.0, 0.15),
                   irr=(0.04, 0.12), sharp=(4, 10), elev=(0.0, 0.15), texture=(0.05, 0.15),
                   scale=(0.25, 0.6), feats={"vessels": 0.15}),
    "Nev": _Cue(size=(0.15, 0.35), colours=((112, 72, 46), (88, 56, 36)), varieg=(0.0, 0.15),
                ellip=(0.0, 0.15), asym=(0.0, 0.05), irr=(0.0, 0.03), sharp=(15, 35),
                elev=(0.0, 0.35), texture=(0.0, 0.05), feats={"globules": 0.3}),
    "MolCont": _Cue(size=(0.06, 0.12), colours=((226, 186, 176), (236, 210, 200)),
                    opacity=(0.45, 0.75), varieg=(0.0, 0.15), ellip=(0.0, 0.1), irr=(0.0, 0.03),
                    sharp=(14, 30), elev=(0.5, 0.9), shiny=(0.3, 0.6), blobs=(2, 7),
                    feats={"umbilic": 0.8}),
    "Haem": _Cue(size=(0.15, 0.4), colours=((180, 30, 50), (120, 20, 60), (200, 60, 70)),
                 opacity=(0.7, 0.95), varieg=(0.1, 0.35), varieg_cells=4, ellip=(0.0, 0.2),
                 asym=(0.0, 0.1), irr=(0.02, 0.06), sharp=(18, 40), elev=(0.3, 0.7),
                 shiny=(0.2, 0.5), blobs=(1, 3), feats={"lacunae": 0.6}),
    "UncNeop": _Cue(size=(0.15, 0.35), colours=((190, 50, 55), (160, 40, 45), (215, 120, 110)),
                    opacity=(0.65, 0.9), varieg=(0.1, 0.35), ellip=(0.0, 0.2), asym=(0.0, 0.12),
                    irr=(0.03, 0.08), sharp=(14, 30), elev=(0.4, 0.8), shiny=(0.3, 0.6),
                    texture=(0.02, 0.1), feats={"collarette": 0.6, "crust": 0.35}),
    "Drmfib": _Cue(size=(0.1, 0.25), colours=((150, 98, 74), (120, 78, 58)), opacity=(0.5, 0.8),
                   varieg=(0.0, 0.15), ellip=(0.0, 0.2), asym=(0.0, 0.06), irr=(0.01, 0.04),
                   sharp=(6, 14), elev=(0.1, 0.3), feats={"centre_white": 0.85}),
    "SLent": _Cue(size=(0.25, 0.55), colours=((165, 118, 78), (140, 98, 64)), opacity=(0.45, 0.75),
                  varieg=(0.0, 0.2), ellip=(0.1, 0.35), asym=(0.05, 0.15), irr=(0.05, 0.12),
                  sharp=(14, 30), elev=(0.0, 0.05)),
    "PenFib": _Cue(size=(0.08, 0.18), colours=((190, 150, 125), (150, 110, 85)), opacity=(0.3, 0.6),
                   varieg=(0.0, 0.2), ellip=(0.1, 0.4), asym=(0.0, 0.1), irr=(0.01, 0.04),
                   sharp=(16, 35), elev=(0.8, 1.0), texture=(0.02, 0.12), blobs=(1, 2),
                   feats={"stalk": 0.9}),
    "VWart": _Cue(size=(0.12, 0.3), colours=((200, 180, 160), (170, 150, 135)), opacity=(0.35, 0.65),
                  varieg=(0.0, 0.2), ellip=(0.0, 0.2), asym=(0.0, 0.1), irr=(0.04, 0.1),
                  sharp=(14, 30), elev=(0.4, 0.8), texture=(0.3, 0.6), scale=(0.05, 0.25),
                  blobs=(1, 3), feats={"black_dots": 0.75}),
    "OtMalNeop": _Cue(size=(0.25, 0.5), colours=((188, 92, 82), (150, 60, 55), (205, 160, 120)),
                      opacity=(0.55, 0.85), varieg=(0.2, 0.5), ellip=(0.05, 0.3), asym=(0.05, 0.2),
                      irr=(0.05, 0.14), sharp=(8, 20), elev=(0.15, 0.45), texture=(0.05, 0.2),
                      scale=(0.15, 0.45), feats={"crust": 0.6, "ulcer": 0.35, "vessels": 0.25}),
    "BCC": _Cue(size=(0.15, 0.35), colours=((214, 160, 158), (196, 130, 130), (120, 80, 75)),
                opacity=(0.45, 0.75), varieg=(0.05, 0.25), ellip=(0.0, 0.25), asym=(0.0, 0.12),
                irr=(0.02, 0.08), sharp=(12, 28), elev=(0.2, 0.5), shiny=(0.2, 0.5),
                feats={"rim": 0.7, "vessels": 0.75, "ulcer": 0.3, "globules": 0.2}),
    "MM": _Cue(size=(0.25, 0.55), colours=((92, 58, 40), (40, 28, 26), (150, 105, 72), (104, 110, 132),
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
    return _Painter(rng, size).paint(_CUES[class_id])


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


# --------------------------------------------------------------------------------------------
# drawing


@lru_cache(maxsize=8)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    c = (np.arange(size, dtype=np.float32) + 0.5) / size * 2.0 - 1.0
    return np.meshgrid(c, c)  # x, y in [-1, 1]


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(z, -30, 30)))


def _u(rng: np.random.Generator, lo_hi: tuple[float, float]) -> float:
    return float(rng.uniform(lo_hi[0], lo_hi[1]))


class _Painter:
    """Draws one image; all randomness comes from ``rng``."""

    def __init__(self, rng: np.random.Generator, size: int):
        self.rng = rng
        self.S = size
        self.x, self.y = _grid(size)

    # -- primitives -------------------------------------------------------------------------

    def noise(self, cells: int) -> np.ndarray:
        """Smooth noise with about unit standard deviation; ``cells`` = features across the image."""
        cells = int(max(2, min(cells, self.S // 2)))
        grid = self.rng.standard_normal((cells + 1, cells + 1)).astype(np.float32)
        im = Image.fromarray(grid).resize((self.S, self.S), Image.BICUBIC)
        return np.asarray(im, dtype=np.float32) * 1.6

    def blur(self, a: np.ndarray, radius: float) -> np.ndarray:
        """Gaussian blur of a mask in [0, 1]."""
        if radius <= 0.05:
            return a
        # masks in [0, 1]; Pillow blurs 8-bit images only
        im = Image.fromarray((np.clip(a, 0, 1) * 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(radius))
        return np.asarray(im, dtype=np.float32) / 255.0

    def canvas(self) -> tuple[Image.Image, ImageDraw.ImageDraw]:
        im = Image.new("L", (self.S, self.S), 0)
        return im, ImageDraw.Draw(im)

    def px(self, u: float) -> float:
        """Normalised coordinate [-1, 1] to pixels."""
        return (u + 1.0) * 0.5 * self.S

    def blob(self, cx: float, cy: float, r: float, cue: _Cue) -> np.ndarray:
        """Normalised radius field d (< 1 inside) of one irregular, asymmetric blob."""
        rng = self.rng
        dx, dy = self.x - cx, self.y - cy
        rho = np.hypot(dx, dy)
        # e^{i theta}: its powers give cos(k theta + p) without trigonometry per pixel
        u = ((dx + 1j * dy) / np.maximum(rho, 1e-6)).astype(np.complex64)
        u2 = u * u
        u3 = u2 * u
        # a few low harmonics vary the outline; 2-D noise makes the border ragged (notches, bays)
        ks = np.arange(3, 7, dtype=np.float32)
        amp = rng.standard_normal(ks.size).astype(np.float32) / ks
        amp /= np.sqrt((amp ** 2).sum() / 2) + 1e-6  # about unit std around the border
        phase = rng.uniform(0, 2 * np.pi, ks.size).astype(np.float32)
        irr = _u(rng, cue.irr)
        ellip, p_e = _u(rng, cue.ellip), rng.uniform(0, np.pi)
        asym1, p_1 = _u(rng, cue.asym), rng.uniform(0, 2 * np.pi)
        asym3, p_3 = _u(rng, cue.asym), rng.uniform(0, 2 * np.pi)
        wave = (ellip * np.exp(-2j * p_e) * u2 + asym1 * np.exp(-1j * p_1) * u
                + asym3 * 0.5 * np.exp(-1j * p_3) * u3)
        uk = u2
        for a, p in zip(amp, phase):  # k = 3..6
            uk = uk * u
            wave = wave + (0.5 * irr * a * np.exp(1j * p)) * uk
        rfac = 1.0 + wave.real.astype(np.float32)
        rfac = np.maximum(rfac, 0.3)
        ragged = self.noise(int(rng.uniform(1.5, 3.0) / max(r, 0.05))) * 0.5 + self.noise(int(5 / max(r, 0.05))) * 0.25
        return rho / (r * rfac + 1e-6) * (1.0 + 1.5 * irr * ragged)

    def field_mask(self, share: float, cells: int) -> np.ndarray:
        """A soft random patch pattern covering about ``share`` of the image."""
        if share <= 0:
            return np.zeros((self.S, self.S), np.float32)
        n = self.noise(cells)
        thr = float(np.quantile(n, 1.0 - min(share, 0.99)))
        return np.clip((n - thr) * 2.5, 0.0, 1.0)

    def dots(self, cx: float, cy: float, r: float, n: int, radius: tuple[float, float],
             spread: float = 0.8) -> np.ndarray:
        im, draw = self.canvas()
        for _ in range(n):
            a = self.rng.uniform(0, 2 * np.pi)
            rr = r * spread * math.sqrt(self.rng.uniform())
            px, py = self.px(cx + rr * math.cos(a)), self.px(cy + rr * math.sin(a))
            rad = max(0.6, self.rng.uniform(*radius) * self.S)
            draw.ellipse([px - rad, py - rad, px + rad, py + rad], fill=255)
        return self.blur(np.asarray(im, np.float32) / 255.0, 0.4 * self.S / 128)

    def lines(self, starts: list[tuple[float, float]], length: tuple[float, float], width: float,
              bend: float, branch: float = 0.0) -> np.ndarray:
        """Wavy polylines (hairs, vessels), as a soft mask."""
        im, draw = self.canvas()
        rng = self.rng
        stack = [(sx, sy, rng.uniform(0, 2 * np.pi), rng.uniform(*length)) for sx, sy in starts]
        drawn = 0
        while stack and drawn < 80:
            x0, y0, ang, ln = stack.pop()
            drawn += 1
            pts = [(self.px(x0), self.px(y0))]
            steps = 8
            for _ in range(steps):
                ang += rng.normal(0, bend)
                x0 += math.cos(ang) * ln / steps
                y0 += math.sin(ang) * ln / steps
                pts.append((self.px(x0), self.px(y0)))
                if branch and rng.uniform() < branch and ln > 0.05:
                    stack.append((x0, y0, ang + rng.choice([-1, 1]) * rng.uniform(0.5, 1.2), ln * 0.5))
            draw.line(pts, fill=255, width=max(1, int(round(width))), joint="curve")
        return self.blur(np.asarray(im, np.float32) / 255.0, 0.35 * self.S / 128)

    # -- the picture ------------------------------------------------------------------------

    def skin(self) -> tuple[np.ndarray, float]:
        rng = self.rng
        tone = rng.uniform(0, 5)
        lo = int(min(tone, 4))
        base = _FITZPATRICK[lo] + (tone - lo) * (_FITZPATRICK[lo + 1] - _FITZPATRICK[lo])
        base = base * rng.uniform(0.94, 1.06, 3).astype(np.float32)
        img = np.broadcast_to(base, (self.S, self.S, 3)).astype(np.float32)
        # erythema only adds red (never green), in soft patches
        red = np.maximum(self.noise(int(rng.integers(2, 6))), 0) * rng.uniform(2, 12)
        img = img + red[..., None] * np.array([0.6, -0.5, -0.4], np.float32)
        lum = self.noise(int(rng.integers(3, 8))) * rng.uniform(1, 4)
        pores = self.noise(int(self.S // rng.uniform(2.5, 4.0))) * rng.uniform(1, 3)
        img = img + (lum + pores)[..., None]
        if rng.uniform() < 0.35:  # freckles / background naevi: not a class cue
            fx, fy = rng.uniform(-0.9, 0.9, 2)
            fr = self.dots(fx, fy, 1.2, int(rng.integers(3, 20)), (0.004, 0.012))
            img = img * (1 - 0.35 * fr[..., None])
        return img, tone

    def paint(self, cue: _Cue) -> np.ndarray:
        rng, S, x, y = self.rng, self.S, self.x, self.y
        img, tone = self.skin()
        skin = img.copy()

        wide = rng.uniform() < 0.35
        scale = rng.uniform(0.4, 0.6) if wide else rng.uniform(0.8, 1.2)
        cx, cy = rng.uniform(-0.22, 0.22, 2)
        r0 = _u(rng, cue.size) * scale * 1.25

        # geometry: one blob, or a cluster of papules
        n_blobs = int(rng.integers(cue.blobs[0], cue.blobs[1] + 1))
        ds, centres = [], []
        for b in range(n_blobs):
            if b == 0:
                bx, by, br = cx, cy, r0
            else:
                a = rng.uniform(0, 2 * np.pi)
                spread = r0 * rng.uniform(1.2, 3.0)
                bx, by = cx + spread * math.cos(a), cy + spread * math.sin(a)
                br = r0 * rng.uniform(0.6, 1.1)
            ds.append(self.blob(bx, by, br, cue))
            centres.append((bx, by, br))
        d = np.minimum.reduce(ds) if len(ds) > 1 else ds[0]
        sharp = _u(rng, cue.sharp)
        alpha = _sigmoid((1.0 - d) * sharp)
        inside = np.clip(1.0 - d, 0.0, 1.0)

        # colour and variegation
        jitter = rng.uniform(0.88, 1.12, 3).astype(np.float32) * rng.uniform(0.85, 1.15)
        cols = [np.array(c, np.float32) * jitter for c in cue.colours]
        col = np.broadcast_to(cols[0], (S, S, 3)).astype(np.float32)
        varieg = _u(rng, cue.varieg)
        for extra in cols[1:]:
            share = varieg * rng.uniform(0.4, 1.0) / max(1, len(cols) - 1) * 1.6
            m = self.field_mask(share, int(cue.varieg_cells * rng.uniform(0.7, 1.4)))
            col = col + m[..., None] * (extra - col)
        col = col * (1.0 + 0.05 * self.noise(12))[..., None]
        opacity = _u(rng, cue.opacity) * (0.85 + 0.15 * np.clip(inside * 3, 0, 1))
        feats = {k: rng.uniform() < p for k, p in cue.feats.items()}

        def paint_over(mask: np.ndarray, colour: tuple[float, float, float], amount: float = 1.0) -> None:
            nonlocal col
            col = col + (amount * mask)[..., None] * (np.array(colour, np.float32) * jitter - col)

        if feats.get("centre_white"):
            paint_over(np.exp(-(d / rng.uniform(0.35, 0.6)) ** 2), (225, 205, 195), rng.uniform(0.6, 0.95))
        if feats.get("regression"):
            paint_over(self.field_mask(rng.uniform(0.05, 0.15), 7), (215, 205, 210), rng.uniform(0.5, 0.9))
        if feats.get("lacunae"):
            lac = self.dots(cx, cy, r0, int(rng.integers(6, 20)), (0.012, 0.03))
            paint_over(lac, (110, 15, 50), rng.uniform(0.5, 0.8))
        if feats.get("ulcer"):
            ulc = _sigmoid((rng.uniform(0.25, 0.5) - d) * 15) * np.clip(self.noise(6) + 1.2, 0, 1)
            paint_over(ulc, (105, 40, 32), rng.uniform(0.6, 0.95))
        if feats.get("crust"):
            paint_over(self.field_mask(rng.uniform(0.05, 0.15), 8) * (d < 1), (190, 145, 75),
                       rng.uniform(0.6, 0.9))
        if feats.get("rim"):
            paint_over(np.exp(-((d - 0.88) / 0.1) ** 2), (238, 212, 208), rng.uniform(0.4, 0.8))

        out = img + (alpha * opacity)[..., None] * (col - img)

        # structures drawn on top
        if feats.get("milia"):
            m = self.dots(cx, cy, r0, int(rng.integers(2, 8)), (0.006, 0.014))
            out = out + (m * alpha)[..., None] * (np.array([240, 235, 215], np.float32) - out) * 0.8
        if feats.get("comedo"):
            m = self.dots(cx, cy, r0, int(rng.integers(2, 8)), (0.006, 0.014))
            out = out * (1 - 0.55 * m * alpha)[..., None]
        if feats.get("globules"):
            m = self.dots(cx, cy, r0, int(rng.integers(3, 14)), (0.006, 0.016))
            out = out * (1 - 0.5 * m * alpha)[..., None]
        if feats.get("black_dots"):
            m = self.dots(cx, cy, r0, int(rng.integers(4, 18)), (0.004, 0.01))
            out = out + (m * alpha)[..., None] * (np.array([40, 20, 25], np.float32) - out) * 0.85
        if feats.get("vessels"):
            starts = [(cx + rng.uniform(-0.6, 0.6) * r0, cy + rng.uniform(-0.6, 0.6) * r0)
                      for _ in range(int(rng.integers(2, 6)))]
            v = self.lines(starts, (0.3 * r0, 1.0 * r0), 1.0 * S / 128, 0.6, branch=0.25)
            out = out + (v * alpha)[..., None] * (np.array([185, 30, 45], np.float32) - out) * 0.75
        if feats.get("umbilic"):
            for bx, by, br in centres:
                u = np.exp(-(np.hypot(x - bx, y - by) / (0.22 * br)) ** 2)
                out = out * (1 - 0.35 * u)[..., None]
        if feats.get("collarette"):
            ring = np.exp(-((d - 1.1) / 0.07) ** 2)
            out = out + ring[..., None] * (np.array([235, 228, 215], np.float32) - out) * rng.uniform(0.4, 0.7)
        scale_amt = _u(rng, cue.scale)
        if scale_amt > 0:
            flakes = self.field_mask(rng.uniform(0.25, 0.55), int(S // rng.uniform(5, 9)))
            out = out + (flakes * alpha * scale_amt * 1.4)[..., None] * (np.array([236, 230, 218], np.float32) - out)

        # elevation, texture and shading
        elev = _u(rng, cue.elev)
        tex = _u(rng, cue.texture)
        # height in the same units as x and y, so slopes do not depend on the lesion's size
        h = elev * r0 * (1.0 - np.minimum(d, 1.0) ** 2)
        if tex > 0:
            bumps = self.noise(int(S // rng.uniform(6, 10)))
            h = h + tex * 0.04 * bumps * alpha
            out = out * (1 + tex * 0.35 * bumps * alpha)[..., None]
        light = rng.uniform(0, 2 * np.pi)
        lx, ly = math.cos(light), math.sin(light)
        if feats.get("rim"):
            h = h + 0.08 * r0 * np.exp(-((d - 0.88) / 0.1) ** 2)
        gy, gx = np.gradient(h)
        shade = (gx * lx + gy * ly) * (S / 2) * 0.3  # lit from -l: highlight there, shadow at +l
        out = out * (1 + np.clip(shade, -0.5, 0.5))[..., None]
        shiny = _u(rng, cue.shiny)
        if shiny > 0:
            for bx, by, br in centres:
                hl = np.exp(-(np.hypot(x - (bx - lx * 0.35 * br), y - (by - ly * 0.35 * br)) / (0.18 * br)) ** 2)
                out = out + (0.6 * shiny * hl * alpha)[..., None] * (255.0 - out)
        if feats.get("stalk") or elev > 0.6:
            # cast shadow of an elevated lesion, away from the light
            shift = int(round(r0 * S * 0.25 * (1.0 if feats.get("stalk") else 0.5)))
            sh = np.roll(alpha, (int(round(ly * shift)), int(round(lx * shift))), axis=(0, 1))
            sh = self.blur(sh, 2.0 * S / 128) * (1 - alpha)
            out = out * (1 - 0.4 * sh)[..., None]

        out = self.artefacts(out, skin, cx, cy, r0, tone)
        return self.camera(out)

    def artefacts(self, img: np.ndarray, skin: np.ndarray, cx: float, cy: float, r0: float,
                  tone: float) -> np.ndarray:
        """Class-independent clutter: hairs, marker ink, a ruler, the body outline."""
        rng, S = self.rng, self.S
        if rng.uniform() < 0.4:
            n = int(rng.integers(1, 20))
            starts = [tuple(rng.uniform(-1.1, 1.1, 2)) for _ in range(n)]
            hairs = self.lines(starts, (0.3, 1.2), rng.uniform(0.7, 1.6) * S / 128, 0.15)
            colour = np.array([35, 25, 20] if rng.uniform() < 0.8 or tone > 2 else [200, 180, 150], np.float32)
            img = img + (hairs * rng.uniform(0.6, 0.95))[..., None] * (colour - img)
        if rng.uniform() < 0.15:  # surgical marker ring or dots
            im, draw = self.canvas()
            rr = (r0 * rng.uniform(1.4, 2.2)) * S / 2
            px, py = self.px(cx), self.px(cy)
            if rng.uniform() < 0.5:
                draw.ellipse([px - rr, py - rr, px + rr, py + rr], outline=255,
                             width=max(1, int(rng.uniform(1.5, 3.5) * S / 128)))
            else:
                for _ in range(int(rng.integers(1, 5))):
                    a = rng.uniform(0, 2 * np.pi)
                    qx, qy, q = px + rr * math.cos(a), py + rr * math.sin(a), rng.uniform(1.5, 3.5) * S / 128
                    draw.ellipse([qx - q, qy - q, qx + q, qy + q], fill=255)
            ink = self.blur(np.asarray(im, np.float32) / 255.0, 0.5 * S / 128)
            img = img + (ink * 0.8)[..., None] * (np.array([85, 55, 135], np.float32) - img)
        if rng.uniform() < 0.15:  # a ruler along one edge
            im, draw = self.canvas()
            depth = rng.uniform(0.08, 0.15) * S
            draw.rectangle([0, S - depth, S, S], fill=255)
            band = np.asarray(im, np.float32) / 255.0
            tim, tdraw = self.canvas()
            step = S / rng.uniform(18, 30)
            for k in range(int(S / step) + 1):
                ln = depth * (0.6 if k % 5 == 0 else 0.3)
                tdraw.line([(k * step, S - depth), (k * step, S - depth + ln)], fill=255, width=1)
            ticks = np.asarray(tim, np.float32) / 255.0
            rot = rng.integers(0, 4)
            band, ticks = np.rot90(band, rot), np.rot90(ticks, rot)
            img = img + band[..., None] * (np.array([232, 228, 205], np.float32) - img)
            img = img * (1 - 0.85 * ticks)[..., None]
        if rng.uniform() < 0.25:  # wider anatomical framing: the body outline and the background
            a = rng.uniform(0, 2 * np.pi)
            curv = rng.uniform(-0.3, 0.3)
            t = self.x * math.cos(a) + self.y * math.sin(a)
            s = -self.x * math.sin(a) + self.y * math.cos(a)
            edge = t - (rng.uniform(0.65, 0.95) + curv * s ** 2)
            bg = _sigmoid(edge * rng.uniform(20, 60))
            bg_col = np.array(rng.choice([[40, 40, 45], [200, 205, 210], [60, 90, 140], [150, 120, 100]]),
                              np.float32) * rng.uniform(0.8, 1.1)
            img = img + bg[..., None] * (bg_col - img)
        return img

    def camera(self, img: np.ndarray) -> np.ndarray:
        """Lighting, white balance, exposure, blur, sensor noise and JPEG artefacts."""
        rng, S = self.rng, self.S
        a = rng.uniform(0, 2 * np.pi)
        grad = 1.0 + rng.uniform(0, 0.25) * (self.x * math.cos(a) + self.y * math.sin(a))
        vign = 1.0 - rng.uniform(0, 0.3) * (self.x ** 2 + self.y ** 2) / 2
        wb = np.array([1 + rng.uniform(-0.08, 0.1), 1 + rng.uniform(-0.04, 0.04), 1 + rng.uniform(-0.1, 0.08)],
                      np.float32)
        img = img * (grad * vign * rng.uniform(0.75, 1.2))[..., None] * wb
        img = np.clip(img, 0, 255).astype(np.uint8)
        im = Image.fromarray(img)
        if rng.uniform() < 0.6:
            im = im.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.6) * S / 128))
        out = np.asarray(im, np.float32)
        out = out + rng.normal(0, rng.uniform(0.5, 4.0), out.shape).astype(np.float32)
        out = np.clip(out, 0, 255).astype(np.uint8)
        if rng.uniform() < 0.3:
            buf = io.BytesIO()
            Image.fromarray(out).save(buf, format="JPEG", quality=int(rng.integers(55, 95)))
            buf.seek(0)
            with Image.open(buf) as jp:
                out = np.asarray(jp.convert("RGB"), np.uint8).copy()
        return out
