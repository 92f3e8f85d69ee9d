"""Backbone registry and classifier builder (TensorFlow is imported only when a model is built).

Modules: :mod:`.registry` (specs by name, validation; a leaf), :mod:`.backbones` (the built-in specs,
registered on import), :mod:`.build` (backbones and classifiers with their weights), :mod:`.pretrained`
(ImageNet weights: cache, probe, download), :mod:`.loader` (the one model loader). Modules of this package
import each other's modules, never this ``__init__``.
"""

from __future__ import annotations

from edge_derm.models import backbones  # noqa: F401  (registers the built-in specs)
from edge_derm.models.build import build_classifier, copy_weights, count_params, create_backbone, layer_blocks
from edge_derm.models.loader import load_model
from edge_derm.models.registry import HEAD_PREFIX, BackboneSpec, get_spec, list_specs, register

__all__ = [
    "HEAD_PREFIX", "BackboneSpec", "build_classifier", "copy_weights", "count_params", "create_backbone",
    "get_spec", "layer_blocks", "list_specs", "load_model", "register",
]
