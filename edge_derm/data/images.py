"""Image decoding and resizing without TensorFlow.

This is the only image preprocessing outside the model: the input pipeline (at evaluation),
the converter's calibration and the runtime all call :func:`load_for_model`, so every stage sees
the same pixels. Normalisation lives inside the model (see docs/ARCHITECTURE.md).
"""

from __future__ import annotations

import contextlib
import warnings
from pathlib import Path
from typing import Iterator

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from edge_derm.errors import DataError

#: Above this many pixels an image is refused (decompression bombs). 64 MP covers any camera.
DEFAULT_MAX_PIXELS = 64_000_000
RESIZE_MODES = ("nearest", "pad")


class ImageError(DataError):
    """A missing, unreadable, truncated, non-image or oversized image file."""


@contextlib.contextmanager
def _open_image(path: str | Path, max_pixels: int) -> Iterator[Image.Image]:
    """Open an image with the pixel limit enforced; every decoding failure becomes ImageError."""
    path = Path(path)
    if not path.is_file():
        raise ImageError(f"image not found: {path}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                w, h = im.size
                if w * h > max_pixels:
                    raise ImageError(f"{path}: {w}x{h} is above the {max_pixels} pixel limit "
                                     "(possible decompression bomb); downscale it first")
                yield im
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageError(f"{path}: above Pillow's pixel limit (possible decompression bomb); downscale it first") \
            from exc
    except UnidentifiedImageError as exc:
        raise ImageError(f"{path}: not a readable image ({exc.__class__.__name__})") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageError(f"{path}: unreadable or truncated image ({exc})") from exc


def load_rgb(path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode an image file to uint8 RGB (H, W, 3), EXIF orientation applied.

    Grayscale, RGBA / LA (composited on white), palette, CMYK and 16-bit images become RGB.

    Raises:
        ImageError: missing, unreadable, truncated, non-image or above ``max_pixels``.
    """
    with _open_image(path, max_pixels) as im:
        im.load()
        return _to_rgb(ImageOps.exif_transpose(im))


def image_size(path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[int, int]:
    """(width, height) from the file's header only (fast; nothing is decoded).

    Raises:
        ImageError: missing, not an image, or above ``max_pixels`` (a decompression bomb).
    """
    with _open_image(path, max_pixels) as im:
        return im.size


def check_image(path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[int, int]:
    """Check that an image file decodes, cheaper than :func:`load_rgb`; returns its (width, height).

    JPEGs are decoded at 1/8 scale (libjpeg's DCT scaling still reads the whole stream, so
    truncation is caught at a fraction of the cost); PNGs are verified chunk by chunk (CRC
    checks catch truncation and corruption without inflating); other formats are decoded in full.

    Raises:
        ImageError: missing, unreadable, truncated, non-image or above ``max_pixels``.
    """
    with _open_image(path, max_pixels) as im:
        w, h = im.size
        if im.format == "PNG":
            im.verify()  # walks every chunk and checks its CRC, without inflating
        else:
            if im.format == "JPEG":
                im.draft("RGB", (max(1, w // 8), max(1, h // 8)))
            im.load()
    return w, h


def _to_rgb(im: Image.Image) -> np.ndarray:
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        # The scale follows the mode, never the values: 16-bit grey (PNG's only integer mode beyond
        # 8 bits; Pillow opens it as I;16 or, in older versions, I) spans 0..65535.
        arr = np.asarray(im, dtype=np.float64)
        gray = np.clip(np.round(arr / 65535.0 * 255.0), 0, 255).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=2)
    if im.mode == "F":
        arr = np.asarray(im, dtype=np.float64)
        gray = np.clip(arr, 0, 255).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=2)
    if im.mode == "P":
        im = im.convert("RGBA")
    if im.mode in ("RGBA", "LA", "PA"):
        im = im.convert("RGBA")
        background = Image.new("RGBA", im.size, (255, 255, 255, 255))
        im = Image.alpha_composite(background, im)
    if im.mode != "RGB":
        im = im.convert("RGB")
    return np.asarray(im, dtype=np.uint8).copy()


def resize(img: np.ndarray, size: int, mode: str = "nearest") -> np.ndarray:
    """Resize uint8 RGB to (size, size, 3).

    ``nearest``: nearest-neighbour stretch to the square (the paper's choice).
    ``pad``: aspect-preserving bilinear resize, centred on black padding.
    """
    if mode not in RESIZE_MODES:
        raise ValueError(f"unknown resize mode {mode!r}; use one of {', '.join(RESIZE_MODES)}")
    h, w = img.shape[:2]
    if mode == "nearest":
        # Index arithmetic (not PIL) so the Android app can reproduce it exactly:
        # source index = floor((dst + 0.5) * src / dst).
        ys = np.minimum(((np.arange(size) + 0.5) * h / size).astype(np.int64), h - 1)
        xs = np.minimum(((np.arange(size) + 0.5) * w / size).astype(np.int64), w - 1)
        return img[ys][:, xs]
    scale = size / max(h, w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    small = np.asarray(Image.fromarray(img).resize((nw, nh), Image.BILINEAR), dtype=np.uint8)
    out = np.zeros((size, size, 3), dtype=np.uint8)
    top, left = (size - nh) // 2, (size - nw) // 2
    out[top:top + nh, left:left + nw] = small
    return out


def load_for_model(path: str | Path, size: int, mode: str = "nearest",
                   max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Load an image as the model's input: float32 RGB (size, size, 3) in [0, 255]."""
    return resize(load_rgb(path, max_pixels), size, mode).astype(np.float32)
