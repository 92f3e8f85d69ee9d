"""Versions and hashes recorded in every artefact folder, so any figure can be traced back."""

from __future__ import annotations

import hashlib
import json
import platform
import sys
from importlib import metadata
from typing import Any

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


def machine() -> dict[str, Any]:
    """The CPU a measurement ran on (model name, cores available to this process, Python)."""
    import os
    from pathlib import Path

    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
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
