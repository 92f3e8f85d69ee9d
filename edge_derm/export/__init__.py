"""``edge-derm export android``: put a converted model and its test samples into the Android app.

Writes into the app folder (``android_demo`` by default):

- ``app/src/main/assets/``: ``model.tflite``, ``labels.txt``, ``model.json`` (the model's flat
  metadata, the document ``edge-derm convert`` embedded, with host paths such as the run folder cut
  to their last part so nothing about the build machine ships in the APK; the app reads only this).
- ``app/src/androidTest/assets/``: ``samples/*.png`` and ``expected_results.json``, the host's
  predictions (:class:`edge_derm.runtime.TFLiteModel`, as ``edge-derm predict``) for the same
  .tflite and PNGs, which the instrumented test compares with the phone's.

No TensorFlow. Everything is staged in a temporary folder inside the app and swapped in at the end, all or
nothing (:func:`.app.swap_in`): a failure leaves the app's previous assets as they were. An input the swap
would replace (the convert folder, the samples) is refused, by ``fsutil.check_not_input``'s rule.

Modules: :mod:`.app` (the project, asset paths, the swap), :mod:`.metadata` (variant, record, checks),
:mod:`.samples` (samples and expected results). They never import this file, which holds the export itself
and re-exports their public names for callers of the earlier module.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any

from edge_derm import provenance
from edge_derm.artefacts import VariantRecord
from edge_derm.errors import ConfigError, DataError, ModelError, OutputExistsError
from edge_derm.export.app import (APP_MARKER, APP_NAMESPACE, EXPECTED_ASSET, LABELS_ASSET, MAIN_ASSETS, METADATA_ASSET,
                                  MODEL_ASSET, SAMPLES_DIR, TEST_ASSETS, NotTheAppError, check_app, swap_in, targets)
from edge_derm.export.metadata import (APP_DTYPES, APP_RESIZE_MODES, FORMAT_VERSION, REQUIRED_FIELDS,
                                       VARIANT_PREFERENCE, check_metadata, check_tensors, get_dotted, load_metadata,
                                       metadata_problems, resolve_model)
from edge_derm.export.samples import (MAX_SAMPLE_SIDE, Sample, expected_results, prob_tolerance, select_samples,
                                      write_samples)
from edge_derm.fsutil import check_not_input, write_json

__all__ = ["APP_DTYPES", "APP_MARKER", "APP_NAMESPACE", "APP_RESIZE_MODES", "EXPECTED_ASSET", "FORMAT_VERSION",
           "LABELS_ASSET", "MAIN_ASSETS", "MAX_SAMPLE_SIDE", "METADATA_ASSET", "MODEL_ASSET", "NotTheAppError",
           "REQUIRED_FIELDS", "SAMPLES_DIR", "Sample", "TEST_ASSETS", "VARIANT_PREFERENCE", "check_app",
           "check_metadata", "check_tensors", "expected_results", "export_android", "load_metadata",
           "metadata_problems", "prob_tolerance", "resolve_model", "select_samples", "swap_in", "write_samples"]

_log = logging.getLogger(__name__)


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
        ConfigError: bad variant or counts, or an input (the convert folder, the samples) that the export
            would replace.
        OutputExistsError: the app already has a model or samples and ``force`` is false.
    """
    if per_class < 1 or max_samples < 1:
        raise ConfigError("--per-class and --max-samples must be at least 1")
    app = check_app(app)
    path, variant = resolve_model(Path(model), variant)
    convert_dir = Path(model) if Path(model).is_dir() else None
    meta = load_metadata(path, convert_dir, variant)
    check_tensors(path, meta)
    _check_verified(path, meta, allow_unverified)
    _check_inputs_kept(app, [convert_dir, samples])
    existing = [p for p in targets(app) if p.exists()]
    if existing and not force:
        raise OutputExistsError(f"{existing[0]} already exists; pass --force to replace the app's model and samples")

    labels = list(meta["labels"])
    chosen = _choose_samples(app, meta, samples, per_class, max_samples)
    written = _stage_and_swap(app, path, meta, chosen)
    per_label: dict[str, int] = {}
    for s in written:
        per_label[s.label or "(unlabelled)"] = per_label.get(s.label or "(unlabelled)", 0) + 1
    return {"source": str(path), "variant": meta.get("quantization", variant), "app": str(app),
            "size_bytes": path.stat().st_size, "labels": labels, "samples": len(written), "per_label": per_label,
            "files": [str(p) for p in targets(app) if p.exists()]}


def _check_verified(path: Path, meta: dict[str, Any], allow_unverified: bool) -> None:
    """ModelError for a variant whose conversion check failed, unless ``allow_unverified``."""
    try:
        record = VariantRecord.from_json(meta, source=str(path))
    except DataError as exc:  # check_metadata let it through, the record type does not: say so, in one line
        raise ModelError(f"{exc}") from None
    if record.passed is False and not allow_unverified:
        failures = (record.verification or {}).get("failures") or []
        raise ModelError(f"{path} failed its conversion check ({'; '.join(failures)}); "
                         "export another variant, or pass --allow-unverified")


def _check_inputs_kept(app: Path, inputs: list[Path | None]) -> None:
    """ConfigError when an export target is, holds or lies inside an input that the swap would replace.

    The convert folder (its ``model.json``) and the samples folder are inputs the export would destroy
    (``--force`` or not); a model file that is the app's own asset is not: it is copied before the swap
    and put back byte for byte.
    """
    for target in targets(app):
        for item in inputs:
            try:
                check_not_input(target, [item])
            except ConfigError:
                raise ConfigError(f"exporting would replace {target}, which is or holds the input {item}; "
                                  "export from a convert folder and --samples outside the app's assets") from None


def _choose_samples(app: Path, meta: dict[str, Any], samples: Path | None, per_class: int,
                    max_samples: int) -> list[Sample]:
    """The instrumented test's samples: from ``samples``, else from the run's dataset when on disk, else none."""
    labels = list(meta["labels"])
    if samples is not None:
        chosen = select_samples(Path(samples), labels, per_class, max_samples)
        if not chosen:
            raise DataError(f"no sample images in {samples} for the labels {', '.join(labels)}")
        return chosen
    dataset = _run_dataset(meta)
    if dataset is None:
        _log.warning("no --samples and the run's dataset is not on disk: no instrumented-test samples")
        return []
    _check_inputs_kept(app, [dataset])
    return select_samples(dataset, labels, per_class, max_samples)


def _stage_and_swap(app: Path, model: Path, meta: dict[str, Any], chosen: list[Sample]) -> list[Sample]:
    """Write every asset into a temporary folder inside the app, then swap them in all or nothing.

    Returns the samples written (their staged paths, gone once swapped; only their labels are used after).
    """
    tmp = Path(tempfile.mkdtemp(prefix=".export-", dir=app))
    try:
        shutil.copyfile(model, tmp / MODEL_ASSET)
        (tmp / LABELS_ASSET).write_text("".join(f"{c}\n" for c in meta["labels"]), encoding="utf-8")
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
    return written


def _run_dataset(meta: dict[str, Any]) -> Path | None:
    """The dataset of the run the model came from (its last stage), when the run and it are still on disk."""
    from edge_derm.training.evaluate import read_run

    run = get_dotted(meta, "provenance.run")
    if not run or not Path(run).is_dir():
        return None
    try:
        folder = read_run(run).last_data
    except ModelError:  # moved, half-deleted or from another edge-derm: no default samples
        return None
    return Path(folder) if folder and (Path(folder) / "manifest.csv").is_file() else None

