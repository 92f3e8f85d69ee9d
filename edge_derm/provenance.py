"""Versions and hashes recorded in every artefact folder, so any figure can be traced back."""

from __future__ import annotations

import hashlib
import json
import logging
import platform
import re
import sys
from importlib import metadata
from pathlib import PurePosixPath, PureWindowsPath
from typing import Any

_log = logging.getLogger(__name__)
#: Metadata keys whose strings are names and prose, never paths (left as they are).
_TEXT_KEYS = ("labels", "descriptions", "triage", "name", "taxonomy")
_ABSOLUTE = re.compile(r"^(/|~|[A-Za-z]:[\\/]|\\\\)")

_PACKAGES = ("edge-derm", "tensorflow", "tf-keras", "tensorflow-model-optimization", "ai-edge-litert",
             "numpy", "pillow", "scikit-learn")


def versions() -> dict[str, str]:
    """Installed versions of the packages that shape results (no TensorFlow import)."""
    out = {"python": sys.version.split()[0], "platform": platform.platform()}
    for name in _PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def cpuinfo() -> dict[str, str]:
    """``/proc/cpuinfo`` as key -> value of its first processor (``model name``, ``cpu MHz``, ``flags``, ...);
    empty where there is none (not Linux)."""
    from pathlib import Path

    out: dict[str, str] = {}
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return out
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            out.setdefault(key.strip(), value.strip())
    return out


def machine() -> dict[str, Any]:
    """The CPU a measurement ran on (model name, cores available to this process, Python)."""
    import os

    model = cpuinfo().get("model name") or platform.processor() or platform.machine()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"cpu": model, "cores_available": cores, "python": platform.python_version(), "system": platform.system()}


def hash_json(obj: Any) -> str:
    """A short stable hash of a JSON-serialisable object (key order independent)."""
    blob = json.dumps(obj, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def hash_file(path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def _strip_path(value: str) -> str:
    """The last part of an absolute host path (``/home/me/runs/r1`` -> ``r1``); other strings unchanged."""
    if not _ABSOLUTE.match(value):
        return value
    parts = PureWindowsPath(value) if "\\" in value else PurePosixPath(value)
    return parts.name or "."


def without_host_paths(meta: dict[str, Any]) -> dict[str, Any]:
    """``meta`` with every absolute host path cut to its last part: what ships inside a model and an app.

    The run folder (``provenance.run``) and any other path the conversion recorded would otherwise
    reveal the build machine's user and folder names inside every copy of the model and the app.
    """
    def clean(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: (v if k in _TEXT_KEYS else clean(v)) for k, v in node.items()}
        if isinstance(node, list):
            return [clean(v) for v in node]
        return _strip_path(node) if isinstance(node, str) else node

    cleaned = clean(meta)
    if cleaned != meta:
        _log.debug("host paths in the metadata cut to their last part")
    return cleaned


def host_paths(doc: Any) -> list[str]:
    """Absolute paths anywhere in a JSON document, names and prose aside (what without_host_paths removes)."""
    if isinstance(doc, dict):
        return [p for k, v in doc.items() if k not in _TEXT_KEYS for p in host_paths(v)]
    if isinstance(doc, list):
        return [p for v in doc for p in host_paths(v)]
    return [doc] if isinstance(doc, str) and _ABSOLUTE.match(doc) else []
