"""MobileNetV2 with the real ImageNet weights from ../shared/weights (skipped when absent)."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = [pytest.mark.shared, pytest.mark.slow]

FILE = "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_224_no_top.h5"


@pytest.fixture()
def weights_file(shared_dir):
    path = shared_dir / "weights" / "keras" / "models" / FILE
    if not path.is_file():
        pytest.skip(f"{path} is absent")
    return path


def _file_weights(path):
    """The file's weight arrays keyed by Keras layer name.

    The file keeps the original (TF-slim) layer names and Keras loads it by position, so the
    names come from the order of the layers with weights in keras.applications' MobileNetV2.
    """
    import h5py
    import tf_keras as keras

    arrays = []
    with h5py.File(path, "r") as f:
        group = f["model_weights"] if "model_weights" in f else f
        for name in group.attrs["layer_names"]:
            name = name.decode() if isinstance(name, bytes) else name
            g = group[name]
            wnames = [w.decode() if isinstance(w, bytes) else w for w in g.attrs["weight_names"]]
            if wnames:
                arrays.append([np.asarray(g[w]) for w in wnames])
    reference = keras.applications.MobileNetV2(include_top=False, weights=None, alpha=0.35, input_shape=(96, 96, 3))
    names = [layer.name for layer in reference.layers if layer.weights]
    assert len(names) == len(arrays)
    return dict(zip(names, arrays))


def _check_equal(model, expected):
    checked = 0
    for name, values in expected.items():
        got = model.get_layer(name).get_weights()
        assert len(got) == len(values), name
        for a, b in zip(got, values):
            np.testing.assert_array_equal(a, b)
        checked += 1
    return checked


def test_imagenet_weights_from_the_keras_cache_equal_the_file(weights_file, monkeypatch):
    from edge_derm.models import build_classifier

    monkeypatch.setenv("KERAS_HOME", str(weights_file.parents[1]))
    monkeypatch.setenv("EDGE_DERM_OFFLINE", "1")  # never the network
    model = build_classifier("mobilenet_v2", 4, image_size=224, alpha=0.35, weights="imagenet")
    expected = _file_weights(weights_file)
    assert _check_equal(model, expected) == len(expected) > 50


def test_weights_path_loads_at_another_input_size(weights_file):
    from edge_derm.models import build_classifier

    model = build_classifier("mobilenet_v2", 3, image_size=64, alpha=0.35, weights=str(weights_file))
    expected = _file_weights(weights_file)
    assert _check_equal(model, expected) == len(expected)
    fresh = build_classifier("mobilenet_v2", 3, image_size=64, alpha=0.35, weights="none")
    assert not np.array_equal(fresh.get_layer("Conv1").get_weights()[0], expected["Conv1"][0])


def test_imagenet_at_another_size_uses_a_cached_file_of_another_size(weights_file, monkeypatch, tmp_path, caplog):
    """Only the 224 px no-top file is cached: --weights imagenet at 128 px loads it (same shapes), says so,
    and the run records which file it started from; with no file of any size it is a clear error offline."""
    from edge_derm.errors import ModelError
    from edge_derm.models import build_classifier, get_spec
    from edge_derm.models.pretrained import find_cached_imagenet

    monkeypatch.setenv("KERAS_HOME", str(weights_file.parents[1]))
    monkeypatch.setenv("EDGE_DERM_OFFLINE", "1")
    spec = get_spec("mobilenet_v2")
    assert find_cached_imagenet(spec, 0.35, 128) == weights_file
    with caplog.at_level("WARNING"):
        model = build_classifier("mobilenet_v2", 3, image_size=128, alpha=0.35, weights="imagenet")
    assert "_0.35_128_no_top.h5 is not cached; loaded" in caplog.text and weights_file.name in caplog.text
    expected = _file_weights(weights_file)
    assert _check_equal(model, expected) == len(expected)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))  # an empty cache
    assert find_cached_imagenet(spec, 0.35, 128) is None
    with pytest.raises(ModelError):
        build_classifier("mobilenet_v2", 3, image_size=128, alpha=0.35, weights="imagenet")
