"""The tf.data input pipeline (edge_derm.data.pipeline)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edge_derm.data.images import load_for_model
from edge_derm.data.pipeline import AugmentConfig, augment_batch, make_dataset, steps_per_epoch
from edge_derm.data.synth import CLASSES
from edge_derm.errors import ConfigError, DataError

S = 32
C = len(CLASSES)


@pytest.fixture(scope="module")
def images(synth_root):
    """(paths, labels): the synthetic set, 8 images per class, in class order."""
    paths, labels = [], []
    for ci, cls in enumerate(CLASSES):
        for f in sorted((synth_root / cls).glob("*.png")):
            paths.append(str(f))
            labels.append(ci)
    return paths, np.array(labels)


def _batches(ds, n):
    return [(x.numpy(), y.numpy()) for x, y in ds.take(n)]


def test_evaluation_in_order_exact_pixels_and_last_batch_kept(images):
    paths, labels = images[0][:30], images[1][:30]
    ds = make_dataset(paths, labels, C, S, training=False, batch_size=8, augment=AugmentConfig())
    batches = _batches(ds, 100)
    assert [x.shape[0] for x, _ in batches] == [8, 8, 8, 6]  # the last partial batch is kept
    x = np.concatenate([b[0] for b in batches])
    y = np.concatenate([b[1] for b in batches])
    assert x.dtype == np.float32 and y.dtype == np.float32 and x.shape[1:] == (S, S, 3)
    # no augmentation at evaluation: exactly the runtime's pixels
    assert np.array_equal(x, np.stack([load_for_model(p, S) for p in paths]))
    assert np.array_equal(y.argmax(1), labels) and np.array_equal(y.sum(1), np.ones(30))


def test_evaluation_default_batch_cache_and_pad(images):
    paths, labels = images
    plain = np.concatenate([x for x, _ in _batches(make_dataset(paths, labels, C, S, training=False), 100)])
    assert plain.shape == (len(paths), S, S, 3)
    cached = make_dataset(paths, labels, C, S, training=False, cache=True, batch_multiple=2)
    for _ in range(2):  # second pass reads the cache
        assert np.array_equal(np.concatenate([x for x, _ in _batches(cached, 100)]), plain)
    pad = make_dataset(paths[:5], labels[:5], C, S, training=False, resize_mode="pad")
    assert np.array_equal(next(iter(pad))[0].numpy(), np.stack([load_for_model(p, S, "pad") for p in paths[:5]]))


@pytest.mark.parametrize("multiple", [1, 2])
def test_training_batches_are_class_balanced_and_infinite(images, multiple):
    paths, labels = images
    # a very imbalanced subset: class 0 has 8 images, the others 1 or 2
    keep = [i for i in range(len(paths)) if labels[i] == 0 or i % 8 < 1 + (labels[i] % 2)]
    p, lab = [paths[i] for i in keep], labels[keep]
    ds = make_dataset(p, lab, C, S, training=True, batch_multiple=multiple, seed=1)
    batches = _batches(ds, 12)  # far more images than the subset holds: it repeats
    assert len(batches) == 12
    for x, y in batches:
        assert x.shape == (C * multiple, S, S, 3) and x.dtype == np.float32
        assert 0.0 <= x.min() and x.max() <= 255.0
        assert np.array_equal(y.sum(0), np.full(C, multiple, np.float32))


def test_training_without_augmentation_yields_the_class_images(images):
    paths, labels = images
    ds = make_dataset(paths, labels, C, S, training=True, augment=AugmentConfig.off(), cache=True)
    originals = np.stack([load_for_model(p, S) for p in paths])
    seen = set()
    for x, y in _batches(ds, 6):
        for img, cls in zip(x, y.argmax(1)):
            match = [i for i in np.flatnonzero(labels == cls) if np.array_equal(originals[i], img)]
            assert len(match) == 1
            seen.add(match[0])
    assert len(seen) > 2 * C  # shuffled within each class, not always the first image


def test_training_augments_and_is_deterministic(images):
    paths, labels = images
    first = _batches(make_dataset(paths, labels, C, S, training=True, seed=7), 2)
    again = _batches(make_dataset(paths, labels, C, S, training=True, seed=7), 2)
    other = _batches(make_dataset(paths, labels, C, S, training=True, seed=8), 2)
    assert all(np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1]) for a, b in zip(first, again))
    assert not np.array_equal(first[0][0], other[0][0])
    originals = np.stack([load_for_model(p, S) for p in paths])
    x = first[0][0]
    assert not any(np.array_equal(img, o) for img in x for o in originals)
    # the paper's brightness range (0.2-0.8) darkens every image
    assert x.mean() < 0.85 * originals.mean()


def test_augment_flip_only_is_exact():
    rng = np.random.default_rng(0)
    batch = rng.uniform(0, 255, (16, 12, 12, 3)).astype(np.float32)
    cfg = AugmentConfig(rotation=0, hflip=True, zoom=0, width_shift=0, brightness=None)
    out = augment_batch(batch, cfg, np.array([1, 2])).numpy()
    flipped = [np.allclose(o, b[:, ::-1], atol=1e-3) for o, b in zip(out, batch)]
    same = [np.allclose(o, b, atol=1e-3) for o, b in zip(out, batch)]
    assert all(f or s for f, s in zip(flipped, same))
    assert 0 < sum(flipped) < 16


def test_augment_brightness_factor_and_rotation_range():
    batch = np.full((32, 16, 16, 3), 200.0, np.float32)
    cfg = AugmentConfig(rotation=0, hflip=False, zoom=0, width_shift=0, brightness=(0.2, 0.8))
    factors = augment_batch(batch, cfg, np.array([0, 3])).numpy().mean(axis=(1, 2, 3)) / 200.0
    assert factors.min() >= 0.2 - 1e-4 and factors.max() <= 0.8 + 1e-4 and factors.std() > 0.05
    # a bright dot at the top centre: rotations up to 30 degrees move it sideways, never past 30
    img = np.zeros((64, 41, 41, 3), np.float32)
    img[:, 2:5, 19:22] = 255.0
    rot = augment_batch(img, AugmentConfig(rotation=30, hflip=False, zoom=0, width_shift=0, brightness=None),
                        np.array([5, 5])).numpy()
    ys, xs = np.meshgrid(np.arange(41), np.arange(41), indexing="ij")
    w = rot[..., 0] + 1e-6
    cy = (w * ys).sum((1, 2)) / w.sum((1, 2))
    cx = (w * xs).sum((1, 2)) / w.sum((1, 2))
    angles = np.degrees(np.arctan2(cx - 20, 20 - cy))
    assert np.abs(angles).max() <= 31 and np.abs(angles).max() > 15


def test_augment_off_is_identity():
    batch = np.random.default_rng(1).uniform(0, 255, (4, 8, 8, 3)).astype(np.float32)
    assert np.array_equal(augment_batch(batch, AugmentConfig.off(), np.array([0, 0])).numpy(), batch)
    assert not AugmentConfig.off().active and AugmentConfig().active


def _save_variants(root: Path) -> list[Path]:
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (10, 20, 3), dtype=np.uint8)
    rgb[:, :10] = [255, 0, 0]
    out = []
    im = Image.fromarray(rgb)
    exif = im.getexif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees to display
    out.append(root / "exif rotated.jpg")
    im.save(out[-1], exif=exif, quality=95)
    out.append(root / "gray.png")
    Image.fromarray(rgb[..., 0]).save(out[-1])
    rgba = np.dstack([rgb, np.full((10, 20), 128, np.uint8)])
    out.append(root / "rgba.png")
    Image.fromarray(rgba, "RGBA").save(out[-1])
    out.append(root / "sixteen.png")
    Image.fromarray((rgb[..., 1].astype(np.uint16) * 257)).save(out[-1])
    out.append(root / "palette.png")
    im.convert("P").save(out[-1])
    out.append(root / "cmyk.jpg")
    im.convert("CMYK").save(out[-1])
    return out


def test_decoding_modes_and_exif(tmp_path):
    files = _save_variants(tmp_path)
    ds = make_dataset([str(f) for f in files], np.zeros(len(files), int), 1, 16, training=False)
    x = np.concatenate([b for b, _ in _batches(ds, 10)])
    assert x.shape == (len(files), 16, 16, 3)
    for img, f in zip(x, files):
        assert np.array_equal(img, load_for_model(f, 16)), f.name
    # EXIF applied: the red half is on top after the rotation, not on the left as stored
    exif_img = x[0]
    assert exif_img[:8, :, 0].mean() > exif_img[8:, :, 0].mean() + 40
    # 16-bit scaled down to 8-bit, grayscale expanded to three equal channels
    assert np.array_equal(x[3][..., 0], x[3][..., 2]) and x[3].max() > 100
    assert np.array_equal(x[1][..., 0], x[1][..., 1])


def test_sixteen_bit_grey_is_scaled_by_its_mode_not_its_values(tmp_path):
    """A 16-bit grey PNG whose pixels all lie below 256 is still 16-bit: 250 and 260 map to the same
    dark grey (1), not 250 -> 250 and 260 -> 1 as when the scale was guessed from the maximum."""
    from PIL import Image

    from edge_derm.data.images import load_rgb

    f = tmp_path / "dark16.png"
    Image.fromarray(np.array([[250, 260], [32768, 65535]], dtype=np.uint16)).save(f)
    rgb = load_rgb(f)
    assert rgb[..., 0].tolist() == [[1, 1], [128, 255]] and np.array_equal(rgb[..., 0], rgb[..., 2])
    low = tmp_path / "low16.png"
    Image.fromarray(np.array([[250, 255]], dtype=np.uint16)).save(low)
    assert load_rgb(low)[..., 0].tolist() == [[1, 1]]


def test_steps_per_epoch():
    assert steps_per_epoch(26, 13) == 2
    assert steps_per_epoch(27, 13) == 3
    assert steps_per_epoch(1, 13) == 1
    with pytest.raises(ConfigError):
        steps_per_epoch(10, 0)


def test_bad_inputs(images):
    paths, labels = images
    with pytest.raises(DataError, match="no images"):
        make_dataset([], [], C, S, training=False)
    with pytest.raises(DataError, match="one label per path"):
        make_dataset(paths, labels[:-1], C, S, training=False)
    with pytest.raises(DataError, match=r"\[0, 13\)"):
        make_dataset(paths, labels + 1, C, S, training=False)
    without_class_3 = labels != 3
    with pytest.raises(DataError, match="3 have no training images"):
        make_dataset([p for p, k in zip(paths, without_class_3) if k], labels[without_class_3], C, S, training=True)
    with pytest.raises(DataError, match="not found"):
        make_dataset(paths[:3] + [paths[0] + ".gone"], labels[:4], C, S, training=False)
    with pytest.raises(ConfigError, match="nearest, pad"):
        make_dataset(paths, labels, C, S, training=False, resize_mode="bicubic")
    with pytest.raises(ConfigError):
        make_dataset(paths, labels, C, S, training=True, batch_size=0)
    for bad in ({"zoom": 1.5}, {"rotation": -1}, {"width_shift": 2}, {"brightness": (0.8, 0.2)},
                {"brightness": (0, 1)}):
        with pytest.raises(ConfigError):
            AugmentConfig(**bad)


def test_importing_the_pipeline_does_not_import_tensorflow():
    code = "import sys, edge_derm.data.pipeline; sys.exit(1 if 'tensorflow' in sys.modules else 0)"
    assert subprocess.run([sys.executable, "-c", code], timeout=60).returncode == 0


def test_from_a_manifest(synth_manifest):
    classes = synth_manifest.classes
    paths, labels = synth_manifest.arrays("train")
    train = make_dataset(paths, labels, len(classes), S, training=True, batch_multiple=2, seed=0)
    x, y = next(iter(train))
    assert x.shape == (2 * len(classes), S, S, 3) and np.array_equal(y.numpy().sum(0), np.full(len(classes), 2))
    test_paths, test_labels = synth_manifest.arrays("test")
    ds = make_dataset(test_paths, test_labels, len(classes), S, training=False)
    n = sum(int(b.shape[0]) for b, _ in ds)
    assert n == len(test_paths) and steps_per_epoch(len(paths), 2 * len(classes)) >= 1
