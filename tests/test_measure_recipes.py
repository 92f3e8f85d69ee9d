"""The arithmetic of benchmarks/scripts/measure_recipes.py (intervals over splits, paired differences, goals)."""

from __future__ import annotations

import math

import pytest

import measure_recipes as mr


def _row(f1, bal=0.5, mm=0.5, ece=0.05):
    return {"macro_f1": f1, "balanced_accuracy": bal, "accuracy": 0.6, "mm_sensitivity": mm, "bcc_sensitivity": 0.5,
            "ece_before": 0.2, "ece": ece, "referral_sensitivity": 0.9, "referral_specificity": 0.5,
            "minutes": 8.0, "selected": {"step": 1, "epoch": 2}, "temperature": 1.5, "threshold": 0.2, "n_test": 411}


def test_t_interval_matches_a_hand_computation():
    m, lo, hi = mr.t_interval([0.40, 0.50, 0.60])
    # mean 0.5, sd 0.1, t(0.975, 2) = 4.3027, half-width 4.3027 * 0.1 / sqrt(3)
    assert m == pytest.approx(0.5) and hi - m == pytest.approx(4.302653 * 0.1 / math.sqrt(3), rel=1e-5)
    assert m - lo == pytest.approx(hi - m)
    assert mr.t_interval([]) is None and math.isnan(mr.t_interval([0.3])[1])


def test_paired_differences_and_goals():
    rows = {"paper": [_row(0.30), _row(0.40)], "recommended": [_row(0.50, bal=0.7, mm=0.65, ece=0.03),
                                                                 _row(0.62, bal=0.66, mm=0.61, ece=0.04)]}
    s = mr.summarise(rows)
    d = s["recommended"]["delta_vs_paper"]["macro_f1"]
    assert d[0] == pytest.approx(0.21)  # mean of the paired differences 0.20 and 0.22
    md = mr.markdown(s, rows, {"machine": {"cpu": "x", "cores_available": 2}, "alpha": 0.35, "image_size": 128,
                               "splits": 2})
    assert "macro_f1 ≥ 60%: 56.0% — **not met**" in md
    assert "balanced_accuracy ≥ 65%: 68.0% — **met**" in md and "ECE ≤ 0.05 after temperature scaling: 0.035 — **met**" in md
    assert "| recommended | paper | 21.0 (" in md


def test_ablations_are_paired_with_the_recipe_they_ablate():
    """rec-* ablations undo one choice of ``cosine`` and are compared with it (on the splits they ran),
    ``cosine`` with ``recommended``: never an ablation against a recipe it differs from in two ways."""
    rows = {"recommended": [_row(0.50), _row(0.40)], "cosine": [_row(0.47), _row(0.35)],
            "rec-no-bn": [_row(0.40)]}
    s = mr.summarise(rows)
    assert set(s["rec-no-bn"]) >= {"delta_vs_cosine"} and "delta_vs_recommended" not in s["rec-no-bn"]
    assert s["rec-no-bn"]["delta_vs_cosine"]["macro_f1"][0] == pytest.approx(-0.07)
    assert s["cosine"]["delta_vs_recommended"]["macro_f1"][0] == pytest.approx(-0.04)
    md = mr.markdown(s, rows, {"machine": {}, "alpha": 0.35, "image_size": 128, "splits": 2})
    assert "| rec-no-bn | cosine | -7.0 |" in md and "| cosine | recommended | -4.0 (" in md
    for name, opts in mr.VARIANTS.items():  # every ablation of cosine is cosine plus one change
        if name.startswith("rec-") and mr.REFERENCES.get(name, ("cosine",)) == ("cosine",):
            assert {k: v for k, v in opts.items() if k in mr.COSINE} == mr.COSINE and len(opts) == len(mr.COSINE) + (
                2 if name == "rec-no-bn" else 1)
