"""The runtime install (issue 16): `pip install edge-derm` without the `train` extra runs predict,
benchmark and report on .tflite files with no TensorFlow, scikit-learn or matplotlib, and a command
that needs them says which extra to install."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from edge_derm.cli import TRAIN_MODULES

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_base_install_runs_predict_and_benchmark_without_tensorflow(bm_models, tmp_path):
    venv = tmp_path / "runtime venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    py = venv / "bin" / "python"
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    install = subprocess.run([str(py), "-m", "pip", "install", "--quiet", str(REPO)], capture_output=True,
                             text=True, timeout=600, env=env)
    if install.returncode != 0 and ("Could not find a version" in install.stderr or "connection" in install.stderr.lower()):
        pytest.skip(f"no package index reachable: {install.stderr.strip().splitlines()[-1][:200]}")
    assert install.returncode == 0, install.stderr[-2000:]
    listed = subprocess.run([str(py), "-m", "pip", "list", "--format", "json"], capture_output=True, text=True,
                            check=True, timeout=120).stdout
    names = {p["name"].lower().replace("_", "-") for p in json.loads(listed)}
    assert not names & {"tensorflow", "tf-keras", "scikit-learn", "matplotlib", "tensorflow-model-optimization"}, names
    exe = venv / "bin" / "edge-derm"
    image = tmp_path / "red.png"
    from PIL import Image

    Image.new("RGB", (32, 32), (220, 30, 30)).save(image)
    pred = subprocess.run([str(exe), "predict", str(bm_models["fp32"]), str(image), "--json"], capture_output=True,
                          text=True, timeout=120)
    assert pred.returncode == 0, pred.stderr
    assert json.loads(pred.stdout)["results"][0]["top"][0]["label"] == "red"
    from conftest import BM_CLASSES, bm_images  # a dataset folder for benchmark --data
    from edge_derm.data.manifest import Record, write_manifest

    data = tmp_path / "data"
    (data / "images").mkdir(parents=True)
    imgs, labels = bm_images(n_per_class=3)
    records = []
    for i, (img, lab) in enumerate(zip(imgs, labels)):
        Image.fromarray(img.astype("uint8")).save(data / f"images/{i}.png")
        records.append(Record(f"images/{i}.png", BM_CLASSES[lab], BM_CLASSES[lab], "synthetic", f"g{i}", "test"))
    write_manifest(data, records, {"root": str(data), "source": "synthetic", "taxonomy": "native",
                                   "classes": list(BM_CLASSES)})
    bench = subprocess.run([str(exe), "-q", "benchmark", str(bm_models["fp32"]), str(bm_models["int8"]), "--data",
                            str(data), "--runs", "2", "--warmup", "0", "--out", str(tmp_path / "bench")],
                           capture_output=True, text=True, timeout=300)
    assert bench.returncode == 0, bench.stderr
    rows = json.loads((tmp_path / "bench" / "results.json").read_text())["rows"]
    assert {r["status"] for r in rows} == {"ok"} and rows[0]["metrics"]["accuracy"] == 1.0
    assert "no plots written" in bench.stderr  # matplotlib is the train extra's
    report = subprocess.run([str(exe), "-q", "report", str(tmp_path / "bench")], capture_output=True, text=True,
                            timeout=300)
    assert report.returncode == 0, report.stderr
    assert "plots need matplotlib" in (tmp_path / "bench" / "report.md").read_text()
    train = subprocess.run([str(exe), "-q", "train", "--data", str(data), "--out", str(tmp_path / "run")],
                           capture_output=True, text=True, timeout=120)
    assert train.returncode == 1 and train.stderr.strip().startswith("error: this command needs ")
    assert "pip install 'edge-derm[train]'" in train.stderr and "\n" not in train.stderr.strip()


def test_train_modules_are_the_train_extra():
    """The CLI's list of training modules matches the `train` extra of pyproject.toml."""
    import tomllib

    extra = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]["train"]
    dists = {d.split("~")[0].split(">")[0].split("=")[0].strip() for d in extra}
    module = {"tensorflow": "tensorflow", "tf-keras": "tf_keras", "tensorflow-model-optimization":
              "tensorflow_model_optimization", "scikit-learn": "sklearn", "matplotlib": "matplotlib"}
    assert {module[d] for d in dists} <= TRAIN_MODULES
