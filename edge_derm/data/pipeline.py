"""The tf.data input pipeline that training and evaluation read images through.

Decoding is :func:`edge_derm.data.images.load_for_model` (Pillow: EXIF orientation, grayscale,
RGBA, palette, CMYK and 16-bit handled) called through ``tf.numpy_function``, so evaluation sees
exactly the pixels the runtime sees. Training batches are class-balanced (each batch draws the same
number of images from every class, which oversamples the rare ones), infinite and augmented with
the paper's transforms as TensorFlow ops; augmentation never enters the exported model.

TensorFlow is imported inside the functions: importing this module is cheap.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from edge_derm.data.images import RESIZE_MODES, load_rgb, resize
from edge_derm.errors import ConfigError, DataError

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AugmentConfig:
    """The paper's training augmentation; every transform is drawn per image.

    Attributes:
        rotation: Largest rotation in degrees, either way (0 = none).
        hflip: Flip left-right with probability 0.5.
        zoom: Scale drawn from [1 - zoom, 1 + zoom] (0 = none).
        width_shift: Horizontal shift drawn from +-width_shift of the width (0 = none).
        brightness: Pixel values are multiplied by a factor drawn from this (low, high) range,
            as Keras' ``ImageDataGenerator(brightness_range=...)`` does; None = none. The paper's
            (0.2, 0.8) only darkens; pass e.g. (0.8, 1.2) for symmetric jitter.
        enabled: False turns everything off.
    """

    rotation: float = 30.0
    hflip: bool = True
    zoom: float = 0.2
    width_shift: float = 0.1
    brightness: tuple[float, float] | None = (0.2, 0.8)
    enabled: bool = True

    def __post_init__(self) -> None:
        if not 0 <= self.rotation <= 180:
            raise ConfigError(f"augment rotation must be 0-180 degrees, got {self.rotation}")
        if not 0 <= self.zoom < 1:
            raise ConfigError(f"augment zoom must be in [0, 1) (0.2 = 20 %), got {self.zoom}")
        if not 0 <= self.width_shift < 1:
            raise ConfigError(f"augment width_shift must be in [0, 1) (0.1 = 10 %), got {self.width_shift}")
        if self.brightness is not None:
            b = tuple(self.brightness)
            if len(b) != 2 or not 0 < b[0] <= b[1]:
                raise ConfigError(f"augment brightness must be (low, high) with 0 < low <= high, or None; "
                                  f"got {self.brightness}")
            object.__setattr__(self, "brightness", (float(b[0]), float(b[1])))

    @property
    def active(self) -> bool:
        """Whether any transform would change an image."""
        return self.enabled and bool(self.rotation or self.hflip or self.zoom or self.width_shift
                                     or (self.brightness and self.brightness != (1.0, 1.0)))

    @classmethod
    def off(cls) -> "AugmentConfig":
        """No augmentation."""
        return cls(enabled=False)


def steps_per_epoch(n_train: int, batch_size: int) -> int:
    """Batches that show ``n_train`` images once: ceil(n_train / batch_size)."""
    if batch_size < 1:
        raise ConfigError(f"batch size must be at least 1, got {batch_size}")
    if n_train < 0:
        raise ConfigError(f"number of training images must be >= 0, got {n_train}")
    return math.ceil(n_train / batch_size)


def make_dataset(paths: Sequence[str], labels: Sequence[int] | np.ndarray, num_classes: int,
                 image_size: int, *, training: bool, batch_size: int | None = None,
                 batch_multiple: int = 1, augment: AugmentConfig | None = None,
                 resize_mode: str = "nearest", seed: int = 0, cache: bool = False) -> Any:
    """A ``tf.data.Dataset`` of ``(float32 [B, S, S, 3] in [0, 255], float32 one-hot [B, C])``.

    Args:
        paths: Image files (absolute, e.g. from ``Manifest.arrays``).
        labels: Class indices in [0, num_classes).
        num_classes: C.
        image_size: S; images are resized with ``resize_mode`` (``nearest`` or ``pad``).
        training: True: class-balanced, infinite, shuffled, augmented. False: in order, one
            pass, no augmentation, last partial batch kept.
        batch_size: Images per batch; default ``num_classes * batch_multiple``. In training a
            multiple of ``num_classes`` gives exactly equal counts per class in every batch.
        batch_multiple: Images per class per batch when ``batch_size`` is not given.
        augment: Training augmentation; default ``AugmentConfig()`` (the paper's). Ignored at evaluation.
        resize_mode: ``nearest`` (the paper) or ``pad`` (aspect-preserving).
        seed: Shuffling and augmentation seed; same seed, same batches.
        cache: Keep decoded, resized images in memory as uint8 (before augmentation); training
            also holds each class's images in its shuffle buffer, so about 2 x N x S x S x 3 bytes.

    Raises:
        DataError: no images, mismatched lengths, labels out of range, or (training) a class
            without images.
        ConfigError: a bad size, batch size or resize mode.
    """
    paths, labels, batch_size = _checked_inputs(paths, labels, num_classes, image_size, batch_size=batch_size,
                                                batch_multiple=batch_multiple, resize_mode=resize_mode)
    import tensorflow as tf

    decode = _decoder(tf, image_size, resize_mode, num_classes)
    if not training:
        return _evaluation_dataset(tf, paths, labels, decode, batch_size, cache)
    return _training_dataset(tf, paths, labels, decode, num_classes, image_size, batch_size=batch_size,
                             augment=augment, seed=seed, cache=cache)


def _checked_inputs(paths: Sequence[str], labels: Sequence[int] | np.ndarray, num_classes: int, image_size: int,
                    *, batch_size: int | None, batch_multiple: int, resize_mode: str
                    ) -> tuple[list[str], np.ndarray, int]:
    """``make_dataset``'s arguments checked before TensorFlow is imported: the paths as strings, the labels as
    int64 and the batch size (default ``num_classes * batch_multiple``)."""
    paths = [str(p) for p in paths]
    labels = np.asarray(labels)
    if len(paths) == 0:
        raise DataError("no images to make a dataset from; check the manifest split")
    if labels.shape != (len(paths),):
        raise DataError(f"{len(paths)} paths but labels of shape {labels.shape}; give one label per path")
    if labels.size and not np.issubdtype(labels.dtype, np.integer):
        raise DataError(f"labels must be integer class indices, got dtype {labels.dtype}")
    labels = labels.astype(np.int64)
    if num_classes < 1:
        raise ConfigError(f"num_classes must be at least 1, got {num_classes}")
    if labels.min() < 0 or labels.max() >= num_classes:
        raise DataError(f"labels must be in [0, {num_classes}), found {labels.min()}..{labels.max()}")
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
        raise DataError(f"{len(missing)} image file(s) not found, e.g. {missing[0]}; "
                        "check the dataset root or rebuild the manifest")
    if image_size < 8:
        raise ConfigError(f"image size must be at least 8 pixels, got {image_size}")
    if resize_mode not in RESIZE_MODES:
        raise ConfigError(f"unknown resize mode {resize_mode!r}; use one of {', '.join(RESIZE_MODES)}")
    if batch_multiple < 1:
        raise ConfigError(f"batch_multiple must be at least 1, got {batch_multiple}")
    if batch_size is None:
        batch_size = num_classes * batch_multiple
    if batch_size < 1:
        raise ConfigError(f"batch size must be at least 1, got {batch_size}")
    return paths, labels, batch_size


def _evaluation_dataset(tf: Any, paths: list[str], labels: np.ndarray, decode: Any, batch_size: int,
                        cache: bool) -> Any:
    """In order, one pass, no augmentation, last partial batch kept."""
    autotune = tf.data.AUTOTUNE
    ds = tf.data.Dataset.from_tensor_slices((paths, labels)).map(
        decode, num_parallel_calls=autotune, deterministic=True)
    if cache:
        ds = ds.cache()
    ds = ds.batch(batch_size, drop_remainder=False).map(_to_float, num_parallel_calls=autotune)
    return ds.prefetch(autotune)


def _training_dataset(tf: Any, paths: list[str], labels: np.ndarray, decode: Any, num_classes: int,
                      image_size: int, *, batch_size: int, augment: AugmentConfig | None, seed: int,
                      cache: bool) -> Any:
    """Class-balanced (round-robin over per-class shuffled streams), infinite, augmented batches."""
    autotune = tf.data.AUTOTUNE
    counts = np.bincount(labels, minlength=num_classes)
    if (counts == 0).any():
        missing = ", ".join(str(i) for i in np.flatnonzero(counts == 0))
        raise DataError(f"class index(es) {missing} have no training images; class-balanced batches need "
                        "at least one per class (rebuild the dataset or drop the class)")
    if batch_size % num_classes:
        _log.warning("batch size %d is not a multiple of %d classes: batches are balanced only on average",
                     batch_size, num_classes)
    order = np.argsort(labels, kind="stable")
    per_class = []
    for c in range(num_classes):
        idx = order[labels[order] == c]
        ds_c = tf.data.Dataset.from_tensor_slices(([paths[i] for i in idx], labels[idx]))
        if cache:
            # decode per class, then cache, so each image is decoded once; shuffle afterwards.
            ds_c = ds_c.map(decode, num_parallel_calls=autotune, deterministic=True).cache()
        ds_c = ds_c.shuffle(len(idx), seed=seed * 1000 + c, reshuffle_each_iteration=True).repeat()
        per_class.append(ds_c)
    # Round-robin over the classes in an order reshuffled every cycle: every num_classes
    # consecutive elements hold each class exactly once.
    choice = tf.data.Dataset.range(num_classes).shuffle(
        num_classes, seed=seed, reshuffle_each_iteration=True).repeat()
    ds = tf.data.Dataset.choose_from_datasets(per_class, choice)
    if not cache:
        ds = ds.map(decode, num_parallel_calls=autotune, deterministic=True)
    ds = ds.batch(batch_size, drop_remainder=True)
    augment = AugmentConfig() if augment is None else augment
    if augment.active:
        aug = _augmenter(tf, augment, image_size, seed)
        ds = ds.enumerate().map(aug, num_parallel_calls=autotune, deterministic=True)
    else:
        ds = ds.map(_to_float, num_parallel_calls=autotune)
    return ds.prefetch(autotune)


def _decoder(tf: Any, size: int, mode: str, num_classes: int):
    # load_for_model's pixels, kept as uint8 (4x less memory in the cache and shuffle buffers);
    # the cast to float32 after batching is exact.
    def load(path: bytes) -> np.ndarray:
        return resize(load_rgb(path.decode("utf-8")), size, mode)

    def decode(path, label):
        img = tf.numpy_function(load, [path], tf.uint8, stateful=False)
        img.set_shape((size, size, 3))
        return img, tf.one_hot(label, num_classes, dtype=tf.float32)

    return decode


def _to_float(images, onehot):
    import tensorflow as tf

    return tf.cast(images, tf.float32), onehot


def augment_batch(images: Any, config: AugmentConfig, seed: Any) -> Any:
    """Augment a float32 batch [B, S, S, 3] with stateless randomness from ``seed`` (shape [2] int).

    Rotation, horizontal flip, zoom and width shift are one projective transform per image
    (bilinear, edges filled with the nearest pixel, as Keras' ImageDataGenerator does); then the
    brightness factor. Output stays float32 in [0, 255].
    """
    import tensorflow as tf

    images = tf.convert_to_tensor(images, tf.float32)
    if not config.enabled:
        return images
    b = tf.shape(images)[0]
    h = tf.cast(tf.shape(images)[1], tf.float32)
    w = tf.cast(tf.shape(images)[2], tf.float32)
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), 5)

    def uniform(i, lo, hi):
        return tf.random.stateless_uniform([b], seeds[i], lo, hi, dtype=tf.float32)

    theta = uniform(0, -1.0, 1.0) * (config.rotation * math.pi / 180.0)
    flip = tf.where(uniform(1, 0.0, 1.0) < 0.5, -1.0, 1.0) if config.hflip else tf.ones([b])
    zoom = uniform(2, 1.0 - config.zoom, 1.0 + config.zoom)
    shift = uniform(3, -config.width_shift, config.width_shift) * w
    # Output pixel p maps to input pixel c + R(theta) diag(flip * zoom, zoom) (p - c) + (shift, 0).
    cos, sin = tf.cos(theta), tf.sin(theta)
    a0, a1 = zoom * flip * cos, -zoom * sin
    b0, b1 = zoom * flip * sin, zoom * cos
    cx, cy = (w - 1.0) / 2.0, (h - 1.0) / 2.0
    a2 = cx + shift - (a0 * cx + a1 * cy)
    b2 = cy - (b0 * cx + b1 * cy)
    zeros = tf.zeros([b])
    transforms = tf.stack([a0, a1, a2, b0, b1, b2, zeros, zeros], axis=1)
    if config.rotation or config.hflip or config.zoom or config.width_shift:
        images = tf.raw_ops.ImageProjectiveTransformV3(
            images=images, transforms=transforms, output_shape=tf.shape(images)[1:3],
            fill_value=0.0, interpolation="BILINEAR", fill_mode="NEAREST")
    if config.brightness is not None:
        factor = uniform(4, config.brightness[0], config.brightness[1])
        images = images * factor[:, None, None, None]
    return tf.clip_by_value(images, 0.0, 255.0)


def _augmenter(tf: Any, config: AugmentConfig, size: int, seed: int):
    def aug(step, batch):
        images, onehot = _to_float(*batch)
        # stateless: batch k of a given seed is augmented the same way whatever the parallelism
        out = augment_batch(images, config, tf.stack([tf.constant(seed, tf.int64), step]))
        out.set_shape((None, size, size, 3))
        return out, onehot

    return aug

