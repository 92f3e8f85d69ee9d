"""``edge-derm demo``: the whole pipeline end to end, bad input, the weights decision.

The fast end-to-end test runs ``--quick`` with the tiny test backbone at 32 px, trained from scratch
with the demo's from-scratch recipe (every layer from epoch 1, 30 epochs of 312 images; about a minute
on 2 cores): every artefact, the summary, the report, and test accuracy / macro F1 at least twice
chance (it lands near 3x; a model that learned nothing scores ~1x). A slow test runs the real
product path (``--quick``: MobileNetV2 from the shared ImageNet weights at 64 px).
"""

from __future__ import annotations

import errno
import json
import time
from pathlib import Path

import pytest

from edge_derm.cli import main
from edge_derm.artefacts import DemoSummary, detect
from edge_derm.demo import CHANCE, QUICK_MODES, STAGES
from edge_derm.models import get_spec
from edge_derm.models.pretrained import decide_weights, find_cached_imagenet, host_reachable

MOBILENET_224 = "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_224_no_top.h5"
MOBILENET_96 = "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_96_no_top.h5"
# Well above chance (1/13 = 7.7 %); a broken model (uniform or constant predictions) lands at ~7.7 %.
MIN_ACCURACY = 2 * CHANCE
FAST_PER_CLASS = 30
SHARED_WEIGHTS = Path(__file__).resolve().parents[2] / "shared" / "weights" / "keras"


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """One quick demo at 32 px with the tiny backbone, in a path with spaces; returns (out, exit code, stdout)."""
    out = tmp_path_factory.mktemp("demo runs") / "my demo"
    return (out, *_run_cli(["--quiet", "demo", "--quick", "--out", str(out), "--backbone", "tiny",
                            "--image-size", "32", "--per-class", str(FAST_PER_CLASS),
                            "--epochs-per-block", "6"]))


def _run_cli(argv: list[str]) -> tuple[int, str]:
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        code = main(argv)
    return code, buf.getvalue()


def test_demo_writes_every_artefact(demo_run):
    out, code, stdout = demo_run
    assert code == 0, stdout
    for rel in ("data/synth.json", "dataset/manifest.csv", "dataset/dataset.json", "run/model.keras",
                "run/config.json", "run/metrics.json", "run/history.csv", "convert/model.json", "convert/labels.txt",
                "benchmark/results.json", "benchmark/results.csv", "report.html", "report.md", "summary.json"):
        assert (out / rel).is_file(), rel
    for mode in QUICK_MODES:  # --quick converts fp32 and int8 only
        assert (out / "convert" / f"model.{mode}.tflite").stat().st_size > 1000, mode
    assert sorted(p.name for p in (out / "convert").glob("*.tflite")) == [f"model.{m}.tflite" for m in QUICK_MODES]
    # nothing left behind beside the folder (no temporary or set-aside siblings)
    assert [p.name for p in out.parent.iterdir()] == ["my demo"]
    assert f"report: {out / 'report.html'}" in stdout


def test_demo_summary(demo_run):
    out, code, stdout = demo_run
    assert code == 0
    s = json.loads((out / "summary.json").read_text())
    assert s["kind"] == "demo" and s["status"] == "complete"
    assert [st["name"] for st in s["stages"]] == list(STAGES)
    assert all(st["seconds"] >= 0 for st in s["stages"]) and s["seconds"] >= sum(st["seconds"] for st in s["stages"]) - 1
    assert s["weights"] == {"requested": "auto", "used": "none", "pretrained": False,
                            "note": "tiny has no ImageNet weights: trained from scratch"}
    assert s["dataset"]["images"] == 13 * FAST_PER_CLASS and len(s["dataset"]["classes"]) == 13
    assert s["dataset"]["splits"]["train"] + s["dataset"]["splits"]["test"] == 13 * FAST_PER_CLASS
    # from scratch: the full recipe (every layer from epoch 1, one step of 6 x 5 epochs, lr 3e-3)
    t = s["training"]
    assert t["unfreeze"] == "full" and t["steps"] == ["all"] and t["epochs"] == 30 and t["lr_backbone"] == 3e-3
    keras = s["metrics"]["keras"]
    assert keras["n"] == s["dataset"]["splits"]["test"] == 13 * 6
    # it learned: well above chance (a constant or uniform model scores ~1x chance)
    assert keras["accuracy"] >= MIN_ACCURACY and keras["macro_f1"] >= MIN_ACCURACY, keras
    assert set(s["metrics"]["variants"]) == set(QUICK_MODES)
    fp32 = s["metrics"]["variants"]["fp32"]
    assert fp32["status"] == "ok" and fp32["size_mb"] > 0 and fp32["latency_ms"]["1"] > 0
    assert abs(fp32["accuracy"] - keras["accuracy"]) < 0.05  # the .tflite is the Keras model
    assert s["metrics"]["variants"]["int8"]["accuracy"] >= MIN_ACCURACY
    assert s["gates"]["rules"] == ["macro_f1=2", "sensitivity:MM=5"]
    assert s["gates"]["passed"] == (not s["gates"]["failures"])
    bench = json.loads((out / "benchmark" / "results.json").read_text())
    assert bench["config"]["gates"] == {"macro_f1": 2.0, "sensitivity:MM": 5.0}
    assert bench["gates"]["failures"] == s["gates"]["failures"]
    # the run's metrics.json is the evaluation of the model that was saved and converted
    metrics = json.loads((out / "run" / "metrics.json").read_text())
    assert metrics["accuracy"] == pytest.approx(keras["accuracy"])
    assert "gates (macro_f1=2, sensitivity:MM=5): " in stdout and "weights: tiny has no ImageNet weights" in stdout


@pytest.mark.slow
@pytest.mark.shared
def test_demo_quick_mobilenet_is_above_chance(tmp_path, monkeypatch):
    """``demo --quick`` as the README shows it: MobileNetV2 0.35 from ImageNet weights at 64 px learns."""
    if not SHARED_WEIGHTS.is_dir():
        pytest.skip(f"{SHARED_WEIGHTS} is absent (offline ImageNet weights)")
    monkeypatch.setenv("KERAS_HOME", str(SHARED_WEIGHTS))
    out = tmp_path / "mobile demo"
    code, stdout = _run_cli(["--quiet", "demo", "--quick", "--out", str(out)])
    assert code == 0, stdout
    s = json.loads((out / "summary.json").read_text())
    assert s["weights"]["pretrained"] and "Keras cache" in s["weights"]["note"]
    assert s["training"]["steps"] == ["head", "A", "B"]
    keras = s["metrics"]["keras"]
    assert keras["n"] == 13 * 6
    assert keras["accuracy"] >= MIN_ACCURACY and keras["macro_f1"] >= MIN_ACCURACY, keras
    assert s["metrics"]["variants"]["fp32"]["accuracy"] >= MIN_ACCURACY


def test_demo_report_states_the_weights(demo_run):
    out, _, _ = demo_run
    html = (out / "report.html").read_text()
    md = (out / "report.md").read_text()
    for text in (html, md):
        assert "trained from scratch" in text and "unfreeze full" in text
        assert "demo schedule" in text and "BatchNorm" in text  # the demo's weights note, from summary.json
        assert "Demo" in text and "x chance" in text  # the section from summary.json
    assert "model.int8.tflite" in md and "<img" in html
    assert "| stage | seconds |" in md and "| benchmark |" in md  # stage timings before the report stage
    # the weights note (decision, schedule, BatchNorm re-estimation) is the demo's own record, in its summary;
    # the run folder is training's alone
    note = json.loads((out / "summary.json").read_text())["weights_note"]
    assert note.startswith("tiny has no ImageNet weights: trained from scratch; demo schedule (from scratch")
    assert "unfreeze full" in note and "full, 1 step(s) x 30 epochs" in note and "BatchNorm" in note
    cfg = json.loads((out / "run" / "config.json").read_text())
    assert cfg["weights"] == "none" and "weights_note" not in cfg


def test_demo_summary_round_trips_as_an_artefact(demo_run, tmp_path):
    """summary.json as a real demo writes it reads as a DemoSummary and writes back the same document."""
    out, code, _ = demo_run
    assert code == 0
    doc = json.loads((out / "summary.json").read_text())
    summary = DemoSummary.read(out)
    assert summary.to_json() == doc
    assert (summary.status, summary.out, summary.quick) == ("complete", str(out.resolve()), True)
    assert [st["name"] for st in summary.stages] == list(STAGES) and summary.sizes["modes"] == list(QUICK_MODES)
    assert summary.get("weights")["used"] == "none" and summary.get("weights_note")
    assert isinstance(detect(out), DemoSummary)
    copy = tmp_path / "summary copy.json"
    assert DemoSummary.from_json(doc).write(copy) == copy
    assert json.loads(copy.read_text()) == doc and DemoSummary.read(copy) == summary


def test_demo_refuses_existing_out_without_force(tmp_path, capsys):
    out = tmp_path / "taken dir"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert main(["--quiet", "demo", "--quick", "--out", str(out)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "already exists" in err and "--force" in err and "\n" not in err
    assert (out / "keep.txt").read_text() == "mine" and sorted(p.name for p in out.iterdir()) == ["keep.txt"]


def test_demo_force_refuses_a_folder_that_is_not_a_demo(tmp_path, capsys):
    out = tmp_path / "precious"
    out.mkdir()
    (out / "thesis.tex").write_text("x")
    assert main(["--quiet", "demo", "--quick", "--out", str(out), "--force"]) == 1
    assert "not a demo folder" in capsys.readouterr().err
    assert (out / "thesis.tex").is_file()


def test_demo_failure_restores_the_previous_demo(tmp_path, capsys, monkeypatch):
    import edge_derm.data.synth as synth

    out = tmp_path / "old demo"
    out.mkdir()
    (out / "summary.json").write_text(json.dumps({"kind": "demo", "status": "complete", "marker": 1}))

    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(out / "data"))

    monkeypatch.setattr(synth, "generate_dataset", disk_full)
    assert main(["--quiet", "demo", "--quick", "--out", str(out), "--force"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: No space left on device") and "\n" not in err
    assert json.loads((out / "summary.json").read_text())["marker"] == 1
    assert sorted(p.name for p in out.iterdir()) == ["summary.json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old demo"]


def test_demo_failure_removes_a_new_folder(tmp_path, monkeypatch):
    import edge_derm.data.build as build

    def broken(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", "dataset")

    monkeypatch.setattr(build, "build_dataset", broken)
    out = tmp_path / "new demo"
    assert main(["--quiet", "demo", "--quick", "--out", str(out), "--backbone", "tiny", "--image-size", "16",
                 "--per-class", "5"]) == 1
    assert not out.exists() and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("args, message", [
    (["--weights", "no/such/file.h5"], "neither auto, imagenet, none nor an existing file"),
    (["--per-class", "2"], "at least 5"),
    (["--backbone", "vgg99"], "unknown backbone"),
    (["--image-size", "8"], "too small"),
])
def test_demo_bad_options(tmp_path, capsys, args, message):
    out = tmp_path / "never"
    assert main(["--quiet", "demo", "--out", str(out), *args]) != 0
    assert message in capsys.readouterr().err
    assert not out.exists()


# -- the --weights auto decision ---------------------------------------------------------------

@pytest.fixture
def keras_home(tmp_path, monkeypatch):
    home = tmp_path / "keras home"
    (home / "models").mkdir(parents=True)
    monkeypatch.setenv("KERAS_HOME", str(home))
    monkeypatch.setenv("EDGE_DERM_OFFLINE", "1")
    return home / "models"


def test_weights_auto_uses_the_exact_cached_file(keras_home):
    (keras_home / MOBILENET_96).write_bytes(b"h5")
    d = decide_weights("auto", "mobilenet_v2", 0.35, 96)
    assert d.weights == "imagenet" and d.pretrained and "Keras cache" in d.note
    assert find_cached_imagenet(get_spec("mobilenet_v2"), 0.35, 96) == keras_home / MOBILENET_96


def test_weights_auto_uses_another_size_of_the_same_alpha(keras_home):
    (keras_home / MOBILENET_224).write_bytes(b"h5")
    d = decide_weights("auto", "mobilenet_v2", 0.35, 96)
    assert d.weights == str(keras_home / MOBILENET_224) and d.pretrained and "224 px" in d.note
    # a different alpha's file does not count
    assert decide_weights("auto", "mobilenet_v2", 0.5, 96).weights == "none"


def test_weights_auto_offline_trains_from_scratch(keras_home):
    t0 = time.perf_counter()
    d = decide_weights("auto", "mobilenet_v2", 0.35, 96)
    assert time.perf_counter() - t0 < 1.0  # EDGE_DERM_OFFLINE: no network probe at all
    assert d.weights == "none" and not d.pretrained
    assert "not cached" in d.note and "trained from scratch" in d.note and MOBILENET_96 in d.note


def test_weights_auto_unreachable_host_is_bounded(keras_home, monkeypatch):
    import edge_derm.models.pretrained as pretrained

    monkeypatch.delenv("EDGE_DERM_OFFLINE")
    monkeypatch.setattr(pretrained, "WEIGHTS_HOST", ("edge-derm-weights.invalid", 443))
    t0 = time.perf_counter()
    d = decide_weights("auto", "mobilenet_v2", 0.35, 96, timeout=1.0)
    assert time.perf_counter() - t0 < 3.0
    assert d.weights == "none" and "not reachable within 1 s" in d.note


def test_host_reachable_times_out_quickly():
    t0 = time.perf_counter()
    assert host_reachable(("192.0.2.1", 9), timeout=0.5) is False  # TEST-NET-1: never answers
    assert time.perf_counter() - t0 < 2.0


def test_weights_explicit_choices(keras_home, tmp_path):
    assert decide_weights("none", "mobilenet_v2", 0.35, 96).weights == "none"
    assert decide_weights("imagenet", "mobilenet_v2", 0.35, 96).weights == "imagenet"
    f = tmp_path / "w.h5"
    f.write_bytes(b"h5")
    d = decide_weights(str(f), "mobilenet_v2", 0.35, 96)
    assert d.weights == str(f) and d.pretrained
    assert decide_weights("auto", "tiny", None, 32).note == "tiny has no ImageNet weights: trained from scratch"
    from edge_derm.errors import ConfigError

    with pytest.raises(ConfigError, match="no ImageNet weights"):
        decide_weights("imagenet", "tiny", None, 32)
