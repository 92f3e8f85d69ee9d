"""edge_derm.runtime: validation before the interpreter, metadata reader, (de)quantisation, no TensorFlow."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from edge_derm.errors import DataError, ModelError
from edge_derm.runtime import (
    METADATA_NAME,
    TFLiteModel,
    dequantize,
    inspect_tflite,
    quantize,
    read_metadata,
    top_k,
    validate_tflite,
)


@pytest.mark.parametrize("fraction", [0.0, 0.01, 0.3, 0.6, 0.95, 0.999])
def test_truncated_file_is_a_model_error(cv_converted, tmp_path, fraction):
    data = (cv_converted / "model.int8.tflite").read_bytes()
    bad = tmp_path / "cut model.tflite"
    bad.write_bytes(data[:int(len(data) * fraction)])
    with pytest.raises(ModelError, match="not a valid .tflite|truncated"):
        TFLiteModel(bad)


def test_corrupt_files(cv_converted, tmp_path):
    good = (cv_converted / "model.fp32.tflite").read_bytes()
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"PK\x03\x04" + b"\0" * 100)  # a zip (e.g. a .keras file) renamed
    with pytest.raises(ModelError, match="not a valid .tflite"):
        validate_tflite(bad)
    # The root offset pointing past the end.
    bad.write_bytes(b"\xff\xff\xff\x7f" + good[4:])
    with pytest.raises(ModelError):
        validate_tflite(bad)
    # Random bytes after a valid identifier, many seeds: always an error or a sound parse, never a crash.
    rng = np.random.default_rng(0)
    for _ in range(20):
        blob = np.frombuffer(good, np.uint8).copy()
        blob[rng.integers(8, len(blob), 30)] = rng.integers(0, 256, 30, dtype=np.uint8)
        try:
            inspect_tflite(bytes(blob))
        except ModelError:
            pass
    with pytest.raises(ModelError, match="not found"):
        validate_tflite(tmp_path / "nope.tflite")


def test_read_metadata_roundtrip_and_absent(cv_converted, tmp_path):
    from edge_derm.converters.metadata import embed_metadata

    meta = read_metadata(cv_converted / "model.fp16.tflite")
    assert meta["quantization"] == "fp16" and meta["input"]["resize"] == "nearest"
    raw = (cv_converted / "model.fp16.tflite").read_bytes()
    info = inspect_tflite(raw)
    assert METADATA_NAME in info.metadata
    # Re-embedding replaces (never duplicates) the entry and keeps the model runnable.
    again = embed_metadata(raw, {"hello": "wörld"})
    assert read_metadata(again) == {"hello": "wörld"}
    assert list(inspect_tflite(again).metadata).count(METADATA_NAME) == 1
    # A model without our metadata: None, and the runtime falls back to labels.txt beside it.
    plain = tmp_path / "plain model.tflite"
    info = inspect_tflite(raw)
    from ai_edge_litert import schema_py_generated as schema
    import flatbuffers

    obj = schema.ModelT.InitFromPackedBuf(bytearray(raw), 0)
    obj.metadata = [m for m in obj.metadata if m.name.decode() != METADATA_NAME]
    b = flatbuffers.Builder(0)
    b.Finish(obj.Pack(b), file_identifier=b"TFL3")
    plain.write_bytes(bytes(b.Output()))
    assert read_metadata(plain) is None
    assert TFLiteModel(plain).labels == ["class_0", "class_1", "class_2"]
    (tmp_path / "labels.txt").write_text("a\nb\nc\n")
    assert TFLiteModel(plain).labels == ["a", "b", "c"]
    (tmp_path / "labels.txt").write_text("a\nb\n")
    with pytest.raises(ModelError, match="2 labels .* but the model has 3 outputs"):
        TFLiteModel(plain)


def test_metadata_not_json(cv_converted):
    from edge_derm.converters.metadata import embed_metadata

    raw = (cv_converted / "model.fp32.tflite").read_bytes()
    blob = embed_metadata(raw, {"x": 1}).replace(b'{"x": 1}', b'{"x": 1,')
    with pytest.raises(ModelError, match="not valid JSON"):
        read_metadata(blob)


def test_quantize_dequantize():
    x = np.array([0.0, 1.0, 127.4, 255.0, 300.0, -5.0], np.float32)
    assert quantize(x, np.uint8, 1.0, 0).tolist() == [0, 1, 127, 255, 255, 0]
    assert quantize(x, np.int8, 1.0, -128).tolist() == [-128, -127, -1, 127, 127, -128]
    q = np.array([-128, 0, 127], np.int8)
    assert np.allclose(dequantize(q, 1 / 256, -128), [0.0, 0.5, 255 / 256])


@pytest.mark.parametrize("mode", ["fp32", "int8"])
def test_predict_matches_keras(cv_converted, cv_run, cv_dataset, mode):
    import tf_keras as keras

    from edge_derm.data.manifest import Manifest

    paths, labels = Manifest.load(cv_dataset).arrays("test")
    model = TFLiteModel(cv_converted / f"model.{mode}.tflite", num_threads=1)
    assert model.labels == ["MM", "Nev", "BCC"] and model.input_size == 32
    probs, errors = model.predict_files(paths, batch_size=5)  # several batch sizes incl. a partial one
    assert errors == {} and probs.shape == (len(paths), 3)
    assert np.allclose(probs.sum(1), 1.0, atol=0.02)
    ref = keras.models.load_model(cv_run / "model.keras").predict(np.stack([model.load_image(p) for p in paths]),
                                                                 verbose=0)
    agree = (probs.argmax(1) == ref.argmax(1)).mean()
    assert agree >= (1.0 if mode == "fp32" else 0.85)
    assert (probs.argmax(1) == labels).mean() >= 0.8  # the fixture model learned the classes
    with pytest.raises(DataError, match="does not match the model input"):
        model.predict(np.zeros((1, 16, 16, 3), np.float32))


def test_top_k():
    assert top_k(np.array([0.1, 0.7, 0.2]), ["a", "b", "c"], 2) == [("b", pytest.approx(0.7)), ("c", pytest.approx(0.2))]


def test_runtime_imports_no_tensorflow(cv_converted):
    code = ("import sys, edge_derm.runtime as r; m = r.TFLiteModel(sys.argv[1]); "
            "import numpy as np; m.predict(np.zeros((2, 32, 32, 3), np.float32)); "
            "bad = [k for k in sys.modules if k.split('.')[0] in ('tensorflow', 'tf_keras', 'keras')]; "
            "print(bad)")
    out = subprocess.run([sys.executable, "-c", code, str(cv_converted / "model.int8.tflite")],
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
