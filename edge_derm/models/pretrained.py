"""ImageNet weights: the Keras cache, the download host probe, the download, and the ``auto`` choice.

The one home of pretrained-weights logic. Building a model asks :func:`imagenet_source` for a
keras.applications model holding the weights; the demo asks :func:`choose_weights` which weights to
train from (and why, in words).

- Cache: ``$KERAS_HOME/models`` or ``~/.keras/models``, where keras.applications keeps its files. The
  file of the asked input size is used, else the cached file of the nearest other input size (no-top
  weights have the same shapes at every size), with a warning.
- Download: keras.applications fetches the file when nothing is cached; ``EDGE_DERM_OFFLINE=1``
  forbids it (tests), and then a missing file is a ModelError naming it.
- Probe: ``auto`` asks whether the download host answers (bounded in time) before relying on it.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from dataclasses import dataclass, replace
from pathlib import Path

from edge_derm.errors import ConfigError, ModelError
from edge_derm.models.loader import first_line
from edge_derm.models.registry import BackboneSpec, check_imagenet, get_spec

_log = logging.getLogger(__name__)

#: Where keras.applications downloads ImageNet weight files from.
WEIGHTS_HOST = ("storage.googleapis.com", 443)
#: What a caller may ask :func:`choose_weights` for, besides a weights file.
CHOICES = ("auto", "imagenet", "none")


# -- the Keras cache -----------------------------------------------------------------------------

def keras_cache_dir() -> Path:
    """Where keras.applications caches weight files (``$KERAS_HOME/models`` or ``~/.keras/models``)."""
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    return Path(home) / "models"


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


def file_input_size(spec: BackboneSpec, alpha: float | None, path: str | os.PathLike) -> int | None:
    """The input size whose ImageNet file is named like ``path`` (None when no size's file is)."""
    name = Path(path).name
    for size in spec.imagenet_sizes:
        if spec.weights_file(alpha, size) == name:
            return size
    return None


def has_imagenet(spec: BackboneSpec, alpha: float | None, size: int) -> bool:
    """Whether ImageNet weights exist for this backbone, width multiplier and size (the registry's rule)."""
    try:
        check_imagenet(spec, alpha, size)
    except ConfigError:
        return False
    return True


# -- loading (cache or download) -----------------------------------------------------------------

def imagenet_source(spec: BackboneSpec, alpha: float | None, size: int):
    """A standalone keras.applications model holding the ImageNet weights (cached, else downloaded).

    Raises:
        ConfigError: No ImageNet weights exist for this alpha / size.
        ModelError: A cached file that cannot be loaded, or no file cached and no download (offline).
    """
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
        return spec.builder(None, size, alpha, weights=str(cached) if cached is not None else "imagenet")
    except Exception as exc:  # keras raises a bare Exception on URL fetch failures
        if cached is not None:
            raise ModelError(f"cannot load ImageNet weights from {cached}: {first_line(exc)}; delete the "
                             "file to download it again") from exc
        raise ModelError(_missing_weights_message(spec, fname)) from exc


def _missing_weights_message(spec: BackboneSpec, fname: str) -> str:
    return (f"ImageNet weights for {spec.name} are not cached and could not be downloaded (offline?): "
            f"put {fname} in {keras_cache_dir()} (default ~/.keras/models, or set KERAS_HOME), "
            "or pass --weights PATH / --weights none")


# -- the download host -----------------------------------------------------------------------------

def host_reachable(host: tuple[str, int] = WEIGHTS_HOST, timeout: float = 3.0) -> bool:
    """Whether a TCP connection to ``host`` opens within ``timeout`` seconds (DNS included).

    The check runs in a daemon thread joined with a timeout, because name resolution ignores socket
    timeouts and can hang for long offline.
    """
    result: list[bool] = []

    def probe() -> None:
        try:
            with socket.create_connection(host, timeout=timeout):
                result.append(True)
        except OSError:
            result.append(False)

    t = threading.Thread(target=probe, name="edge-derm-weights-probe", daemon=True)
    t.start()
    t.join(timeout)
    return bool(result and result[0])


# -- the choice: auto / imagenet / none / a file -----------------------------------------------------

@dataclass(frozen=True)
class WeightsDecision:
    """Which backbone weights to train from, and why (the note is shown in summaries and reports)."""

    requested: str
    weights: str  # what TrainConfig gets: "imagenet", "none" or a file path
    pretrained: bool
    note: str


def choose_weights(requested: str, backbone: str, alpha: float | None, image_size: int, *,
                   timeout: float = 3.0) -> WeightsDecision:
    """Decide (:func:`decide_weights`), then download what an ``auto`` decision relies on (:func:`fetch_imagenet`)."""
    decision = fetch_imagenet(decide_weights(requested, backbone, alpha, image_size, timeout=timeout),
                              backbone, alpha, image_size)
    _log.info("weights: %s", decision.note)
    return decision


def decide_weights(requested: str, backbone: str, alpha: float | None, image_size: int, *,
                   timeout: float = 3.0) -> WeightsDecision:
    """Resolve ``auto`` / ``imagenet`` / ``none`` / a path into the weights to train from.

    ``auto`` uses ImageNet weights when the Keras cache holds a file for this backbone and alpha, or
    when the download host answers within ``timeout`` seconds (skipped when ``EDGE_DERM_OFFLINE`` is
    set); else it trains from scratch. Nothing is downloaded here (:func:`fetch_imagenet` does).
    """
    spec = get_spec(backbone)
    if requested == "none":
        return WeightsDecision(requested, "none", False, "--weights none: trained from scratch")
    if requested not in ("auto", "imagenet"):
        return WeightsDecision(requested, requested, True, f"weights loaded from {requested}")
    if not has_imagenet(spec, alpha, image_size):
        if requested == "imagenet":
            check_imagenet(spec, alpha, image_size)  # raises the one-line ConfigError
        what = f"{backbone}" + (f" alpha {alpha}" if spec.alphas else "")
        return WeightsDecision(requested, "none", False, f"{what} has no ImageNet weights: trained from scratch")
    cached = find_cached_imagenet(spec, alpha, image_size)
    if cached is not None:
        if cached.name == spec.weights_file(alpha, image_size):
            return WeightsDecision(requested, "imagenet", True, f"ImageNet weights from the Keras cache ({cached})")
        return WeightsDecision(requested, str(cached), True,
                               f"ImageNet weights from the Keras cache ({cached.parent}, the "
                               f"{file_input_size(spec, alpha, cached)} px file; convolution weights do not "
                               "depend on the input size)")
    if requested == "imagenet":
        return WeightsDecision(requested, "imagenet", True, "ImageNet weights (--weights imagenet)")
    return _decide_download(requested, spec, alpha, image_size, timeout)


def _decide_download(requested: str, spec: BackboneSpec, alpha: float | None, image_size: int,
                     timeout: float) -> WeightsDecision:
    """``auto`` with nothing cached: download when allowed and the host answers, else from scratch."""
    wanted = keras_cache_dir() / spec.weights_file(alpha, image_size)
    if os.environ.get("EDGE_DERM_OFFLINE"):
        return WeightsDecision(requested, "none", False,
                               f"ImageNet weights not cached ({wanted} absent) and EDGE_DERM_OFFLINE is set: "
                               "trained from scratch")
    if host_reachable(WEIGHTS_HOST, timeout):
        return WeightsDecision(requested, "imagenet", True,
                               f"ImageNet weights downloaded from {WEIGHTS_HOST[0]} into {keras_cache_dir()}")
    return WeightsDecision(requested, "none", False,
                           f"ImageNet weights not cached ({wanted} absent) and {WEIGHTS_HOST[0]} not reachable "
                           f"within {timeout:g} s (offline?): trained from scratch")


def fetch_imagenet(decision: WeightsDecision, backbone: str, alpha: float | None, image_size: int) -> WeightsDecision:
    """Download ImageNet weights for an ``auto`` decision; fall back to from scratch if that fails."""
    if decision.requested != "auto" or decision.weights != "imagenet":
        return decision
    spec = get_spec(backbone)
    if (keras_cache_dir() / (spec.weights_file(alpha, image_size) or "")).is_file():
        return decision
    try:
        imagenet_source(spec, alpha, image_size)  # keras.applications downloads into the cache
    except ModelError as exc:
        return replace(decision, weights="none", pretrained=False,
                       note=f"ImageNet weights could not be downloaded ({str(exc)[:160]}): trained from scratch")
    return decision
