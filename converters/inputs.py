"""What a conversion reads: the run folder (config, Keras model), its datasets and the fidelity images.

Shared by :mod:`.convert` (the driver) and :mod:`.modes` (each mode's conversion).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from edge_derm.artefacts import RunConfig
from edge_derm.errors import ConfigError, ConversionError, DataError

from .calibration import ImageSample, sample_images
from .config import ConvertConfig

_log = logging.getLogger(__name__)


def load_run(run: Path) -> RunConfig:
    """The run's ``config.json``; ModelError when ``run`` is not a run folder."""
    from edge_derm.training.evaluate import read_run

    return read_run(run)


def run_batch_size(run_cfg: RunConfig) -> int:
    """The batch the run trained with: its explicit batch size, else classes x batch multiple."""
    schedule = run_cfg.get("schedule") or {}
    if schedule.get("batch_size"):
        return int(schedule["batch_size"])
    return int(schedule.get("batch_multiple") or 1) * len(run_cfg.classes)


def load_keras(run: Path, run_cfg: RunConfig):
    """The run's ``model.keras``, checked against its config (classes, input size)."""
    from edge_derm.models import load_model

    return load_model(Path(run) / "model.keras", num_classes=len(run_cfg.classes), image_size=int(run_cfg.image_size))


def _dataset_dir(run_cfg: RunConfig) -> Path | None:
    return Path(run_cfg.last_data) if run_cfg.last_data else None


def convert_inputs(cfg: ConvertConfig, run: Path, run_cfg: RunConfig) -> list[Path]:
    """What convert reads (``--out`` may not be, hold or lie inside any of it): the run's files, and the
    dataset folders (run data, ``--calibration``, ``--verify-data``) with their images."""
    from edge_derm.data.manifest import Manifest

    inputs = [run / name for name in ("model.keras", "config.json", "metrics.json", "checkpoints", "history.csv")]
    for d in {_dataset_dir(run_cfg), cfg.calibration, cfg.verify_data} - {None}:
        try:
            inputs += Manifest.load(d).inputs()
        except Exception:  # noqa: BLE001 - an unreadable dataset is reported where it is used
            inputs.append(Path(d))
    return inputs


def pick_dataset(cfg: ConvertConfig, run_cfg: RunConfig, purpose: str) -> Path:
    """The dataset folder for ``purpose``: verification prefers the run's own dataset, calibration and QAT
    ``--calibration``; ConversionError (naming what to pass) when neither is there."""
    run_data = _dataset_dir(run_cfg)
    if purpose == "verification" and run_data is not None and run_data.is_dir():
        return run_data
    if cfg.calibration is not None:
        return cfg.calibration
    if run_data is None:
        raise ConversionError(f"{cfg.run}: config.json names no dataset for {purpose}; pass --calibration DIR")
    if not run_data.is_dir():
        raise ConversionError(f"the run's dataset {run_data} is missing (needed for {purpose}); "
                              "pass --calibration DIR with a dataset folder")
    return run_data


def check_verify_data(path: Path, run_cfg: RunConfig) -> None:
    """ConfigError unless ``path`` is a dataset folder of the run's taxonomy whose classes the model has."""
    from edge_derm.data.manifest import Manifest

    if not Path(path).is_dir():
        raise ConfigError(f"--verify-data {path} is not a folder; pass a dataset folder written by 'edge-derm data build'")
    try:
        manifest = Manifest.load(path)
    except DataError as exc:
        raise ConfigError(f"--verify-data {path}: {exc}") from None
    want = run_cfg.get("taxonomy", "native")
    have = manifest.info.get("taxonomy", "native")
    classes = list(run_cfg.classes)
    extra = [c for c in manifest.classes if c not in classes]
    if have != want or extra:
        what = f"taxonomy {have!r}" if have != want else f"classes the model lacks ({', '.join(extra[:5])})"
        raise ConfigError(f"--verify-data {path} has {what}; the run uses taxonomy {want!r} with classes "
                          f"{', '.join(classes)}: build it with --taxonomy {want}")


def fidelity_sample(cfg: ConvertConfig, run_cfg: RunConfig) -> ImageSample:
    """The fidelity images: every image of ``--verify-data``, else the run dataset's validation + test images."""
    classes, size = list(run_cfg.classes), int(run_cfg.image_size)
    resize = run_cfg.get("resize_mode", "nearest")
    if cfg.verify_data is not None:
        return sample_images(cfg.verify_data, classes, size, resize, n=cfg.verify_size, seed=cfg.seed,
                             splits=("all",), purpose="verification", compact=True)
    data = pick_dataset(cfg, run_cfg, "verification")
    sample = sample_images(data, classes, size, resize, n=cfg.verify_size, seed=cfg.seed,
                           splits=("val+test", "all"), purpose="verification", compact=True)
    if sample.split == "all":
        _log.warning("%s has no validation or test images; fidelity is measured on all its images", data)
    return sample


def keras_predict(model, images: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """Probabilities of a Keras model on images of any numeric dtype, batch by batch (float32 in)."""
    outs = [model.predict_on_batch(np.asarray(images[i:i + batch_size], dtype=np.float32))
            for i in range(0, len(images), batch_size)]
    return np.concatenate([np.asarray(o) for o in outs]) if outs else np.zeros((0, model.output_shape[-1]))
