"""edge-derm report on hand-made run / convert / benchmark / demo folders."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import numpy as np
import pytest

from edge_derm.cli import main
from edge_derm.errors import DataError, OutputExistsError
from edge_derm.evaluation import compare_metrics, compute_metrics
from edge_derm.report import build_report, find_sections, write_report

CLASSES = ["SebKer", "Nev", "MM"]
TRIAGE = {"SebKer": "benign", "Nev": "benign", "MM": "malignant"}


def _w(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj) if not isinstance(obj, str) else obj, encoding="utf-8")


def _metrics(pred):
    y = [0, 0, 0, 1, 1, 2]
    probs = np.full((6, 3), 0.1)
    probs[np.arange(6), pred] = 0.8
    return compute_metrics(y, probs, CLASSES, triage=TRIAGE)


@pytest.fixture()
def demo(tmp_path):
    """A demo folder (with spaces) holding a dataset, a run, a convert and a benchmark folder."""
    return make_fake_demo(tmp_path / "my demo")


def make_fake_demo(root: Path) -> Path:
    """Write hand-made dataset / run / convert / benchmark folders (per ARCHITECTURE.md) under ``root``."""
    ds = root / "data set"
    _w(ds / "dataset.json", {"kind": "dataset", "format_version": 1, "root": str(ds / "images"), "source": "synthetic",
                             "taxonomy": "dermai13",
                             "classes": CLASSES, "hash": "dshash01",
                             "counts": {"SebKer": {"train": 10, "test": 3}, "Nev": {"train": 8, "test": 2},
                                        "MM": {"train": 4, "test": 1}},
                             "dropped": {"melanosis": 16}, "skipped": 0, "seed": 0, "test_fraction": 0.2})
    run = root / "run"
    _w(run / "config.json", {"kind": "run", "format_version": 1, "backbone": "tiny", "alpha": None, "image_size": 32,
                             "resize_mode": "nearest", "preprocessing": "x/127.5 - 1", "classes": CLASSES,
                             "taxonomy": "dermai13", "data": [{"dir": str(ds), "hash": "dshash01"}],
                             "weights": "none", "seed": 0, "schedule": {"epochs_per_block": 2},
                             "versions": {"python": "3.11", "tensorflow": "2.19.0"}, "config_hash": "cfghash42"})
    (run / "history.csv").write_text(
        "epoch,step,block,loss,accuracy,val_loss\n1,0,head,1.2,0.40,1.3\n2,0,head,1.0,0.50,\n"
        "1,1,A,0.8,0.65,0.9\n2,1,A,0.7,0.71,0.8\n", encoding="utf-8")
    _w(run / "metrics.json", _metrics([0, 0, 1, 1, 2, 2]))
    (run / "model.keras").write_bytes(b"fake keras")
    conv = root / "convert"
    variants = {}
    for q, agree, passed in (("fp32", 1.0, True), ("int8", 0.97, False)):
        (conv / f"model.{q}.tflite").parent.mkdir(parents=True, exist_ok=True)
        (conv / f"model.{q}.tflite").write_bytes(b"x" * (4_000_000 if q == "fp32" else 1_000_000))
        variants[q] = {"format_version": 1, "name": "tiny", "quantization": q, "labels": CLASSES,
                       "input": {"size": [32, 32], "resize": "nearest", "range": [0, 255], "dtype": "float32"},
                       "output": {"dtype": "float32"},
                       "verification": {"top1_agreement": agree, "max_abs_diff": 0.02, "mean_abs_diff": 0.001,
                                        "n": 64, "passed": passed},
                       "provenance": {"run": str(run), "config_hash": "cfghash42", "versions": {"numpy": "2.1"}}}
    _w(conv / "model.json", {"kind": "convert", "format_version": 1, "run": str(run), "variants": variants})
    # rows as edge_derm.benchmarks.harness writes them (metrics = compute_metrics, deltas = compare_metrics)
    m32, m8 = _metrics([0, 0, 1, 1, 2, 2]), _metrics([0, 1, 1, 1, 2, 0])
    rows = []
    for q, m, lat, size in (("fp32", m32, 12.5, 4.0), ("int8", m8, 4.25, 1.0)):
        rows.append({"model": f"model.{q}.tflite", "path": str(conv / f"model.{q}.tflite"), "format": "tflite",
                     "quantization": q, "device": "cpu", "threads": 1, "status": "ok", "reason": None,
                     "size_mb": size, "latency_median_ms": lat, "latency_p90_ms": lat + 1, "peak_memory_mb": 30.0,
                     "metrics": m, "reference": "model.fp32.tflite", "deltas": compare_metrics(m, m32),
                     "disagreement": 0.0 if q == "fp32" else 0.5, "gate_passed": q == "fp32"})
    rows.append({**rows[1], "threads": 2, "latency_median_ms": 3.0})
    rows.append({"model": "broken.tflite", "path": str(root / "broken.tflite"), "quantization": "unknown",
                 "device": "cpu", "threads": 1, "status": "failed to load", "reason": "truncated file",
                 "size_mb": 0.0, "metrics": None, "reference": None, "deltas": None, "disagreement": None,
                 "gate_passed": False})
    _w(root / "bench" / "results.json", {
        "kind": "benchmark", "format_version": 2, "rows": rows,
        "config": {"device": "cpu", "threads": [1, 2], "warmup": 3, "runs": 20, "gates": {"macro_f1": 2.0}},
        "devices": [{"device": "cpu", "cores": 2}], "versions": {"ai-edge-litert": "1.2"},
        "gates": {"passed": False, "failures": [
            "model.int8.tflite (cpu, 1 threads): macro_f1 dropped 38.89 points against model.fp32.tflite (allowed 2)",
            "model.int8.tflite (cpu, 2 threads): macro_f1 dropped 38.89 points against model.fp32.tflite (allowed 2)",
            "broken.tflite (cpu, 1 threads): no figures to gate (failed to load: truncated file)"]}})
    return root


@pytest.mark.slow
def test_screenshot_in_headless_chromium(demo, tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("screenshot_report",
                                                  Path(__file__).parents[1] / "benchmarks" / "scripts" / "screenshot_report.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    if mod.find_chromium() is None:
        pytest.skip("chromium is not installed (apt-get install -y chromium)")
    paths = write_report(demo)
    shot = mod.screenshot(paths["html"], tmp_path / "shot.png", height=1200)
    data = shot.read_bytes()
    assert data.startswith(b"\x89PNG")
    from PIL import Image

    with Image.open(shot) as img:
        assert img.size == (1280, 1200)
        # a rendered page is not one flat colour
        assert len(img.convert("L").getcolors(maxcolors=256 * 256) or []) > 20
    # the answer is above the fold of a laptop screen (1280 x 800): the summary table ends within it
    bottom = mod.table_bottom(paths["html"], "Summary", width=1280, height=800)
    assert 0 < bottom <= 800, bottom
    assert mod.table_bottom(paths["html"], "Quantisation comparison", width=1280, height=800) > bottom


def test_report_leads_with_the_summary(demo):
    """The first section is the answer: one row per benchmarked variant with size, latency, macro F1,
    the watched classes' sensitivity, agreement with fp32, verification and gates."""
    md = write_report(demo)["markdown"].read_text(encoding="utf-8")
    first = md.index("## Summary")
    assert first < md.index("Training run: run") and first < md.index("Benchmark: bench")
    summary = md[first:md.index("\n## ", first + 5)]
    header = next(line for line in summary.splitlines() if line.startswith("| variant"))
    for col in ("size MB", "latency ms", "macro F1 %", "agreement w/ ref %", "verified", "gates"):
        assert col in header, header
    assert "model.int8.tflite" in summary and "| FAIL | FAIL |" in summary and "| ref |" in summary
    assert "summary_latency_f1.png" in summary


def test_find_sections_kinds_and_order(demo):
    kinds = [(s.kind, s.path.name) for s in find_sections(demo)]
    assert kinds == [("run", "run"), ("convert", "convert"), ("benchmark", "bench")]
    assert [s.kind for s in find_sections(demo / "convert")] == ["convert"]


def test_demo_report_has_every_section(demo):
    paths = write_report(demo)
    html = paths["html"].read_text(encoding="utf-8")
    md = paths["markdown"].read_text(encoding="utf-8")
    for text in ("Training run: run", "Conversion: convert", "Benchmark: bench", "Provenance",
                 "Dataset: synthetic", "melanosis (16)", "Training curves", "Quantisation comparison",
                 "trained from scratch", "cfghash42"):
        assert text in md, text
        assert text in html, text
    # dataset table: class counts per split and totals (train 22, test 6, all 28)
    assert "| 1 | SebKer | 10 | 3 | 13 |" in md
    assert "|  | total | 22 | 6 | 28 |" in md
    # per-class metrics from metrics.json (SebKer sens 2/3, prec 1, F1 0.8)
    assert "| 1 | SebKer | 66.67 | 100.00 | 80.00 | 3 |" in md
    # quantisation rows: size, latency, delta vs the fp32 reference, agreement, verification, gate
    lines = md.splitlines()
    fp32 = next(line for line in lines if line.startswith("| fp32 | cpu | 1 |"))
    assert "| 4.00 | 12.50 | 13.50 | 30.00 | 66.67 | 65.56 | 67.78 | ref | ref | pass | pass |" in fp32
    int8 = next(line for line in lines if line.startswith("| int8 | cpu | 1 |"))
    assert "| 1.00 | 4.25 |" in int8 and "| -38.89 | 50.00 | FAIL | FAIL |" in int8
    assert "| broken.tflite | cpu | 1 | failed to load |" in md and "truncated file" in md and "Gate failures:" in md
    # per-class deltas, once per model: int8 SebKer F1 = 2*1/(3+2) = 0.4 vs 0.8 -> -40 pp
    f1_delta = md.split("Per-class F1 change")[1]
    assert "| int8 | -40.00 | -10.00 | -66.67 |" in f1_delta
    sens_delta = md.split("Per-class sensitivity change")[1]
    assert "| int8 | -33.33 | +0.00 | -100.00 |" in sens_delta
    # images: md links files that exist; html embeds them and fetches nothing
    links = re.findall(r"\]\((report_assets/[^)]+)\)", md)
    assert len(links) >= 4 and all((demo / link).is_file() for link in links)
    imgs = re.findall(r'src="([^"]+)"', html)
    assert len(imgs) == len(links) and all(i.startswith("data:image/png;base64,") for i in imgs)
    assert base64.b64decode(imgs[0].split(",", 1)[1]).startswith(b"\x89PNG")
    assert "http://" not in html and "https://" not in html and "<script" not in html
    assert "<style>" in html


def test_run_only_and_missing_dataset(demo, tmp_path):
    run = demo / "run"
    cfg = json.loads((run / "config.json").read_text())
    cfg["data"] = [{"dir": str(tmp_path / "gone"), "hash": "h"}]
    (run / "config.json").write_text(json.dumps(cfg))
    (run / "history.csv").write_text("epoch,step\n1,0\n")  # no loss/accuracy columns at all
    rep = build_report(run)
    assert [s.kind for s in rep.sections] == ["run"]
    assert "counts not shown" in rep.markdown and "history.csv not plotted" in rep.markdown
    assert "Benchmark" not in rep.markdown


def test_dataset_hash_change_is_flagged(demo):
    ds_json = demo / "data set" / "dataset.json"
    info = json.loads(ds_json.read_text())
    info["hash"] = "changed"
    ds_json.write_text(json.dumps(info))
    assert "the dataset changed since" in build_report(demo / "run").markdown


def test_convert_only(demo):
    rep = build_report(demo / "convert")
    line = next(x for x in rep.markdown.splitlines() if x.startswith("| int8 |"))
    assert "| 1.00 |" in line and "| 97.00 |" in line and line.rstrip().endswith("| FAIL |")


def test_benchmark_rows_without_deltas_use_fp32_row(demo):
    """Rows the harness found no reference for (no ``deltas``): the report takes their deltas against the
    fp32 row beside them; the gate column is each row's ``gate_passed``."""
    info = json.loads((demo / "bench" / "results.json").read_text())
    rows = []
    for r in info["rows"][:2]:
        rows.append({**r, "reference": None, "deltas": None, "disagreement": None,
                     "gate_passed": r["quantization"] == "fp32"})
    (demo / "bench" / "results.json").write_text(json.dumps({"kind": "benchmark", "format_version": 2,
                                                             "rows": rows, "config": {"gates": {"macro_f1": 2.0}}}))
    md = build_report(demo / "bench").markdown
    int8 = next(line for line in md.splitlines() if line.startswith("| int8 | cpu | 1 |"))
    assert "| -38.89 |" in int8 and int8.rstrip().endswith("| FAIL |")
    assert "| int8 | -40.00 | -10.00 | -66.67 |" in md.split("Per-class F1 change")[1]


def test_benchmark_results_of_another_format_are_refused(demo):
    info = json.loads((demo / "bench" / "results.json").read_text())
    (demo / "bench" / "results.json").write_text(json.dumps({**info, "format_version": 3}))
    with pytest.raises(DataError, match="format 3 is newer than this edge-derm reads"):
        build_report(demo / "bench")
    (demo / "bench" / "results.json").write_text(json.dumps({k: v for k, v in info.items() if k != "format_version"}))
    with pytest.raises(DataError, match="no valid format_version"):
        build_report(demo / "bench")


def test_not_a_report_folder(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"kind": "something-else"}))
    with pytest.raises(DataError, match="not a run, convert or benchmark folder"):
        find_sections(tmp_path)
    with pytest.raises(DataError, match="not a folder"):
        find_sections(tmp_path / "missing")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "results.json").write_text("{broken")
    with pytest.raises(DataError, match="not valid JSON"):
        find_sections(tmp_path)
    assert not (tmp_path / "report.html").exists()


def test_out_folder_and_force(demo, tmp_path):
    out = tmp_path / "out dir"
    write_report(demo / "bench", out)
    assert (out / "report.html").is_file() and (out / "report_assets").is_dir()
    with pytest.raises(OutputExistsError, match="--force"):
        write_report(demo / "bench", out)
    write_report(demo / "bench", out, force=True)
    # in the folder itself the derived report files are simply replaced
    write_report(demo / "bench")
    write_report(demo / "bench")
    assert sorted(p.name for p in (demo / "bench").iterdir()) == ["report.html", "report.md", "report_assets",
                                                                   "results.json"]


def test_cli(demo, tmp_path, capsys):
    assert main(["--quiet", "report", str(demo / "run")]) == 0
    assert "report.html" in capsys.readouterr().out
    assert (demo / "run" / "report.html").is_file()
    (tmp_path / "empty").mkdir()
    assert main(["--quiet", "report", str(tmp_path / "empty")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "not a run, convert or benchmark folder" in err
    assert len(err.strip().splitlines()) == 1


def test_write_failure_leaves_no_half_written_report(demo, monkeypatch):
    run = demo / "run"
    real = Path.write_bytes

    def full_disk(self, data):
        if self.suffix == ".png":
            raise OSError(28, "No space left on device", str(self))
        return real(self, data)

    monkeypatch.setattr(Path, "write_bytes", full_disk)
    with pytest.raises(OSError, match="No space"):
        write_report(run)
    left = sorted(p.name for p in run.iterdir())
    assert left == ["config.json", "history.csv", "metrics.json", "model.keras"]


def test_html_escapes_names(demo):
    run = demo / "run"
    cfg = json.loads((run / "config.json").read_text())
    cfg["backbone"] = "<script>alert(1)</script>"
    (run / "config.json").write_text(json.dumps(cfg))
    html = build_report(run).html
    assert "<script>" not in html and "&lt;script&gt;" in html


def test_plan_run_with_stages_and_forgetting(demo):
    run = demo / "run"
    (run / "history.csv").write_text(
        "step,block,epoch,loss,accuracy,stage\n0,head,1,1.2,0.4,edra\n1,A,1,1.0,0.5,edra\n"
        "0,head,1,0.9,0.6,target\n1,A,1,0.7,0.7,target\n", encoding="utf-8")
    _w(run / "forgetting.json", {"stages": ["edra", "target"], "macro_f1": [[0.5, None], [0.25, 0.75]],
                                 "accuracy": [[0.6, None], [0.3, 0.8]]})
    md = build_report(run).markdown
    assert "| target | 0 | head | 1 | 0.9000 | 0.6000 |" in md
    assert "| edra | 1 | A | 1 | 1.0000 | 0.5000 |" in md
    assert "| target | 25.0 (30.0) | 75.0 (80.0) |" in md
    assert "| edra | 50.0 (60.0) | – |" in md


def test_report_checks_model_json_against_the_files(cv_converted, tmp_path):
    """A model.json edited to another input size (or a changed file) is flagged, not shown as true."""
    import shutil

    conv = tmp_path / "conv"
    shutil.copytree(cv_converted, conv)
    clean = build_report(conv).markdown
    assert "does not describe the file" not in clean
    doc = json.loads((conv / "model.json").read_text())
    mode = next(iter(doc["variants"]))
    doc["variants"][mode]["input"]["size"] = [512, 512]
    doc["variants"][mode].pop("sha256", None)
    (conv / "model.json").write_text(json.dumps(doc))
    md = build_report(conv).markdown
    assert f"model.{mode}.tflite: model.json says input 512 x 512 but the file takes" in md
    details = md[md.index("Conversion: "):]  # the summary above lists the converter's own verdicts
    assert next(x for x in details.splitlines() if x.startswith(f"| {mode} |")).rstrip().endswith("| FAIL |")
