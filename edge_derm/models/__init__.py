"""Backbone registry and classifier builder (TensorFlow is imported only when a model is built)."""

from __future__ import annotations

from edge_derm.models.registry import (
    HEAD_PREFIX,
    BackboneSpec,
    build_classifier,
    copy_weights,
    count_params,
    create_backbone,
    get_spec,
    layer_blocks,
    list_specs,
    load_model,
    register,
)

__all__ = [
    "HEAD_PREFIX", "BackboneSpec", "build_classifier", "copy_weights", "count_params", "create_backbone",
    "get_spec", "layer_blocks", "list_specs", "load_model", "register",
]
