"""Shared test fixtures. Add fixtures here; don't rewrite others'."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import edge_derm  # noqa: F401  (TF_USE_LEGACY_KERAS before any TensorFlow import)

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("EDGE_DERM_SHARED", REPO.parent / "shared"))


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """../shared (real HAM10000 sample, ImageNet weights); skips the test when absent."""
    if not SHARED.is_dir():
        pytest.skip(f"{SHARED} is absent (real test data and weights live there)")
    return SHARED


# -- convert / runtime / predict fixtures (tests/test_convert*.py, test_runtime*.py, test_predict*.py) --

CV_CLASSES = ["MM", "Nev", "BCC"]
CV_SIZE = 32


def _cv_image(rng, cls_index: int, size: int = 40):
    """A synthetic lesion: a class-coloured disc on skin tone, with noise (easy to learn)."""
    import numpy as np

    colours = np.array([[60, 30, 30], [150, 100, 70], [200, 120, 160]], dtype=np.float32)
    yy, xx = np.mgrid[:size, :size]
    r = size * rng.uniform(0.25, 0.4)
    cy, cx = size / 2 + rng.uniform(-4, 4, 2)
    disc = ((yy - cy) ** 2 + (xx - cx) ** 2) < r * r
    img = np.full((size, size, 3), [225, 180, 150], np.float32)
    img[disc] = colours[cls_index]
    img += rng.normal(0, 8, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


@pytest.fixture(scope="session")
def cv_dataset(tmp_path_factory) -> Path:
    """A dataset folder (3 classes, 40x30-ish PNGs, train 10 + test 6 per class) in a path with spaces."""
    import numpy as np
    from PIL import Image

    from edge_derm.data.manifest import Record, write_manifest

    base = tmp_path_factory.mktemp("cv data") / "my images"
    rng = np.random.default_rng(0)
    records = []
    for ci, cls in enumerate(CV_CLASSES):
        for split, n in (("train", 10), ("test", 6)):
            for k in range(n):
                rel = f"{cls}/{split} {k}.png"
                (base / cls).mkdir(parents=True, exist_ok=True)
                Image.fromarray(_cv_image(rng, ci)).save(base / rel)
                records.append(Record(rel, cls, cls, "synthetic", f"{cls}-{split}-{k}", split))
    out = base.parent / "dataset folder"
    out.mkdir()
    write_manifest(out, records, {"root": str(base), "source": "synthetic", "taxonomy": "native",
                                  "classes": CV_CLASSES, "seed": 0})
    return out


@pytest.fixture(scope="session")
def cv_run(cv_dataset, tmp_path_factory) -> Path:
    """A run folder with a trained `tiny` classifier (32 px, 3 confident classes)."""
    import json

    import numpy as np

    from edge_derm.data.images import load_for_model
    from edge_derm.data.manifest import Manifest
    from edge_derm.models import build_classifier
    import tf_keras as keras

    keras.utils.set_random_seed(0)
    manifest = Manifest.load(cv_dataset)
    paths, labels = manifest.arrays("train")
    x = np.stack([load_for_model(p, CV_SIZE, "nearest") for p in paths])
    y = keras.utils.to_categorical(labels, len(CV_CLASSES))
    model = build_classifier("tiny", len(CV_CLASSES), image_size=CV_SIZE, weights="none")
    for layer in model.layers:  # few steps: let BatchNorm's moving statistics settle
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = 0.5
    model.compile(keras.optimizers.Adam(0.01), "categorical_crossentropy")
    model.fit(x, y, epochs=25, batch_size=6, verbose=0)
    test_paths, test_labels = manifest.arrays("test")
    xt = np.stack([load_for_model(p, CV_SIZE, "nearest") for p in test_paths])
    accuracy = (model.predict(xt, verbose=0).argmax(1) == test_labels).mean()
    if accuracy < 0.9:  # the tests below rely on a model that learned its classes
        raise RuntimeError(f"cv_run fixture: the tiny model reached only {accuracy:.2f} test accuracy")
    run = tmp_path_factory.mktemp("cv runs") / "tiny run"
    run.mkdir()
    model.save(run / "model.keras")
    cfg = {"kind": "run", "format_version": 1, "backbone": "tiny", "alpha": None, "image_size": CV_SIZE,
           "resize_mode": "nearest", "preprocessing": "x/255 (inside the model)", "classes": CV_CLASSES,
           "taxonomy": "native", "data": [{"dir": str(cv_dataset), "hash": manifest.hash}],
           "weights": "none", "seed": 0, "schedule": {}, "versions": {}, "config_hash": "test"}
    (run / "config.json").write_text(json.dumps(cfg))
    return run


@pytest.fixture(scope="session")
def cv_converted(cv_run, tmp_path_factory) -> Path:
    """The convert folder of `cv_run` with fp32, fp16, dynamic and int8 (uint8 io)."""
    from edge_derm.converters.convert import ConvertConfig, convert_run

    out = tmp_path_factory.mktemp("cv conv") / "convert out"
    convert_run(ConvertConfig(run=cv_run, modes=["fp32", "fp16", "dynamic", "int8"], out=out,
                              calibration_size=24, verify_size=18))
    return out


# -- benchmark fixtures (tests/test_benchmark*.py) ----------------------------------------------

BM_CLASSES = ["red", "green", "blue"]


def bm_images(n_per_class: int = 8, size: int = 32, seed: int = 0):
    """Flat-colour images whose dominant channel is the class, some with a strong green cast.

    Returns float32 images [N, size, size, 3] in [0, 255] and int labels [N].
    """
    import numpy as np

    rng = np.random.default_rng(seed)
    imgs, labels = [], []
    for c in range(3):
        for k in range(n_per_class):
            px = rng.uniform(10, 60, 3)
            px[c] = rng.uniform(180, 230)
            if c == 2 and k % 2 == 1:  # half the blue ones carry a green cast (the degraded model's weak spot)
                px[1] = px[2] * 0.5
            img = np.tile(px, (size, size, 1)) + rng.normal(0, 3, (size, size, 3))
            imgs.append(np.clip(img, 0, 255).astype(np.float32))
            labels.append(c)
    return np.stack(imgs), np.array(labels)


def _bm_keras_model(kernel, size: int = 32):
    import tf_keras as keras

    inp = keras.Input((size, size, 3))
    x = keras.layers.Conv2D(3, 1, name="head_conv")(inp)
    x = keras.layers.GlobalAveragePooling2D(name="head_pool")(x)
    out = keras.layers.Softmax(name="head_softmax")(x)
    model = keras.Model(inp, out)
    model.get_layer("head_conv").set_weights([kernel.reshape(1, 1, 3, 3).astype("float32"), __import__("numpy").zeros(3, "float32")])
    return model


@pytest.fixture(scope="session")
def bm_models(tmp_path_factory) -> dict:
    """Tiny classifiers in a folder with a space: ``fp32`` (exact), ``int8`` (full-integer, calibrated),
    ``degraded`` (confuses green-cast blue images with green), ``corrupt`` (truncated), ``labels.txt``.
    """
    import numpy as np
    import tensorflow as tf

    out = tmp_path_factory.mktemp("bm") / "convert out"
    out.mkdir()
    k = 20.0 / 255.0
    good = np.eye(3) * k
    bad = good.copy()
    bad[2, 1] = 0.9 * k  # blue light also votes green: blue images with a green cast flip to green
    imgs, _ = bm_images()

    def convert(model, int8: bool) -> bytes:
        conv = tf.lite.TFLiteConverter.from_keras_model(model)
        if int8:
            conv.optimizations = [tf.lite.Optimize.DEFAULT]
            conv.representative_dataset = lambda: ([imgs[i:i + 1]] for i in range(len(imgs)))
            conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            conv.inference_input_type = tf.uint8
            conv.inference_output_type = tf.uint8
        return conv.convert()

    paths = {"fp32": out / "model.fp32.tflite", "int8": out / "model.int8.tflite",
             "degraded": out / "model.dynamic.tflite", "corrupt": out / "broken model.fp16.tflite"}
    paths["fp32"].write_bytes(convert(_bm_keras_model(good), False))
    paths["int8"].write_bytes(convert(_bm_keras_model(good), True))
    paths["degraded"].write_bytes(convert(_bm_keras_model(bad), False))
    paths["corrupt"].write_bytes(paths["fp32"].read_bytes()[:200])
    (out / "labels.txt").write_text("\n".join(BM_CLASSES) + "\n")
    # what each file is, as a convert folder records it (the benchmark reads a file's quantisation from its
    # metadata or this record, never from its name); the corrupt file has no record
    from edge_derm.artefacts import ConvertResult, VariantRecord

    ConvertResult(variants={q: VariantRecord(quantization=q, labels=list(BM_CLASSES), file=paths[key].name)
                            for key, q in (("fp32", "fp32"), ("int8", "int8"), ("degraded", "dynamic"))}
                  ).write(out / "model.json")
    return {"dir": out, "kernel_good": good, "kernel_bad": bad, **paths}


# -- training fixtures (tests/test_training*.py, tests/test_train_cli.py) ----------------------

TR_COLOURS = [[60, 30, 30], [150, 100, 70], [200, 120, 160], [40, 140, 60], [90, 90, 200]]


def make_tr_dataset(out: Path, classes: list[str], *, n_train: int = 6, n_val: int = 0, n_test: int = 4,
                    size: int = 24, seed: int = 0, taxonomy: str = "native", source: str = "synthetic") -> Path:
    """Write a small dataset folder (class-coloured discs, PNG) at ``out``; images in ``out/images``."""
    import numpy as np
    from PIL import Image

    from edge_derm.data.manifest import Record, write_manifest

    out = Path(out)
    root = out / "images"
    rng = np.random.default_rng(seed)
    records = []
    yy, xx = np.mgrid[:size, :size]
    for ci, cls in enumerate(classes):
        colour = np.array(TR_COLOURS[ci % len(TR_COLOURS)], np.float32)
        for split, n in (("train", n_train), ("val", n_val), ("test", n_test)):
            for k in range(n):
                r = size * rng.uniform(0.25, 0.4)
                cy, cx = size / 2 + rng.uniform(-3, 3, 2)
                img = np.full((size, size, 3), [225, 180, 150], np.float32)
                img[((yy - cy) ** 2 + (xx - cx) ** 2) < r * r] = colour
                img = np.clip(img + rng.normal(0, 8, img.shape), 0, 255).astype(np.uint8)
                rel = f"{cls}/{split} {k}.png"
                (root / cls).mkdir(parents=True, exist_ok=True)
                Image.fromarray(img).save(root / rel)
                records.append(Record(rel, cls, cls, source, f"{cls}-{split}-{k}", split))
    write_manifest(out, records, {"root": str(root), "source": source, "taxonomy": taxonomy,
                                  "classes": list(classes), "seed": seed})
    return out


@pytest.fixture(scope="session")
def tr_datasets(tmp_path_factory) -> dict:
    """Training datasets in paths with spaces: ``val`` (3 classes, with a val split), ``plain``
    (3 classes, no val split), ``other`` (2 other classes, for head swaps)."""
    base = tmp_path_factory.mktemp("train data")
    return {
        "val": make_tr_dataset(base / "with val", ["MM", "Nev", "BCC"], n_val=2, seed=1),
        "plain": make_tr_dataset(base / "plain set", ["MM", "Nev", "BCC"], seed=2),
        "other": make_tr_dataset(base / "other set", ["AK", "SebKer"], seed=3),
    }


# -- synthetic dataset fixtures (edge_derm.data.synth; used by data, pipeline, training tests) ----

SYNTH_PER_CLASS = 8
SYNTH_SIZE = 48


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory) -> Path:
    """A synthetic folder-layout dataset: 13 dermai13 classes x 8 PNGs of 48 px, in a path with spaces."""
    from edge_derm.data.synth import generate_dataset

    root = tmp_path_factory.mktemp("synth data") / "synth root"
    generate_dataset(root, per_class=SYNTH_PER_CLASS, size=SYNTH_SIZE, seed=0)
    return root


@pytest.fixture(scope="session")
def synth_manifest(synth_root, tmp_path_factory):
    """The ``synth_root`` images built into a dataset folder (``folder`` source, dermai13, 80:20);
    returns the loaded ``Manifest`` (``.dir`` is the folder). Skips while build_dataset is missing."""
    try:
        from edge_derm.data.build import build_dataset
    except ImportError as exc:
        pytest.skip(f"edge_derm.data.build is not available yet ({exc})")
    out = tmp_path_factory.mktemp("synth manifest") / "synth dataset"
    return build_dataset("folder", synth_root, out, taxonomy="dermai13", seed=0)


# -- Android export fixtures (tests/test_android*.py, tests/test_export*.py) ----------------------


@pytest.fixture
def android_app(tmp_path) -> Path:
    """A bare copy of android_demo (just its manifest) in a path with spaces, for `export android`."""
    import shutil

    app = tmp_path / "my apps" / "android demo"
    (app / "app/src/main").mkdir(parents=True)
    shutil.copyfile(REPO / "android_demo/app/src/main/AndroidManifest.xml", app / "app/src/main/AndroidManifest.xml")
    return app


# -- quantisation fidelity fixtures (tests/test_fidelity*.py) -------------------------------------


@pytest.fixture(scope="session")
def collapse_run(cv_dataset, tmp_path_factory) -> Path:
    """A run folder whose model collapses under full int8, per-tensor and per-channel alike.

    A small classifier is trained on ``cv_dataset``; then a dead feature channel (ReLU of a constant
    -1, always 0) is added and the 1x1 logits convolution gets a weight of 200 on it in every output
    channel. The float model is unchanged, but int8 weight scales (per output channel) become
    200/127, which rounds the real weights away. Keeping that one convolution in float recovers it.
    """
    import json

    import numpy as np
    import tf_keras as keras

    from edge_derm.data.images import load_for_model
    from edge_derm.data.manifest import Manifest

    keras.utils.set_random_seed(0)
    manifest = Manifest.load(cv_dataset)
    paths, labels = manifest.arrays("train")
    x = np.stack([load_for_model(p, CV_SIZE, "nearest") for p in paths])
    y = keras.utils.to_categorical(labels, len(CV_CLASSES))

    def build(width: int):
        inp = keras.Input((CV_SIZE, CV_SIZE, 3), name="image")
        h = keras.layers.Rescaling(1 / 127.5, offset=-1.0, name="rescale")(inp)
        h = keras.layers.Conv2D(width, 3, strides=2, activation="relu", name="feat")(h)
        h = keras.layers.Conv2D(len(CV_CLASSES), 1, name="logits_conv")(h)
        h = keras.layers.GlobalAveragePooling2D(name="pool")(h)
        return keras.Model(inp, keras.layers.Softmax(name="probs")(h))

    small = build(8)
    small.compile(keras.optimizers.Adam(0.01), "categorical_crossentropy")
    small.fit(x, y, epochs=80, batch_size=6, verbose=0)
    model = build(9)
    k, b = small.get_layer("feat").get_weights()
    model.get_layer("feat").set_weights([np.concatenate([k, np.zeros_like(k[..., :1])], -1),
                                         np.concatenate([b, [-1.0]]).astype("float32")])
    k2, b2 = small.get_layer("logits_conv").get_weights()
    model.get_layer("logits_conv").set_weights([np.concatenate([k2, np.full_like(k2[:, :, :1, :], 200.0)], 2), b2])
    test_paths, test_labels = manifest.arrays("test")
    xt = np.stack([load_for_model(p, CV_SIZE, "nearest") for p in test_paths])
    if not np.allclose(model.predict(xt, verbose=0), small.predict(xt, verbose=0), atol=1e-5):
        raise RuntimeError("collapse_run fixture: the dead channel changed the float model")
    if (model.predict(xt, verbose=0).argmax(1) == test_labels).mean() < 0.9:
        raise RuntimeError(f"collapse_run fixture: the small model did not learn its classes "
                           f"({(model.predict(xt, verbose=0).argmax(1) == test_labels).mean():.2f})")
    run = tmp_path_factory.mktemp("collapse runs") / "collapse run"
    run.mkdir()
    model.save(run / "model.keras")
    cfg = {"kind": "run", "format_version": 1, "backbone": "custom", "alpha": None, "image_size": CV_SIZE,
           "resize_mode": "nearest", "preprocessing": "x/255 (inside the model)", "classes": CV_CLASSES,
           "taxonomy": "native", "data": [{"dir": str(cv_dataset), "hash": manifest.hash}],
           "weights": "none", "seed": 0, "schedule": {}, "versions": {}, "config_hash": "test"}
    (run / "config.json").write_text(json.dumps(cfg))
    return run
