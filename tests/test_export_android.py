"""`edge-derm export android`: assets, samples and expected results for the instrumented test."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from edge_derm import export
from edge_derm.cli import main
from edge_derm.errors import ConfigError, OutputExistsError

pytestmark = pytest.mark.slow  # the cv_converted fixture trains and converts a tiny model once

REPO = Path(__file__).resolve().parents[1]
EXPECTED_KT = REPO / "android_demo/app/src/main/java/org/edgederm/demo/core/ExpectedResults.kt"


def _assets(app: Path) -> Path:
    return app / export.MAIN_ASSETS


def _tests(app: Path) -> Path:
    return app / export.TEST_ASSETS


def test_export_convert_folder_writes_assets_and_expectations(cv_converted, cv_dataset, android_app):
    from edge_derm.data.images import load_rgb
    from edge_derm.runtime import TFLiteModel, read_metadata

    summary = export.export_android(cv_converted, android_app, samples=cv_dataset, per_class=2)
    assert summary["variant"] == "int8"  # the default prefers the smallest model
    model = _assets(android_app) / "model.tflite"
    assert model.read_bytes() == (cv_converted / "model.int8.tflite").read_bytes()
    meta = json.loads((_assets(android_app) / "model.json").read_text())
    # The app gets the convert record: the embedded metadata plus the results measured on the written
    # file and its SHA-256, which the runtime checks against the asset beside it.
    record = json.loads((cv_converted / "model.json").read_text())["variants"]["int8"]
    assert meta == {**record, "file": "model.tflite"}
    embedded = read_metadata(model)
    assert {k: v for k, v in meta.items() if k not in ("file", "sha256", "size_bytes", "verification")} == \
        {k: v for k, v in embedded.items() if k != "verification"}
    assert meta["verification"]["passed"] and TFLiteModel(model).sha256 == meta["sha256"]
    assert (_assets(android_app) / "labels.txt").read_text().splitlines() == meta["labels"]

    expected = json.loads((_tests(android_app) / "expected_results.json").read_text())
    assert expected["labels"] == meta["labels"]
    assert len(expected["samples"]) == 2 * len(meta["labels"]) == summary["samples"]
    assert {s["label"] for s in expected["samples"]} == set(meta["labels"])
    assert expected["tolerance"]["prob_atol"] >= 4 * meta["output"]["scale"]
    import hashlib
    assert expected["model_sha256"] == hashlib.sha256(model.read_bytes()).hexdigest()

    # The expectations are what the host runtime says for the bundled PNGs...
    tfl = TFLiteModel(model)
    files = [_tests(android_app) / s["file"] for s in expected["samples"]]
    probs, errors = tfl.predict_files(files)
    assert not errors
    np.testing.assert_allclose(probs, np.array([s["probs"] for s in expected["samples"]]), atol=1e-6)
    assert [s["top1"] for s in expected["samples"]] == [meta["labels"][i] for i in probs.argmax(1)]
    # ...and the PNGs hold exactly the source pixels (lossless, so the phone decodes the same).
    first = expected["samples"][0]
    src = sorted((cv_dataset.parent / "my images" / first["label"]).glob("test *.png"))[0]
    assert np.array_equal(load_rgb(files[0]), load_rgb(src))
    # The fixture model learned the classes, so the samples are a meaningful per-class check.
    assert np.mean([s["top1"] == s["label"] for s in expected["samples"]]) >= 0.5


def test_expected_results_have_every_field_kotlin_reads(cv_converted, cv_dataset, android_app):
    export.export_android(cv_converted, android_app, variant="fp32", samples=cv_dataset, per_class=1)
    doc = json.loads((_tests(android_app) / "expected_results.json").read_text())
    fields = set(re.findall(r"\b(?:req|opt)[A-Z]\w*\(\s*\"([a-z0-9_.]+)\"", EXPECTED_KT.read_text()))
    assert {"model_sha256", "probs", "file", "top1"} <= fields  # the parse found the reads
    per_sample = {"file", "label", "top1", "probs"}
    for field in fields:
        node = doc["samples"][0] if field in per_sample else doc
        for part in field.split("."):
            assert part in node, f"expected_results.json lacks {field!r}, which ExpectedResults.kt reads"
            node = node[part]
    assert doc["tolerance"]["prob_atol"] == 0.01  # fp32


def test_refuses_to_overwrite_without_force(cv_converted, cv_dataset, android_app):
    export.export_android(cv_converted, android_app, variant="fp32", samples=cv_dataset, per_class=1)
    before = (_assets(android_app) / "model.tflite").read_bytes()
    with pytest.raises(OutputExistsError, match="--force"):
        export.export_android(cv_converted, android_app, variant="int8", samples=cv_dataset)
    assert (_assets(android_app) / "model.tflite").read_bytes() == before
    export.export_android(cv_converted, android_app, variant="int8", samples=cv_dataset, per_class=1, force=True)
    assert (_assets(android_app) / "model.tflite").read_bytes() == (cv_converted / "model.int8.tflite").read_bytes()
    assert not list(android_app.glob(".export-*")), "temporary folder left behind"


def test_stale_samples_are_removed_when_none_are_exported(cv_converted, cv_dataset, android_app, monkeypatch):
    export.export_android(cv_converted, android_app, samples=cv_dataset, per_class=1)
    assert (_tests(android_app) / "expected_results.json").is_file()
    monkeypatch.setattr(export, "_run_dataset", lambda meta: None)
    summary = export.export_android(cv_converted / "model.fp16.tflite", android_app, force=True)
    assert summary["samples"] == 0
    assert not (_tests(android_app) / "expected_results.json").exists()
    assert not (_tests(android_app) / "samples").exists()
    assert (_assets(android_app) / "model.tflite").read_bytes() == (cv_converted / "model.fp16.tflite").read_bytes()


def test_default_samples_come_from_the_runs_dataset(cv_converted, android_app):
    summary = export.export_android(cv_converted / "model.fp32.tflite", android_app, per_class=1)
    assert summary["samples"] == 3  # one per class from the test split of cv_run's dataset
    assert set(summary["per_label"]) == {"MM", "Nev", "BCC"}


def test_plain_image_folder_as_samples(cv_converted, cv_dataset, android_app):
    images = cv_dataset.parent / "my images"
    summary = export.export_android(cv_converted, android_app, samples=images, max_samples=4)
    doc = json.loads((_tests(android_app) / "expected_results.json").read_text())
    assert summary["samples"] == 4
    # Parent folder names that are labels become the samples' true labels.
    assert all(s["label"] in {"MM", "Nev", "BCC"} for s in doc["samples"])


def test_bad_arguments(cv_converted, android_app, tmp_path):
    with pytest.raises(ConfigError, match="has no qat variant"):
        export.export_android(cv_converted, android_app, variant="qat")
    with pytest.raises(ConfigError, match="not the edge-derm Android app"):
        export.export_android(cv_converted, tmp_path / "nowhere")
    with pytest.raises(ConfigError, match="--variant chooses"):
        export.export_android(cv_converted / "model.fp32.tflite", android_app, variant="fp32")
    from edge_derm.errors import ModelError
    with pytest.raises(ModelError, match="no model.<variant>.tflite"):
        export.export_android(tmp_path, android_app)
    from edge_derm.errors import DataError
    with pytest.raises(DataError, match="samples not found"):
        export.export_android(cv_converted, android_app, samples=tmp_path / "missing")


def test_cli(cv_converted, cv_dataset, android_app, capsys):
    args = ["export", "android", str(cv_converted), "--app", str(android_app), "--samples", str(cv_dataset),
            "--per-class", "1"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "int8" in out and "instrumented-test samples: 3" in out and "gradlew installDebug" in out
    assert main(args) == 1
    assert "already exists" in capsys.readouterr().err
    assert main(args + ["--force", "--variant", "fp16"]) == 0
    assert (_assets(android_app) / "model.tflite").read_bytes() == (cv_converted / "model.fp16.tflite").read_bytes()
    assert main(["export", "android", str(cv_converted), "--app", str(android_app), "--variant", "bogus"]) != 0
    assert main(["export", "android", str(cv_converted), "--app", str(android_app), "--per-class", "0"]) != 0
