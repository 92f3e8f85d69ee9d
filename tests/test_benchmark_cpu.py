"""CPU benchmark on tiny .tflite models: rows, statuses, accuracy, deltas, gates, files, CLI."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import BM_CLASSES, bm_images

from edge_derm.benchmarks import BenchmarkConfig, EvalSet, Gate, run_benchmark, write_results
from edge_derm.benchmarks.latency import PeakMemory, summarize, time_calls
from edge_derm.cli import main
from edge_derm.errors import ConfigError, ModelError, OutputExistsError

FAST = {"warmup": 1, "runs": 3}


@pytest.fixture(scope="module")
def evalset() -> EvalSet:
    imgs, labels = bm_images()
    keys = [f"img {i}" for i in range(len(imgs))]
    table = dict(zip(keys, imgs))

    def loader(path: str, size: int, mode: str) -> np.ndarray:
        assert size == 32  # test plumbing: the harness must ask for the model's own input size
        return table[path]

    return EvalSet(keys, labels, list(BM_CLASSES), loader, source="in-memory")


def expected_predictions(kernel: np.ndarray) -> np.ndarray:
    imgs, _ = bm_images()
    return (imgs.mean(axis=(1, 2)) @ kernel).argmax(1)


@pytest.fixture(scope="module")
def result(bm_models, evalset):
    config = BenchmarkConfig(models=[bm_models["fp32"], bm_models["int8"], bm_models["degraded"], bm_models["corrupt"]],
                             threads=[1, 2], **FAST)
    return run_benchmark(config, data=evalset)


def rows_of(result, model: str) -> list[dict]:
    return [r for r in result.rows if r["model"] == model]


def test_one_row_per_model_and_threads(result):
    assert len(result.rows) == 8
    assert {(r["model"], r["threads"]) for r in result.rows} == {
        (m, t) for m in ("model.fp32.tflite", "model.int8.tflite", "model.dynamic.tflite", "broken model.fp16.tflite")
        for t in (1, 2)}
    assert {r["device"] for r in result.rows} == {"cpu"}


def test_ok_rows_have_latency_size_and_quantization(result, bm_models):
    for r in rows_of(result, "model.int8.tflite") + rows_of(result, "model.fp32.tflite"):
        assert r["status"] == "ok", r["reason"]
        assert 0 < r["latency_min_ms"] <= r["latency_median_ms"] <= r["latency_p90_ms"]
        assert r["images_per_s"] == pytest.approx(1000 / r["latency_median_ms"])
        assert r["runs"] == FAST["runs"]
        assert r["peak_memory_mb"] is None or r["peak_memory_mb"] >= 0
    int8 = rows_of(result, "model.int8.tflite")[0]
    assert int8["quantization"] == "int8"
    assert int8["size_mb"] == pytest.approx(Path(bm_models["int8"]).stat().st_size / 1e6, rel=1e-3)


def test_corrupt_model_is_a_failed_validation_row(result):
    for r in rows_of(result, "broken model.fp16.tflite"):
        assert r["status"] == "failed validation"
        assert "not a valid .tflite" in r["reason"]
        assert r["latency_median_ms"] is None and r["metrics"] is None


def test_accuracy_matches_the_models_arithmetic(result, bm_models):
    _, labels = bm_images()
    fp32 = rows_of(result, "model.fp32.tflite")[0]["metrics"]
    bad = rows_of(result, "model.dynamic.tflite")[0]["metrics"]
    want_bad = expected_predictions(bm_models["kernel_bad"])
    assert fp32["accuracy"] == pytest.approx(np.mean(expected_predictions(bm_models["kernel_good"]) == labels))
    assert fp32["accuracy"] == 1.0
    assert bad["accuracy"] == pytest.approx(np.mean(want_bad == labels))
    blue_sens = np.mean(want_bad[labels == 2] == 2)
    assert bad["per_class"]["blue"]["sensitivity"] == pytest.approx(blue_sens)
    assert blue_sens < 1.0  # the fixture really degrades the blue class


def test_deltas_and_disagreement_against_fp32(result, bm_models):
    _, labels = bm_images()
    bad = rows_of(result, "model.dynamic.tflite")[0]
    assert bad["reference"] == "model.fp32.tflite"
    want_bad = expected_predictions(bm_models["kernel_bad"])
    assert bad["deltas"]["per_class"]["blue"]["sensitivity"] == pytest.approx(np.mean(want_bad[labels == 2] == 2) - 1.0)
    assert bad["disagreement"] == pytest.approx(np.mean(want_bad != labels))
    ref = rows_of(result, "model.fp32.tflite")[0]
    assert ref["deltas"]["macro_f1"] == 0.0 and ref["disagreement"] == 0.0
    int8 = rows_of(result, "model.int8.tflite")[0]
    assert int8["disagreement"] == 0.0
    assert abs(int8["deltas"]["macro_f1"]) < 1e-9


def gate_result(bm_models, evalset, gates, models=("fp32", "int8", "degraded"), **kw):
    config = BenchmarkConfig(models=[bm_models[m] for m in models], gates=gates, **FAST, **kw)
    return run_benchmark(config, data=evalset)


def test_gates_pass_for_the_faithful_int8_model(bm_models, evalset):
    res = gate_result(bm_models, evalset, ["macro_f1=1.0", "sensitivity:*=0.5"], models=("fp32", "int8"))
    assert res.gate_failures == []


def test_gates_fail_on_the_class_that_dropped(bm_models, evalset):
    res = gate_result(bm_models, evalset, ["sensitivity:blue=2.0", "sensitivity:red=0.0"])
    assert len(res.gate_failures) == 1
    msg = res.gate_failures[0]
    # the prefix is how `edge-derm report` matches failures to rows (docs/ARCHITECTURE.md)
    assert msg.startswith("model.dynamic.tflite (cpu, 1 threads): sensitivity:blue dropped")
    assert "allowed 2" in msg
    assert {r["model"]: r["gate_passed"] for r in res.rows} == {
        "model.fp32.tflite": True, "model.int8.tflite": True, "model.dynamic.tflite": False}


def test_gate_threshold_is_the_boundary(bm_models, evalset):
    _, labels = bm_images()
    want_bad = expected_predictions(bm_models["kernel_bad"])
    drop = 100 * (1 - np.mean(want_bad[labels == 2] == 2))
    assert gate_result(bm_models, evalset, [f"sensitivity:blue={drop + 0.01}"]).gate_failures == []
    assert gate_result(bm_models, evalset, [f"sensitivity:blue={drop - 0.01}"]).gate_failures


def test_explicit_reference(bm_models, evalset):
    res = gate_result(bm_models, evalset, [], models=("fp32", "degraded"), reference=bm_models["degraded"])
    fp32 = rows_of(res, "model.fp32.tflite")[0]
    assert fp32["reference"] == "model.dynamic.tflite"
    assert fp32["deltas"]["per_class"]["blue"]["sensitivity"] > 0


def test_gate_on_unknown_class_is_an_error(bm_models, evalset):
    with pytest.raises(Exception, match="class 'MM' is not in the dataset"):
        gate_result(bm_models, evalset, ["sensitivity:MM=2.0"])


@pytest.mark.parametrize("spec", ["macro_f1", "macro_f1=-1", "macro_f1=abc", "speed=1", "sensitivity=2", "f1:=1"])
def test_bad_gate_specs(spec):
    with pytest.raises(ConfigError, match="--max-drop"):
        Gate.parse(spec)


def test_gate_parse():
    assert Gate.parse("sensitivity:MM=2.5") == Gate("sensitivity", "MM", 2.5)
    assert Gate.parse("macro_f1=1").key == "macro_f1"


@pytest.mark.parametrize("kw, match", [
    ({"threads": [0]}, "--threads"), ({"runs": 0}, "--runs"), ({"warmup": -1}, "--warmup"),
    ({"threads": [99999]}, "--threads 99999 is out of range; use 1 to"),  # it used to segfault the runtime
    ({"timeout": float("inf")}, "--timeout inf must be a positive number"),  # it used to give a traceback
    ({"timeout": float("nan")}, "--timeout nan must be a positive number"),
    ({"device": "android", "benchmark_binary": "b", "threads": [1000]}, "out of range for a phone"),
    ({"device": "gpu"}, "--device"), ({"split": "dev"}, "--split"),
    ({"device": "android"}, "--benchmark-binary"),
    ({"use_gpu": True}, "only apply to --device android"),
    ({"device": "android", "benchmark_binary": "b", "cpu_mask": "f0; rm -rf /"}, "--cpu-mask"),
    ({"models": []}, "no models"),
])
def test_config_validation(kw, match):
    args = {"models": ["m.tflite"], **kw}
    with pytest.raises(ConfigError, match=match):
        BenchmarkConfig(**args)


def test_folder_expands_and_missing_model_is_an_error(bm_models, tmp_path):
    with pytest.raises(ConfigError, match="--data"):
        run_benchmark(BenchmarkConfig(models=[bm_models["fp32"]], gates=["macro_f1=1"]))
    res = run_benchmark(BenchmarkConfig(models=[bm_models["dir"]], **FAST))
    assert len(res.rows) == 4 and all(r["metrics"] is None for r in res.rows)
    with pytest.raises(ModelError, match="not found"):
        run_benchmark(BenchmarkConfig(models=[tmp_path / "nope.tflite"]))
    (tmp_path / "empty dir").mkdir()
    with pytest.raises(ModelError, match="no .tflite files"):
        run_benchmark(BenchmarkConfig(models=[tmp_path / "empty dir"]))


def test_write_results_files_and_no_overwrite(result, tmp_path):
    out = tmp_path / "bench out"
    written = write_results(out, result)
    names = {p.name for p in written}
    assert {"results.csv", "results.json", "latency_vs_macro_f1.png", "per_class_f1.png",
            "sensitivity_deltas.png"} <= names
    for p in written:
        assert p.is_file() and p.stat().st_size > 0
    doc = json.loads((out / "results.json").read_text())
    assert doc["kind"] == "benchmark" and len(doc["rows"]) == 8 and doc["config"]["threads"] == [1, 2]
    with open(out / "results.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 8
    bad = next(r for r in rows if r["model"] == "model.dynamic.tflite")
    assert float(bad["delta_sensitivity:blue"]) < 0
    assert "f1:red" in bad and "delta_f1:green" in bad
    with pytest.raises(OutputExistsError):
        write_results(out, result)
    write_results(out, result, force=True)


def test_time_calls_and_summary():
    calls = []
    stats = time_calls(lambda: calls.append(1), warmup=2, runs=5)
    assert len(calls) == 7 and stats.runs == 5
    s = summarize([0.001, 0.002, 0.003, 0.004, 0.010])
    assert s.median_ms == pytest.approx(3.0) and s.min_ms == pytest.approx(1.0)
    assert s.p90_ms == pytest.approx(7.6)
    with pytest.raises(ValueError):
        summarize([])


def test_peak_memory_sees_a_big_allocation():
    with PeakMemory() as mem:
        block = np.ones(64 * 1024 * 1024 // 8)  # 64 MB touched
        del block
    if mem.delta_mb is None:
        pytest.skip("no /proc/self/status on this platform")
    assert mem.delta_mb > 40


# -- CLI ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def bm_dataset(tmp_path_factory) -> Path:
    from PIL import Image

    from edge_derm.data.manifest import Record, write_manifest

    root = tmp_path_factory.mktemp("bmdata") / "my data set"
    (root / "images").mkdir(parents=True)
    imgs, labels = bm_images()
    records = []
    for i, (img, lab) in enumerate(zip(imgs, labels)):
        name = f"images/img {i}.png"
        Image.fromarray(img.astype(np.uint8)).save(root / name)
        records.append(Record(name, BM_CLASSES[lab], BM_CLASSES[lab], "synthetic", f"g{i}", "test"))
    write_manifest(root, records, {"root": str(root), "source": "synthetic", "taxonomy": "native",
                                   "classes": list(BM_CLASSES)})
    return root


def test_cli_writes_results_and_gates_exit_1(bm_models, bm_dataset, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "160")  # rich sizes the table to the terminal
    out = tmp_path / "cli out"
    models = [str(bm_models["fp32"]), str(bm_models["degraded"])]
    rc = main(["-q", "benchmark", *models, "--data", str(bm_dataset), "--runs", "2", "--warmup", "0",
               "--threads", "1", "--out", str(out), "--max-drop", "sensitivity:blue=2.0"])
    captured = capsys.readouterr()
    assert rc == 1
    assert "gate failed: model.dynamic.tflite" in captured.err
    assert (out / "results.json").is_file()  # written before the gate verdict
    doc = json.loads((out / "results.json").read_text())
    assert doc["gates"]["passed"] is False
    assert "\nmodel.fp32\t" in captured.out and "\nmodel.dynamic\t" in captured.out  # the table (TSV: piped)
    rc = main(["-q", "benchmark", *models, "--data", str(bm_dataset), "--runs", "2", "--out", str(out)])
    assert rc == 1 and "already exists" in capsys.readouterr().err
    rc = main(["-q", "benchmark", models[0], "--data", str(bm_dataset), "--runs", "2", "--out", str(out),
               "--force", "--max-drop", "macro_f1=0.0"])
    assert rc == 0


@pytest.mark.parametrize("args, match", [
    (["--threads", "1,x"], "--threads"),
    (["--max-drop", "speed=1"], "--max-drop"),
    (["--device", "android"], "--benchmark-binary"),
])
def test_cli_bad_arguments_are_one_line(bm_models, args, match, capsys):
    rc = main(["-q", "benchmark", str(bm_models["fp32"]), *args])
    err = capsys.readouterr().err
    assert rc != 0 and match in err


def test_benchmark_on_tflite_imports_no_tensorflow(bm_models, bm_dataset, tmp_path):
    code = ("import sys\nfrom edge_derm.cli import main\n"
            f"rc = main(['-q', 'benchmark', {str(bm_models['int8'])!r}, '--data', {str(bm_dataset)!r}, "
            f"'--runs', '2', '--out', {str(tmp_path / 'o')!r}])\n"
            "assert rc == 0, rc\n"
            "bad = [m for m in sys.modules if m == 'tensorflow' or m.startswith(('tensorflow.', 'tf_keras'))]\n"
            "print('TF', bad)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "TF []" in proc.stdout


def test_flops_count_and_measure_pair(bm_models):
    from edge_derm.benchmarks import flops
    from edge_derm.benchmarks.latency import open_interpreter
    from measure_latency import measure_pair

    assert flops.count_macs(open_interpreter(bm_models["fp32"], 1)) == 32 * 32 * 3 * 3  # the 1x1 head conv
    info = {"model": "x", "mhz": 2000.0, "flags": {"avx2", "fma"}, "cores": 4}
    assert flops.nominal_peak_gmacs(1, "fp32", info) == pytest.approx(32.0)  # 2 pipes x 8 lanes x 2 GHz
    assert flops.nominal_peak_gmacs(2, "int8", info) == pytest.approx(128.0)  # no VNNI: 2 MACs per lane
    pair = measure_pair({"fp32": bm_models["fp32"], "int8": bm_models["int8"]}, 1, warmup=1, runs=3, rounds=2)
    assert set(pair) == {"fp32", "int8"}
    assert pair["int8"]["int8_speedup"] > 0 and abs(pair["fp32"]["overhead"]) < 10
    assert len(pair["fp32"]["round_medians_ms"]) == 2


def test_model_labels_are_matched_to_the_dataset_by_name(bm_models, evalset, tmp_path):
    shuffled, alien = tmp_path / "shuffled labels", tmp_path / "other labels"
    for folder, labels in ((shuffled, BM_CLASSES[::-1]), (alien, ["a", "b", "c"])):
        folder.mkdir()
        shutil.copyfile(bm_models["fp32"], folder / "model.fp32.tflite")
        (folder / "labels.txt").write_text("\n".join(labels) + "\n")
    res = run_benchmark(BenchmarkConfig(models=[shuffled], **FAST), data=evalset)
    row = res.rows[0]
    # outputs are read by their labels: output 0 now claims to be "blue", so red images score as blue
    assert row["metrics"]["accuracy"] == pytest.approx(1 / 3)
    assert row["metrics"]["per_class"]["green"]["sensitivity"] == 1.0
    from edge_derm.errors import DataError

    # a dataset class the model does not know is an error naming the classes (issue 18), not a row
    with pytest.raises(DataError, match=r"has none of its classes \(red, green, blue\) among model.fp32.tflite.s \(a, b, c\)"):
        run_benchmark(BenchmarkConfig(models=[alien], **FAST), data=evalset)


def test_unreadable_images_are_skipped_and_counted(bm_models, evalset):
    from edge_derm.errors import DataError

    def flaky(path, size, mode):
        if path == "img 0":
            raise DataError("img 0: truncated image")
        return evalset.loader(path, size, mode)

    data = EvalSet(evalset.paths, evalset.labels, evalset.classes, flaky)
    res = run_benchmark(BenchmarkConfig(models=[bm_models["fp32"]], **FAST), data=data)
    row = res.rows[0]
    assert row["unreadable_images"] == 1
    assert row["metrics"]["n"] == len(evalset.paths) - 1


def test_run_folder_with_a_convert_subfolder(bm_models, tmp_path):
    run = tmp_path / "run x"
    (run / "convert").mkdir(parents=True)
    shutil.copyfile(bm_models["int8"], run / "convert" / "model.int8.tflite")
    res = run_benchmark(BenchmarkConfig(models=[run], **FAST))
    assert [r["model"] for r in res.rows] == ["model.int8.tflite"] and res.rows[0]["status"] == "ok"


# -- results.json as typed artefacts (edge_derm.artefacts) ------------------------------------------

def test_results_json_round_trips_as_benchmark_results(bm_models, evalset, tmp_path):
    from edge_derm.artefacts import BenchmarkResults, BenchmarkRow
    from edge_derm.benchmarks.report import results_document

    res = gate_result(bm_models, evalset, ["sensitivity:blue=2.0"])
    out = tmp_path / "typed"
    write_results(out, res)
    doc = json.loads((out / "results.json").read_text())
    assert doc["format_version"] == BenchmarkResults.FORMAT_VERSION == 2
    read = BenchmarkResults.read(out)
    assert read.to_json() == doc  # read -> write gives the file back
    assert read == BenchmarkResults.from_json(json.loads(json.dumps(results_document(res).to_json())))
    assert [r.model for r in read.rows] == [r["model"] for r in res.rows]
    assert all(isinstance(r, BenchmarkRow) for r in read.rows)
    assert {r.model: r.gate_passed for r in read.rows} == {
        "model.fp32.tflite": True, "model.int8.tflite": True, "model.dynamic.tflite": False}
    assert {r.model: r.quantization for r in read.rows} == {
        "model.fp32.tflite": "fp32", "model.int8.tflite": "int8", "model.dynamic.tflite": "dynamic"}


def test_format_1_results_recover_gate_passed_and_format_3_is_refused(tmp_path):
    from edge_derm.artefacts import BenchmarkResults
    from edge_derm.errors import DataError

    rows = [{"model": m, "device": "cpu", "threads": 1, "status": "ok", "quantization": q}
            for m, q in (("model.fp32.tflite", "fp32"), ("model.int8.tflite", "int8"))]
    old = {"kind": "benchmark", "format_version": 1, "rows": rows, "config": {"gates": {"macro_f1": 1.0}},
           "gates": {"passed": False, "failures": ["model.int8.tflite (cpu, 1 threads): macro_f1 dropped 3.00 "
                                                   "points against model.fp32.tflite (allowed 1)"]}}
    (tmp_path / "results.json").write_text(json.dumps(old))
    read = BenchmarkResults.read(tmp_path)
    assert [r.gate_passed for r in read.rows] == [True, False]
    assert read.to_json()["format_version"] == 2
    (tmp_path / "results.json").write_text(json.dumps({**old, "format_version": 3}))
    with pytest.raises(DataError, match="format 3 is newer than this edge-derm reads"):
        BenchmarkResults.read(tmp_path)


def test_quantization_comes_from_the_file_not_its_name(bm_models, tmp_path):
    """A .tflite without metadata or a model.json record is ``unknown``, whatever its name says."""
    shutil.copyfile(bm_models["int8"], tmp_path / "model.fp16.tflite")
    res = run_benchmark(BenchmarkConfig(models=[tmp_path / "model.fp16.tflite"], **FAST))
    assert res.rows[0]["quantization"] == "unknown" and res.rows[0]["status"] == "ok"


# -- the Keras reference as a row ---------------------------------------------------------------------

def test_keras_row_scores_the_run_with_the_shared_evaluator(cv_run, cv_dataset):
    from edge_derm.benchmarks.harness import keras_row
    from edge_derm.data.images import load_for_model
    from edge_derm.data.manifest import Manifest
    from edge_derm.evaluation import compute_metrics
    from edge_derm.models import load_model

    row = keras_row(cv_run, cv_dataset)
    assert row["quantization"] == "keras" and row["format"] == "keras" and row["status"] == "ok"
    assert row["latency_median_ms"] is None and row["reference"] is None
    paths, labels = Manifest.load(cv_dataset).arrays("test")
    model = load_model(cv_run / "model.keras")
    probs = model.predict(np.stack([load_for_model(p, 32, "nearest") for p in paths]), verbose=0)
    want = compute_metrics(labels, probs, ["MM", "Nev", "BCC"])
    assert row["metrics"]["n"] == len(paths)
    assert row["metrics"]["macro_f1"] == pytest.approx(want["macro_f1"])


def test_keras_run_as_the_reference_of_the_tflite_rows(cv_run, cv_converted, cv_dataset, tmp_path):
    from edge_derm.artefacts import BenchmarkResults

    res = run_benchmark(BenchmarkConfig(models=[cv_converted], keras=[cv_run], reference=cv_run, data=cv_dataset,
                                        gates=["macro_f1=50"], **FAST))
    keras = [r for r in res.rows if r["quantization"] == "keras"]
    assert len(keras) == 1 and keras[0]["latency_median_ms"] is None and keras[0]["deltas"]["macro_f1"] == 0.0
    fp32 = next(r for r in res.rows if r["quantization"] == "fp32")
    assert fp32["reference"] == keras[0]["model"]
    assert fp32["disagreement"] == 0.0 and abs(fp32["deltas"]["macro_f1"]) < 1e-9
    assert all(r["reference"] == keras[0]["model"] for r in res.rows)
    write_results(tmp_path / "out", res)
    assert [r.quantization for r in BenchmarkResults.read(tmp_path / "out").rows][-1] == "keras"


def test_cli_keras_option_and_bad_run_folder(cv_run, cv_converted, cv_dataset, tmp_path, capsys):
    rc = main(["-q", "benchmark", str(cv_converted / "model.fp32.tflite"), "--keras", str(cv_run), "--reference",
               str(cv_run), "--data", str(cv_dataset), "--runs", "2", "--warmup", "0", "--out", str(tmp_path / "o")])
    assert rc == 0, capsys.readouterr().err
    doc = json.loads((tmp_path / "o" / "results.json").read_text())
    assert [r["quantization"] for r in doc["rows"]] == ["fp32", "keras"]
    rc = main(["-q", "benchmark", "--keras", str(tmp_path)])
    assert rc != 0 and "is not a run folder" in capsys.readouterr().err
