"""Splits: stratified within tolerance, grouped (no group on both sides), deterministic, documented edge rules."""

from __future__ import annotations

from collections import Counter, defaultdict

import numpy as np
import pytest

from edge_derm.data.split import split_groups
from edge_derm.errors import ConfigError


def _data(seed: int = 0):
    """Three classes of very different sizes; groups of 1-3 images."""
    rng = np.random.default_rng(seed)
    labels, groups = [], []
    for cls, n_groups in (("big", 300), ("mid", 60), ("small", 12)):
        for g in range(n_groups):
            for _ in range(int(rng.integers(1, 4))):
                labels.append(cls)
                groups.append(f"{cls}-{g}")
    return labels, groups


def _sides(groups, splits):
    sides = defaultdict(set)
    for g, s in zip(groups, splits):
        sides[g].add(s)
    return sides


@pytest.mark.parametrize("test_fraction, val_fraction", [(0.2, 0.0), (0.15, 0.1), (0.3, 0.2)])
def test_stratified_within_tolerance_and_grouped(test_fraction, val_fraction):
    labels, groups = _data()
    splits, warnings = split_groups(labels, groups, test_fraction=test_fraction, val_fraction=val_fraction, seed=3)
    assert warnings == []
    assert all(len(s) == 1 for s in _sides(groups, splits).values())  # no group on two sides
    per = Counter(zip(labels, splits))
    for cls, n in Counter(labels).items():
        for split, frac in (("test", test_fraction), ("val", val_fraction)):
            # within one group (max 3 images) of the target, plus 2 % of the class for the big ones
            assert abs(per[(cls, split)] - frac * n) <= 3 + 0.02 * n, (cls, split, per[(cls, split)], frac * n)
        assert per[(cls, "train")] > 0
    if val_fraction == 0:
        assert "val" not in splits


def test_deterministic_seeded_and_order_independent():
    labels, groups = _data()
    a, _ = split_groups(labels, groups, seed=7)
    b, _ = split_groups(labels, groups, seed=7)
    c, _ = split_groups(labels, groups, seed=8)
    assert a == b
    assert a != c
    rev, _ = split_groups(labels[::-1], groups[::-1], seed=7)
    assert rev[::-1] == a


def test_adding_a_class_does_not_reshuffle_the_others():
    labels, groups = _data()
    a, _ = split_groups(labels, groups, seed=1)
    b, _ = split_groups(labels + ["new"] * 10, groups + [f"n{i}" for i in range(10)], seed=1)
    assert b[: len(a)] == a


def test_too_few_groups_rule_and_warnings(caplog):
    labels = ["a"] * 20 + ["one"] * 4 + ["two"] * 2
    groups = [f"a{i}" for i in range(20)] + ["o"] * 4 + ["t0", "t1"]
    splits, warnings = split_groups(labels, groups, test_fraction=0.2, val_fraction=0.1)
    per = Counter(zip(labels, splits))
    assert per[("one", "train")] == 4  # a single group: all in train
    assert per[("two", "test")] == 1 and per[("two", "train")] == 1 and per[("two", "val")] == 0
    assert any("'one' has only 1 group" in w for w in warnings)
    assert any("'two' has only 2 groups" in w for w in warnings)
    assert "'one' has only 1 group" in caplog.text


def test_small_class_still_gets_a_test_group():
    # 3 groups of 1 image: 20 % of 3 is 0.6, the greedy walk picks none; the rule forces one.
    labels = ["a"] * 50 + ["b"] * 3
    groups = [str(i) for i in range(53)]
    splits, warnings = split_groups(labels, groups, test_fraction=0.2)
    per = Counter(zip(labels, splits))
    assert per[("b", "test")] == 1 and per[("b", "train")] == 2
    assert warnings == []


def test_groups_with_several_classes_stay_whole():
    labels = ["x", "y"] * 30
    groups = [f"p{i // 4}" for i in range(60)]  # patients holding both classes
    splits, _ = split_groups(labels, groups, test_fraction=0.25, seed=2)
    assert all(len(s) == 1 for s in _sides(groups, splits).values())
    assert 0 < splits.count("test") < 60


def test_zero_test_fraction_is_all_train():
    splits, warnings = split_groups(["a", "b", "a"], ["1", "2", "3"], test_fraction=0.0)
    assert splits == ["train"] * 3 and warnings == []


@pytest.mark.parametrize("test_fraction, val_fraction", [(1.0, 0.0), (-0.1, 0.0), (0.5, 0.5), (0.2, 1.2)])
def test_bad_fractions(test_fraction, val_fraction):
    with pytest.raises(ConfigError, match="fraction"):
        split_groups(["a"], ["1"], test_fraction=test_fraction, val_fraction=val_fraction)
