"""QAT (tiny and MobileNetV2), nested-model flattening, collapse report and selective quantisation."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from edge_derm import cli
from edge_derm.artefacts import RunConfig
from edge_derm.errors import ConfigError
from edge_derm.runtime import inspect_tflite, read_metadata


def test_qat_tiny_cli(cv_run, tmp_path, capsys):
    out = tmp_path / "qat out"
    rc = cli.main(["--quiet", "convert", str(cv_run), "--quantize", "qat", "--qat-steps", "3", "--out", str(out),
                   "--calibration-size", "9", "--verify-size", "12"])
    assert rc == 0, capsys.readouterr().err
    meta = read_metadata(out / "model.qat.tflite")
    info = inspect_tflite(out / "model.qat.tflite")
    assert info.integer_op_share() == 1.0 and info.input_tensors[0].dtype == "uint8"
    v = json.loads((out / "model.json").read_text())["variants"]["qat"]["verification"]
    assert v["passed"] and v["top1_agreement"] >= 0.97
    assert meta["qat"]["epochs"] == 1 and meta["qat"]["steps_per_epoch"] == 3
    # the run trained with one image per class per batch (schedule {}), and so does QAT
    assert meta["qat"]["batch_size"] == len(json.loads((cv_run / "config.json").read_text())["classes"])
    assert meta["qat"]["agreement_with_run_model"] >= 0.5


def _nested_model():
    import tf_keras as keras

    inner_in = keras.Input((16, 16, 8))
    y = keras.layers.Conv2D(8, 3, padding="same", use_bias=False, name="inner_conv")(inner_in)
    y = keras.layers.BatchNormalization(name="inner_bn")(y)
    y = keras.layers.ReLU(6.0, name="inner_relu")(y)
    inner = keras.Model(inner_in, y, name="backbone")
    inp = keras.Input((32, 32, 3), name="image")
    x = keras.layers.Rescaling(1 / 127.5, offset=-1, name="preprocess_rescale")(inp)
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same", name="stem")(x)
    x = inner(x)
    x = keras.layers.Conv2D(3, 1, name="head_conv")(x)
    x = keras.layers.GlobalAveragePooling2D(name="head_pool")(x)
    out = keras.layers.Softmax(name="head_softmax")(x)
    return keras.Model(inp, out, name="nested")


def test_flatten_nested_model_keeps_outputs():
    import tf_keras as keras

    from edge_derm.converters.qat import flatten_model, quantize_model

    model = _nested_model()
    flat = flatten_model(model)
    assert not any(isinstance(layer, keras.Model) for layer in flat.layers)
    assert {"inner_conv", "inner_bn", "stem", "head_conv"} <= {layer.name for layer in flat.layers}
    x = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype(np.float32)
    assert np.allclose(model.predict(x, verbose=0), flat.predict(x, verbose=0), atol=1e-6)
    qmodel = quantize_model(model)
    names = [layer.name for layer in qmodel.layers]
    assert any("inner_conv" in n for n in names) and any("preprocess_rescale" in n for n in names)
    assert qmodel.predict(x, verbose=0).shape == (2, 3)


def test_float_layers_auto_and_names(cv_run, tmp_path):
    from edge_derm.converters.convert import ConvertConfig, convert_run

    doc = convert_run(ConvertConfig(run=cv_run, modes=["int8"], out=tmp_path / "sel", float_layers="auto",
                                    calibration_size=12, verify_size=12))
    meta = doc["variants"]["int8"]
    assert meta["float_layers"] and meta["collapse"]["report"] == "debug.int8.csv"
    rows = list(csv.DictReader(open(tmp_path / "sel" / "debug.int8.csv")))
    assert rows and {"op_name", "tensor_name", "rmse/scale"} <= set(rows[0])
    scores = [float(r["rmse/scale"]) for r in rows]
    assert scores == sorted(scores, reverse=True)
    info = inspect_tflite(tmp_path / "sel" / "model.int8.tflite")
    assert 0.0 < info.integer_op_share() < 1.0
    assert meta["input"]["dtype"] == "float32" and meta["verification"]["passed"] and meta["file"] == "model.int8.tflite"
    trade = meta["selective"]
    assert trade["full_int8"]["integer_op_share"] == 1.0 and trade["selective"]["size_bytes"] > 0
    assert trade["full_int8"]["latency_ms"] > 0

    # Names: Keras layer names (a path segment of the TFLite tensor names) or exact tensor names.
    from edge_derm.converters.debug import choose_float_layers

    report = [{**r, "rmse/scale": float(r["rmse/scale"])} for r in rows]
    named = choose_float_layers(report, "head_conv")
    assert named and all("head_conv" in t for t in named)
    assert choose_float_layers(report, rows[-1]["tensor_name"]) == [rows[-1]["tensor_name"]]
    with pytest.raises(ConfigError, match="'no_such_layer' matches no quantised layer"):
        choose_float_layers(report, "head_conv, no_such_layer")


def test_collapse_triggers_layer_report(cv_run, cv_dataset, tmp_path):
    """An int8 result that changes decisions gets the per-layer report; a faithful one does not."""
    import tf_keras as keras

    from edge_derm.converters import tflite as tfl
    from edge_derm.converters.calibration import sample_images
    from edge_derm.converters.convert import ConvertConfig, keras_predict
    from edge_derm.converters.modes import _Context, _int8_collapse, _Made
    from edge_derm.converters.presets import get_preset
    from edge_derm.models import build_classifier

    cfg = ConvertConfig(run=cv_run, modes=["int8"], out=tmp_path / "o", collapse_threshold=0.05)
    model = keras.models.load_model(cv_run / "model.keras")
    ctx = _Context(cfg, cv_run, RunConfig.read(cv_run), model, tmp_path)
    ctx.calib = sample_images(cv_dataset, ["MM", "Nev", "BCC"], 32, "nearest", n=6)
    ctx.fid = sample_images(cv_dataset, ["MM", "Nev", "BCC"], 32, "nearest", n=None, splits=("test",))
    ctx.keras_probs = keras_predict(model, ctx.fid.images)
    keras.utils.set_random_seed(1)
    stranger = tfl.convert(build_classifier("tiny", 3, image_size=32, weights="none"), get_preset("fp32"))
    made = _int8_collapse(ctx, get_preset("int8"), _Made(stranger, "float32", ctx.keras_probs,
                                                         extra={"recipe": {}}))
    assert made.data == stranger and made.extra["collapse"]["detected"]
    assert made.extra["collapse"]["top1_agreement"] < 0.97 and made.extra["collapse"]["worst_layers"]
    assert (tmp_path / "debug.int8.csv").is_file()
    # A faithful file: nothing to do.
    faithful = tfl.convert(model, get_preset("fp32"))
    made = _int8_collapse(ctx, get_preset("int8"), _Made(faithful, "float32", ctx.keras_probs, extra={}))
    assert made.extra == {}


@pytest.mark.slow
def test_qat_mobilenet_v2(cv_dataset, tmp_path):
    """QAT on the real MobileNetV2 (alpha 0.35, 48 px, weights none): full-integer and verified."""
    import tf_keras as keras

    from edge_derm.converters.convert import ConvertConfig, convert_run
    from edge_derm.data.manifest import Manifest
    from edge_derm.models import build_classifier

    run = tmp_path / "mnv2 run"
    run.mkdir()
    model = build_classifier("mobilenet_v2", 3, image_size=48, alpha=0.35, weights="none")
    model.save(run / "model.keras")
    cfg = {"kind": "run", "format_version": 1, "backbone": "mobilenet_v2", "alpha": 0.35, "image_size": 48, "resize_mode": "nearest",
           "preprocessing": "x/127.5 - 1 (inside the model)", "classes": ["MM", "Nev", "BCC"],
           "taxonomy": "native", "data": [{"dir": str(cv_dataset), "hash": Manifest.load(cv_dataset).hash}]}
    (run / "config.json").write_text(json.dumps(cfg))
    doc = convert_run(ConvertConfig(run=run, modes=["qat"], out=tmp_path / "out", qat_steps=1,
                                    calibration_size=3, verify_size=3, keep_failed=True))
    meta = doc["variants"]["qat"]
    info = inspect_tflite(tmp_path / "out" / "model.qat.tflite")
    assert info.integer_op_share() == 1.0
    assert meta["input"]["dtype"] == "uint8" and meta["output"]["dtype"] == "uint8"
    assert meta["verification"]["max_abs_diff"] <= 0.5
    assert isinstance(keras.models.load_model(run / "model.keras"), keras.Model)
    # Depthwise weights are faked per output channel, as TFLite stores them (tfmot's default is one
    # range per kernel): distinct scales per channel in the file (BatchNorm at init scales them all alike).
    filters = [info.tensors[op.inputs[1]] for op in info.ops if op.name == "DEPTHWISE_CONV_2D"]
    assert filters and all(len(t.scale) == t.shape[-1] and len(set(t.scale)) > 1 for t in filters)


def test_qat_folds_conv_batchnorm_and_starts_from_float_ranges():
    """Conv+BatchNorm pairs get tfmot's fold transform (no fake-quant between them), and activation
    ranges start at the float model's (a trained MobileNetV2 has BN/Add outputs far beyond [-6, 6])."""
    import tf_keras as keras

    from edge_derm.converters.qat import init_ranges, quantize_model
    from edge_derm.models import build_classifier

    model = build_classifier("mobilenet_v2", 3, image_size=32, alpha=0.35, weights="none")
    q = quantize_model(model)
    conv = q.get_layer("quant_Conv1")
    assert not [w for w in conv.weights if "post_activation" in w.name], "fake-quant between Conv1 and its BN"
    dw = {w.name.split("/")[-1].split(":")[0]: tuple(w.shape) for w in q.get_layer("quant_block_1_depthwise").weights}
    assert dw["depthwise_kernel_min"] == (48,) and dw["depthwise_kernel_max"] == (48,)  # one range per channel
    images = np.random.default_rng(0).uniform(0, 255, (4, 32, 32, 3)).astype(np.float32)
    assert init_ranges(q, model, images) > 10
    bn_out = keras.Model(model.inputs, model.get_layer("expanded_conv_project_BN").output).predict(images, verbose=0)
    bn = {w.name.split("/")[-1].split(":")[0]: float(w.numpy()) for w in q.get_layer("quant_expanded_conv_project_BN").weights
          if "output_m" in w.name}
    assert bn["output_max"] == pytest.approx(max(float(bn_out.max()), 0.0), rel=1e-5)
    assert bn["output_min"] == pytest.approx(min(float(bn_out.min()), 0.0), rel=1e-5)


def test_finetune_float_control_trains_a_copy(tmp_path):
    """quantize=False: the same fine-tuning on a float copy (no fake-quant layers), run model untouched."""
    import tf_keras as keras
    from PIL import Image

    from edge_derm.converters.qat import finetune

    model = _nested_model()
    before = [w.copy() for w in model.get_weights()]
    rng = np.random.default_rng(0)
    paths, labels = [], []
    for i in range(6):
        p = tmp_path / f"img{i}.png"
        Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(p)
        paths.append(str(p))
        labels.append(i % 3)
    import edge_derm.data.pipeline as pipeline

    seen = []
    original = pipeline.make_dataset

    def spy(*args, **kwargs):
        seen.append(kwargs.get("augment"))
        return original(*args, **kwargs)

    pipeline.make_dataset = spy
    try:
        control, summary = finetune(model, paths, np.array(labels), 3, 32, "nearest", learning_rate=1e-2,
                                    steps_per_epoch=2, quantize=False)
    finally:
        pipeline.make_dataset = original
    assert len(seen) == 1 and seen[0] is not None and not seen[0].enabled
    assert summary["quantize"] is False and summary["ranges_initialised"] == 0 and summary["steps_per_epoch"] == 2
    assert summary["augment"] is False  # QAT (and so its control) adapts to un-augmented images
    assert not any("quant" in layer.name for layer in control.layers)
    assert not any(isinstance(layer, keras.Model) for layer in control.layers)
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights())), "the run model was trained"
    moved = [not np.allclose(a, b) for a, b in zip(flat_weights(model), control.get_weights())]
    assert any(moved), "the control was not trained"
    assert control.get_layer("inner_bn").trainable is False


def flat_weights(model):
    from edge_derm.converters.qat import flatten_model

    return flatten_model(model).get_weights()


def test_qat_batch_is_the_runs_training_batch(cv_run, tmp_path):
    from edge_derm.converters.convert import ConvertConfig, run_batch_size

    def run(classes, **extra):
        return RunConfig(classes=classes, image_size=32, extra=extra)

    assert run_batch_size(run(["a", "b", "c"], schedule={"batch_multiple": 4})) == 12
    assert run_batch_size(run(["a", "b", "c"], schedule={"batch_multiple": 4, "batch_size": 10})) == 10
    assert run_batch_size(run(["a", "b"])) == 2
    with pytest.raises(ConfigError, match="--qat-batch-size"):
        ConvertConfig(run=cv_run, modes=["qat"], qat_batch_size=0)


def test_quantize_model_takes_efficientnet_b3():
    """Swish, squeeze-excite (Multiply, Reshape) and the Normalization layer of keras.applications'
    EfficientNet-B3 all get a range, and the QAT model runs (the measurement converts it)."""
    from edge_derm.converters.qat import init_ranges, quantize_model
    from edge_derm.models import build_classifier

    model = build_classifier("efficientnet_b3", 3, image_size=32, weights="none")
    q = quantize_model(model)
    images = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype(np.float32)
    assert init_ranges(q, model, images) > 200
    names = {layer.name for layer in q.layers}
    assert any("se_excite" in n for n in names) and any("block1a_activation" in n for n in names)
    out = q.predict(images, verbose=0)
    assert out.shape == (2, 3) and np.allclose(out.sum(1), 1.0, atol=0.05)


def test_float_layers_by_op_type(cv_run, cv_dataset):
    """op:TYPE keeps every op of that TFLite type in float; an unknown type is a one-line error."""
    import tf_keras as keras

    from edge_derm.converters import tflite as tfl
    from edge_derm.converters.calibration import sample_images
    from edge_derm.converters.debug import choose_float_layers, layer_report
    from edge_derm.converters.presets import get_preset

    model = keras.models.load_model(cv_run / "model.keras")
    calib = sample_images(cv_dataset, ["MM", "Nev", "BCC"], 32, "nearest", n=6)
    report = layer_report(model, calib.images)
    assert "CONV_2D" in {r["op_name"] for r in report}
    chosen = choose_float_layers(report, "op:conv_2d, op:CONV_2D")
    assert chosen == ["op:CONV_2D"]
    with pytest.raises(ConfigError, match="no quantised op of type 'LSTM'; the model has .*CONV_2D"):
        choose_float_layers(report, "op:lstm")
    info = inspect_tflite(tfl.convert_selective(model, get_preset("int8"), calib.images, chosen))
    convs = [op for op in info.ops if op.name == "CONV_2D"]
    assert convs and all(info.tensors[op.outputs[0]].dtype == "float32" for op in convs)
    assert all(info.tensors[op.inputs[1]].dtype == "float32" for op in convs)  # float weights too
    assert 0.0 < info.integer_op_share() < 1.0  # the rest is still integer
