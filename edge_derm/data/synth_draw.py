"""Drawing one synthetic lesion photograph (numpy + Pillow): the painter behind :mod:`edge_derm.data.synth`.

``Painter.paint(cue)`` draws skin, then a lesion whose look is drawn inside the class's ``Cue`` ranges, its
relief, class-independent clutter and camera effects. All randomness comes from the painter's ``rng`` and is
drawn in a fixed order, so an image is a pure function of its seed: the tests and the measurement scripts
(benchmarks/scripts/measure_*.py, whose figures in benchmarks/results/ were measured on these images) rely on the
exact pixels, so changing the order of any draw changes every image and needs a new
``synth.GENERATOR_VERSION``.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

# Approximate skin reflectance (sRGB) for Fitzpatrick types I..VI.
FITZPATRICK = np.array([[241, 210, 192], [230, 188, 162], [208, 162, 128], [174, 126, 92],
                         [128, 88, 62], [84, 58, 44]], dtype=np.float32)




@dataclass(frozen=True)
class Cue:
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



@dataclass
class _Lesion:
    """The lesion as the painting steps after its outline share it."""

    cx: float                                  # centre, normalised coordinates [-1, 1]
    cy: float
    r0: float                                  # radius of the main blob
    d: np.ndarray                              # normalised distance field (< 1 inside)
    alpha: np.ndarray                          # soft mask (edge sharpness applied)
    inside: np.ndarray                         # 1 - d, clipped to [0, 1]
    centres: list[tuple[float, float, float]]  # (x, y, r) of every blob
    jitter: np.ndarray | None = None           # per-image colour tint (set by the colour step)
    feats: dict[str, bool] = field(default_factory=dict)  # the class structures this image shows


@lru_cache(maxsize=8)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    c = (np.arange(size, dtype=np.float32) + 0.5) / size * 2.0 - 1.0
    return np.meshgrid(c, c)  # x, y in [-1, 1]


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(z, -30, 30)))


def _u(rng: np.random.Generator, lo_hi: tuple[float, float]) -> float:
    return float(rng.uniform(lo_hi[0], lo_hi[1]))


class Painter:
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

    def blob(self, cx: float, cy: float, r: float, cue: Cue) -> np.ndarray:
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
        base = FITZPATRICK[lo] + (tone - lo) * (FITZPATRICK[lo + 1] - FITZPATRICK[lo])
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

    def paint(self, cue: Cue) -> np.ndarray:
        """One image of a class with cue ranges ``cue``: skin, lesion, relief, clutter, camera.

        The steps draw from ``rng`` in this fixed order (the generator is deterministic for a seed and the
        tests and benchmarks rely on its exact pixels): reorder nothing here or inside the steps.
        """
        rng = self.rng
        img, tone = self.skin()
        skin = img.copy()
        les = self.lesion_shape(cue)
        col = self.lesion_colour(cue, les)
        opacity = _u(rng, cue.opacity) * (0.85 + 0.15 * np.clip(les.inside * 3, 0, 1))
        les.feats = {k: rng.uniform() < p for k, p in cue.feats.items()}
        col = self.colour_structures(col, les)
        out = img + (les.alpha * opacity)[..., None] * (col - img)
        out = self.surface_structures(out, cue, les)
        out = self.relief(out, cue, les)
        out = self.artefacts(out, skin, les.cx, les.cy, les.r0, tone)
        return self.camera(out)

    def lesion_shape(self, cue: Cue) -> _Lesion:
        """Framing (close-up or wide), position, size and outline: one blob or a cluster of papules."""
        rng = self.rng
        wide = rng.uniform() < 0.35
        scale = rng.uniform(0.4, 0.6) if wide else rng.uniform(0.8, 1.2)
        cx, cy = rng.uniform(-0.22, 0.22, 2)
        r0 = _u(rng, cue.size) * scale * 1.25

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
        return _Lesion(cx=cx, cy=cy, r0=r0, d=d, alpha=_sigmoid((1.0 - d) * sharp),
                       inside=np.clip(1.0 - d, 0.0, 1.0), centres=centres)

    def lesion_colour(self, cue: Cue, les: _Lesion) -> np.ndarray:
        """The lesion's colour field: its base colour, variegated by the class's other colours.

        Sets ``les.jitter`` (the per-image tint every later lesion colour is multiplied by).
        """
        rng, S = self.rng, self.S
        les.jitter = rng.uniform(0.88, 1.12, 3).astype(np.float32) * rng.uniform(0.85, 1.15)
        cols = [np.array(c, np.float32) * les.jitter for c in cue.colours]
        col = np.broadcast_to(cols[0], (S, S, 3)).astype(np.float32)
        varieg = _u(rng, cue.varieg)
        for extra in cols[1:]:
            share = varieg * rng.uniform(0.4, 1.0) / max(1, len(cols) - 1) * 1.6
            m = self.field_mask(share, int(cue.varieg_cells * rng.uniform(0.7, 1.4)))
            col = col + m[..., None] * (extra - col)
        return col * (1.0 + 0.05 * self.noise(12))[..., None]

    def colour_structures(self, col: np.ndarray, les: _Lesion) -> np.ndarray:
        """Structures that change the lesion's colour before it is laid on the skin (white centre,
        regression, lacunae, ulcer, crust, pearly rim)."""
        rng, d, feats = self.rng, les.d, les.feats

        def paint_over(mask: np.ndarray, colour: tuple[float, float, float], amount: float = 1.0) -> None:
            nonlocal col
            col = col + (amount * mask)[..., None] * (np.array(colour, np.float32) * les.jitter - col)

        if feats.get("centre_white"):
            paint_over(np.exp(-(d / rng.uniform(0.35, 0.6)) ** 2), (225, 205, 195), rng.uniform(0.6, 0.95))
        if feats.get("regression"):
            paint_over(self.field_mask(rng.uniform(0.05, 0.15), 7), (215, 205, 210), rng.uniform(0.5, 0.9))
        if feats.get("lacunae"):
            lac = self.dots(les.cx, les.cy, les.r0, int(rng.integers(6, 20)), (0.012, 0.03))
            paint_over(lac, (110, 15, 50), rng.uniform(0.5, 0.8))
        if feats.get("ulcer"):
            ulc = _sigmoid((rng.uniform(0.25, 0.5) - d) * 15) * np.clip(self.noise(6) + 1.2, 0, 1)
            paint_over(ulc, (105, 40, 32), rng.uniform(0.6, 0.95))
        if feats.get("crust"):
            paint_over(self.field_mask(rng.uniform(0.05, 0.15), 8) * (d < 1), (190, 145, 75),
                       rng.uniform(0.6, 0.9))
        if feats.get("rim"):
            paint_over(np.exp(-((d - 0.88) / 0.1) ** 2), (238, 212, 208), rng.uniform(0.4, 0.8))
        return col

    def surface_structures(self, out: np.ndarray, cue: Cue, les: _Lesion) -> np.ndarray:
        """Structures drawn on top of the laid lesion (milia, comedos, globules, black dots, vessels,
        umbilication, collarette) and white keratotic scale."""
        rng, S, feats = self.rng, self.S, les.feats
        cx, cy, r0, alpha = les.cx, les.cy, les.r0, les.alpha
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
            for bx, by, br in les.centres:
                u = np.exp(-(np.hypot(self.x - bx, self.y - by) / (0.22 * br)) ** 2)
                out = out * (1 - 0.35 * u)[..., None]
        if feats.get("collarette"):
            ring = np.exp(-((les.d - 1.1) / 0.07) ** 2)
            out = out + ring[..., None] * (np.array([235, 228, 215], np.float32) - out) * rng.uniform(0.4, 0.7)
        scale_amt = _u(rng, cue.scale)
        if scale_amt > 0:
            flakes = self.field_mask(rng.uniform(0.25, 0.55), int(S // rng.uniform(5, 9)))
            out = out + (flakes * alpha * scale_amt * 1.4)[..., None] * (np.array([236, 230, 218], np.float32) - out)
        return out

    def relief(self, out: np.ndarray, cue: Cue, les: _Lesion) -> np.ndarray:
        """Elevation, texture and shading: a height field lit from one side, highlights, a cast shadow."""
        rng, S, feats, d, r0, alpha = self.rng, self.S, les.feats, les.d, les.r0, les.alpha
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
            for bx, by, br in les.centres:
                hl = np.exp(-(np.hypot(self.x - (bx - lx * 0.35 * br), self.y - (by - ly * 0.35 * br))
                              / (0.18 * br)) ** 2)
                out = out + (0.6 * shiny * hl * alpha)[..., None] * (255.0 - out)
        if feats.get("stalk") or elev > 0.6:
            # cast shadow of an elevated lesion, away from the light
            shift = int(round(r0 * S * 0.25 * (1.0 if feats.get("stalk") else 0.5)))
            sh = np.roll(alpha, (int(round(ly * shift)), int(round(lx * shift))), axis=(0, 1))
            sh = self.blur(sh, 2.0 * S / 128) * (1 - alpha)
            out = out * (1 - 0.4 * sh)[..., None]
        return out

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
