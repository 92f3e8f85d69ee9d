"""The Android app's contract with the Python side, checked without an Android SDK.

- every model.json field the Kotlin code reads is in the metadata contract (docs/ARCHITECTURE.md)
  and in what `edge-derm convert` writes;
- the fields the app requires are exactly edge_derm.export.REQUIRED_FIELDS;
- asset names agree between edge_derm.export and the Kotlin sources;
- the manifest asks for no INTERNET permission; the Gradle set-up is the one the README promises;
- export refuses models without the metadata the app needs.
"""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from edge_derm import export
from edge_derm.errors import ModelError

REPO = Path(__file__).resolve().parents[1]
APP = REPO / "android_demo"
KOTLIN = APP / "app/src/main/java/org/edgederm/demo"
READ_CALL = re.compile(r"\b(req|opt)[A-Z]\w*\(\s*\"([a-z0-9_.]+)\"")
ANDROID_NS = "{http://schemas.android.com/apk/res/android}"
TOOLS_NS = "{http://schemas.android.com/tools}"


def kotlin_reads(path: Path) -> dict[str, set[str]]:
    """Field paths a Kotlin file reads through JsonFields: {"req": {...}, "opt": {...}}."""
    out: dict[str, set[str]] = {"req": set(), "opt": set()}
    for kind, field in READ_CALL.findall(path.read_text(encoding="utf-8")):
        out[kind].add(field)
    return out


def _get(doc: dict, dotted: str):
    node = doc
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def contract_metadata() -> dict:
    """The metadata example of docs/ARCHITECTURE.md ("Convert folder"), parsed."""
    text = (REPO / "docs/ARCHITECTURE.md").read_text(encoding="utf-8")
    start = text.index("Metadata (flat;")
    block = re.search(r"```json\n(.*?)```", text[start:], re.S)
    assert block, "no json block after 'Metadata (flat;' in ARCHITECTURE.md"
    return json.loads(block.group(1).replace("{...}", "{}"))


def test_kotlin_parser_reads_fields():
    reads = kotlin_reads(KOTLIN / "core/ModelMetadata.kt")
    # The regex must find the reads (else every other check here passes vacuously).
    assert {"labels", "input.size", "input.zero_point", "output.scale"} <= reads["req"]
    assert "verification.top1_agreement" in reads["opt"]


def test_kotlin_reads_only_contract_fields():
    meta = contract_metadata()
    reads = kotlin_reads(KOTLIN / "core/ModelMetadata.kt")
    missing = sorted(f for f in reads["req"] | reads["opt"] if _get(meta, f) is None)
    assert not missing, f"Kotlin reads fields not in the ARCHITECTURE.md metadata contract: {missing}"


def test_required_fields_match_python():
    reads = kotlin_reads(KOTLIN / "core/ModelMetadata.kt")
    assert reads["req"] == set(export.REQUIRED_FIELDS)
    assert not export.metadata_problems(contract_metadata())


@pytest.mark.slow
def test_converter_writes_every_field_kotlin_reads(cv_converted):
    doc = json.loads((cv_converted / "model.json").read_text())
    reads = kotlin_reads(KOTLIN / "core/ModelMetadata.kt")
    assert doc["variants"], "the convert fixture produced no variants"
    for variant, meta in doc["variants"].items():
        # output_calibration is null for a run without a validation split (the fixture's): checked below
        assert meta["output_calibration"] is None
        missing = sorted(f for f in reads["req"] | reads["opt"]
                         if _get(meta, f) is None and not f.startswith("output_calibration."))
        assert not missing, f"convert's {variant} metadata lacks fields the app reads: {missing}"
        assert export.metadata_problems(meta) == [], variant


def test_calibrated_run_metadata_has_every_calibration_field_kotlin_reads():
    """A run calibrated with a prior shift (edge_derm.calibration.fit) gives every field the app reads."""
    import numpy as np

    from edge_derm import calibration
    from edge_derm.converters.metadata import build_metadata, tensor_io
    from edge_derm.runtime import inspect_tflite

    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(3), 60)
    block = calibration.fit(probs, rng.integers(0, 3, 60), ["MM", "Nev", "BCC"],
                            {"MM": "malignant", "Nev": "benign", "BCC": "malignant"}, target=0.9,
                            train_counts=[10, 30, 5])
    from edge_derm.artefacts import RunConfig

    run_cfg = RunConfig(classes=["MM", "Nev", "BCC"], image_size=32, taxonomy="native", calibration=block)
    io = tensor_io(inspect_tflite(_tiny_tflite()))
    meta = build_metadata(run_config=run_cfg, run_dir="r", quantization="fp32", io=io, verification={},
                          config_hash="h", versions={})
    reads = kotlin_reads(KOTLIN / "core/ModelMetadata.kt")
    calib_fields = sorted(f for f in reads["opt"] if f.startswith("output_calibration."))
    assert calib_fields and all(_get(meta, f) is not None for f in calib_fields), calib_fields
    assert meta["output_calibration"]["temperature"] == block["temperature"]


def _tiny_tflite() -> bytes:
    import tensorflow as tf

    import edge_derm  # noqa: F401
    import tf_keras as keras

    inp = keras.Input((4, 4, 3))
    model = keras.Model(inp, keras.layers.Softmax()(keras.layers.GlobalAveragePooling2D()(inp)))
    return tf.lite.TFLiteConverter.from_keras_model(model).convert()


def test_asset_names_match():
    classifier = (KOTLIN / "Classifier.kt").read_text(encoding="utf-8")
    consts = dict(re.findall(r'const val (\w+_ASSET) = "([^"]+)"', classifier))
    assert consts == {"MODEL_ASSET": export.MODEL_ASSET, "METADATA_ASSET": export.METADATA_ASSET,
                      "LABELS_ASSET": export.LABELS_ASSET}
    test = (APP / "app/src/androidTest/java/org/edgederm/demo/ClassifierTest.kt").read_text(encoding="utf-8")
    assert re.search(r'const val EXPECTED = "([^"]+)"', test).group(1) == export.EXPECTED_ASSET
    # export writes into the source sets the Gradle build packages as assets.
    assert (APP / export.APP_MARKER).is_file()
    assert export.MAIN_ASSETS.parts[-3:] == ("src", "main", "assets")
    assert export.TEST_ASSETS.parts[-3:] == ("src", "androidTest", "assets")


def test_manifest_asks_for_no_internet():
    root = ET.parse(APP / "app/src/main/AndroidManifest.xml").getroot()
    granted = {p.get(f"{ANDROID_NS}name") for p in root.iter("uses-permission")
               if p.get(f"{TOOLS_NS}node") != "remove"}
    assert "android.permission.INTERNET" not in granted
    assert granted == {"android.permission.CAMERA"}
    # And a merged-in INTERNET permission from any library is stripped.
    removed = {p.get(f"{ANDROID_NS}name") for p in root.iter("uses-permission") if p.get(f"{TOOLS_NS}node") == "remove"}
    assert "android.permission.INTERNET" in removed
    app = root.find("application")
    assert app.get(f"{ANDROID_NS}allowBackup") == "false"


def test_gradle_project_setup():
    build = (APP / "app/build.gradle.kts").read_text(encoding="utf-8")
    assert int(re.search(r"minSdk = (\d+)", build).group(1)) >= 24
    assert '"com.google.ai.edge.litert:litert:' in build
    for artefact in ("camera-core", "camera-camera2", "camera-lifecycle", "camera-view"):
        assert f"androidx.camera:{artefact}:" in build
    assert 'noCompress.add("tflite")' in build
    assert "testImplementation(\"junit:junit:" in build
    assert 'include(":app")' in (APP / "settings.gradle.kts").read_text(encoding="utf-8")
    props = (APP / "gradle/wrapper/gradle-wrapper.properties").read_text(encoding="utf-8")
    assert re.search(r"distributionUrl=https\\://services\.gradle\.org/distributions/gradle-8\.\d+(\.\d+)?-bin\.zip", props)
    gradlew = APP / "gradlew"
    assert gradlew.stat().st_mode & 0o111, "gradlew must be executable"
    assert "GradleWrapperMain" in gradlew.read_text(encoding="utf-8")


def test_kotlin_core_is_android_free():
    """The core compiles with plain kotlinc: no Android, AndroidX or org.json imports."""
    for kt in (KOTLIN / "core").glob("*.kt"):
        imports = re.findall(r"^import ([\w.]+)", kt.read_text(encoding="utf-8"), re.M)
        bad = [i for i in imports if i.startswith(("android.", "androidx.", "org.json", "org.tensorflow"))]
        assert not bad, f"{kt.name} imports {bad}"


# -- export refuses models without the metadata the app needs ---------------------------------------

def _rewrite_metadata(src: Path, dst: Path, meta: dict | None) -> Path:
    """Copy a .tflite with its edge-derm metadata replaced by ``meta`` (or removed when None)."""
    from ai_edge_litert import schema_py_generated as schema
    import flatbuffers

    from edge_derm.converters.metadata import embed_metadata
    from edge_derm.runtime import FILE_IDENTIFIER, METADATA_NAME

    obj = schema.ModelT.InitFromPackedBuf(bytearray(src.read_bytes()), 0)
    obj.metadata = [m for m in (obj.metadata or []) if (m.name.decode() if isinstance(m.name, bytes) else m.name)
                    != METADATA_NAME]
    builder = flatbuffers.Builder(1024)
    builder.Finish(obj.Pack(builder), file_identifier=FILE_IDENTIFIER)
    data = bytes(builder.Output())
    dst.write_bytes(embed_metadata(data, meta) if meta is not None else data)
    return dst


@pytest.mark.slow
def test_export_refuses_a_model_without_metadata(cv_converted, tmp_path, android_app):
    from edge_derm.runtime import read_metadata

    bare = _rewrite_metadata(cv_converted / "model.fp32.tflite", tmp_path / "bare model.tflite", None)
    assert read_metadata(bare) is None
    with pytest.raises(ModelError, match="no edge-derm metadata"):
        export.export_android(bare, android_app)
    assert not (android_app / export.MAIN_ASSETS / export.MODEL_ASSET).exists()


@pytest.mark.slow
def test_export_refuses_metadata_missing_a_required_field(cv_converted, tmp_path, android_app):
    from edge_derm.runtime import read_metadata

    meta = read_metadata(cv_converted / "model.int8.tflite")
    del meta["input"]["zero_point"]
    meta["output"]["dtype"] = "int16"
    partial = _rewrite_metadata(cv_converted / "model.int8.tflite", tmp_path / "partial.tflite", meta)
    with pytest.raises(ModelError, match=r"input\.zero_point missing"):
        export.export_android(partial, android_app)
    assert not (android_app / export.MAIN_ASSETS).exists()


def test_metadata_problems_name_each_fault():
    meta = contract_metadata()
    meta["input"]["resize"] = "crop"
    meta["input"]["std"] = [1, 0, 1]
    meta["output"]["scale"] = 0
    meta["labels"] = ["a", "a"]
    problems = " | ".join(export.metadata_problems(meta))
    for fragment in ("input.resize 'crop'", "input.std has a zero", "output is quantised", "labels has duplicates"):
        assert fragment in problems
    with pytest.raises(ModelError, match="has no edge-derm metadata"):
        export.check_metadata(None, "x.tflite")


def test_every_android_xml_file_is_well_formed():
    """AAPT stops the build at the first malformed resource; parse them all here."""
    files = sorted(APP.rglob("*.xml"))
    assert any(f.name == "activity_main.xml" for f in files)
    for f in files:
        try:
            ET.parse(f)
        except ET.ParseError as exc:
            pytest.fail(f"{f.relative_to(REPO)}: {exc}")
