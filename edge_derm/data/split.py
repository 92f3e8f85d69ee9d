"""Seeded, stratified, grouped train / val / test splits (numpy only, no TensorFlow).

The rule, applied to every class on its own:

* Each group (lesion, patient or case id) has a *primary class*: its most frequent label
  (ties: the alphabetically first). A group is assigned whole, so it is never on two sides.
* The groups of a class are put in a seeded random order (seeded per class, so adding a class
  does not reshuffle the others; independent of the input order). Walking that order, a group
  goes to ``test`` when that brings the class's test image count closer to
  ``test_fraction`` x its images; then the same for ``val`` from the remaining groups; the rest
  is ``train``. Each requested split gets at least one group (the smallest one when none was
  picked) and ``train`` always keeps at least one.
* **Too few groups** (a warning is logged and recorded): a class with a single group goes
  entirely to ``train`` (it cannot be tested); a class with fewer groups than requested splits
  + 1 gets one group in ``test``, none in ``val``, the rest in ``train``.

Why not scikit-learn's StratifiedGroupKFold: it only makes 1/k folds, so 0.15 or a separate
validation fraction cannot be honoured; the greedy walk above matches any fraction to within
one group per class and is easy to state.
Groups holding several classes are stratified by their primary class only; the others follow.
"""

from __future__ import annotations

import logging
import zlib
from collections import Counter, defaultdict
from typing import Sequence

import numpy as np

from edge_derm.errors import ConfigError

_log = logging.getLogger(__name__)


def check_fractions(test_fraction: float, val_fraction: float) -> None:
    """ConfigError unless 0 <= test, 0 <= val and test + val < 1."""
    if not 0.0 <= test_fraction < 1.0:
        raise ConfigError(f"--test-fraction must be in [0, 1), got {test_fraction}")
    if not 0.0 <= val_fraction < 1.0:
        raise ConfigError(f"--val-fraction must be in [0, 1), got {val_fraction}")
    if test_fraction + val_fraction >= 1.0:
        raise ConfigError(f"--test-fraction + --val-fraction must leave images for training "
                          f"(got {test_fraction} + {val_fraction})")


def split_groups(labels: Sequence[str], groups: Sequence[str], *, test_fraction: float = 0.2,
                 val_fraction: float = 0.0, seed: int = 0) -> tuple[list[str], list[str]]:
    """Assign every item to ``train``, ``val`` or ``test`` (see the module docstring for the rule).

    Args:
        labels: class of each item.
        groups: group id of each item (use a unique id per item when there is none).
        test_fraction: share of each class's images to put in ``test``.
        val_fraction: share of each class's images to put in ``val``.
        seed: random seed; the same inputs and seed always give the same split.

    Returns:
        The split name of each item, and the warnings about classes with too few groups.
    """
    if len(labels) != len(groups):
        raise ValueError("labels and groups must have the same length")
    check_fractions(test_fraction, val_fraction)
    group_labels, by_class = _groups_by_primary_class(labels, groups)
    wanted = [(s, f) for s, f in (("test", test_fraction), ("val", val_fraction)) if f > 0]
    group_split: dict[str, str] = {}
    warnings: list[str] = []
    for cls in sorted(by_class):
        gs = by_class[cls]
        rng = np.random.default_rng([seed, zlib.crc32(cls.encode("utf-8"))])
        order = [gs[i] for i in rng.permutation(len(gs))]
        sizes = {g: sum(group_labels[g].values()) for g in gs}
        wanted_cls = _splits_for_class(cls, len(gs), sum(sizes.values()), wanted, warnings)
        for split, fraction in wanted_cls:
            reserve = len(wanted_cls) - [s for s, _ in wanted_cls].index(split)  # later splits + train
            chosen = _pick_groups(order, sizes, fraction * sum(sizes.values()), reserve)
            for g in chosen:
                group_split[g] = split
            taken = set(chosen)
            order = [g for g in order if g not in taken]
        for g in order:
            group_split[g] = "train"
    for w in warnings:
        _log.warning("%s", w)
    splits = [group_split[g] for g in groups]
    in_train = {lab for lab, s in zip(labels, splits) if s == "train"}
    for cls in sorted(set(labels) - in_train):
        msg = f"class {cls!r} has no training images (its groups' main class is another one)"
        warnings.append(msg)
        _log.warning("%s", msg)
    return splits, warnings


def _groups_by_primary_class(labels: Sequence[str], groups: Sequence[str]
                             ) -> tuple[dict[str, Counter], dict[str, list[str]]]:
    """Each group's label counts, and the groups of each primary class (most frequent label, ties: the
    alphabetically first), groups sorted so the result does not depend on the input order."""
    group_labels: dict[str, Counter] = defaultdict(Counter)
    for lab, g in zip(labels, groups):
        group_labels[g][lab] += 1
    by_class: dict[str, list[str]] = defaultdict(list)
    for g in sorted(group_labels):
        counts = group_labels[g]
        primary = min(counts, key=lambda lab: (-counts[lab], lab))
        by_class[primary].append(g)
    return group_labels, by_class


def _splits_for_class(cls: str, n_groups: int, n_images: int, wanted: list[tuple[str, float]],
                      warnings: list[str]) -> list[tuple[str, float]]:
    """The requested splits a class with ``n_groups`` groups can fill (the rest of its groups go to train);
    appends the warning when it has too few groups for all of them."""
    if not wanted:
        return []
    if n_groups == 1:
        warnings.append(f"class {cls!r} has only 1 group ({n_images} image(s)): all go to train, "
                        "so it is not tested")
        return []
    if n_groups < len(wanted) + 1:
        warnings.append(f"class {cls!r} has only {n_groups} groups: 1 goes to {wanted[0][0]}, "
                        f"none to {wanted[1][0]}")
        return wanted[:1]
    return wanted


def _pick_groups(order: list[str], sizes: dict[str, int], target: float, reserve: int) -> list[str]:
    """Walk ``order`` and take a group when it brings the image count closer to ``target``, leaving at least
    ``reserve`` groups for the later splits and train; at least one group (the smallest) is taken."""
    chosen, total = [], 0
    for g in order:
        if len(order) - len(chosen) <= reserve:
            break
        if abs(total + sizes[g] - target) < abs(total - target):
            chosen.append(g)
            total += sizes[g]
    if not chosen:
        chosen = [min(order, key=lambda g: sizes[g])]
    return chosen
