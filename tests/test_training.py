"""Block-wise training: config validation, freezing, per-group learning rates, run folder, resume, NaN."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from edge_derm.errors import ConfigError, DataError, OutputExistsError
from edge_derm.training.config import TrainConfig
from edge_derm.training.trainer import TrainingError, apply_schedule, make_train_function, train

FAST = dict(backbone="tiny", image_size=24, weights="none", epochs_per_block=1, steps_per_epoch=2,
            blocks=1, augment=True, lr_head=1e-2, lr_backbone=1e-3)


def test_config_validation(tr_datasets):
    d = [str(tr_datasets["plain"])]
    with pytest.raises(ConfigError, match="--data DIR"):
        TrainConfig(data=[], backbone="tiny")
    with pytest.raises(ConfigError, match="blocks must be an integer from 0 to 4 for tiny"):
        TrainConfig(data=d, backbone="tiny", weights="none", blocks=9)
    with pytest.raises(ConfigError, match="lr_head must be a positive number"):
        TrainConfig(data=d, backbone="tiny", weights="none", lr_head=-1.0)
    with pytest.raises(ConfigError, match="epochs_per_block must be a positive integer"):
        TrainConfig(data=d, backbone="tiny", weights="none", epochs_per_block=0)
    with pytest.raises(ConfigError, match="tiny has no ImageNet weights"):
        TrainConfig(data=d, backbone="tiny")
    with pytest.raises(ConfigError, match="unknown backbone"):
        TrainConfig(data=d, backbone="nope")
    with pytest.raises(ConfigError, match="unknown training option.*colour"):
        TrainConfig.from_dict({"data": d, "weights": "none", "colour": 1})
    cfg = TrainConfig(data=d, backbone="tiny", weights="none", blocks="all", recipe="paper")
    assert cfg.blocks == 4 and cfg.n_steps == 5 and cfg.image_size == 32
    assert TrainConfig(data=d, backbone="mobilenet_v2", weights="none").blocks == 4  # the paper's A-D
    sched = cfg.schedule()
    assert sched["steps"][1] == {"step": 1, "block": "b3", "trainable": ["head", "b3"]}
    assert sched["lr"] == {"head": 1e-4, "backbone": 1e-5}


def _snapshot(model):
    return {v.name: v.numpy().copy() for v in model.weights}


def test_schedule_freezes_blocks_and_applies_each_group_learning_rate():
    """One Adam step moves each weight by about its group's learning rate (Adam's first update
    is lr * g / |g|), frozen weights and frozen BatchNorm statistics not at all."""
    import tensorflow as tf

    from edge_derm.models import build_classifier, get_spec

    spec = get_spec("tiny")
    model = build_classifier("tiny", 3, image_size=16)
    # step 0: only the head is trainable
    head, backbone = apply_schedule(model, spec, 0)
    assert {v.name.split("/")[0] for v in head} == {"head_conv"} and backbone == []
    # step 2: head + b3 + b2
    head, backbone = apply_schedule(model, spec, 2)
    trainable_layers = {layer.name for layer in model.layers if layer.trainable and layer.weights}
    assert trainable_layers == {"head_conv", "tiny_b3_conv", "tiny_b3_bn", "tiny_b2_conv", "tiny_b2_bn"}
    assert {v.name.split("/")[0] for v in backbone} == {"tiny_b3_conv", "tiny_b3_bn", "tiny_b2_conv", "tiny_b2_bn"}

    step = make_train_function(model, head, backbone, lr_head=1e-2, lr_backbone=1e-4, global_batch=6)
    rng = np.random.default_rng(0)
    x = tf.constant(rng.uniform(0, 255, (6, 16, 16, 3)).astype("float32"))
    y = tf.constant(np.eye(3, dtype="float32")[[0, 1, 2, 0, 1, 2]])
    before = _snapshot(model)
    step((x, y))
    after = _snapshot(model)

    def max_change(layer, weight="kernel"):
        key = next(k for k in before if k.startswith(f"{layer}/") and weight in k)
        return float(np.abs(after[key] - before[key]).max())

    assert 0.5e-2 < max_change("head_conv") <= 1.01e-2
    assert 0.5e-4 < max_change("tiny_b3_conv") <= 1.01e-4
    assert 0.5e-4 < max_change("tiny_b2_bn", "gamma") <= 1.01e-4
    assert max_change("tiny_b1_conv") == 0.0 and max_change("tiny_stem_conv") == 0.0
    # BatchNorm: statistics move only in unfrozen blocks (frozen = inference mode in Keras 2)
    assert max_change("tiny_b1_bn", "moving_mean") == 0.0
    assert max_change("tiny_stem_bn", "moving_variance") == 0.0
    assert max_change("tiny_b3_bn", "moving_mean") > 0.0


def _read_history(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_run_folder_with_val_split(tr_datasets, tmp_path):
    out = tmp_path / "my runs" / "tiny run"
    cfg = TrainConfig(data=[str(tr_datasets["val"])], bootstrap=20, **FAST)
    res = train(cfg, out)
    for name in ("model.keras", "config.json", "history.csv", "metrics.json", "report.md", "confusion.png",
                 "checkpoints/step_0.keras", "checkpoints/step_1.keras"):
        assert (out / name).is_file(), name
    rc = json.loads((out / "config.json").read_text())
    for key in ("kind", "format_version", "backbone", "alpha", "image_size", "resize_mode", "preprocessing",
                "classes", "taxonomy", "data", "weights", "seed", "schedule", "versions", "config_hash", "params"):
        assert key in rc, key
    assert rc["kind"] == "run" and rc["classes"] == ["MM", "Nev", "BCC"] and rc["image_size"] == 24
    assert rc["data"][-1]["dir"] == str(tr_datasets["val"].resolve()) and rc["data"][-1]["hash"]
    rows = _read_history(out / "history.csv")
    assert list(rows[0]) == ["step", "block", "epoch", "lr_end", "loss", "accuracy", "val_loss", "val_accuracy",
                             "val_macro_f1"]
    assert [(r["step"], r["block"]) for r in rows] == [("0", "head"), ("1", "b3")]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n"] == 12 and metrics["bootstrap"]["n"] == 20
    assert res["metrics"]["macro_f1"] == metrics["macro_f1"]
    assert res["train_images_per_s"] > 0
    from edge_derm.models import load_model

    assert load_model(out / "model.keras").output_shape == (None, 3)


def test_resume_gives_the_same_model_and_checks_config(tr_datasets, tmp_path):
    import tf_keras as keras

    cfg = TrainConfig(data=[str(tr_datasets["plain"])], **{**FAST, "blocks": 2, "val_fraction": 0.0})
    full = train(cfg, tmp_path / "full", evaluate=False)
    assert full["history"] and "val_loss" not in full["history"][0]
    assert "val_loss" not in _read_history(tmp_path / "full" / "history.csv")[0]

    def interrupt(step, model):
        if step == 0:
            raise KeyboardInterrupt

    out = tmp_path / "resumed run"
    with pytest.raises(KeyboardInterrupt):
        train(cfg, out, evaluate=False, on_step_end=interrupt)
    state = json.loads((out / "checkpoints" / "state.json").read_text())
    assert state["completed_step"] == 0 and not (out / "model.keras").exists()

    with pytest.raises(OutputExistsError, match="--resume"):
        train(cfg, out)
    other = TrainConfig(data=[str(tr_datasets["plain"])], **{**FAST, "blocks": 2, "lr_head": 0.5, "val_fraction": 0.0})
    with pytest.raises(ConfigError, match=r"different configuration.*lr_head: 0\.01 -> 0\.5"):
        train(other, out, resume=True)

    steps_run = []
    train(cfg, out, resume=True, evaluate=False, on_step_end=lambda k, m: steps_run.append(k))
    assert steps_run == [1, 2]
    a = keras.models.load_model(tmp_path / "full" / "model.keras")
    b = keras.models.load_model(out / "model.keras")
    for wa, wb in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_allclose(wa, wb, rtol=1e-6, atol=1e-7)
    assert _read_history(out / "history.csv") == _read_history(tmp_path / "full" / "history.csv")

    # --force starts again
    res = train(cfg, out, force=True, evaluate=False, on_step_end=lambda k, m: steps_run.append(k))
    assert steps_run[-3:] == [0, 1, 2] and res["history"]
    with pytest.raises(ConfigError, match="nothing to resume"):
        train(cfg, tmp_path / "never ran", resume=True)


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tr_datasets, tmp_path, monkeypatch):
    import tf_keras as keras

    def poison(step, model):
        # From step 1 on the loss is NaN.
        monkeypatch.setattr(keras.losses, "categorical_crossentropy",
                            lambda y, p, label_smoothing=0.0: keras.backend.sum(p, axis=-1) * float("nan"))

    out = tmp_path / "nan run"
    cfg = TrainConfig(data=[str(tr_datasets["plain"])], **FAST)
    with pytest.raises(TrainingError, match=r"nan at step 1 \(block b3\).*checkpoints/step_0\.keras"):
        train(cfg, out, on_step_end=poison)
    assert (out / "checkpoints" / "step_0.keras").is_file()
    assert not (out / "checkpoints" / "step_1.keras").exists()
    assert json.loads((out / "checkpoints" / "state.json").read_text())["completed_step"] == 0


def test_class_without_training_images(tmp_path):
    from conftest import make_tr_dataset

    ds = make_tr_dataset(tmp_path / "holey", ["MM", "Nev"], n_train=3)
    # drop every training image of Nev
    text = (ds / "manifest.csv").read_text().splitlines()
    keep = [line for line in text if not (line.startswith("Nev/") and ",train" in line)]
    (ds / "manifest.csv").write_text("\n".join(keep) + "\n")
    with pytest.raises(DataError, match="Nev have no training images"):
        train(TrainConfig(data=[str(ds)], **FAST), tmp_path / "run")


def test_head_swap_keeps_backbone_weights(tr_datasets, tmp_path):
    from edge_derm.models import build_classifier

    out = tmp_path / "first"
    train(TrainConfig(data=[str(tr_datasets["plain"])], **FAST), out, evaluate=False)
    from edge_derm.models import load_model

    first = load_model(out / "model.keras")
    second = build_classifier("tiny", 2, image_size=24, weights=str(out / "model.keras"))
    compared = 0
    for layer in first.layers:
        if layer.weights and not layer.name.startswith("head_"):
            for a, b in zip(layer.get_weights(), second.get_layer(layer.name).get_weights()):
                np.testing.assert_array_equal(a, b)
            compared += 1
    assert compared == 8
    assert second.get_layer("head_conv").get_weights()[0].shape == (1, 1, 16, 2)


# -- the from-scratch recipe (unfreeze = "full") -----------------------------------------------

def test_unfreeze_full_config(tr_datasets):
    d = [str(tr_datasets["plain"])]
    with pytest.raises(ConfigError, match="unknown unfreeze schedule 'some'; use blockwise"):
        TrainConfig(data=d, backbone="tiny", weights="none", unfreeze="some")
    full = TrainConfig(data=d, backbone="tiny", weights="none", unfreeze="full", blocks="all", epochs_per_block=2)
    assert (full.lr_head, full.lr_backbone) == (1e-3, 1e-3)  # the from-scratch defaults
    assert full.n_steps == 1
    assert full.steps() == [{"step": 0, "block": "all", "trainable": ["head", "b3", "b2", "b1", "rest"],
                             "level": 4, "epochs": 10}]  # 2 epochs x (4 blocks + head): the same budget
    assert full.schedule()["kind"] == "full" and full.schedule()["lr"] == {"head": 1e-3, "backbone": 1e-3}
    explicit = TrainConfig(data=d, backbone="tiny", weights="none", unfreeze="full", lr_head=5e-4)
    assert (explicit.lr_head, explicit.lr_backbone) == (5e-4, 1e-3)  # a given value is kept
    paper = TrainConfig(data=d, backbone="tiny", weights="none", recipe="paper")
    assert paper.unfreeze == "blockwise" and (paper.lr_head, paper.lr_backbone) == (1e-4, 1e-5)
    # a saved config reloads to the same one
    assert TrainConfig.from_dict(full.to_dict()).to_dict() == full.to_dict()


def test_from_scratch_recipe_learns_where_the_blockwise_schedule_does_not(synth_manifest, tmp_path):
    """Random tiny backbone, 13 classes: the full recipe's training loss falls well below ln C;
    the paper's block-wise schedule (1e-4 head, 1e-5 backbone) with the same budget stays near it."""
    import math

    from edge_derm.models import load_model

    chance = math.log(13)
    common = dict(data=[str(synth_manifest.dir)], backbone="tiny", image_size=32, weights="none", blocks="all",
                  epochs_per_block=2, steps_per_epoch=25, augment=False)
    full = train(TrainConfig(unfreeze="full", **common), tmp_path / "full run", evaluate=False)
    losses = [row["loss"] for row in full["history"]]
    assert len(losses) == 10 and {row["block"] for row in full["history"]} == {"all"}
    assert losses[-1] < 0.8 * chance, losses
    cfg = json.loads((tmp_path / "full run" / "config.json").read_text())
    assert cfg["train"]["unfreeze"] == "full" and cfg["schedule"]["kind"] == "full"
    assert cfg["schedule"]["lr"] == {"head": 1e-3, "backbone": 1e-3}
    # the temporary BatchNorm momentum is not saved into the model
    saved = load_model(tmp_path / "full run" / "model.keras")
    assert saved.get_layer("tiny_b1_bn").momentum == 0.99

    paper = train(TrainConfig(**common), tmp_path / "blockwise run", evaluate=False)
    assert paper["history"][-1]["loss"] > 0.9 * chance, [r["loss"] for r in paper["history"]]


@pytest.mark.parametrize("size, match", [
    (100000, "image size 100000 is too large \\(at most 1024 px"),  # was a MemoryError, then a 10-minute hang
    ("big", "image size must be a whole number of pixels, got 'big'"),  # a plan's image_size = "big"
    ([300], "image size must be a whole number of pixels"),
])
def test_image_size_out_of_range_is_a_config_error(tr_datasets, size, match):
    with pytest.raises(ConfigError, match=match):
        TrainConfig(data=[str(tr_datasets["val"])], backbone="tiny", weights="none", image_size=size)


def test_run_config_round_trips_and_a_newer_format_is_refused(tr_datasets, tmp_path, capsys):
    """config.json is an artefacts.RunConfig: a real run's file reads back as one and writes back unchanged;
    a config.json of a newer format_version is refused by --resume (library and CLI) and by read_run,
    each with one line."""
    from edge_derm.artefacts import RunConfig
    from edge_derm.cli import main
    from edge_derm.errors import ModelError
    from edge_derm.training.evaluate import read_run

    data = str(tr_datasets["plain"])
    cfg = TrainConfig(data=[data], **{**FAST, "blocks": 0, "val_fraction": 0.0})
    out = tmp_path / "round trip"
    train(cfg, out, evaluate=False)
    doc = json.loads((out / "config.json").read_text())
    rc = RunConfig.read(out)
    assert rc.classes == ["MM", "Nev", "BCC"] and rc.image_size == 24 and rc.backbone == "tiny"
    assert rc.get("params") > 0 and rc.get("selected")["by"] == "last epoch"
    assert RunConfig.from_json(doc).to_json() == doc
    assert read_run(out).to_json() == doc

    newer = {**doc, "format_version": RunConfig.FORMAT_VERSION + 1}
    (out / "config.json").write_text(json.dumps(newer))
    with pytest.raises(ConfigError, match="newer than this edge-derm reads") as err:
        train(cfg, out, resume=True, evaluate=False)
    assert "\n" not in str(err.value) and "cannot resume" in str(err.value)
    with pytest.raises(ModelError, match="upgrade edge-derm") as err:
        read_run(out)
    assert "\n" not in str(err.value)
    capsys.readouterr()
    args = ["--backbone", "tiny", "--image-size", "24", "--weights", "none", "-e", "1", "--steps-per-epoch", "2",
            "--blocks", "0", "--lr-head", "0.01", "--lr-backbone", "0.001", "--val-fraction", "0"]
    assert main(["-q", "train", "--data", data, "--out", str(out), "--resume", *args]) == 1
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: cannot resume") and "newer" in lines[0], lines
    assert json.loads((out / "config.json").read_text()) == newer  # a refused resume writes nothing
