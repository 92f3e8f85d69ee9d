"""The metadata document every .tflite carries: what it says is decided here (from the run's config).

The .tflite format itself (embedding the document as the ``edge_derm_metadata`` buffer, TFLite's standard
metadata and the labels archive, reading them back) is :mod:`edge_derm.tflite_format`'s;
:func:`embed_metadata` and :func:`embed_built_metadata` are re-exported from there.
"""

from __future__ import annotations

import logging
from typing import Any

from edge_derm.artefacts import RunConfig
from edge_derm.tflite_format.reader import ModelInfo
from edge_derm.tflite_format.writer import embed_built_metadata, embed_metadata

__all__ = ["FORMAT_VERSION", "build_metadata", "embed_built_metadata", "embed_metadata", "taxonomy_info",
           "tensor_io"]

_log = logging.getLogger(__name__)
FORMAT_VERSION = 1


def taxonomy_info(name: str | None, classes: list[str]) -> tuple[dict[str, str], dict[str, str]]:
    """Class descriptions and triage groups from the run's taxonomy (empty / ``unknown`` if none)."""
    descriptions: dict[str, str] = {}
    triage: dict[str, str] = {}
    if name and name != "native":
        try:
            from edge_derm.data.taxonomy import load_taxonomy

            tax = load_taxonomy(name)
            descriptions = {c: tax.descriptions[c] for c in classes if c in tax.descriptions}
            triage = {c: tax.triage[c] for c in classes if c in tax.triage}
        except Exception as exc:  # noqa: BLE001 - metadata is still useful without descriptions
            _log.warning("taxonomy %r not available for class descriptions (%s)", name, exc)
    for c in classes:
        triage.setdefault(c, "unknown")
    return descriptions, triage


def tensor_io(info: ModelInfo) -> tuple[dict[str, Any], dict[str, Any]]:
    """The real input/output dtypes and quantisation parameters read back from the file."""
    def describe(t) -> dict[str, Any]:
        return {"dtype": t.dtype, "scale": float(t.scale[0]) if t.scale else 0.0,
                "zero_point": int(t.zero_point[0]) if t.zero_point else 0, "shape": list(t.shape)}

    return describe(info.input_tensors[0]), describe(info.output_tensors[0])


def build_metadata(*, run_config: RunConfig, run_dir: str, quantization: str,
                   io: tuple[dict[str, Any], dict[str, Any]], verification: dict[str, Any], config_hash: str,
                   versions: dict[str, str], extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The flat metadata document of docs/ARCHITECTURE.md ("Convert folder").

    ``io`` is the (input, output) description of :func:`tensor_io` / :func:`embed_metadata`.
    """
    classes = list(run_config.classes)
    # The run's own triage and descriptions (from its datasets) win: a custom --taxonomy file has no
    # shipped namesake to reload. Runs from before they were recorded reload the taxonomy by name.
    own_triage = {c: g for c, g in (run_config.get("triage") or {}).items() if c in classes and g != "unknown"}
    if own_triage:
        triage = {c: own_triage.get(c, "unknown") for c in classes}
        descriptions = {c: d for c, d in (run_config.get("descriptions") or {}).items() if c in classes}
        if "descriptions" not in run_config.extra:  # a run from before descriptions were recorded
            descriptions, _ = taxonomy_info(run_config.get("taxonomy"), classes)
    else:
        descriptions, triage = taxonomy_info(run_config.get("taxonomy"), classes)
    tin, tout = io
    size = int(run_config.image_size)
    meta: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "name": run_config.get("backbone", "model"),
        "quantization": quantization,
        "labels": classes,
        "descriptions": descriptions,
        "triage": triage,
        "taxonomy": run_config.get("taxonomy", "native"),
        "input": {"size": [size, size], "channels": 3, "color": "RGB",
                  "resize": run_config.get("resize_mode", "nearest"), "range": [0, 255],
                  "mean": [0, 0, 0], "std": [1, 1, 1],
                  "preprocessing_in_model": run_config.get("preprocessing", ""),
                  "dtype": tin["dtype"], "scale": tin["scale"], "zero_point": tin["zero_point"]},
        "output": {"dtype": tout["dtype"], "scale": tout["scale"], "zero_point": tout["zero_point"],
                   "activation": "softmax"},
        # Temperature, prior shift and triage operating point fitted on the run's validation split
        # (edge_derm.calibration); the runtime, predict and the Android app apply them.
        "output_calibration": _output_calibration(run_config.get("calibration")),
        "verification": verification,
        "provenance": {"run": run_dir,
                       "dataset_hashes": [d.get("hash", "") for d in run_config.get("data", [])],
                       "config_hash": config_hash, "run_config_hash": run_config.get("config_hash", ""),
                       "versions": versions},
    }
    if extra:
        meta.update(extra)
    return meta


def _output_calibration(block: dict[str, Any] | None) -> dict[str, Any] | None:
    if not block:
        return None
    keys = ("method", "fitted_on", "temperature", "log_prior", "prevalence", "referral_groups", "referral_classes",
            "threshold", "target_sensitivity")
    return {k: block.get(k) for k in keys}
