"""TFLite's standard metadata in every variant: written by convert, read back by the standard clients.

The MediaPipe half runs MediaPipe Tasks' ImageClassifier in the standard-clients interpreter
(``.venv-clients``, made by ``make clients``; override with ``EDGE_DERM_CLIENTS_PYTHON``) and skips
with the reason when it is missing: MediaPipe does not install beside tensorflow-model-optimization.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import zipfile
from pathlib import Path

import numpy as np
import pytest

from conftest import CV_CLASSES, CV_SIZE, REPO

from edge_derm import cli
from edge_derm.converters.presets import MODES as PRESET_MODES
from edge_derm.tflite_format.standard import (CALIBRATION_FILE, DISPLAY_NAMES_FILE, LABELS_FILE,
                                             read_associated_files, standard_metadata)
from edge_derm.runtime import TFLiteModel, read_metadata

MODES = list(PRESET_MODES)
CLIENTS_PYTHON = Path(os.environ.get("EDGE_DERM_CLIENTS_PYTHON", REPO / ".venv-clients" / "bin" / "python"))
CLIENT = Path(__file__).parent / "clients" / "mediapipe_client.py"
CALIBRATION = {"method": "temperature", "fitted_on": "val", "temperature": 1.7, "log_prior": [0.4, -0.3, 0.05],
               "prevalence": "balanced", "referral_groups": [], "referral_classes": [], "threshold": None,
               "target_sensitivity": None}


@pytest.fixture(scope="module")
def calibrated_converted(cv_run, tmp_path_factory) -> Path:
    """`cv_run` with a temperature and prior shift, converted to every mode (qat: 3 steps)."""
    from edge_derm.converters.convert import ConvertConfig, convert_run

    base = tmp_path_factory.mktemp("std meta")
    run = base / "calibrated run"
    shutil.copytree(cv_run, run)
    cfg = json.loads((run / "config.json").read_text())
    cfg["calibration"] = CALIBRATION
    cfg["descriptions"] = {c: f"{c.title()} lesion" for c in CV_CLASSES}
    cfg["triage"] = {c: "benign" for c in CV_CLASSES}  # the run's own taxonomy facts (descriptions need triage)
    (run / "config.json").write_text(json.dumps(cfg))
    out = base / "convert out"
    convert_run(ConvertConfig(run=run, modes=MODES, out=out, calibration_size=24, verify_size=18, qat_steps=3))
    return out


def _clients_python() -> Path:
    if not CLIENTS_PYTHON.is_file():
        pytest.skip(f"{CLIENTS_PYTHON} is missing: `make clients` installs MediaPipe for the standard-client tests")
    return CLIENTS_PYTHON


def test_every_variant_carries_standard_metadata_and_labels(calibrated_converted):
    doc = json.loads((calibrated_converted / "model.json").read_text())
    assert sorted(doc["variants"]) == sorted(MODES)
    for mode, variant in doc["variants"].items():
        path = calibrated_converted / variant["file"]
        files = read_associated_files(path.read_bytes())
        assert files[LABELS_FILE].decode().split("\n") == CV_CLASSES, mode
        assert files[DISPLAY_NAMES_FILE].decode().split("\n") == [f"{c.title()} lesion" for c in CV_CLASSES]
        lines = files[CALIBRATION_FILE].decode().split("\n")
        np.testing.assert_allclose([[float(v) for v in ln.split(",")] for ln in lines],
                                   [[1.0, 1 / 1.7, o] for o in CALIBRATION["log_prior"]], rtol=1e-6)
        # the bytes on disk are the verified ones: hash recorded, project metadata and interpreter intact
        model = TFLiteModel(path)
        assert model.sha256 == variant["sha256"] and read_metadata(path)["labels"] == CV_CLASSES
        assert model.predict(np.zeros((1, CV_SIZE, CV_SIZE, 3), np.float32)).shape == (1, len(CV_CLASSES))


def test_no_calibration_file_without_a_temperature(cv_converted):
    files = read_associated_files((cv_converted / "model.fp32.tflite").read_bytes())
    assert set(files) == {LABELS_FILE}  # cv_run has neither calibration nor descriptions
    _, files = standard_metadata({"labels": ["a", "b"], "input": {"size": [8, 8]},
                                  "output_calibration": {"temperature": float("nan")}})
    assert CALIBRATION_FILE not in files


def test_mediapipe_reads_the_metadata_and_agrees_with_predict(calibrated_converted, tmp_path, shared_dir, capsys):
    """MediaPipe's ImageClassifier on every variant: the same label names and top-1 as `edge-derm predict`,
    on real HAM10000 images (brought to the model's size first, so both clients see the same pixels)."""
    from PIL import Image

    from edge_derm.data.images import load_for_model

    python = _clients_python()
    sources = sorted((shared_dir / "data" / "ham10000-dev").rglob("*.jpg"))[:24]
    assert len(sources) == 24
    images = np.stack([load_for_model(p, CV_SIZE, "nearest") for p in sources]).astype(np.uint8)
    pngs = []
    for i, img in enumerate(images):
        pngs.append(tmp_path / f"image {i}.png")
        Image.fromarray(img).save(pngs[-1])
    np.save(tmp_path / "images.npy", images)
    doc = json.loads((calibrated_converted / "model.json").read_text())
    paths = [str(calibrated_converted / v["file"]) for v in doc["variants"].values()]
    proc = subprocess.run([str(python), str(CLIENT), str(tmp_path / "images.npy"), *paths],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    client = json.loads(proc.stdout)

    for mode, variant in doc["variants"].items():
        path = str(calibrated_converted / variant["file"])
        meta = client[path]["metadata"]
        assert meta["identifier_ok"], mode
        sub = meta["model"]["subgraphMetadata"][0]
        inp, out = sub["inputTensorMetadata"][0], sub["outputTensorMetadata"][0]
        assert inp["content"]["contentProperties"] == {"_type": "ImagePropertiesT", "colorSpace": 1}
        norm = inp["processUnits"][0]["options"]
        assert norm["_type"] == "NormalizationOptionsT" and norm["mean"] == [0, 0, 0] and norm["std"] == [1, 1, 1]
        assert [(f["name"], f["type"], f.get("locale")) for f in out["associatedFiles"]] == [
            (LABELS_FILE, 2, None), (DISPLAY_NAMES_FILE, 2, "en"), (CALIBRATION_FILE, 4, None)]
        assert out["processUnits"][0]["options"]["scoreTransformation"] == 1  # LOG

        rc = cli.main(["--quiet", "predict", path, *map(str, pngs), "--json", "--top-k", str(len(CV_CLASSES))])
        assert rc == 0
        predicted = json.loads(capsys.readouterr().out)
        assert predicted["calibrated"] and predicted["temperature"] == pytest.approx(CALIBRATION["temperature"])
        rows = predicted["results"]
        assert len(rows) == len(pngs) == len(client[path]["results"])
        for row, cats in zip(rows, client[path]["results"]):
            assert {c["name"] for c in cats} == set(CV_CLASSES), mode
            assert {c["display_name"] for c in cats} == {f"{c.title()} lesion" for c in CV_CLASSES}
            ours = row["top"][0]["label"]
            best = max(c["score"] for c in cats)
            tied = {c["name"] for c in cats if c["score"] == best}  # exact ties may come in either order
            assert ours in tied, (mode, row, cats)


def test_associated_files_are_a_real_zip(cv_converted):
    data = (cv_converted / "model.int8.tflite").read_bytes()
    with zipfile.ZipFile(cv_converted / "model.int8.tflite") as zf:
        assert zf.testzip() is None and zf.namelist() == [LABELS_FILE]
    # the flatbuffer comes first, untouched: its file identifier is where TFLite expects it
    assert data[4:8] == b"TFL3"


def test_verification_reads_the_labels_back_from_the_written_file(cv_converted):
    """convert's check on the bytes that ship covers the standard metadata: labels that do not read back
    as the model's classes fail verification."""
    from edge_derm.converters.presets import get_preset
    from edge_derm.converters.verify import verify_file

    path = cv_converted / "model.fp32.tflite"
    meta = read_metadata(path)
    images = np.random.default_rng(0).uniform(0, 255, (4, CV_SIZE, CV_SIZE, 3)).astype(np.float32)
    reference = TFLiteModel(path).predict(images)
    ok = verify_file(path, get_preset("fp32"), "float32", reference, images, CV_CLASSES, expected_metadata=meta)
    assert ok["failures"] == [] and ok["passed"]
    renamed = verify_file(path, get_preset("fp32"), "float32", reference, images, CV_CLASSES[::-1],
                          expected_metadata=meta)
    assert "labels.txt does not read back as the model's classes" in " ".join(renamed["failures"])
