"""edge-derm predict: top-k, JSON, per-file errors, no TensorFlow."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from edge_derm import cli
from edge_derm.data.manifest import Manifest


def _test_images(cv_dataset, n=3):
    paths, labels = Manifest.load(cv_dataset).arrays("test")
    picks = [0, 6, 12][:n]
    return [paths[i] for i in picks], [["MM", "Nev", "BCC"][labels[i]] for i in picks]


def test_predict_json_top_k(cv_converted, cv_dataset, capsys):
    paths, truth = _test_images(cv_dataset)
    rc = cli.main(["predict", str(cv_converted / "model.int8.tflite"), *paths, "--top-k", "2", "--json"])
    out = capsys.readouterr().out
    assert rc == 0
    doc = json.loads(out)
    assert doc["quantization"] == "int8"
    assert [r["image"] for r in doc["results"]] == paths
    for r, t in zip(doc["results"], truth):
        assert len(r["top"]) == 2 and r["top"][0]["label"] == t
        assert r["top"][0]["probability"] >= r["top"][1]["probability"]


def test_predict_table(cv_converted, cv_dataset, capsys):
    paths, truth = _test_images(cv_dataset, 1)
    rc = cli.main(["predict", str(cv_converted / "model.fp16.tflite"), *paths])
    out = capsys.readouterr().out
    assert rc == 0 and truth[0] in out and "%" in out


def test_unreadable_image_reported_others_classified(cv_converted, cv_dataset, tmp_path, capsys):
    paths, truth = _test_images(cv_dataset, 2)
    bad = tmp_path / "broken image.jpg"
    bad.write_bytes(b"\xff\xd8\xff garbage")
    rc = cli.main(["predict", str(cv_converted / "model.fp32.tflite"), paths[0], str(bad), paths[1], "--json"])
    captured = capsys.readouterr()
    assert rc == 1
    doc = json.loads(captured.out)
    assert doc["results"][0]["top"][0]["label"] == truth[0]
    assert doc["results"][2]["top"][0]["label"] == truth[1]
    assert "error" in doc["results"][1] and str(bad) in captured.err
    assert captured.err.count("error:") == 1 and "Traceback" not in captured.err


def test_bad_model_and_args(cv_dataset, tmp_path, capsys):
    paths, _ = _test_images(cv_dataset, 1)
    bad = tmp_path / "model.tflite"
    bad.write_bytes(b"\0" * 64)
    assert cli.main(["predict", str(bad), *paths]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "not a valid .tflite" in err and len(err.strip().splitlines()) == 1
    assert cli.main(["predict", str(tmp_path / "missing.tflite"), *paths]) == 1
    assert "not found" in capsys.readouterr().err


@pytest.mark.parametrize("threads", ["0", "99999"])
def test_thread_counts_out_of_range_are_one_line(cv_converted, cv_dataset, capsys, threads):
    """--threads 99999 used to segfault the interpreter (exit 139)."""
    paths, _ = _test_images(cv_dataset, 1)
    assert cli.main(["--quiet", "predict", str(cv_converted / "model.fp32.tflite"), *paths, "--threads", threads]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: --threads {threads} is out of range; use 1 to ") and "\n" not in err


def test_predict_never_imports_tensorflow(cv_converted, cv_dataset):
    paths, _ = _test_images(cv_dataset, 1)
    code = ("import sys; from edge_derm import cli; rc = cli.main(['--quiet', 'predict', *sys.argv[1:], '--json']); "
            "bad = [k for k in sys.modules if k.split('.')[0] in ('tensorflow', 'tf_keras', 'keras')]; "
            "print('RESULT', rc, bad)")
    out = subprocess.run([sys.executable, "-c", code, str(cv_converted / "model.int8.tflite"), *paths],
                         capture_output=True, text=True, timeout=120)
    assert "RESULT 0 []" in out.stdout, out.stderr[-2000:]
