"""The backbone registry: one ``BackboneSpec`` per backbone, looked up by name, and input validation.

A leaf of ``edge_derm.models``: it imports no other module of the package. The built-in specs are
registered by :mod:`edge_derm.models.backbones`, which the package imports, so any import of this
module (which imports the package first) sees them. Building models lives in :mod:`.build`, ImageNet
weights (cache, probe, download) in :mod:`.pretrained`, loading a saved classifier in :mod:`.loader`.

Every classifier takes float32 RGB in [0, 255]; the backbone's normalisation lives inside the
model as standard Keras layers (never Lambda), so the converter, the runtime and the app only
resize and feed pixels. Blocks are named groups of layers (layer-name regexes), never positions.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable

from edge_derm.errors import ConfigError

#: Names of the head layers (the classifier's only layers outside the backbone).
HEAD_PREFIX = "head_"
#: Preprocessing layers (fixed, never trained, never part of a block).
PREPROCESS_PREFIX = "preprocess_"


@dataclass(frozen=True)
class BackboneSpec:
    """How to build one backbone, and how its layers group into blocks.

    Attributes:
        name: Registry name (``mobilenet_v2``).
        default_size: Default square input size (the paper uses 300).
        imagenet_sizes: Sizes that have their own ImageNet weight file (other sizes load one of them).
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
    return list(_REGISTRY.values())


def get_spec(name: str) -> BackboneSpec:
    """The spec of ``name``; ConfigError listing the known names otherwise."""
    if name not in _REGISTRY:
        raise ConfigError(f"unknown backbone {name!r}; choose one of {', '.join(_REGISTRY)}")
    return _REGISTRY[name]


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


def _fmt(values: tuple) -> str:
    return ", ".join(str(v) for v in values)
