"""``edge-derm export android``: put a converted model and its test samples into the Android app.

Writes into the app folder (``android_demo`` by default):

- ``app/src/main/assets/``: ``model.tflite``, ``labels.txt``, ``model.json`` (the model's flat
  metadata, the document ``edge-derm convert`` embedded, with host paths such as the run folder cut
  to their last part so nothing about the build machine ships in the APK; the app reads only this).
- ``app/src/androidTest/assets/``: ``samples/*.png`` and ``expected_results.json``, the host's
  predictions (:class:`edge_derm.runtime.TFLiteModel`, as ``edge-derm predict``) for the same
  .tflite and PNGs, which the instrumented test compares with the phone's.

Samples are stored as PNG so the phone decodes exactly the pixels the host used. No TensorFlow.
Everything is staged in a temporary folder inside the app and swapped in at the end, all or nothing:
a failure leaves the app's previous assets as they were.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_derm import provenance
from edge_derm.errors import ConfigError, DataError, EdgeDermError, ModelError, OutputExistsError
from edge_derm.fsutil import read_json, write_json

_log = logging.getLogger(__name__)

FORMAT_VERSION = 1
#: Asset names the Kotlin app opens (MainActivity / ClassifierTest); keep in sync.
MODEL_ASSET = "model.tflite"
LABELS_ASSET = "labels.txt"
METADATA_ASSET = "model.json"
EXPECTED_ASSET = "expected_results.json"
SAMPLES_DIR = "samples"
MAIN_ASSETS = Path("app/src/main/assets")
TEST_ASSETS = Path("app/src/androidTest/assets")
APP_MARKER = Path("app/src/main/AndroidManifest.xml")
#: The app module's Gradle namespace (app/build.gradle.kts); another Android project is refused.
APP_NAMESPACE = "org.edgederm.demo"

#: Variant chosen from a convert folder when --variant is not given: smallest and fastest first.
VARIANT_PREFERENCE = ("int8", "qat", "dynamic", "fp16", "fp32")
#: Metadata fields the app cannot work without (the ``req*`` reads of ModelMetadata.kt).
REQUIRED_FIELDS = ("format_version", "labels", "triage", "input.size", "input.resize", "input.mean", "input.std",
                   "input.dtype", "input.scale", "input.zero_point", "output.dtype", "output.scale",
                   "output.zero_point")
APP_DTYPES = ("float32", "uint8", "int8")
APP_RESIZE_MODES = ("nearest", "pad")
#: Largest side of a bundled sample; bigger images are downscaled once, before the host predicts on them.
MAX_SAMPLE_SIDE = 1024
_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}


@dataclass
class Sample:
    """An image to bundle, with its true label when known."""

    path: Path
    label: str | None


def _get(meta: dict[str, Any], dotted: str) -> Any:
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
    problems = [f"{f} missing" for f in REQUIRED_FIELDS if _get(meta, f) is None]
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
    meta = None
    doc_path = (convert_dir or model.parent) / "model.json"
    if doc_path.is_file():
        try:
            doc = read_json(doc_path)
        except ValueError as exc:
            raise ModelError(f"{doc_path}: invalid JSON ({exc}); convert again") from None
        if isinstance(doc, dict) and doc.get("kind") == "convert":
            meta = next((dict(v) for q, v in (doc.get("variants") or {}).items() if isinstance(v, dict)
                         and v.get("file", f"model.{q}.tflite") == model.name), None)
    if meta is None:
        meta = runtime.read_metadata(model)
    if meta and meta.get("sha256"):
        actual = runtime.sha256_bytes(model.read_bytes())
        if actual != meta["sha256"]:
            raise ModelError(f"{model}: SHA-256 differs from the one {doc_path} recorded at conversion; "
                             "the file was changed or damaged, convert again")
    return check_metadata(meta, str(model))


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


class NotTheAppError(EdgeDermError):
    """``--app`` names a folder that is not the edge-derm Android project (nothing was written)."""


def check_app(app: Path) -> Path:
    """``app`` if it is the edge-derm Android project; NotTheAppError otherwise.

    The project is recognised by its manifest and, when present, by the namespace its app module
    declares, so the assets never land in another Android project or a half-matching folder.
    """
    app = Path(app)
    hint = "pass --app PATH/TO/android_demo"
    if (app / "android_demo" / APP_MARKER).is_file():
        hint = f"did you mean --app {app / 'android_demo'}?"
    if not (app / APP_MARKER).is_file():
        what = "does not exist" if not app.exists() else "is not a folder" if not app.is_dir() else f"has no {APP_MARKER.as_posix()}"
        raise NotTheAppError(f"{app} is not the edge-derm Android app ({what}); {hint}")
    namespaces = []
    for name in ("build.gradle.kts", "build.gradle"):
        gradle = app / "app" / name
        if gradle.is_file():
            namespaces += re.findall(r"""\bnamespace\s*=?\s*["']([\w.]+)["']""", gradle.read_text(encoding="utf-8", errors="replace"))
    manifest = (app / APP_MARKER).read_text(encoding="utf-8", errors="replace")
    namespaces += re.findall(r"""<manifest\b[^>]*\bpackage\s*=\s*["']([\w.]+)["']""", manifest)
    other = [n for n in namespaces if n != APP_NAMESPACE]
    if other:
        raise NotTheAppError(f"{app} is another Android project ({other[0]}), not the edge-derm Android app "
                             f"({APP_NAMESPACE}); {hint}")
    return app


def _run_dataset(meta: dict[str, Any]) -> Path | None:
    """The dataset of the run the model came from (its last stage), when still on disk."""
    run = _get(meta, "provenance.run")
    if not run or not (Path(run) / "config.json").is_file():
        return None
    try:
        data = read_json(Path(run) / "config.json").get("data") or []
    except ValueError:
        return None
    folder = data[-1].get("dir") if data and isinstance(data[-1], dict) else None
    return Path(folder) if folder and (Path(folder) / "manifest.csv").is_file() else None


def select_samples(source: Path, labels: list[str], per_class: int, max_samples: int) -> list[Sample]:
    """Up to ``per_class`` images of each model label from a dataset folder (its test split first),
    or up to ``max_samples`` images from a plain folder (label = parent folder name when it is a label)."""
    from edge_derm.data.manifest import Manifest

    source = Path(source)
    if source.is_file() and source.name == "manifest.csv":
        source = source.parent
    if (source / "manifest.csv").is_file():
        manifest = Manifest.load(source)
        known = set(labels)
        for split in ("test", "val", "train"):
            rows = [r for r in manifest.subset(split) if r.label in known]
            if rows:
                break
        picked: list[Sample] = []
        count: dict[str, int] = {}
        for r in sorted(rows, key=lambda r: (labels.index(r.label), r.path)):
            if count.get(r.label, 0) < per_class:
                count[r.label] = count.get(r.label, 0) + 1
                picked.append(Sample(manifest.resolve(r.path), r.label))
        return picked[:max_samples]
    if not source.is_dir():
        raise DataError(f"samples not found: {source}; pass a dataset folder (manifest.csv) or a folder of images")
    files = sorted(p for p in source.rglob("*") if p.is_file() and p.suffix.lower() in _IMAGE_SUFFIXES)
    return [Sample(p, p.parent.name if p.parent.name in labels else None) for p in files[:max_samples]]


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)[:40] or "x"


def write_samples(samples: list[Sample], out_dir: Path) -> list[Sample]:
    """Write each sample as ``out_dir/NNN_label.png`` (EXIF applied, at most MAX_SAMPLE_SIDE); unreadable ones are skipped."""
    import numpy as np
    from PIL import Image

    from edge_derm.data.images import load_rgb

    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Sample] = []
    for s in samples:
        try:
            rgb = load_rgb(s.path)
        except DataError as exc:
            _log.warning("sample skipped: %s", exc)
            continue
        im = Image.fromarray(np.ascontiguousarray(rgb))
        if max(im.size) > MAX_SAMPLE_SIDE:
            im.thumbnail((MAX_SAMPLE_SIDE, MAX_SAMPLE_SIDE), Image.LANCZOS)
        target = out_dir / f"{len(written):03d}_{_safe(s.label or s.path.stem)}.png"
        im.save(target, format="PNG")
        written.append(Sample(target, s.label))
    return written


def prob_tolerance(meta: dict[str, Any]) -> float:
    """How far the phone's probabilities may be from the host's (different CPU kernels, same model)."""
    out = meta["output"]
    if out["dtype"] != "float32":
        return max(0.03, 4.0 * float(out["scale"]))  # a few quantisation steps
    return {"fp32": 0.01, "fp16": 0.02}.get(meta.get("quantization"), 0.03)


def expected_results(model: Path, meta: dict[str, Any], samples: list[Sample], base: Path) -> dict[str, Any]:
    """Host predictions for the written samples, in the form ExpectedResults.kt reads."""
    from edge_derm import runtime

    tfl = runtime.TFLiteModel(model)
    paths = [s.path for s in samples]
    probs, errors = tfl.predict_files(paths)
    if errors:
        path, msg = next(iter(errors.items()))
        raise DataError(f"could not classify {len(errors)} sample(s), e.g. {path}: {msg}")
    labels = list(meta["labels"])
    rows = []
    for s, p in zip(samples, probs):
        rows.append({"file": s.path.relative_to(base).as_posix(), "label": s.label,
                     "top1": labels[int(p.argmax())], "probs": [float(x) for x in p]})
    return {"format_version": FORMAT_VERSION, "generated_by": "edge-derm export android",
            "model": MODEL_ASSET, "model_sha256": _sha256(model), "quantization": meta.get("quantization"),
            "labels": labels, "input": {"size": meta["input"]["size"], "resize": meta["input"]["resize"]},
            "tolerance": {"prob_atol": prob_tolerance(meta)}, "samples": rows,
            "versions": provenance.versions()}


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def swap_in(moves: list[tuple[Path, Path]], drop: list[Path], backup: Path) -> None:
    """Move each staged ``(source, target)`` onto its target and remove ``drop``, all or nothing.

    The targets' previous contents are first moved aside into ``backup`` (same file system, so every
    step is a rename); if any step fails, what was placed is removed and the previous contents are
    put back before the error propagates.
    """
    backup.mkdir(parents=True, exist_ok=True)
    saved: list[tuple[Path, Path]] = []
    placed: list[Path] = []
    try:
        for i, target in enumerate([t for _, t in moves] + list(drop)):
            if target.exists():
                keep = backup / f"{i}-{target.name}"
                os.replace(target, keep)
                saved.append((keep, target))
        for source, target in moves:
            os.replace(source, target)
            placed.append(target)
    except BaseException:
        for target in placed:
            if target.is_dir():
                shutil.rmtree(target, ignore_errors=True)
            else:
                with contextlib.suppress(FileNotFoundError):
                    target.unlink()
        for keep, target in reversed(saved):
            with contextlib.suppress(OSError):
                os.replace(keep, target)
        raise


def _targets(app: Path) -> list[Path]:
    return [app / MAIN_ASSETS / MODEL_ASSET, app / MAIN_ASSETS / LABELS_ASSET, app / MAIN_ASSETS / METADATA_ASSET,
            app / TEST_ASSETS / EXPECTED_ASSET, app / TEST_ASSETS / SAMPLES_DIR]


def export_android(model: Path, app: Path = Path("android_demo"), *, variant: str | None = None,
                   samples: Path | None = None, per_class: int = 2, max_samples: int = 40,
                   allow_unverified: bool = False, force: bool = False) -> dict[str, Any]:
    """Copy a model (a .tflite or a convert folder's variant) and test samples into the app.

    Args:
        model: a .tflite with embedded metadata, or a folder written by ``edge-derm convert``.
        app: the Android project folder.
        variant: which ``model.<variant>.tflite`` of a convert folder (default: the first of
            VARIANT_PREFERENCE that exists).
        samples: a dataset folder / manifest.csv or a folder of images for the instrumented test;
            default the test split of the run's dataset when it is still on disk, else none.
        per_class: samples per label from a dataset folder.
        max_samples: at most this many samples in all.
        allow_unverified: export a variant whose conversion check failed.
        force: replace the app's current model and samples.

    Returns:
        A summary: source, variant, files written, sample count per label.

    Raises:
        ModelError: no usable metadata, or metadata that disagrees with the file.
        NotTheAppError: ``app`` is not the edge-derm Android project (checked before anything is read).
        ConfigError: bad variant or counts.
        OutputExistsError: the app already has a model or samples and ``force`` is false.
    """
    if per_class < 1 or max_samples < 1:
        raise ConfigError("--per-class and --max-samples must be at least 1")
    app = check_app(app)
    path, variant = resolve_model(Path(model), variant)
    meta = load_metadata(path, Path(model) if Path(model).is_dir() else None, variant)
    check_tensors(path, meta)
    if _get(meta, "verification.passed") is False and not allow_unverified:
        raise ModelError(f"{path} failed its conversion check ({'; '.join(_get(meta, 'verification.failures') or [])}); "
                         "export another variant, or pass --allow-unverified")
    existing = [p for p in _targets(app) if p.exists()]
    if existing and not force:
        raise OutputExistsError(f"{existing[0]} already exists; pass --force to replace the app's model and samples")

    labels = list(meta["labels"])
    chosen: list[Sample] = []
    if samples is None:
        dataset = _run_dataset(meta)
        if dataset is not None:
            chosen = select_samples(dataset, labels, per_class, max_samples)
        else:
            _log.warning("no --samples and the run's dataset is not on disk: no instrumented-test samples")
    else:
        chosen = select_samples(Path(samples), labels, per_class, max_samples)
        if not chosen:
            raise DataError(f"no sample images in {samples} for the labels {', '.join(labels)}")

    tmp = Path(tempfile.mkdtemp(prefix=".export-", dir=app))
    try:
        shutil.copyfile(path, tmp / MODEL_ASSET)
        (tmp / LABELS_ASSET).write_text("".join(f"{c}\n" for c in labels), encoding="utf-8")
        # The app's model.json describes the asset beside it (same bytes, so the same SHA-256).
        write_json(tmp / METADATA_ASSET, provenance.without_host_paths({**meta, "file": MODEL_ASSET} if "file" in meta else meta))
        test_dir = tmp / "test"
        written = write_samples(chosen, test_dir / SAMPLES_DIR) if chosen else []
        if chosen and not written:
            raise DataError("none of the sample images could be read; see the warnings")
        if written:
            write_json(test_dir / EXPECTED_ASSET, expected_results(tmp / MODEL_ASSET, meta, written, test_dir))
        # Everything is ready: swap it in. Old samples of another model would fail the instrumented
        # test, so they go even when there are no new ones.
        (app / MAIN_ASSETS).mkdir(parents=True, exist_ok=True)
        (app / TEST_ASSETS).mkdir(parents=True, exist_ok=True)
        moves = [(tmp / name, app / MAIN_ASSETS / name) for name in (MODEL_ASSET, LABELS_ASSET, METADATA_ASSET)]
        drop = []
        if written:
            moves += [(test_dir / SAMPLES_DIR, app / TEST_ASSETS / SAMPLES_DIR),
                      (test_dir / EXPECTED_ASSET, app / TEST_ASSETS / EXPECTED_ASSET)]
        else:
            drop = [app / TEST_ASSETS / SAMPLES_DIR, app / TEST_ASSETS / EXPECTED_ASSET]
        swap_in(moves, drop, tmp / "previous")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    per_label: dict[str, int] = {}
    for s in written:
        per_label[s.label or "(unlabelled)"] = per_label.get(s.label or "(unlabelled)", 0) + 1
    return {"source": str(path), "variant": meta.get("quantization", variant), "app": str(app),
            "size_bytes": path.stat().st_size, "labels": labels, "samples": len(written), "per_label": per_label,
            "files": [str(p) for p in _targets(app) if p.exists()]}
