"""Lazy access to tf_keras (imported only when a model is built)."""

from __future__ import annotations

import edge_derm  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow)
import tensorflow as tf  # noqa: E402
import tf_keras as keras  # noqa: E402

__all__ = ["keras", "tf"]
