"""`edge-derm export android`: assets, samples and expected results for the instrumented test."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import pytest

from edge_derm import export
from edge_derm.provenance import host_paths, without_host_paths
from edge_derm.cli import main
from edge_derm.errors import ConfigError, OutputExistsError

# Tests that use the cv_converted fixture (it trains and converts a tiny model once) are marked slow.
slow = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
EXPECTED_KT = REPO / "android_demo/app/src/main/java/org/edgederm/demo/core/ExpectedResults.kt"


def _assets(app: Path) -> Path:
    return app / export.MAIN_ASSETS


def _tests(app: Path) -> Path:
    return app / export.TEST_ASSETS


@slow
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
    assert meta == without_host_paths({**record, "file": "model.tflite"})
    # No host path ships in the APK: the run folder is named, not located.
    assert Path(record["provenance"]["run"]).is_absolute() and meta["provenance"]["run"] == "tiny run"
    assert host_paths(meta) == []
    text = (_assets(android_app) / "model.json").read_text()
    assert str(cv_converted.parent.parent) not in text and str(Path.home()) + "/" not in text
    embedded = read_metadata(model)
    assert {k: v for k, v in meta.items() if k not in ("file", "sha256", "size_bytes", "verification")} == \
        {k: v for k, v in without_host_paths(embedded).items() if k != "verification"}
    # The calibration block recorded the dataset's folder: cut to its name as well, in the app's model.json
    # and in the metadata embedded in the .tflite itself (it ships in the APK); model.json keeps the path.
    assert Path(record["calibration"]["dataset"]).is_absolute()
    assert meta["calibration"]["dataset"] == Path(record["calibration"]["dataset"]).name
    assert host_paths(embedded) == [] and embedded["provenance"]["run"] == "tiny run"
    shipped = model.read_bytes()  # the literal folders, not only what the path pattern recognises
    assert str(cv_converted.parent.parent).encode() not in shipped and str(Path.home()).encode() + b"/" not in shipped
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


@slow
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


@slow
def test_refuses_to_overwrite_without_force(cv_converted, cv_dataset, android_app):
    export.export_android(cv_converted, android_app, variant="fp32", samples=cv_dataset, per_class=1)
    before = (_assets(android_app) / "model.tflite").read_bytes()
    with pytest.raises(OutputExistsError, match="--force"):
        export.export_android(cv_converted, android_app, variant="int8", samples=cv_dataset)
    assert (_assets(android_app) / "model.tflite").read_bytes() == before
    export.export_android(cv_converted, android_app, variant="int8", samples=cv_dataset, per_class=1, force=True)
    assert (_assets(android_app) / "model.tflite").read_bytes() == (cv_converted / "model.int8.tflite").read_bytes()
    assert not list(android_app.glob(".export-*")), "temporary folder left behind"


@slow
def test_stale_samples_are_removed_when_none_are_exported(cv_converted, cv_dataset, android_app, monkeypatch):
    export.export_android(cv_converted, android_app, samples=cv_dataset, per_class=1)
    assert (_tests(android_app) / "expected_results.json").is_file()
    monkeypatch.setattr(export, "_run_dataset", lambda meta: None)
    summary = export.export_android(cv_converted / "model.fp16.tflite", android_app, force=True)
    assert summary["samples"] == 0
    assert not (_tests(android_app) / "expected_results.json").exists()
    assert not (_tests(android_app) / "samples").exists()
    assert (_assets(android_app) / "model.tflite").read_bytes() == (cv_converted / "model.fp16.tflite").read_bytes()


@slow
def test_default_samples_come_from_the_runs_dataset(cv_converted, android_app):
    summary = export.export_android(cv_converted / "model.fp32.tflite", android_app, per_class=1)
    assert summary["samples"] == 3  # one per class from the test split of cv_run's dataset
    assert set(summary["per_label"]) == {"MM", "Nev", "BCC"}


@slow
def test_plain_image_folder_as_samples(cv_converted, cv_dataset, android_app):
    images = cv_dataset.parent / "my images"
    summary = export.export_android(cv_converted, android_app, samples=images, max_samples=4)
    doc = json.loads((_tests(android_app) / "expected_results.json").read_text())
    assert summary["samples"] == 4
    # Parent folder names that are labels become the samples' true labels.
    assert all(s["label"] in {"MM", "Nev", "BCC"} for s in doc["samples"])


@slow
def test_bad_arguments(cv_converted, android_app, tmp_path):
    with pytest.raises(ConfigError, match="has no qat variant"):
        export.export_android(cv_converted, android_app, variant="qat")
    with pytest.raises(export.NotTheAppError, match="not the edge-derm Android app"):
        export.export_android(cv_converted, tmp_path / "nowhere")
    with pytest.raises(ConfigError, match="--variant chooses"):
        export.export_android(cv_converted / "model.fp32.tflite", android_app, variant="fp32")
    from edge_derm.errors import ModelError
    with pytest.raises(ModelError, match="no model.<variant>.tflite"):
        export.export_android(tmp_path, android_app)
    from edge_derm.errors import DataError
    with pytest.raises(DataError, match="samples not found"):
        export.export_android(cv_converted, android_app, samples=tmp_path / "missing")


@slow
def test_an_input_the_swap_would_replace_is_refused(cv_converted, cv_dataset, android_app):
    """Samples taken from the app's own test assets (or a convert folder inside its assets) would be deleted
    by the swap, --force or not: refused before anything is written."""
    export.export_android(cv_converted, android_app, samples=cv_dataset, per_class=1)
    before = _snapshot(android_app)
    with pytest.raises(ConfigError, match="which is or holds the input"):
        export.export_android(cv_converted, android_app, samples=_tests(android_app) / "samples", force=True)
    assert _snapshot(android_app) == before


@slow
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


# -- fast: the app folder, host paths, all-or-nothing swap (no model needed) -------------------------

def _snapshot(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("where", ["missing", "empty", "file", "other project", "repo root"])
def test_cli_export_into_a_folder_that_is_not_the_app(where, tmp_path, capsys):
    """One line `error: ...`, exit 1, and nothing written, whatever the wrong --app is."""
    target = tmp_path / "not the app"
    if where == "empty":
        target.mkdir()
    elif where == "file":
        target.write_text("x")
    elif where == "other project":  # an Android project, but not ours
        (target / "app/src/main").mkdir(parents=True)
        (target / "app/src/main/AndroidManifest.xml").write_text('<manifest package="com.example.other"/>')
        (target / "app/build.gradle.kts").write_text('android {\n    namespace = "com.example.other"\n}\n')
    elif where == "repo root":  # the folder that holds android_demo
        (target / "android_demo/app/src/main").mkdir(parents=True)
        (target / "android_demo/app/src/main/AndroidManifest.xml").write_text("<manifest/>")
    before = _snapshot(tmp_path)
    assert main(["export", "android", str(tmp_path / "no model.tflite"), "--app", str(target)]) == 1
    captured = capsys.readouterr()
    err = [line for line in captured.err.splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith("error: "), captured.err
    assert "not the edge-derm Android app" in err[0] and str(target) in err[0]
    if where == "repo root":
        assert "did you mean --app" in err[0] and "android_demo" in err[0]
    if where == "other project":
        assert "com.example.other" in err[0]
    assert _snapshot(tmp_path) == before, "export wrote into a folder that is not the app"
    assert not list(tmp_path.rglob(".export-*")) and not list(tmp_path.rglob("assets"))


def test_variant_preference_is_the_preset_table():
    """The default variant order covers exactly the quantisation modes, smallest model first."""
    from edge_derm.converters.presets import MODES

    assert sorted(export.VARIANT_PREFERENCE) == sorted(MODES)
    assert export.VARIANT_PREFERENCE == ("int8", "qat", "dynamic", "fp16", "fp32")


def test_inputs_inside_the_targets_are_refused(android_app, tmp_path):
    from edge_derm.export import _check_inputs_kept

    convert_in_assets = android_app / export.MAIN_ASSETS
    samples_in_tests = android_app / export.TEST_ASSETS / "samples" / "MM"
    for item in (convert_in_assets, samples_in_tests):
        item.mkdir(parents=True, exist_ok=True)
        with pytest.raises(ConfigError, match="which is or holds the input"):
            _check_inputs_kept(android_app, [item])
    _check_inputs_kept(android_app, [tmp_path / "elsewhere", None])  # inputs outside the targets: fine


def test_check_app_accepts_the_real_project_and_the_fixture(android_app):
    assert export.check_app(REPO / "android_demo") == REPO / "android_demo"
    assert export.check_app(android_app) == android_app
    # The namespace export trusts is the one the app module declares.
    build = (REPO / "android_demo/app/build.gradle.kts").read_text()
    assert f'namespace = "{export.APP_NAMESPACE}"' in build


def test_app_metadata_cuts_host_paths_only():
    meta = {"labels": ["/a", "b"], "descriptions": {"b": "C:\\ not a path, prose"}, "name": "/x",
            "input": {"preprocessing_in_model": "x/255 (inside the model)", "size": [32, 32]},
            "provenance": {"run": "/home/alice/edge derm/runs/run 7", "dataset_hashes": ["abc"],
                           "sources": ["C:\\Users\\bob\\data\\ham", "~/datasets/isic", "relative/dir"]},
            "verification": {"passed": True, "files": [{"path": "/tmp/xyz/verify.npz"}]}}
    got = without_host_paths(meta)
    assert got["provenance"]["run"] == "run 7"
    assert got["provenance"]["sources"] == ["ham", "isic", "relative/dir"]
    assert got["verification"] == {"passed": True, "files": [{"path": "verify.npz"}]}
    # Names and prose are not paths, whatever they start with; other values are untouched.
    assert got["labels"] == ["/a", "b"] and got["name"] == "/x" and got["descriptions"] == meta["descriptions"]
    assert got["input"] == meta["input"] and got["provenance"]["dataset_hashes"] == ["abc"]
    assert host_paths(got) == []
    assert len(host_paths(meta)) == 4
    assert meta["provenance"]["run"].startswith("/home/alice")  # the input is not modified


def _tree(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)


def test_swap_in_replaces_and_drops(tmp_path):
    app, staged = tmp_path / "app", tmp_path / "staged"
    _tree(app, {"model": "old model", "samples/a.png": "old a", "expected": "old expected"})
    _tree(staged, {"model": "new model", "samples/b.png": "new b"})
    export.swap_in([(staged / "model", app / "model"), (staged / "samples", app / "samples")],
                   [app / "expected", app / "never existed"], tmp_path / "backup")
    assert _snapshot(app) == {"model": b"new model", "samples/b.png": b"new b"}


@pytest.mark.parametrize("fail_at", range(1, 10))  # 4 backups, then 5 installs
def test_swap_in_is_all_or_nothing(tmp_path, monkeypatch, fail_at):
    """A failure at any rename leaves the app exactly as it was (nothing half-written)."""
    app, staged = tmp_path / "app", tmp_path / "staged"
    _tree(app, {"assets/model.tflite": "old model", "assets/model.json": "{}", "test/samples/a.png": "old a",
                "test/expected.json": "old expected"})
    _tree(staged, {"model.tflite": "new model", "model.json": "{\"new\": 1}", "labels.txt": "x\n",
                   "samples/b.png": "new b", "expected.json": "new expected"})
    before = _snapshot(app)
    real_replace, calls = os.replace, []

    def flaky(src, dst):
        calls.append(Path(dst))
        if len(calls) == fail_at:
            raise OSError(28, "No space left on device")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", flaky)
    moves = [(staged / n, app / "assets" / n) for n in ("model.tflite", "model.json", "labels.txt")]
    moves += [(staged / "samples", app / "test/samples"), (staged / "expected.json", app / "test/expected.json")]
    with pytest.raises(OSError, match="No space"):
        export.swap_in(moves, [], tmp_path / "backup")
    monkeypatch.setattr(os, "replace", real_replace)
    assert _snapshot(app) == before
    # The failure hit a backup (the first 4 renames) or an install into the app (the last 5).
    assert (calls[fail_at - 1].parent == tmp_path / "backup") == (fail_at <= 4)
    assert not (app / "assets/labels.txt").exists()
