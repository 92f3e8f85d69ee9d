"""Shared test fixtures. Add fixtures here; don't rewrite others'."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import edge_derm  # noqa: F401  (TF_USE_LEGACY_KERAS before any TensorFlow import)

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("EDGE_DERM_SHARED", REPO.parent / "shared"))


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """../shared (real HAM10000 sample, ImageNet weights); skips the test when absent."""
    if not SHARED.is_dir():
        pytest.skip(f"{SHARED} is absent (real test data and weights live there)")
    return SHARED
