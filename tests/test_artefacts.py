"""edge_derm.artefacts: every artefact type round-trips, reads its previous format or refuses it clearly.

The writers' own documents are round-tripped where they are written (test_training, test_build, test_convert,
test_benchmark_cpu, test_demo); this file checks the types themselves on hand-written documents.
"""

from __future__ import annotations

import json

import pytest

from edge_derm import artefacts as art
from edge_derm.errors import DataError

RUN = {"kind": "run", "format_version": 1, "backbone": "tiny", "alpha": None, "image_size": 32,
       "resize_mode": "nearest", "classes": ["MM", "Nev"], "taxonomy": "dermai13",
       "data": [{"dir": "/d/a", "hash": "h1"}, {"dir": "/d/b", "hash": "h2"}], "weights": "none", "seed": 0,
       "config_hash": "c", "calibration": None, "triage": {"MM": "malignant", "Nev": "benign"},
       "schedule": {"batch_multiple": 2}, "train": {"recipe": "paper"}}
DATASET = {"kind": "dataset", "format_version": 1, "root": "/r", "source": "folder", "taxonomy": "dermai13",
           "classes": ["MM"], "counts": {"MM": {"train": 3, "test": 1}}, "seed": 0, "hash": "x",
           "dropped": {}, "split": "random"}
VARIANT = {"format_version": 1, "name": "tiny", "quantization": "int8", "labels": ["MM", "Nev"],
           "input": {"size": [32, 32], "dtype": "uint8"}, "output": {"dtype": "uint8"},
           "verification": {"passed": True, "top1_agreement": 0.99}, "file": "model.int8.tflite",
           "sha256": "ab", "size_bytes": 10, "triage": {"MM": "malignant"}, "provenance": {"run": "/r"}}
CONVERT = {"kind": "convert", "format_version": 1, "run": "/r", "requested": ["fp32", "int8"], "failed": [],
           "summary": [{"mode": "int8", "status": "ok"}], "variants": {"int8": VARIANT}, "warnings": []}
ROW = {"model": "model.int8.tflite", "path": "/c/model.int8.tflite", "quantization": "int8", "device": "cpu",
       "threads": 1, "status": "ok", "reason": None, "size_mb": 0.1, "latency_median_ms": 1.5,
       "latency_p90_ms": 2.0, "peak_memory_mb": 3.0, "metrics": {"macro_f1": 0.5}, "reference": "fp32",
       "deltas": {"macro_f1": -0.01}, "disagreement": 0.02, "speedup_vs_fp32": 1.1, "slower_than_fp32": False,
       "gate_passed": True, "runs": 30}
BENCH = {"kind": "benchmark", "format_version": 2, "rows": [ROW], "config": {"gates": {"macro_f1": 1.0}},
         "gates": {"passed": True, "failures": []}, "latency_warnings": [], "versions": {}}
DEMO = {"kind": "demo", "format_version": 1, "status": "ok", "out": "/o", "quick": True, "config": {"seed": 0},
        "sizes": {"modes": ["fp32"]}, "stages": [{"name": "train", "seconds": 1.0}], "weights_note": "none"}

DOCS = [(art.RunConfig, RUN), (art.DatasetInfo, DATASET), (art.VariantRecord, VARIANT),
        (art.ConvertResult, CONVERT), (art.BenchmarkRow, ROW), (art.BenchmarkResults, BENCH), (art.DemoSummary, DEMO)]


@pytest.mark.parametrize("cls,doc", DOCS, ids=[c.__name__ for c, _ in DOCS])
def test_round_trip(cls, doc, tmp_path):
    obj = cls.from_json(doc)
    assert obj.to_json() == doc
    # equality is over every key (extra ones too), so the file comparisons below can fail
    assert cls.from_json({**doc, "added_key": 1}) != obj
    # through a file, atomically written
    path = obj.write(tmp_path / "doc.json")
    assert json.loads(path.read_text()) == doc
    assert cls.read(path) == obj


def test_nested_records_are_typed():
    conv = art.ConvertResult.from_json(CONVERT)
    assert isinstance(conv.variants["int8"], art.VariantRecord) and conv.variants["int8"].passed is True
    bench = art.BenchmarkResults.from_json(BENCH)
    assert isinstance(bench.rows[0], art.BenchmarkRow) and bench.rows[0].label == "model.int8.tflite (cpu, 1 threads)"
    # keys no reader types ride along unchanged
    assert bench.rows[0].extra == {"runs": 30} and bench.rows[0].get("runs") == 30


def test_run_config_fields():
    run = art.RunConfig.from_json(RUN)
    assert run.last_data == "/d/b" and run.get("resize_mode", "pad") == "nearest"
    assert run.get("alpha", 1.0) == 1.0  # a null field reads as the default
    assert run.get("schedule") == {"batch_multiple": 2}


def test_folder_files_and_detect(tmp_path):
    for cls, doc in [(art.RunConfig, RUN), (art.ConvertResult, CONVERT), (art.BenchmarkResults, BENCH),
                     (art.DemoSummary, DEMO), (art.DatasetInfo, DATASET)]:
        folder = tmp_path / cls.__name__
        folder.mkdir()
        assert cls.from_json(doc).write(folder) == folder / cls.FILENAME
        found = art.detect(folder)
        assert type(found) is cls and found.to_json() == doc
    # a file of the right name but another kind is not that artefact
    other = tmp_path / "other"
    other.mkdir()
    (other / "model.json").write_text(json.dumps({"format_version": 1, "labels": []}))
    assert art.detect(other) is None and art.documents(other) == []
    # several documents in one folder, each with its JSON as written; a corrupt one is one line
    both = tmp_path / "both"
    both.mkdir()
    art.RunConfig.from_json(RUN).write(both)
    art.ConvertResult.from_json(CONVERT).write(both)
    assert [(type(a), raw) for a, raw in art.documents(both)] == [(art.RunConfig, RUN), (art.ConvertResult, CONVERT)]
    (both / "results.json").write_text("{cut")
    with pytest.raises(DataError, match=r"results\.json is not valid JSON .*; regenerate it$"):
        art.documents(both)


def test_dataset_json_of_an_early_build_reads_as_format_1():
    """Early builds wrote neither kind nor format_version; such a dataset.json still reads."""
    early = {k: v for k, v in DATASET.items() if k not in ("kind", "format_version")}
    assert art.DatasetInfo.from_json(early).to_json() == DATASET
    with pytest.raises(DataError, match="no valid format_version"):  # a kind without a version is not early
        art.DatasetInfo.from_json({**early, "kind": "dataset"})


def test_run_config_last_data_tolerates_odd_entries():
    assert art.RunConfig.from_json({**RUN, "data": [{"hash": "h"}]}).last_data is None
    assert art.RunConfig.from_json({**RUN, "data": []}).last_data is None


def test_benchmark_format_1_is_upgraded():
    v1 = {"kind": "benchmark", "format_version": 1,
          "rows": [{**ROW, "model": "a.tflite"}, {**ROW, "model": "b.tflite"}],
          "config": {"gates": {"macro_f1": 1.0}},
          "gates": {"passed": False, "failures": ["b.tflite (cpu, 1 threads): macro_f1 dropped 3.00 points"]}}
    for row in v1["rows"]:
        del row["gate_passed"]
    res = art.BenchmarkResults.from_json(v1)
    assert [r.gate_passed for r in res.rows] == [True, False]
    assert res.to_json()["format_version"] == 2
    # no gates set: nothing is invented
    v1_no_gates = {**v1, "config": {}, "gates": {"passed": True, "failures": []}}
    assert [r.gate_passed for r in art.BenchmarkResults.from_json(v1_no_gates).rows] == [None, None]


@pytest.mark.parametrize("cls,doc", [(c, d) for c, d in DOCS if c.VERSIONED],
                         ids=[c.__name__ for c, _ in DOCS if c.VERSIONED])
def test_newer_and_unknown_versions_are_refused(cls, doc):
    with pytest.raises(DataError, match=r"x\.json: .* newer than this edge-derm reads .*; upgrade edge-derm$"):
        cls.from_json({**doc, "format_version": cls.FORMAT_VERSION + 1}, source="x.json")
    with pytest.raises(DataError, match="no valid format_version"):
        cls.from_json({**doc, "format_version": "one"}, source="x.json")
    if cls.KIND is not None:
        with pytest.raises(DataError, match=f"not a {cls.KIND} document"):
            cls.from_json({**doc, "kind": "something-else"}, source="x.json")


def test_version_older_than_read_is_refused():
    with pytest.raises(DataError, match=r"format 0 is no longer read \(this edge-derm reads 1, 2\); benchmark again"):
        art.BenchmarkResults.from_json({**BENCH, "format_version": 0})


def test_bad_documents_give_one_line_errors(tmp_path):
    with pytest.raises(DataError, match="missing 'classes', 'image_size'; train one with `edge-derm train`"):
        art.RunConfig.from_json({"kind": "run", "format_version": 1})
    with pytest.raises(DataError, match="expected a JSON object"):
        art.ConvertResult.from_json([1, 2])
    with pytest.raises(DataError, match=r"variants\['int8'\].*missing 'quantization'"):
        art.ConvertResult.from_json({**CONVERT, "variants": {"int8": {"format_version": 1, "labels": []}}})
    with pytest.raises(DataError, match="rows must be a list"):
        art.BenchmarkResults.from_json({**BENCH, "rows": {}})
    bad = tmp_path / "results.json"
    bad.write_text("{not json")
    with pytest.raises(DataError, match="is not valid JSON") as err:
        art.BenchmarkResults.read(tmp_path)
    assert "\n" not in str(err.value)
    with pytest.raises(DataError, match="not found; run `edge-derm demo` again"):
        art.DemoSummary.read(tmp_path / "missing")
