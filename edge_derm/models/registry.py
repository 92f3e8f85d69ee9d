"""The backbone registry: one ``BackboneSpec`` per backbone, and the one way to build a classifier.

Every classifier takes float32 RGB in [0, 255]; the backbone's normalisation lives inside the
model as standard Keras layers (never Lambda), so the converter, the runtime and the app only
resize and feed pixels. Blocks are named groups of layers (layer-name regexes), never positions.

ImageNet weights come from the Keras cache (``$KERAS_HOME/models`` or ``~/.keras/models``), else
keras.applications downloads them; ``EDGE_DERM_OFFLINE=1`` forbids the download (tests).
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from edge_derm.errors import ConfigError, ModelError

_log = logging.getLogger(__name__)

#: Names of the head layers (the classifier's only layers outside the backbone).
HEAD_PREFIX = "head_"
#: Preprocessing layers (fixed, never trained, never part of a block).
PREPROCESS_PREFIX = "preprocess_"

WEIGHT_CHOICES = ("imagenet", "none")


@dataclass(frozen=True)
class BackboneSpec:
    """How to build one backbone, and how its layers group into blocks.

    Attributes:
        name: Registry name (``mobilenet_v2``).
        default_size: Default square input size (the paper uses 300).
        imagenet_sizes: Sizes that have their own ImageNet weight file (others reuse the largest).
        min_size: Smallest input size the architecture accepts.
        preprocessing: What the model does to its [0, 255] RGB input, in words.
        blocks: Ordered (block name, layer-name regex); the first is ``head``, then the paper's
            blocks from the output towards the input, then ``rest`` (everything else).
        feature_layer: Name of the last feature-map layer (the head sits on it).
        paper_blocks: How many backbone blocks the paper's schedule unfreezes.
        alphas: Width multipliers with ImageNet weights (empty when the backbone has no alpha).
        default_alpha: Width multiplier used when none is given.
        builder: ``builder(x, image_size, alpha, weights=None)`` -> the feature tensor, where ``x``
            is the model input after preprocessing; with ``x=None`` a standalone keras.applications
            model (its own input, ``weights`` loaded) used as the source of pretrained weights.
        preprocess: ``preprocess(x)`` -> tensor, adds the in-model normalisation layers.
        weights_file: ``weights_file(alpha, size)`` -> the Keras cache file name of ImageNet
            weights (None: no ImageNet weights).
        after_copy: ``after_copy(source, target)`` fix-up after weights were copied by name.
    """

    name: str
    default_size: int
    imagenet_sizes: tuple[int, ...]
    min_size: int
    preprocessing: str
    blocks: tuple[tuple[str, str], ...]
    feature_layer: str
    paper_blocks: int
    builder: Callable[..., Any] = field(repr=False)
    preprocess: Callable[[Any], Any] = field(repr=False)
    weights_file: Callable[[float | None, int], str | None] = field(repr=False)
    alphas: tuple[float, ...] = ()
    default_alpha: float | None = None
    description: str = ""
    after_copy: Callable[[Any, Any], None] | None = field(default=None, repr=False)

    @property
    def block_names(self) -> list[str]:
        return [b for b, _ in self.blocks]

    def block_of(self, layer_name: str) -> str | None:
        """The block a layer belongs to (the first matching regex), or None for preprocessing."""
        if layer_name.startswith(PREPROCESS_PREFIX):
            return None
        for block, pattern in self.blocks:
            if re.search(pattern, layer_name):
                return block
        return None


_REGISTRY: dict[str, BackboneSpec] = {}


def register(spec: BackboneSpec) -> BackboneSpec:
    """Add a spec to the registry (used by the backbone definitions and by tests)."""
    _REGISTRY[spec.name] = spec
    return spec


def list_specs() -> list[BackboneSpec]:
    """Every registered backbone, in registration order."""
    _ensure_loaded()
    return list(_REGISTRY.values())


def get_spec(name: str) -> BackboneSpec:
    """The spec of ``name``; ConfigError listing the known names otherwise."""
    _ensure_loaded()
    if name not in _REGISTRY:
        raise ConfigError(f"unknown backbone {name!r}; choose one of {', '.join(_REGISTRY)}")
    return _REGISTRY[name]


def _ensure_loaded() -> None:
    from edge_derm.models import backbones  # noqa: F401  (registers the built-in specs)


# -- validation --------------------------------------------------------------------------------

def resolve_alpha(spec: BackboneSpec, alpha: float | None) -> float | None:
    """Validate ``alpha`` against the spec; the spec's default when None."""
    if not spec.alphas:
        if alpha is not None:
            raise ConfigError(f"backbone {spec.name} has no width multiplier; drop --alpha")
        return None
    if alpha is None:
        return spec.default_alpha
    alpha = float(alpha)
    if alpha <= 0:
        raise ConfigError(f"alpha must be positive, got {alpha}; use one of {_fmt(spec.alphas)}")
    return alpha


#: Largest accepted input size: 4 x the largest default (EfficientNet-B3's 300) is already ~16x its memory.
MAX_IMAGE_SIZE = 1024


def resolve_size(spec: BackboneSpec, image_size: int | None) -> int:
    """Validate the input size; the spec's default when None."""
    if image_size is not None and (isinstance(image_size, bool) or not isinstance(image_size, (int, float, str))):
        raise ConfigError(f"image size must be a whole number of pixels, got {image_size!r}")
    try:
        size = spec.default_size if image_size is None else int(image_size)
    except (TypeError, ValueError):
        raise ConfigError(f"image size must be a whole number of pixels, got {image_size!r}") from None
    if size < spec.min_size:
        raise ConfigError(f"image size {size} is too small for {spec.name}; use at least {spec.min_size} px")
    if size > MAX_IMAGE_SIZE:
        raise ConfigError(f"image size {size} is too large (at most {MAX_IMAGE_SIZE} px; the paper uses 300); "
                          "larger inputs do not fit in memory for training")
    return size


def check_imagenet(spec: BackboneSpec, alpha: float | None, size: int) -> None:
    """ConfigError when no ImageNet weights exist for this alpha / size."""
    if spec.weights_file(alpha, size) is None:
        raise ConfigError(f"{spec.name} has no ImageNet weights; use --weights none or a weights file")
    if spec.alphas and alpha not in spec.alphas:
        raise ConfigError(f"{spec.name} has no ImageNet weights for alpha {alpha}; "
                          f"ImageNet weights exist for alpha {_fmt(spec.alphas)}")
    if size < spec.min_size:
        raise ConfigError(f"{spec.name} has no ImageNet weights for input size {size}; "
                          f"use at least {spec.min_size} px (files exist for {_fmt(spec.imagenet_sizes)})")


def find_cached_imagenet(spec: BackboneSpec, alpha: float | None, size: int) -> Path | None:
    """The cached ImageNet file for this size, else the cached file of the nearest other input size.

    keras.applications keeps one no-top file per input size for some backbones (MobileNetV2: 96-224);
    their weights have the same shapes, so any of them initialises a model of any size.
    """
    cache = keras_cache_dir()
    exact = spec.weights_file(alpha, size)
    if exact and (cache / exact).is_file():
        return cache / exact
    for other in sorted(spec.imagenet_sizes, key=lambda s: (abs(s - size), -s)):
        name = spec.weights_file(alpha, other)
        if name and (cache / name).is_file():
            return cache / name
    return None


def keras_cache_dir() -> Path:
    """Where keras.applications caches weight files (``$KERAS_HOME/models`` or ``~/.keras/models``)."""
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    return Path(home) / "models"


def _fmt(values: tuple) -> str:
    return ", ".join(str(v) for v in values)


# -- building ----------------------------------------------------------------------------------

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
        check_imagenet(spec, alpha, size)
        fname = spec.weights_file(alpha, size)
        cached = find_cached_imagenet(spec, alpha, size)
        if cached is not None and cached.name != fname:
            _log.warning("ImageNet weights: %s is not cached; loaded %s instead (no-top weights have the same "
                         "shapes at every input size)", fname, cached)
        if cached is None and os.environ.get("EDGE_DERM_OFFLINE"):
            raise ModelError(_missing_weights_message(spec, fname))
        try:
            # A cached file is loaded as a path: keras.applications would look for it in /tmp/.keras
            # (and try the network) when the cache folder is read-only.
            source = spec.builder(None, size, alpha, weights=str(cached) if cached is not None else "imagenet")
        except Exception as exc:  # keras raises a bare Exception on URL fetch failures
            if cached is not None:
                raise ModelError(f"cannot load ImageNet weights from {cached}: {_first_line(exc)}; delete the "
                                 "file to download it again") from exc
            raise ModelError(_missing_weights_message(spec, fname)) from exc
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
            raise ModelError(f"cannot load {spec.name} weights from {path}: {_first_line(exc)}; "
                             f"it must be a keras.applications weight file for {spec.name}"
                             + (f" alpha {alpha}" if alpha is not None else "") + " without top") from exc
    n = copy_weights(source, model)
    if fixup is not None:
        fixup(source, model)
    if n == 0:
        raise ModelError(f"{path} has no layers in common with backbone {spec.name}; check --backbone / --alpha")
    _log.info("loaded the weights of %d layers from %s", n, path)
    return n


def _missing_weights_message(spec: BackboneSpec, fname: str) -> str:
    return (f"ImageNet weights for {spec.name} are not cached and could not be downloaded (offline?): "
            f"put {fname} in {keras_cache_dir()} (default ~/.keras/models, or set KERAS_HOME), "
            "or pass --weights PATH / --weights none")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


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


def load_model(path: str | os.PathLike, *, num_classes: int | None = None, image_size: int | None = None):
    """Load a classifier saved by edge-derm (``safe_mode=True``, no custom objects): the one model loader.

    ``num_classes`` / ``image_size``, when given, are what the caller's config says the model is (a run's
    ``config.json``); a model that disagrees is a ModelError naming both.
    """
    from edge_derm.models._tf import keras

    path = Path(path)
    if not path.is_file():
        raise ModelError(f"model file not found: {path}")
    try:
        model = keras.models.load_model(path, safe_mode=True, compile=False)
    except Exception as exc:  # noqa: BLE001 - Keras raises many types for a bad file
        raise ModelError(f"cannot load model {path}: {_first_line(exc)[:200]}; the file may be truncated, "
                         "retrain or restore it") from None
    n_out = int(model.output_shape[-1])
    if num_classes is not None and n_out != num_classes:
        raise ModelError(f"{path}: the model has {n_out} outputs but its config lists {num_classes} classes; "
                         "the run folder is inconsistent")
    shape = tuple(model.input_shape[1:])
    if image_size is not None and shape != (image_size, image_size, 3):
        raise ModelError(f"{path}: the model takes {shape} but its config says image_size {image_size}; "
                         "the run folder is inconsistent")
    return model


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
