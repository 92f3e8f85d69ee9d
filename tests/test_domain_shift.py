"""Cross-domain evaluation (issue 18): scoring on a dataset whose classes are a subset of the model's,
the side-by-side view over several datasets, and the one-line refusals."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edge_derm.benchmarks import BenchmarkConfig, run_benchmark
from edge_derm.benchmarks.harness import EvalSet
from edge_derm.cli import main
from edge_derm.errors import DataError
from edge_derm.evaluation import compute_metrics

from conftest import BM_CLASSES, bm_images, make_tr_dataset

FAST = {"warmup": 0, "runs": 2}


def test_subset_scoring_equals_a_direct_count():
    """Model classes A-D, dataset classes A, B. Predictions of C and D are errors against the true class
    and are counted apart; macro F1 and balanced accuracy average over A and B only."""
    classes = ["A", "B", "C", "D"]
    y = np.array([0, 0, 0, 1, 1, 1])
    pred = np.array([0, 2, 0, 0, 3, 1])  # A: 2 right, 1 as C; B: 1 as A, 1 as D, 1 right
    probs = np.eye(4)[pred] * 0.7 + 0.075
    m = compute_metrics(y, probs, classes, dataset_classes=["A", "B"])
    # by hand: A has TP 2, FP 1 (the B predicted A), FN 1 -> P = R = F1 = 2/3; B has TP 1, FN 2, FP 0 -> F1 = 0.5
    assert m["per_class"]["A"]["f1"] == pytest.approx(2 / 3)
    assert m["per_class"]["B"]["f1"] == pytest.approx(0.5) and m["per_class"]["B"]["sensitivity"] == pytest.approx(1 / 3)
    assert m["macro_f1"] == pytest.approx((2 / 3 + 0.5) / 2)
    assert m["balanced_accuracy"] == pytest.approx((2 / 3 + 1 / 3) / 2)
    assert m["accuracy"] == pytest.approx(3 / 6)
    assert m["absent_class_predictions"] == {"count": 2, "fraction": pytest.approx(2 / 6), "by_class": {"C": 1, "D": 1}}
    from sklearn.metrics import balanced_accuracy_score, f1_score

    assert m["macro_f1"] == pytest.approx(f1_score(y, pred, labels=[0, 1], average="macro"))
    assert m["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y, pred))  # sklearn: recall over y's classes
    assert "absent_class_predictions" not in compute_metrics(y, probs, classes)  # the model's own dataset
    # the triage view spans both class sets: A's image predicted as C (malignant) is a false referral,
    # B's image predicted as D (benign) a missed one
    tri = compute_metrics(y, probs, classes, dataset_classes=["A", "B"],
                          triage={"A": "benign", "B": "malignant", "C": "malignant", "D": "benign"})["triage"]
    assert tri["groups"] == ["benign", "malignant"] and tri["confusion"] == [[2, 1], [2, 1]]
    assert tri["per_group"]["malignant"]["sensitivity"] == pytest.approx(1 / 3)
    with pytest.raises(DataError, match=r"\['E'\] are not among the model's classes"):
        compute_metrics(y, probs, classes, dataset_classes=["A", "E"])


def _subset_evalset(classes: list[str]) -> EvalSet:
    imgs, labels = bm_images()
    keep = [i for i, lab in enumerate(labels) if BM_CLASSES[lab] in classes]
    table = {f"img {i}": imgs[i] for i in keep}
    y = np.array([classes.index(BM_CLASSES[labels[i]]) for i in keep])
    return EvalSet(list(table), y, classes, lambda p, size, mode: table[p], source="red and blue only")


def test_benchmark_scores_a_dataset_with_fewer_classes(bm_models):
    """The degraded model sends most blue images to green, a class this dataset does not have: those
    are errors against blue and are counted as absent-class predictions."""
    data = _subset_evalset(["red", "blue"])
    res = run_benchmark(BenchmarkConfig(models=[bm_models["fp32"], bm_models["degraded"]], **FAST), data=data)
    rows = {r["model"]: r for r in res.rows}
    fp32, bad = rows["model.fp32.tflite"], rows["model.dynamic.tflite"]
    assert fp32["metrics"]["classes"] == ["red", "blue", "green"]  # the dataset's, then the model's others
    assert fp32["metrics"]["macro_f1"] == 1.0 and fp32["metrics"]["absent_class_predictions"]["count"] == 0
    m = bad["metrics"]
    # the same figures computed directly from the model's own outputs
    from sklearn.metrics import f1_score

    from edge_derm.runtime import TFLiteModel

    probs = TFLiteModel(bm_models["degraded"]).predict(np.stack([data.loader(p, 32, "") for p in data.paths]))
    names = np.array(BM_CLASSES)[probs.argmax(1)]
    truth = np.array(data.classes)[data.labels]
    n_green = int((names == "green").sum())
    assert n_green >= 4  # at least the green-cast half of the blue images
    assert m["absent_class_predictions"] == {"count": n_green, "fraction": n_green / 16, "by_class": {"green": n_green}}
    assert m["per_class"]["blue"]["sensitivity"] == pytest.approx(((names == "blue") & (truth == "blue")).sum() / 8)
    assert m["per_class"]["red"]["sensitivity"] == 1.0
    assert m["macro_f1"] == pytest.approx(f1_score(truth, names, labels=["red", "blue"], average="macro"))
    assert m["balanced_accuracy"] == pytest.approx((1.0 + m["per_class"]["blue"]["sensitivity"]) / 2)
    assert bad["disagreement"] == n_green / 16  # against fp32 (all right), by class name
    with pytest.raises(DataError, match=r"has class\(es\) purple among model.fp32.tflite's \(red, green, blue\)"):
        run_benchmark(BenchmarkConfig(models=[bm_models["fp32"]], **FAST), data=_subset_evalset(["red", "purple"]))


def _folder_dataset(root: Path, classes: list[str], taxonomy: str = "native", rename: dict | None = None) -> Path:
    from PIL import Image

    from edge_derm.data.manifest import Record, write_manifest

    (root / "images").mkdir(parents=True)
    imgs, labels = bm_images()
    records = []
    for i, (img, lab) in enumerate(zip(imgs, labels)):
        name = (rename or {}).get(BM_CLASSES[lab], BM_CLASSES[lab])
        if name in classes:
            Image.fromarray(img.astype(np.uint8)).save(root / f"images/img {i}.png")
            records.append(Record(f"images/img {i}.png", name, name, "synthetic", f"g{i}", "test"))
    write_manifest(root, records, {"root": str(root), "source": "synthetic", "taxonomy": taxonomy,
                                   "classes": classes})
    return root


def test_side_by_side_view_over_two_datasets(bm_models, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    home = _folder_dataset(tmp_path / "home", list(BM_CLASSES))
    away = _folder_dataset(tmp_path / "away", ["red", "blue"])
    out = tmp_path / "bench"
    rc = main(["-q", "benchmark", str(bm_models["fp32"]), str(bm_models["degraded"]), "--data", str(home),
               "--data", str(away), "--out", str(out), "--runs", "2", "--warmup", "0"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert "across datasets (domain shift)" in captured.out
    assert "model.dynamic.tflite: predicted a class this dataset does not have" not in captured.out  # rows: home
    doc = json.loads((out / "results.json").read_text())
    assert [d["classes"] for d in doc["domains"]] == [list(BM_CLASSES), ["red", "blue"]]
    away_dyn = doc["domains"][1]["models"]["model.dynamic.tflite"]
    absent = away_dyn["absent_class_predictions"]
    assert absent > 0 and away_dyn["agreement"] == pytest.approx(1 - absent)  # fp32 is right on every image
    lines = [ln.split() for ln in captured.out.splitlines()]
    dyn = next(i for i, ln in enumerate(lines) if ln[:2] == ["model.dynamic.tflite", "1"])
    assert lines[dyn][2] == "24" and lines[dyn + 1][:3] == ["model.dynamic.tflite", "2", "16"]  # away: 16 images
    assert lines[dyn + 1][-1] == f"{100 * absent:.1f}" and lines[dyn + 1][-2] == f"{100 * (1 - absent):.1f}"
    assert away_dyn["n"] == 16 and away_dyn["reference"] == "model.fp32.tflite"
    assert doc["domains"][0]["models"]["model.fp32.tflite"]["macro_f1"] == 1.0
    assert doc["config"]["domains"] == [str(away)]
    # the report shows the same view
    assert main(["-q", "report", str(out), "--out", str(tmp_path / "report")]) == 0
    md = (tmp_path / "report" / "report.md").read_text()
    assert "Across datasets (domain shift)" in md
    assert f"| 2 | 16 | " in md and f"| {100 * absent:.1f} |" in md and "classes red, blue" in md


def test_domain_refusals_are_one_line(bm_models, cv_run, cv_converted, tmp_path, capsys):
    other = _folder_dataset(tmp_path / "other", ["red", "purple"], rename={"blue": "purple"})
    none = _folder_dataset(tmp_path / "none", ["purple"], rename={"red": "purple"})
    cases = [
        (["benchmark", str(bm_models["fp32"]), "--data", str(other)], "has class(es) purple among"),
        (["benchmark", str(bm_models["fp32"]), "--data", str(none)], "has none of its classes (purple) among"),
        (["benchmark", str(bm_models["fp32"]), "--data", str(_folder_dataset(tmp_path / "home", list(BM_CLASSES))),
          "--data", str(other)], "has class(es) purple among"),
    ]
    mm = make_tr_dataset(tmp_path / "mm dermai13", ["MM", "Nev"], n_train=2, n_test=2, taxonomy="dermai13")
    cases += [
        (["benchmark", str(cv_converted / "model.fp32.tflite"), "--data", str(mm)],
         "classifies in taxonomy 'native' but"),
        (["evaluate", str(cv_run), "--data", str(mm), "--out", str(tmp_path / "e")], "in 'dermai13' (classes MM, Nev)"),
        (["evaluate", str(cv_run), "--data", str(none), "--out", str(tmp_path / "e")],
         "has none of its classes (purple) among the run's (MM, Nev, BCC)"),
    ]
    for argv, words in cases:
        assert main(["-q", *argv]) == 1, argv
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and "\n" not in err and words in err, err
    assert not (tmp_path / "e").exists()


def test_evaluate_on_a_dataset_with_fewer_classes(cv_run, cv_dataset, tmp_path, capsys):
    """The Keras path: a dataset with two of the run's three classes is scored over those two, and the
    report says how often the model predicted the third."""
    import shutil

    from edge_derm.data.manifest import Manifest, write_manifest

    m = Manifest.load(cv_dataset)
    sub = tmp_path / "two classes"
    sub.mkdir()
    records = [r for r in m.records if r.label != "BCC"]
    write_manifest(sub, records, {**{k: v for k, v in m.info.items() if k not in ("counts", "hash")},
                                  "classes": ["MM", "Nev"]})
    assert main(["-q", "evaluate", str(cv_run), "--data", str(sub), "--out", str(tmp_path / "e")]) == 0
    out = capsys.readouterr().out
    metrics = json.loads((tmp_path / "e" / "metrics.json").read_text())
    assert metrics["classes"] == ["MM", "Nev", "BCC"] and metrics["per_class"]["BCC"]["support"] == 0
    absent = metrics["absent_class_predictions"]
    assert absent["count"] == metrics["confusion"][0][2] + metrics["confusion"][1][2]
    assert "predicted a class this dataset does not have" in out
    assert "predicted a class this dataset does not have" in (tmp_path / "e" / "report.md").read_text()
    shutil.rmtree(sub)
