"""Backbone registry: specs, block maps, in-model preprocessing, flat classifiers, weights."""

from __future__ import annotations

import re

import numpy as np
import pytest

from edge_derm.errors import ConfigError, ModelError
from edge_derm.models import build_classifier, create_backbone, get_spec, layer_blocks, list_specs, load_model


def test_registry_names_and_unknown_backbone():
    names = [s.name for s in list_specs()]
    assert names[:4] == ["mobilenet_v2", "resnet50", "efficientnet_b3", "tiny"]
    with pytest.raises(ConfigError, match="unknown backbone 'vgg16'.*mobilenet_v2.*resnet50.*efficientnet_b3.*tiny"):
        get_spec("vgg16")
    for spec in list_specs():
        assert spec.block_names[0] == "head" and spec.block_names[-1] == "rest"
    assert get_spec("mobilenet_v2").default_size == 300
    assert get_spec("efficientnet_b3").paper_blocks == 6
    assert get_spec("resnet50").block_names[1:5] == ["conv5", "conv4", "conv3", "conv2"]


def test_tiny_classifier_is_flat_and_loads_in_safe_mode(tmp_path):
    import tf_keras as keras

    model = build_classifier("tiny", 3, image_size=32, dropout=0.3)
    assert model.input_shape == (None, 32, 32, 3)
    assert model.output_shape == (None, 3)
    assert not any(isinstance(layer, keras.Model) for layer in model.layers)  # flat
    assert not any(isinstance(layer, keras.layers.Lambda) for layer in model.layers)
    heads = [layer.name for layer in model.layers if layer.name.startswith("head_")]
    assert heads == ["head_conv", "head_dropout", "head_pool", "head_softmax"]
    assert model.get_layer("head_conv").kernel_size == (1, 1)
    path = tmp_path / "a model dir" / "m.keras"
    path.parent.mkdir()
    model.save(path)
    loaded = keras.models.load_model(path, safe_mode=True)  # no custom objects
    x = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(model.predict(x, verbose=0).sum(axis=1), 1.0, rtol=1e-5)


def test_tiny_block_map_groups_layers_by_name():
    spec = get_spec("tiny")
    groups = layer_blocks(build_classifier("tiny", 2, image_size=16), spec)
    names = {b: sorted(layer.name for layer in ls) for b, ls in groups.items()}
    assert names["head"] == ["head_conv"]
    assert names["b3"] == ["tiny_b3_bn", "tiny_b3_conv"]
    assert names["b1"] == ["tiny_b1_bn", "tiny_b1_conv"]
    assert names["rest"] == ["tiny_stem_bn", "tiny_stem_conv"]
    assert spec.block_of("preprocess_rescale") is None


def test_mobilenet_v2_blocks_follow_the_paper():
    spec = get_spec("mobilenet_v2")
    model = build_classifier("mobilenet_v2", 4, image_size=32, alpha=0.35)
    groups = layer_blocks(model, spec)

    def block_numbers(block):
        return sorted({int(m.group(1)) for layer in groups[block] if (m := re.match(r"block_(\d+)_", layer.name))})

    assert block_numbers("A") == [16]
    assert {"Conv_1", "Conv_1_bn"} <= {layer.name for layer in groups["A"]}
    assert block_numbers("B") == [13, 14, 15]
    assert block_numbers("C") == [10, 11, 12]
    assert block_numbers("D") == [6, 7, 8, 9]
    assert block_numbers("rest") == [1, 2, 3, 4, 5]
    weighted = [layer for layer in model.layers if layer.weights and not layer.name.startswith("preprocess_")]
    assert sum(len(v) for v in groups.values()) == len(weighted)  # every layer with weights in one block
    assert model.get_layer("preprocess_rescale")  # normalisation inside the model
    out = model.get_layer("preprocess_rescale")(np.array([[[[0.0, 127.5, 255.0]]]], "float32")).numpy()
    np.testing.assert_allclose(out.ravel(), [-1.0, 0.0, 1.0], atol=1e-6)

    # the paper's last step (head + A-D) trains exactly those layers; blocks 1-5 and the stem stay frozen
    from edge_derm.training.trainer import apply_schedule

    head, backbone = apply_schedule(model, spec, 4)
    trainable = {layer.name for layer in model.layers if layer.trainable and layer.weights}
    assert trainable == {layer.name for b in ("head", "A", "B", "C", "D") for layer in groups[b]}
    assert len(head) == 2 and len(backbone) == sum(len(layer.trainable_weights) for b in "ABCD" for layer in groups[b])


def test_resnet50_preprocessing_is_a_fixed_bgr_conv_and_blocks():
    spec = get_spec("resnet50")
    model = build_classifier("resnet50", 3, image_size=32)
    conv = model.get_layer("preprocess_rgb_to_bgr_minus_mean")
    assert not conv.trainable
    out = conv(np.array([[[[10.0, 20.0, 30.0]]]], "float32")).numpy().ravel()
    np.testing.assert_allclose(out, [30 - 103.939, 20 - 116.779, 10 - 123.68], rtol=1e-5)
    groups = layer_blocks(model, spec)
    assert all(layer.name.startswith("conv5_") for layer in groups["conv5"]) and groups["conv5"]
    assert {layer.name for layer in groups["rest"]} == {"conv1_conv", "conv1_bn"}


@pytest.mark.slow
def test_efficientnet_b3_has_six_stage_blocks():
    spec = get_spec("efficientnet_b3")
    groups = layer_blocks(build_classifier("efficientnet_b3", 3, image_size=32), spec)
    assert spec.block_names[1:7] == ["stage7", "stage6", "stage5", "stage4", "stage3", "stage2"]
    assert "top_conv" in {layer.name for layer in groups["stage7"]}
    assert all(layer.name.startswith("block2") for layer in groups["stage2"]) and groups["stage2"]


def test_imagenet_validation_errors():
    with pytest.raises(ConfigError, match=r"alpha 0\.3.*0\.35, 0\.5, 0\.75, 1\.0, 1\.3, 1\.4"):
        build_classifier("mobilenet_v2", 3, image_size=96, alpha=0.3, weights="imagenet")
    with pytest.raises(ConfigError, match="too small.*at least 32"):
        build_classifier("mobilenet_v2", 3, image_size=16, alpha=0.35)
    with pytest.raises(ConfigError, match="tiny has no ImageNet weights"):
        build_classifier("tiny", 3, image_size=16, weights="imagenet")
    with pytest.raises(ConfigError, match="no width multiplier"):
        build_classifier("resnet50", 3, alpha=0.5)
    with pytest.raises(ConfigError, match="at least 2 classes"):
        build_classifier("tiny", 1)


def test_offline_without_cached_weights_names_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "empty keras"))
    monkeypatch.setenv("EDGE_DERM_OFFLINE", "1")
    with pytest.raises(ModelError) as err:
        build_classifier("mobilenet_v2", 3, image_size=96, alpha=0.35, weights="imagenet")
    msg = str(err.value)
    assert "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_96_no_top.h5" in msg
    assert "~/.keras/models" in msg and "\n" not in msg


def test_weights_from_a_saved_classifier_keep_backbone_not_head(tmp_path):
    src = build_classifier("tiny", 3, image_size=16)
    for layer in src.layers:  # make the source weights recognisable
        if layer.weights:
            layer.set_weights([np.full(w.shape, 0.5, "float32") for w in layer.get_weights()])
    path = tmp_path / "source model.keras"
    src.save(path)
    dst = build_classifier("tiny", 5, image_size=16, weights=str(path))
    np.testing.assert_array_equal(dst.get_layer("tiny_b2_conv").get_weights()[0], 0.5)
    assert dst.get_layer("head_conv").get_weights()[0].shape[-1] == 5
    assert not np.all(dst.get_layer("head_conv").get_weights()[0] == 0.5)
    with pytest.raises(ModelError, match="weights file not found"):
        build_classifier("tiny", 3, image_size=16, weights=str(tmp_path / "missing.h5"))
    with pytest.raises(ModelError, match="cannot load model"):
        (tmp_path / "bad.keras").write_bytes(b"not a zip")
        build_classifier("tiny", 3, image_size=16, weights=str(tmp_path / "bad.keras"))


def test_create_backbone_outputs_the_feature_map():
    bb = create_backbone("tiny", image_size=32)
    assert bb.output_shape == (None, 8, 8, 16)
    assert bb.layers[-1].name == get_spec("tiny").feature_layer


def test_load_model_errors(tmp_path):
    with pytest.raises(ModelError, match="not found"):
        load_model(tmp_path / "nope.keras")
