"""The run folder a training run writes: config.json, checkpoints/ (state.json + a model per step),
history.csv; creating, replacing and reopening it for ``--resume``.

config.json is an :class:`edge_derm.artefacts.RunConfig` (``kind`` ``run``, format_version 1), written and
read back only through that type, so a run of a newer format is refused with one line instead of being
misread. ``checkpoints/state.json`` says which step completed last and what the history was then; a
checkpoint is written before the state that points at it, so a crash in between keeps the old pair.
"""

from __future__ import annotations

import csv
import io
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from edge_derm.artefacts import RunConfig
from edge_derm.errors import ConfigError, DataError, OutputExistsError
from edge_derm.fsutil import atomic_write_text, read_json, write_json
from edge_derm.training.config import TrainConfig, config_diff
from edge_derm.training.data import TrainingData

HISTORY_COLUMNS = ("step", "block", "epoch", "lr_end", "loss", "accuracy", "val_loss", "val_accuracy", "val_macro_f1")
#: The layout of config.json (``RunConfig.FORMAT_VERSION``).
FORMAT_VERSION = RunConfig.FORMAT_VERSION


def new_state() -> dict[str, Any]:
    """The state.json of a run before its first step completes."""
    return {"completed_step": -1, "history": [], "complete": False, "train_seconds": 0.0, "train_images": 0}


def run_config(config: TrainConfig, data: TrainingData) -> RunConfig:
    """The ``config.json`` of a run (without ``params``, added once the model exists)."""
    from edge_derm.models import get_spec
    from edge_derm.provenance import hash_json, versions

    spec = get_spec(config.backbone)
    identity = {"train": config.identity(), "data": data.datasets, "classes": data.classes}
    return RunConfig.from_json({
        "kind": RunConfig.KIND,
        "format_version": FORMAT_VERSION,
        "backbone": config.backbone,
        "alpha": config.alpha,
        "image_size": config.image_size,
        "resize_mode": config.resize_mode,
        "preprocessing": spec.preprocessing,
        "input": {"range": [0, 255], "color": "RGB", "dtype": "float32"},
        "classes": data.classes,
        "taxonomy": data.taxonomy,
        "triage": data.triage,
        "descriptions": data.descriptions,
        "data": data.datasets,
        "weights": config.weights,
        "weights_file": _imagenet_file(config),
        "seed": config.seed,
        "schedule": config.schedule(),
        "train": config.to_dict(),
        "versions": versions(),
        "config_hash": hash_json(identity),
    })


def _imagenet_file(config: TrainConfig) -> str | None:
    """The ImageNet file a run starts from (cached, possibly of another input size), or None."""
    if config.weights != "imagenet":
        return None
    from edge_derm.models import get_spec
    from edge_derm.models.pretrained import find_cached_imagenet

    spec = get_spec(config.backbone)
    found = find_cached_imagenet(spec, config.alpha, config.image_size)
    return str(found) if found is not None else spec.weights_file(config.alpha, config.image_size)


def train_inputs(config: TrainConfig, data: TrainingData | None = None) -> list[str]:
    """What training reads: the dataset folders and their images, a weights file, a recipe file
    (``--out`` may not be, hold or lie inside any of them)."""
    inputs = list(config.data)
    if data is not None:
        for part in (data.train, data.val, data.test):
            inputs += list(part[0]) if part is not None else []
    if config.weights and str(config.weights).lower() not in ("imagenet", "none"):
        inputs.append(str(config.weights))
    if config.recipe and str(config.recipe).endswith(".toml"):
        inputs.append(str(config.recipe))
    return inputs


def _read_run_json(path: Path, out: Path) -> dict[str, Any]:
    """A run's own JSON file for --resume; ConfigError (one line) when it is damaged."""
    try:
        doc = read_json(path)
    except (ValueError, OSError) as exc:
        raise ConfigError(f"cannot resume {out}: {path.name} is damaged ({str(exc).splitlines()[0][:80]}); "
                          "start again with --force") from None
    if not isinstance(doc, dict):
        raise ConfigError(f"cannot resume {out}: {path.name} is not a JSON object; start again with --force")
    return doc


def read_run_config(out: Path) -> RunConfig:
    """The config.json of the run in ``out`` for --resume; ConfigError (one line) when it is damaged or of
    a format this edge-derm does not read (e.g. written by a newer one)."""
    path = out / RunConfig.FILENAME
    doc = _read_run_json(path, out)
    try:
        return RunConfig.from_json(doc, source=str(path))
    except DataError as exc:
        raise ConfigError(f"cannot resume {out}: {exc}") from None


def prepare_folder(out: Path, rc: RunConfig, *, resume: bool, force: bool, create: bool = True) -> dict[str, Any]:
    """Create, replace or reopen the run folder; returns the saved state (step -1 for a new run).

    With ``create=False`` only the checks run (nothing is removed or written): a multi-worker chief
    checks before the cluster forms and creates the folder once it has formed.
    """
    if resume and force:
        raise ConfigError("--resume and --force contradict each other; pass one")
    if resume:
        return _reopen(out, rc)
    exists = out.exists() and (not out.is_dir() or any(out.iterdir()))
    if exists:
        if not force:
            raise OutputExistsError(f"{out} already exists; pass --resume to continue it or --force to replace it")
        if out.is_dir() and not (out / "config.json").is_file() and any(out.iterdir()):
            raise OutputExistsError(f"{out} is not empty and not a run folder; refusing to replace it even "
                                    "with --force; choose another --out")
    state = new_state()
    if not create:
        return state
    if exists:
        shutil.rmtree(out) if out.is_dir() else out.unlink()
    (out / "checkpoints").mkdir(parents=True, exist_ok=True)
    rc.write(out / RunConfig.FILENAME)
    write_json(out / "checkpoints" / "state.json", state)
    return state


def _reopen(out: Path, rc: RunConfig) -> dict[str, Any]:
    """The saved state of the run in ``out`` for --resume, after checking it was trained with ``rc``."""
    config_path = out / "config.json"
    state_path = out / "checkpoints" / "state.json"
    if not config_path.is_file() or not state_path.is_file():
        raise ConfigError(f"nothing to resume in {out} (no config.json / checkpoints/state.json); "
                          "start it without --resume")
    old = read_run_config(out)
    state = _read_run_json(state_path, out)
    if old.config_hash != rc.config_hash:
        diff = config_diff(_flat(old), _flat(rc))
        raise ConfigError(f"--resume with a different configuration than {out} ("
                          + "; ".join(diff or ["dataset content changed"])
                          + "); use the same options, or --force to start again")
    required = {"completed_step": int, "history": list}
    if any(not isinstance(state.get(k), t) for k, t in required.items()):
        raise ConfigError(f"{state_path} is damaged (no completed_step / history); start again with --force")
    return state


def _flat(rc: RunConfig) -> dict[str, Any]:
    """The options of a run as one flat dict, for the differences a refused --resume names."""
    flat = {k: v for k, v in (rc.get("train") or {}).items() if k != "distribute"}
    flat["datasets"] = [d.get("hash") for d in (rc.get("data") or [])]
    flat["classes"] = rc.get("classes")
    return flat


def write_history(path: Path, rows: list[dict[str, Any]], with_val: bool, extra: tuple[str, ...] = ()) -> None:
    """history.csv: one row per (step, epoch); val_* columns only when a val split exists.

    ``extra`` columns follow (a plan adds ``stage``).
    """
    cols = [c for c in HISTORY_COLUMNS if with_val or not c.startswith("val_")] + list(extra)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    atomic_write_text(path, buf.getvalue())


def save_model(model, path: Path) -> None:
    """Save a .keras file atomically (temporary sibling + rename)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".keras", dir=path.parent)
    os.close(fd)
    try:
        model.save(tmp, overwrite=True)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_weights(model, weights: list, path: Path) -> Path:
    """Write ``weights`` (a get_weights() list) as ``path`` atomically, leaving the model's own weights."""
    current = model.get_weights()
    tmp = path.with_name(f".tmp-{path.name}")  # keep the ".weights.h5" suffix: it picks the format
    try:
        model.set_weights(weights)
        model.save_weights(str(tmp))
        os.replace(tmp, path)
    finally:
        model.set_weights(current)
        tmp.unlink(missing_ok=True)
    return path


def images_per_second(state: dict[str, Any]) -> float | None:
    """Training throughput of the run so far (warm-up batches excluded), None before any timed batch."""
    secs = state.get("train_seconds") or 0.0
    return state.get("train_images", 0) / secs if secs > 0 else None
