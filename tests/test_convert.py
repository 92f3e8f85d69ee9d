"""edge-derm convert: every preset on a tiny model, verification, metadata, bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from edge_derm import cli
from edge_derm.converters.presets import MODES, PRESETS, get_preset, resolve_io
from edge_derm.errors import ConfigError, ModelError
from edge_derm.provenance import host_paths, without_host_paths
from edge_derm.runtime import TFLiteModel, inspect_tflite, read_metadata


def test_presets_table_drives_choices():
    assert MODES == ("fp32", "fp16", "dynamic", "int8", "qat")
    assert [p.name for p in PRESETS.values() if p.calibration] == ["int8", "qat"]
    with pytest.raises(ConfigError, match="use one of fp32, fp16"):
        get_preset("int4")
    assert resolve_io(get_preset("int8"), None) == "uint8"
    assert resolve_io(get_preset("fp16"), "uint8") == "float32"
    with pytest.raises(ConfigError):
        resolve_io(get_preset("int8"), "int16")


def test_converter_settings_come_from_the_preset_table():
    """make_converter reads the preset's fields (no branch on a mode's name): a renamed preset with fp16's
    settings converts as fp16 does, and the table says which presets search recipes and check collapse."""
    import dataclasses

    import tensorflow as tf

    from edge_derm.converters.tflite import make_converter
    from edge_derm.models import build_classifier

    model = build_classifier("tiny", 3, image_size=32, weights="none")
    half = make_converter(model, dataclasses.replace(get_preset("fp16"), name="half"))
    assert half.optimizations == [tf.lite.Optimize.DEFAULT] and half.target_spec.supported_types == [tf.float16]
    plain = make_converter(model, get_preset("fp32"))
    assert not plain.optimizations and not plain.target_spec.supported_types
    images = np.zeros((2, 32, 32, 3), np.float32)
    full = make_converter(model, dataclasses.replace(get_preset("int8"), name="ptq"), "uint8", images)
    assert full.inference_input_type == tf.uint8 and full.inference_output_type == tf.uint8
    assert set(full.target_spec.supported_ops) == {tf.lite.OpsSet.TFLITE_BUILTINS_INT8}
    assert [p.name for p in PRESETS.values() if p.recipes] == ["int8"]
    assert [p.name for p in PRESETS.values() if p.collapse_check] == ["int8"]
    assert [p.name for p in PRESETS.values() if p.training] == ["qat"]


@pytest.mark.parametrize("mode,io,share", [("fp32", "float32", 0.0), ("fp16", "float32", 0.0),
                                           ("dynamic", "float32", 0.0), ("int8", "uint8", 1.0)])
def test_every_mode_converts_and_verifies(cv_converted, mode, io, share):
    path = cv_converted / f"model.{mode}.tflite"
    info = inspect_tflite(path)
    assert info.input_tensors[0].dtype == io and info.output_tensors[0].dtype == io
    assert info.integer_op_share() == pytest.approx(share)
    meta = read_metadata(path)
    v = json.loads((cv_converted / "model.json").read_text())["variants"][mode]["verification"]
    assert v["passed"] and v["n"] == 18  # every validation + test image (the fixture caps nothing below 18)
    assert v["top1_agreement"] >= PRESETS[mode].tolerance.min_top1_agreement
    assert v["mean_abs_diff"] <= PRESETS[mode].tolerance.mean_abs_diff
    assert meta["verification"]["tolerance"] == v["tolerance"]
    assert meta["quantization"] == mode and meta["labels"] == ["MM", "Nev", "BCC"]
    assert meta["input"]["dtype"] == io and meta["input"]["size"] == [32, 32]
    if mode == "fp32":
        assert v["max_abs_diff"] < 1e-4


def test_int8_io_params_and_sizes(cv_converted):
    meta = read_metadata(cv_converted / "model.int8.tflite")
    # uint8 pixels go straight in: the input quantisation is the identity on [0, 255].
    assert meta["input"]["scale"] == pytest.approx(1.0, rel=0.02) and meta["input"]["zero_point"] == 0
    assert meta["output"]["scale"] == pytest.approx(1 / 256, rel=0.05)
    assert meta["calibration"]["n"] == 24 and meta["calibration"]["missing_classes"] == []
    sizes = {m: (cv_converted / f"model.{m}.tflite").stat().st_size for m in ("fp32", "fp16", "int8")}
    assert sizes["fp16"] < sizes["fp32"] and sizes["int8"] < sizes["fp32"]


def test_model_json_and_labels(cv_converted, cv_run):
    doc = json.loads((cv_converted / "model.json").read_text())
    assert doc["kind"] == "convert" and doc["run"] == str(cv_run.resolve())
    assert set(doc["variants"]) == {"fp32", "fp16", "dynamic", "int8"}
    assert (cv_converted / "labels.txt").read_text().split() == ["MM", "Nev", "BCC"]
    embedded = read_metadata(cv_converted / "model.int8.tflite")
    stored = dict(doc["variants"]["int8"])
    # model.json adds what can only be known once the file is written: its name, size, hash and results.
    assert stored.pop("file") == "model.int8.tflite"
    assert stored.pop("size_bytes") == (cv_converted / "model.int8.tflite").stat().st_size
    assert len(stored.pop("sha256")) == 64
    assert stored.pop("verification")["passed"] and "results" in embedded.pop("verification")
    # the file ships (apps, phones): it names the run and calibration dataset, model.json locates them
    assert embedded == without_host_paths(stored) and host_paths(embedded) == []
    shipped = (cv_converted / "model.int8.tflite").read_bytes()
    assert str(cv_converted.parent.parent).encode() not in shipped  # the session's temporary base: every input lies there
    assert stored["provenance"]["run"] == str(cv_run.resolve()) and embedded["provenance"]["run"] == cv_run.name
    assert Path(stored["calibration"]["dataset"]).is_absolute()
    prov = embedded["provenance"]
    assert prov["dataset_hashes"] and prov["config_hash"] and prov["versions"]["tensorflow"] != "not installed"
    assert not list(cv_converted.parent.glob(".*tmp*"))


def test_fake_int8_is_caught(cv_converted, cv_run):
    """A dynamic-range model passed off as int8 fails verification."""
    from edge_derm.converters.verify import structural_failures, verify_file

    path = cv_converted / "model.dynamic.tflite"
    failures = structural_failures(inspect_tflite(path), get_preset("int8"), "uint8")
    assert any("dtype is float32, expected uint8" in f for f in failures)
    assert any("ops run in integer" in f for f in failures)
    model = TFLiteModel(path)
    imgs = np.random.default_rng(0).uniform(0, 255, (4, 32, 32, 3)).astype(np.float32)
    result = verify_file(path, get_preset("int8"), "float32", model.predict(imgs), imgs, ["MM", "Nev", "BCC"])
    assert not result["passed"] and result["integer_op_share"] == 0.0
    assert result["top1_agreement"] == 1.0  # the numbers agree: only the structure gives it away


def test_cli_convert_int8_io_int8(cv_run, tmp_path, capsys):
    out = tmp_path / "out dir"
    rc = cli.main(["--quiet", "convert", str(cv_run), "--quantize", "int8", "--io", "int8", "--out", str(out),
                   "--calibration-size", "9", "--verify-size", "9"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert "int8" in captured.out and f"wrote {out}" in captured.out
    meta = read_metadata(out / "model.int8.tflite")
    assert meta["input"]["dtype"] == "int8" and meta["input"]["zero_point"] == -128
    assert meta["calibration"]["per_class"] == {"MM": 3, "Nev": 3, "BCC": 3}
    doc = json.loads((out / "model.json").read_text())
    assert any("MediaPipe" in w and "uint8 or float32" in w for w in doc["warnings"])  # int8 input: no MediaPipe
    # Existing output: refused without --force, nothing touched.
    before = (out / "model.json").read_bytes()
    rc = cli.main(["--quiet", "convert", str(cv_run), "--quantize", "fp32", "--out", str(out)])
    assert rc == 1 and "already exists" in capsys.readouterr().err
    assert (out / "model.json").read_bytes() == before


def test_cli_bad_inputs(cv_run, tmp_path, capsys):
    rc = cli.main(["--quiet", "convert", str(tmp_path), "--quantize", "fp32"])
    err = capsys.readouterr().err
    assert rc == 1 and "not a run folder" in err and "Traceback" not in err
    rc = cli.main(["--quiet", "convert", str(cv_run), "--quantize", "fp32", "--io", "uint8",
                   "--out", str(tmp_path / "o")])
    assert rc != 0 and "--io only applies" in capsys.readouterr().err
    rc = cli.main(["--quiet", "convert", str(cv_run), "--quantize", "int4"])
    assert rc != 0
    assert not (tmp_path / "o").exists()


def test_labels_mismatch_and_missing_dataset(cv_run, tmp_path):
    from edge_derm.converters.convert import ConvertConfig, convert_run

    bad = tmp_path / "bad run"
    shutil.copytree(cv_run, bad)
    cfg = json.loads((bad / "config.json").read_text())
    cfg["classes"] = ["A", "B"]
    (bad / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelError, match="the model has 3 outputs but its config lists 2 classes"):
        convert_run(ConvertConfig(run=bad, modes=["fp32"], out=tmp_path / "o1"))
    cfg["classes"] = ["MM", "Nev", "BCC"]
    cfg["data"] = [{"dir": str(tmp_path / "gone"), "hash": "x"}]
    (bad / "config.json").write_text(json.dumps(cfg))
    from edge_derm.errors import ConversionError

    with pytest.raises(ConversionError, match="pass --calibration DIR"):
        convert_run(ConvertConfig(run=bad, modes=["int8"], out=tmp_path / "o2"))
    assert not (tmp_path / "o1").exists() and not (tmp_path / "o2").exists()


def test_corrupt_keras_model(cv_run, tmp_path):
    from edge_derm.converters.convert import ConvertConfig, convert_run

    bad = tmp_path / "bad run"
    shutil.copytree(cv_run, bad)
    (bad / "model.keras").write_bytes(b"not a zip")
    with pytest.raises(ModelError, match="cannot load model"):
        convert_run(ConvertConfig(run=bad, modes=["fp32"], out=tmp_path / "o"))


def test_calibration_missing_classes_warns(cv_run, cv_dataset, tmp_path, caplog):
    """--calibration with a dataset lacking a class: converts, warns and lists the class."""
    from edge_derm.converters.convert import ConvertConfig, convert_run
    from edge_derm.data.manifest import Manifest, write_manifest

    m = Manifest.load(cv_dataset)
    part = tmp_path / "partial data"
    part.mkdir()
    write_manifest(part, [r for r in m.records if r.label != "BCC"], dict(m.info))
    doc = convert_run(ConvertConfig(run=cv_run, modes=["int8"], out=tmp_path / "o", calibration=part,
                                    calibration_size=12, verify_size=9))
    assert doc["warnings"] == ["calibration data has no image of: BCC"]
    assert doc["variants"]["int8"]["calibration"]["missing_classes"] == ["BCC"]


def test_config_validation(tmp_path):
    from edge_derm.converters.convert import ConvertConfig

    with pytest.raises(ConfigError, match="repeats"):
        ConvertConfig(run=tmp_path, modes=["fp32", "fp32"])
    with pytest.raises(ConfigError, match="--float-layers applies to int8"):
        ConvertConfig(run=tmp_path, modes=["fp16"], float_layers="auto")
    with pytest.raises(ConfigError, match="at least 1"):
        ConvertConfig(run=tmp_path, modes=["int8"], calibration_size=0)
    assert ConvertConfig(run=tmp_path).out == tmp_path / "convert"


def test_stratified_sample_is_seeded_and_covers_rare_classes():
    from edge_derm.converters.calibration import stratified_indices

    labels = ["nv"] * 100 + ["mel"] * 10 + ["df"] * 1
    idx = stratified_indices(labels, 20, seed=3)
    picked = [labels[i] for i in idx]
    assert len(idx) == 20 == len(set(idx.tolist()))
    assert picked.count("df") == 1 and picked.count("mel") == 2 and picked.count("nv") == 17
    assert (stratified_indices(labels, 20, seed=3) == idx).all()
    assert not (stratified_indices(labels, 20, seed=4) == idx).all()


def test_unusable_calibration_data_is_an_error(cv_run, tmp_path):
    """int8 with calibration images that cannot be read: an error, never a silent fallback."""
    from edge_derm.converters.convert import ConvertConfig, convert_run
    from edge_derm.data.manifest import Record, write_manifest
    from edge_derm.errors import ConversionError

    root = tmp_path / "broken images"
    root.mkdir()
    records = []
    for i, cls in enumerate(["MM", "Nev", "BCC"]):
        (root / f"{i}.jpg").write_bytes(b"not an image")
        records.append(Record(f"{i}.jpg", cls, cls, "x", str(i), "train"))
    data = tmp_path / "broken data"
    data.mkdir()
    write_manifest(data, records, {"root": str(root), "classes": ["MM", "Nev", "BCC"]})
    with pytest.raises(ConversionError, match="none of the 3 calibration images"):
        convert_run(ConvertConfig(run=cv_run, modes=["int8"], out=tmp_path / "o", calibration=data))
    assert not (tmp_path / "o").exists()


def test_a_custom_taxonomy_file_keeps_its_triage_and_names_through_conversion(tmp_path):
    """A --taxonomy file has no shipped namesake: training records the dataset's own triage and
    descriptions, and the converted model's metadata carries them (it used to reload the taxonomy by
    name, warn, and ship every class as triage 'unknown')."""
    from data_fakes import fake_folder

    from edge_derm.converters.convert import ConvertConfig, convert_run
    from edge_derm.data.build import build_dataset
    from edge_derm.runtime import TFLiteModel
    from edge_derm.training.config import TrainConfig
    from edge_derm.training.trainer import train

    tax = tmp_path / "mine.toml"
    tax.write_text('name = "mine"\n[[classes]]\nid = "mole"\nname = "Harmless mole"\ntriage = "benign"\n'
                   '[[classes]]\nid = "mel"\nname = "Melanoma (mine)"\ntriage = "malignant"\n')
    fake_folder(tmp_path / "raw", {"mole": 8, "mel": 8})
    build_dataset("folder", tmp_path / "raw", tmp_path / "ds", taxonomy=str(tax))
    run = tmp_path / "run"
    train(TrainConfig(data=[str(tmp_path / "ds")], backbone="tiny", image_size=24, weights="none", epochs_per_block=1,
                      steps_per_epoch=1, blocks=0, val_fraction=0.0, calibrate=False), run, evaluate=False)
    rc = json.loads((run / "config.json").read_text())
    assert rc["triage"] == {"mole": "benign", "mel": "malignant"}
    assert rc["descriptions"] == {"mole": "Harmless mole", "mel": "Melanoma (mine)"}
    doc = convert_run(ConvertConfig(run=run, modes=["fp32"], out=tmp_path / "out"))
    meta = TFLiteModel(tmp_path / "out" / "model.fp32.tflite").metadata
    for m in (doc["variants"]["fp32"], meta):
        assert m["triage"] == {"mole": "benign", "mel": "malignant"}, m["triage"]
        assert m["descriptions"]["mel"] == "Melanoma (mine)"
