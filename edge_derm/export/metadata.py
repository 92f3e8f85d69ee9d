"""The model an export takes and its metadata: which variant, its record, and whether the app can use it.

A convert folder's ``model.json`` is read as :class:`edge_derm.artefacts.ConvertResult` (the variant's
record carries the verification results and the SHA-256); a lone .tflite gives its embedded metadata.
No TensorFlow.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from edge_derm.artefacts import ConvertResult, VariantRecord
from edge_derm.converters.presets import MODES, PRESETS
from edge_derm.errors import ConfigError, DataError, ModelError
from edge_derm.fsutil import read_json

_log = logging.getLogger(__name__)

#: The layout of the metadata the app reads (ModelMetadata.kt) and of expected_results.json.
FORMAT_VERSION = 1

#: Variant chosen from a convert folder when --variant is not given: smallest and fastest first, i.e. the
#: integer presets in table order (post-training int8 before the fine-tuned qat), then the float ones from the
#: smallest (dynamic) to the reference (fp32).
VARIANT_PREFERENCE: tuple[str, ...] = (tuple(m for m in MODES if PRESETS[m].integer)
                                       + tuple(m for m in reversed(MODES) if not PRESETS[m].integer))
#: Metadata fields the app cannot work without (the ``req*`` reads of ModelMetadata.kt).
REQUIRED_FIELDS = ("format_version", "labels", "triage", "input.size", "input.resize", "input.mean", "input.std",
                   "input.dtype", "input.scale", "input.zero_point", "output.dtype", "output.scale",
                   "output.zero_point")
APP_DTYPES = ("float32", "uint8", "int8")
APP_RESIZE_MODES = ("nearest", "pad")


def get_dotted(meta: dict[str, Any], dotted: str) -> Any:
    """``meta["a"]["b"]`` for ``"a.b"``; None where a part is missing."""
    node: Any = meta
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def metadata_problems(meta: dict[str, Any]) -> list[str]:
    """What in ``meta`` the Android app would refuse (empty when it can use the model)."""
    problems = [f"{f} missing" for f in REQUIRED_FIELDS if get_dotted(meta, f) is None]
    if problems:
        return problems
    labels = meta["labels"]
    if not isinstance(labels, list) or not labels or not all(isinstance(x, str) for x in labels):
        problems.append("labels is not a non-empty list of names")
    elif len(set(labels)) != len(labels):
        problems.append("labels has duplicates")
    if not isinstance(meta["triage"], dict):
        problems.append("triage is not an object")
    if not isinstance(meta["format_version"], int) or meta["format_version"] > FORMAT_VERSION:
        problems.append(f"format_version {meta['format_version']!r} is not one the app reads ({FORMAT_VERSION})")
    inp, out = meta["input"], meta["output"]
    size = inp["size"]
    if not (isinstance(size, list) and len(size) == 2 and all(isinstance(s, int) and s > 0 for s in size)):
        problems.append(f"input.size {size!r} is not [height, width]")
    if inp["resize"] not in APP_RESIZE_MODES:
        problems.append(f"input.resize {inp['resize']!r} is not one of {', '.join(APP_RESIZE_MODES)}")
    for key in ("mean", "std"):
        v = inp[key]
        if not (isinstance(v, list) and len(v) == 3 and all(_is_num(x) for x in v)):
            problems.append(f"input.{key} is not 3 numbers")
    if isinstance(inp["std"], list) and any(x == 0 for x in inp["std"]):
        problems.append("input.std has a zero")
    if inp.get("channels", 3) != 3 or inp.get("color", "RGB") != "RGB":
        problems.append("the input is not 3-channel RGB")
    rng = inp.get("range", [0, 255])
    if not (isinstance(rng, list) and len(rng) == 2 and all(_is_num(x) for x in rng)):
        problems.append("input.range is not 2 numbers")
    for name, t in (("input", inp), ("output", out)):
        if t["dtype"] not in APP_DTYPES:
            problems.append(f"{name}.dtype {t['dtype']!r} is not one of {', '.join(APP_DTYPES)}")
        elif t["dtype"] != "float32" and not (_is_num(t["scale"]) and t["scale"] > 0):
            problems.append(f"{name} is quantised but {name}.scale is not positive")
        if not isinstance(t["zero_point"], int) or isinstance(t["zero_point"], bool):
            problems.append(f"{name}.zero_point is not an integer")
    return problems


def check_metadata(meta: dict[str, Any] | None, where: str) -> dict[str, Any]:
    """Return ``meta`` if the app can use it; ModelError (one line) otherwise."""
    if not meta:
        raise ModelError(f"{where} has no edge-derm metadata (labels, input size, quantisation) that the app "
                         "needs; convert it with `edge-derm convert`")
    problems = metadata_problems(meta)
    if problems:
        raise ModelError(f"{where}: the metadata lacks what the Android app needs ({'; '.join(problems)}); "
                         "convert it again with `edge-derm convert`")
    return meta


def resolve_model(source: Path, variant: str | None = None) -> tuple[Path, str | None]:
    """The .tflite to export: ``source`` itself, or a variant of a convert folder."""
    source = Path(source)
    if source.is_file():
        if variant is not None:
            raise ConfigError("--variant chooses a model inside a convert folder; pass the folder, or drop --variant")
        return source, None
    if not source.is_dir():
        raise ModelError(f"model not found: {source}; pass a .tflite file or a folder written by `edge-derm convert`")
    available = sorted(p.name[len("model."):-len(".tflite")] for p in source.glob("model.*.tflite"))
    if not available:
        raise ModelError(f"{source} holds no model.<variant>.tflite; pass a folder written by `edge-derm convert`")
    if variant is None:
        variant = next((v for v in VARIANT_PREFERENCE if v in available), available[0])
        _log.info("exporting the %s variant of %s", variant, source)
    elif variant not in available:
        raise ConfigError(f"{source} has no {variant} variant; it has {', '.join(available)}")
    return source / f"model.{variant}.tflite", variant


def load_metadata(model: Path, convert_dir: Path | None, variant: str | None) -> dict[str, Any]:
    """The model's record in the ``model.json`` beside it (with its verification results and SHA-256),
    else its embedded metadata; checked for the app."""
    from edge_derm import runtime

    model = Path(model)
    doc_path = (convert_dir or model.parent) / ConvertResult.FILENAME
    record = _convert_record(doc_path, model)
    meta = record.to_json() if record is not None else runtime.read_metadata(model)
    if meta and meta.get("sha256"):
        actual = runtime.sha256_bytes(model.read_bytes())
        if actual != meta["sha256"]:
            raise ModelError(f"{model}: SHA-256 differs from the one {doc_path} recorded at conversion; "
                             "the file was changed or damaged, convert again")
    return check_metadata(meta, str(model))


def _convert_record(doc_path: Path, model: Path) -> VariantRecord | None:
    """``model``'s record in the convert folder's ``doc_path``; None when there is no such file, or it is
    not a convert folder's document (the app's own flat ``model.json``: the embedded metadata applies)."""
    if not doc_path.is_file():
        return None
    try:
        doc = read_json(doc_path)
    except ValueError as exc:
        raise ModelError(f"{doc_path}: invalid JSON ({exc}); convert again") from None
    if not isinstance(doc, dict) or doc.get("kind") != ConvertResult.KIND:
        return None
    try:
        result = ConvertResult.from_json(doc, source=str(doc_path))
    except DataError as exc:
        raise ModelError(str(exc)) from None
    return result.variant_for(model.name)


def check_tensors(model: Path, meta: dict[str, Any]) -> None:
    """ModelError when the metadata disagrees with the tensors stored in the file."""
    from edge_derm import runtime

    info = runtime.inspect_tflite(model)
    for name, tensor in (("input", info.input_tensors[0]), ("output", info.output_tensors[0])):
        want = meta[name]
        scale = float(tensor.scale[0]) if tensor.scale else 0.0
        zero = int(tensor.zero_point[0]) if tensor.zero_point else 0
        if tensor.dtype != want["dtype"]:
            raise ModelError(f"{model}: metadata says {name} {want['dtype']} but the model's {name} is "
                             f"{tensor.dtype}; convert it again")
        if tensor.dtype != "float32" and (abs(scale - float(want["scale"])) > 1e-6 * max(1.0, scale)
                                          or zero != int(want["zero_point"])):
            raise ModelError(f"{model}: metadata {name} quantisation ({want['scale']}, {want['zero_point']}) "
                             f"differs from the model's ({scale}, {zero}); convert it again")
    shape = info.input_tensors[0].shape
    if list(shape[1:3]) != [int(s) for s in meta["input"]["size"]]:
        raise ModelError(f"{model}: metadata input.size {meta['input']['size']} differs from the model's "
                         f"{shape[1:3]}; convert it again")
    n_out = info.output_tensors[0].shape[-1]
    if n_out != len(meta["labels"]):
        raise ModelError(f"{model}: {len(meta['labels'])} labels in the metadata but {n_out} outputs; convert it again")
