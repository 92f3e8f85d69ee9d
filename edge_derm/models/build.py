"""Building models: a backbone, or the paper's classifier on it, with its weights loaded.

Weights are ``"none"``, ``"imagenet"`` (:mod:`.pretrained` finds or downloads them) or a path: a
keras.applications weight file, or a ``.keras`` classifier whose backbone layers are copied by name.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from edge_derm.errors import ConfigError, ModelError
from edge_derm.models.loader import first_line, load_model
from edge_derm.models.pretrained import imagenet_source
from edge_derm.models.registry import HEAD_PREFIX, BackboneSpec, get_spec, resolve_alpha, resolve_size

_log = logging.getLogger(__name__)


def create_backbone(name: str, *, image_size: int | None = None, alpha: float | None = None,
                    weights: str | os.PathLike = "none"):
    """Build a backbone as a functional model from [0, 255] RGB to its last feature map.

    Args:
        name: Registry name.
        image_size: Square input size (the spec's default when None).
        alpha: Width multiplier (MobileNetV2 only).
        weights: ``"imagenet"``, ``"none"`` or a path (a keras.applications weight file, or a
            ``.keras`` classifier whose backbone weights are copied by layer name).

    Returns:
        A flat ``keras.Model`` whose input is named ``image``.
    """
    from edge_derm.models._tf import keras

    spec = get_spec(name)
    size = resolve_size(spec, image_size)
    alpha = resolve_alpha(spec, alpha)
    inputs = keras.Input((size, size, 3), name="image", dtype="float32")
    features = spec.builder(spec.preprocess(inputs), size, alpha)
    model = keras.Model(inputs, features, name=f"{name}_backbone")
    load_backbone_weights(model, spec, weights, alpha=alpha, size=size)
    return model


def build_classifier(name: str, num_classes: int, *, image_size: int | None = None, alpha: float | None = None,
                     weights: str | os.PathLike = "none", dropout: float = 0.0):
    """Build the paper's classifier: backbone, 1x1 conv to one channel per class, GAP, softmax.

    One flat functional model (no nested Model), input float32 RGB [0, 255], head layers
    ``head_conv``, ``head_dropout`` (when ``dropout`` > 0), ``head_pool``, ``head_softmax``.
    Loadable with ``keras.models.load_model(path, safe_mode=True)`` without custom objects.

    Raises:
        ConfigError: Unknown backbone, bad size / alpha / class count / dropout.
        ModelError: Weights that cannot be found or loaded.
    """
    from edge_derm.models._tf import keras

    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ConfigError(f"a classifier needs at least 2 classes, got {num_classes!r}")
    if not 0.0 <= float(dropout) < 1.0:
        raise ConfigError(f"dropout must be in [0, 1), got {dropout}")
    spec = get_spec(name)
    size = resolve_size(spec, image_size)
    alpha = resolve_alpha(spec, alpha)
    inputs = keras.Input((size, size, 3), name="image", dtype="float32")
    x = spec.builder(spec.preprocess(inputs), size, alpha)
    x = keras.layers.Conv2D(num_classes, 1, name=f"{HEAD_PREFIX}conv")(x)
    if dropout > 0:
        x = keras.layers.Dropout(float(dropout), name=f"{HEAD_PREFIX}dropout")(x)
    x = keras.layers.GlobalAveragePooling2D(name=f"{HEAD_PREFIX}pool")(x)
    outputs = keras.layers.Softmax(name=f"{HEAD_PREFIX}softmax", dtype="float32")(x)
    model = keras.Model(inputs, outputs, name=f"{name}_classifier")
    load_backbone_weights(model, spec, weights, alpha=alpha, size=size)
    return model


def load_backbone_weights(model, spec: BackboneSpec, weights: str | os.PathLike, *,
                          alpha: float | None, size: int) -> int:
    """Load backbone weights into ``model`` (its head is left as initialised).

    Returns:
        The number of layers whose weights were set.
    """
    if weights is None or str(weights).lower() == "none":
        return 0
    if str(weights).lower() == "imagenet":
        source = imagenet_source(spec, alpha, size)
        n = copy_weights(source, model)
        if spec.after_copy is not None:
            spec.after_copy(source, model)
        return n
    path = Path(weights).expanduser()
    if not path.is_file():
        raise ModelError(f"weights file not found: {path}; pass an existing file, 'imagenet' or 'none'")
    fixup = None
    if path.suffix == ".keras":
        source = load_model(path)
    else:
        fixup = spec.after_copy
        try:
            source = spec.builder(None, size, alpha, weights=str(path))
        except Exception as exc:
            raise ModelError(f"cannot load {spec.name} weights from {path}: {first_line(exc)}; "
                             f"it must be a keras.applications weight file for {spec.name}"
                             + (f" alpha {alpha}" if alpha is not None else "") + " without top") from exc
    n = copy_weights(source, model)
    if fixup is not None:
        fixup(source, model)
    if n == 0:
        raise ModelError(f"{path} has no layers in common with backbone {spec.name}; check --backbone / --alpha")
    _log.info("loaded the weights of %d layers from %s", n, path)
    return n


def copy_weights(source, target) -> int:
    """Copy weights of every non-head layer by name from ``source`` into ``target``.

    Raises:
        ModelError: A layer exists in both with different weight shapes.
    """
    src = {layer.name: layer for layer in source.layers}
    n = 0
    for layer in target.layers:
        if layer.name.startswith(HEAD_PREFIX) or not layer.weights or layer.name not in src:
            continue
        values = src[layer.name].get_weights()
        mine = layer.get_weights()
        if len(values) != len(mine) or any(a.shape != b.shape for a, b in zip(values, mine)):
            raise ModelError(f"layer {layer.name}: weight shapes {[v.shape for v in values]} do not fit "
                             f"{[w.shape for w in mine]}; check --backbone / --alpha")
        layer.set_weights(values)
        n += 1
    return n


def layer_blocks(model, spec: BackboneSpec) -> dict[str, list]:
    """Group the model's layers that have weights by block name (``head`` first)."""
    groups: dict[str, list] = {b: [] for b in spec.block_names}
    for layer in model.layers:
        if not layer.weights:
            continue
        block = spec.block_of(layer.name)
        if block is not None:
            groups[block].append(layer)
    return groups


def count_params(model, trainable_only: bool = False) -> int:
    """Number of parameters (weights of every layer; only trainable ones when asked)."""
    import numpy as np

    variables = model.trainable_weights if trainable_only else model.weights
    return int(sum(int(np.prod(v.shape)) for v in variables))
