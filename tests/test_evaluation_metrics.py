"""compute_metrics against hand-computed values."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

from edge_derm.errors import DataError
from edge_derm.evaluation import compare_metrics, compute_metrics, expected_calibration_error

CLASSES = ["a", "b", "c"]
# Truth / prediction pairs giving the confusion matrix (rows = truth)
#   [[2, 1, 0],
#    [0, 1, 1],
#    [0, 0, 1]]
Y_TRUE = [0, 0, 0, 1, 1, 2]
Y_PRED = [0, 0, 1, 1, 2, 2]


def _probs(pred, conf=0.8, n_classes=3):
    p = np.full((len(pred), n_classes), (1 - conf) / (n_classes - 1))
    p[np.arange(len(pred)), pred] = conf
    return p


def test_hand_computed_confusion_metrics():
    m = compute_metrics(Y_TRUE, _probs(Y_PRED), CLASSES)
    assert m["n"] == 6
    assert m["classes"] == CLASSES
    assert m["confusion"] == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    assert m["confusion_normalised"][0] == pytest.approx([2 / 3, 1 / 3, 0])
    assert m["confusion_normalised"][1] == pytest.approx([0, 0.5, 0.5])
    assert m["accuracy"] == pytest.approx(4 / 6)
    # a: TP 2, support 3, predicted 2; b: 1/2/2; c: 1/1/2
    pc = m["per_class"]
    assert pc["a"] == pytest.approx({"sensitivity": 2 / 3, "precision": 1.0, "f1": 0.8, "support": 3})
    assert pc["b"] == pytest.approx({"sensitivity": 0.5, "precision": 0.5, "f1": 0.5, "support": 2})
    assert pc["c"] == pytest.approx({"sensitivity": 1.0, "precision": 0.5, "f1": 2 / 3, "support": 1})
    assert m["balanced_accuracy"] == pytest.approx((2 / 3 + 0.5 + 1.0) / 3)
    assert m["macro_f1"] == pytest.approx((0.8 + 0.5 + 2 / 3) / 3)
    assert m["weighted_f1"] == pytest.approx((0.8 * 3 + 0.5 * 2 + 2 / 3 * 1) / 6)
    # every prediction has confidence 0.8, accuracy 4/6 -> one bin, |4/6 - 0.8|
    assert m["ece"] == pytest.approx(abs(4 / 6 - 0.8))
    assert m["triage"] is None
    assert "bootstrap" not in m
    json.dumps(m)  # JSON-serialisable as is


def test_matches_sklearn_when_all_classes_present():
    from sklearn.metrics import balanced_accuracy_score, f1_score

    rng = np.random.default_rng(1)
    y = rng.integers(0, 4, 200)
    probs = rng.dirichlet(np.ones(4), 200)
    m = compute_metrics(y, probs, list("wxyz"))
    pred = probs.argmax(1)
    assert m["macro_f1"] == pytest.approx(f1_score(y, pred, average="macro"))
    assert m["weighted_f1"] == pytest.approx(f1_score(y, pred, average="weighted"))
    assert m["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y, pred))


def test_absent_class_rule_without_warnings():
    # class c never true but predicted once; class b true but never predicted
    y = [0, 0, 1, 1]
    pred = [0, 2, 0, 0]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m = compute_metrics(y, _probs(pred), CLASSES, bootstrap=20)
    c = m["per_class"]["c"]
    assert c == {"sensitivity": None, "precision": 0.0, "f1": None, "support": 0}
    b = m["per_class"]["b"]
    assert b["precision"] == 0.0 and b["f1"] == 0.0 and b["sensitivity"] == 0.0
    # a: TP 1, support 2, predicted 3 -> F1 = 2/5; macro over present classes a, b only
    assert m["macro_f1"] == pytest.approx((0.4 + 0.0) / 2)
    assert m["balanced_accuracy"] == pytest.approx((0.5 + 0.0) / 2)
    assert m["confusion_normalised"][2] == [0.0, 0.0, 0.0]
    assert m["bootstrap"]["sensitivity"]["c"] is None
    # a class neither true nor predicted has no precision either
    m2 = compute_metrics([0, 1], _probs([0, 1]), CLASSES)
    assert m2["per_class"]["c"]["precision"] is None
    assert m2["macro_f1"] == pytest.approx(1.0)


def test_ece_hand_example():
    conf = np.array([0.9, 0.9, 0.6, 0.6, 0.3])
    correct = np.array([1, 0, 1, 1, 0])
    # 10 bins: (0.8,0.9]: acc .5 conf .9 ; (0.5,0.6]: acc 1 conf .6 ; (0.2,0.3]: acc 0 conf .3
    expected = 2 / 5 * 0.4 + 2 / 5 * 0.4 + 1 / 5 * 0.3
    assert expected_calibration_error(conf, correct, n_bins=10) == pytest.approx(expected)
    # perfectly calibrated: confidence 0.75 with 3 of 4 right
    assert expected_calibration_error(np.full(4, 0.75), np.array([1, 1, 1, 0])) == pytest.approx(0.0)


def test_triage_view_collapses_confusion():
    triage = {"a": "benign", "b": "malignant", "c": "malignant"}
    m = compute_metrics(Y_TRUE, _probs(Y_PRED), CLASSES, triage=triage)
    t = m["triage"]
    assert t["groups"] == ["benign", "malignant"]
    # benign row: a->a 2, a->b 1 ; malignant row: b->b 1, b->c 1, c->c 1
    assert t["confusion"] == [[2, 1], [0, 3]]
    assert t["accuracy"] == pytest.approx(5 / 6)
    assert t["per_group"]["malignant"]["sensitivity"] == pytest.approx(1.0)
    assert t["per_group"]["malignant"]["precision"] == pytest.approx(0.75)
    assert t["per_group"]["benign"]["support"] == 3
    assert t["classes"]["malignant"] == ["b", "c"]


def test_triage_order_premalignant_uncertain_and_unknown():
    triage = {"a": "uncertain", "b": "premalignant"}  # c missing -> unknown
    m = compute_metrics(Y_TRUE, _probs(Y_PRED), CLASSES, triage=triage)
    assert m["triage"]["groups"] == ["premalignant", "uncertain", "unknown"]
    assert compute_metrics(Y_TRUE, _probs(Y_PRED), CLASSES, triage={c: "unknown" for c in CLASSES})["triage"] is None


def test_bootstrap_deterministic_and_contains_point():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 300)
    pred = np.where(rng.random(300) < 0.7, y, rng.integers(0, 3, 300))
    probs = _probs(pred)
    m1 = compute_metrics(y, probs, CLASSES, bootstrap=200, seed=3)
    m2 = compute_metrics(y, probs, CLASSES, bootstrap=200, seed=3)
    m3 = compute_metrics(y, probs, CLASSES, bootstrap=200, seed=4)
    assert m1["bootstrap"] == m2["bootstrap"]
    assert m1["bootstrap"]["macro_f1"] != m3["bootstrap"]["macro_f1"]
    lo, hi = m1["bootstrap"]["macro_f1"]
    assert lo < m1["macro_f1"] < hi
    assert hi - lo < 0.3
    for cls in CLASSES:
        lo, hi = m1["bootstrap"]["sensitivity"][cls]
        assert lo < m1["per_class"][cls]["sensitivity"] < hi
    assert m1["bootstrap"]["n"] == 200
    # the point estimates do not depend on the bootstrap
    assert m1["macro_f1"] == compute_metrics(y, probs, CLASSES)["macro_f1"]


@pytest.mark.parametrize(
    ("y", "probs", "match"),
    [
        ([], np.zeros((0, 3)), "non-empty"),
        ([0, 1], np.zeros((3, 3)), "shape"),
        ([0, 3], np.zeros((2, 3)), "outside"),
        ([0, -1], np.zeros((2, 3)), "outside"),
        ([0, 1], np.array([[np.nan, 0, 0], [0, 1, 0]]), "NaN"),
        (["a", "b"], np.zeros((2, 3)), "integer"),
    ],
)
def test_bad_input_is_a_data_error(y, probs, match):
    with pytest.raises(DataError, match=match):
        compute_metrics(y, probs, CLASSES)


def test_bad_bootstrap_and_classes():
    with pytest.raises(DataError, match="bootstrap"):
        compute_metrics([0], _probs([0]), CLASSES, bootstrap=-1)
    with pytest.raises(DataError, match="unique"):
        compute_metrics([0], _probs([0]), ["a", "a", "b"])


def test_compare_metrics_deltas():
    ref = compute_metrics(Y_TRUE, _probs(Y_TRUE), CLASSES)
    m = compute_metrics(Y_TRUE, _probs(Y_PRED), CLASSES)
    d = compare_metrics(m, ref)
    assert d["accuracy"] == pytest.approx(4 / 6 - 1)
    assert d["per_class"]["a"]["sensitivity"] == pytest.approx(2 / 3 - 1)
    assert d["per_class"]["c"]["precision"] == pytest.approx(-0.5)


def test_per_class_scores_match_sklearn_including_empty_rows_and_columns():
    """compute_metrics counts in numpy (no scikit-learn in the runtime install); the per-class figures
    equal sklearn's precision_recall_fscore_support(zero_division=0) where both are defined."""
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    rng = np.random.default_rng(3)
    y = rng.choice([0, 1, 2, 4], size=200, p=[0.5, 0.3, 0.15, 0.05])  # class 3 absent from y
    pred = np.where(rng.random(200) < 0.6, y, rng.choice([0, 1, 3, 4], size=200))
    pred[pred == 2] = 0  # class 2 never predicted
    m = compute_metrics(y, np.eye(5)[pred], ["a", "b", "c", "d", "e"])
    prec, rec, f1, support = precision_recall_fscore_support(y, pred, labels=list(range(5)), zero_division=0.0)
    assert m["confusion"] == confusion_matrix(y, pred, labels=list(range(5))).tolist()
    for i, c in enumerate("abcde"):
        pc = m["per_class"][c]
        assert pc["support"] == support[i]
        if support[i]:
            assert pc["sensitivity"] == pytest.approx(rec[i]) and pc["f1"] == pytest.approx(f1[i])
        if support[i] or pred.tolist().count(i):
            assert pc["precision"] == pytest.approx(prec[i])
    assert m["per_class"]["c"]["precision"] == 0.0 and m["per_class"]["d"]["sensitivity"] is None
