"""Train one run into a run folder: block-wise (frozen-block) fine-tuning with checkpoints, resume and
per-group learning rates, then calibration and the final evaluation.

This module ties the stages of a run together; each lives in its own module:

- :mod:`~edge_derm.training.schedule`: which layers train at each step, one Adam per group, the strategy;
- :mod:`~edge_derm.training.loop`: the epoch loop, the best epoch (``select_best``), a checkpoint per step;
- :mod:`~edge_derm.training.batchnorm`: BatchNorm momentum and recalibration;
- :mod:`~edge_derm.training.runfolder`: config.json (an ``artefacts.RunConfig``), state.json, history.csv;
- :mod:`~edge_derm.training.scoring`: predictions, calibration and the final evaluation.

``unfreeze = "full"`` (the from-scratch recipe, plan ``o``) is one step that trains every layer from the
start, with BatchNorm momentum 0.9 while it trains so the moving averages follow the weights; the
block-wise schedule leaves a random backbone at chance. The names this module re-exports (``predict``,
``apply_schedule``, ``make_train_function``, ``TrainingError``) stay importable from here for existing callers.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from typing import Any, Callable

import edge_derm.training.distributed as distributed
from edge_derm.artefacts import RunConfig
from edge_derm.errors import ConfigError, data_error_from_tf
from edge_derm.fsutil import check_not_input, read_json, write_json
from edge_derm.training.config import TrainConfig
from edge_derm.training.data import TrainingData, carve_validation, load_data
from edge_derm.training.loop import Fit, TrainingError, run_steps
from edge_derm.training.runfolder import (images_per_second, new_state, prepare_folder, read_run_config,  # noqa: F401
                                          run_config, save_model, train_inputs)
from edge_derm.training.schedule import apply_schedule, make_strategy, make_train_function  # noqa: F401
from edge_derm.training.scoring import calibrate, evaluate_model, predict, score_with_calibration  # noqa: F401
from edge_derm.training.scoring import macro_f1 as _macro_f1  # noqa: F401 (tests import it from here)

__all__ = ["TrainingError", "apply_schedule", "evaluate_model", "make_strategy", "make_train_function", "predict",
           "run_config", "save_model", "score_with_calibration", "train", "train_inputs"]

_log = logging.getLogger(__name__)


def train(config: TrainConfig, out: str | os.PathLike, *, resume: bool = False, force: bool = False,
          evaluate: bool = True, on_step_end: Callable[[int, Any], None] | None = None,
          worker_timeout: float | None = None) -> dict[str, Any]:
    """Train one run into ``out`` (block-wise schedule, a checkpoint per step, final evaluation).

    A new run that fails before its first step is checkpointed leaves no folder behind (a skeleton would
    block the corrected rerun); an image that becomes unreadable after the build is a DataError naming
    it, not TensorFlow's traceback. Under ``distribute = "multiworker"`` (TF_CONFIG) only the chief writes
    ``out``; the other workers read it only to resume (so ``out`` must be on storage they share).

    Args:
        config: The validated configuration.
        out: Run folder.
        resume: Continue after the last completed step of an existing run with the same config.
        force: Replace an existing run folder.
        evaluate: Evaluate the final model on the last dataset's test split (metrics.json, report.md).
        on_step_end: Called as ``on_step_end(step, model)`` after each step's checkpoint (tests; under
            ``multiworker`` on every worker, so it may read the weights).
        worker_timeout: ``multiworker``: seconds to wait for every worker to join (default
            :data:`edge_derm.training.distributed.JOIN_TIMEOUT`).

    Returns:
        ``{"out", "metrics" (or None), "history", "train_images_per_s" (warm-up batches excluded),
        "params", "replicas"}``.

    Raises:
        ConfigError, DataError, OutputExistsError: Bad options, data or folder.
        TrainingError: A non-finite loss (the last good checkpoint is kept).
        WorkerLostError: ``multiworker``: another worker stopped answering (the completed steps are kept).
    """
    out = Path(out)
    existed = out.exists() and (not out.is_dir() or any(out.iterdir()))
    try:
        return _train(config, out, resume=resume, force=force, evaluate=evaluate, on_step_end=on_step_end,
                      worker_timeout=worker_timeout)
    except BaseException as exc:
        if _writes_folder(config) and not resume and not (existed and not force):
            _remove_unstarted(out)
        translated = data_error_from_tf(exc)
        if translated is not None:
            raise translated from None
        raise


def _remove_unstarted(out: Path) -> None:
    """Remove the run folder a failed new run created when no step of it completed (nothing to resume)."""
    state_path = out / "checkpoints" / "state.json"
    if not state_path.is_file():
        return
    try:
        started = int(read_json(state_path).get("completed_step", -1)) >= 0
    except (ValueError, OSError, TypeError, AttributeError):
        started = True
    if not started:
        shutil.rmtree(out, ignore_errors=True)


def _writes_folder(config: TrainConfig) -> bool:
    """Whether this process owns the run folder: always, except a non-chief multi-worker task."""
    if config.distribute != "multiworker":
        return True
    try:
        return distributed.cluster_from_env().is_chief
    except ConfigError:
        return False


def _train(config: TrainConfig, out: Path, *, resume: bool, force: bool, evaluate: bool,
           on_step_end: Callable[[int, Any], None] | None, worker_timeout: float | None) -> dict[str, Any]:
    """:func:`train` without the clean-up of a failed new run: data, folder, strategy, steps, final files."""
    # TensorFlow first: without the `train` extra the CLI's one line says to install it, before any data is
    # read (a data error would only hide that the command cannot run here at all).
    from edge_derm.models._tf import tf  # noqa: F401

    multi = config.distribute == "multiworker"
    # A malformed TF_CONFIG fails before anything is read or written.
    cluster = distributed.cluster_from_env() if multi else None
    chief = cluster.is_chief if cluster is not None else True
    if config.weights == "none" and config.unfreeze == "blockwise":
        _log.warning("training from random weights with the block-wise schedule: the backbone is frozen at "
                     "step 0 and then trained at lr_backbone %g; for a from-scratch recipe use "
                     "unfreeze = \"full\" (plan o)", config.lr_backbone)
    data = _load_data(config)
    rc = run_config(config, data)
    if not resume:
        check_not_input(out, train_inputs(config, data))
    # Resuming only reads the folder; a new run's folder is the chief's alone. Multi-worker: check now,
    # create (or replace) only once the cluster has formed, so a join that fails or is killed leaves the
    # folder as it was.
    state = prepare_folder(out, rc, resume=resume, force=force, create=not multi) if chief or resume else new_state()
    if state.get("complete"):
        _log.info("%s is already complete; nothing to resume", out)
        metrics = read_json(out / "metrics.json") if (out / "metrics.json").is_file() else None
        return {"out": out, "metrics": metrics, "history": state["history"],
                "params": read_run_config(out).get("params"), "train_images_per_s": images_per_second(state),
                "replicas": None}
    if multi:
        # Before any other TensorFlow op (MultiWorkerMirroredStrategy configures the runtime for the cluster).
        strategy = make_strategy("multiworker", **({"join_timeout": worker_timeout} if worker_timeout is not None
                                                   else {}))
        if chief and not resume:
            state = prepare_folder(out, rc, resume=False, force=force)
    else:
        strategy = make_strategy(config.distribute)
    fit, start = _start(config, data, out, rc, strategy, state, chief=chief, cluster=cluster)
    try:
        run_steps(fit, start, on_step_end)
    except Exception as exc:
        if multi and distributed.is_connection_error(exc):
            raise _worker_lost(exc, out, fit.where, resume, fit.state) from None
        raise
    return _finish(fit, rc, cluster, evaluate=evaluate)


def _load_data(config: TrainConfig) -> TrainingData:
    """The run's data, with a validation split carved when asked; ConfigError when carving left a class
    without training images, warnings for what model selection and calibration will miss."""
    data = load_data(config.data, merge=config.merge)
    for warning in carve_validation(data, config.val_fraction, config.seed):
        if "no validation image" not in warning:  # the check below names those, whatever the val's source
            _log.warning("%s", warning)
    left = [c for i, c in enumerate(data.classes) if not (data.train[1] == i).any()]
    if left:
        raise ConfigError(f"carving a {config.val_fraction:.0%} validation split left no training image of "
                          f"{', '.join(left)}; use a smaller --val-fraction, --val-fraction 0, or a dataset "
                          "with its own val split")
    if data.val is not None:
        absent = [c for i, c in enumerate(data.classes) if not (data.val[1] == i).any()]
        if absent:
            _log.warning("the validation split has no image of %s: model selection, the temperature and the "
                         "operating point ignore them", ", ".join(absent))
    if config.select_best and data.val is None:
        _log.warning("select_best needs a validation split and the data has none (val_fraction 0): "
                     "the last epoch is kept")
    return data


def _start(config: TrainConfig, data: TrainingData, out: Path, rc: RunConfig, strategy, state: dict[str, Any], *,
           chief: bool, cluster) -> tuple[Fit, int]:
    """Build the model (or load the last checkpoint of a resumed run) and the batch plan; returns the
    :class:`~edge_derm.training.loop.Fit` and the first step to train."""
    from edge_derm.data.pipeline import steps_per_epoch
    from edge_derm.models import build_classifier, count_params, get_spec, load_model
    from edge_derm.models._tf import keras, tf

    if config.deterministic:
        tf.config.experimental.enable_op_determinism()
    start = int(state["completed_step"]) + 1
    keras.utils.set_random_seed(config.seed)
    with strategy.scope():
        if start > 0:
            model = load_model(out / "checkpoints" / f"step_{start - 1}.keras")
            _log.info("resuming %s after step %d", out, start - 1)
        else:
            model = build_classifier(config.backbone, len(data.classes), image_size=config.image_size,
                                     alpha=config.alpha, weights=config.weights, dropout=config.dropout)
    if rc.get("params") is None:
        rc.extra["params"] = count_params(model)
        if chief:
            rc.write(out / RunConfig.FILENAME)
    batch = config.batch_size or len(data.classes) * config.batch_multiple
    spe = config.steps_per_epoch or steps_per_epoch(len(data.train[0]), batch)
    if cluster is not None:
        distributed.check_global_batch(batch, int(strategy.num_replicas_in_sync))
        _log.info("%s: global batch %d, %d image(s) per replica", cluster.describe(), batch,
                  batch // int(strategy.num_replicas_in_sync))
    fit = Fit(config=config, data=data, out=out, spec=get_spec(config.backbone), strategy=strategy, model=model,
              state=state, batch=batch, steps_per_epoch=spe, multi=cluster is not None, chief=chief)
    fit.find_best(start)
    return fit, start


def _finish(fit: Fit, rc: RunConfig, cluster, *, evaluate: bool) -> dict[str, Any]:
    """After the last step: the chief calibrates, completes config.json, saves model.keras and the history
    plot, evaluates, and marks the run complete; the other workers return at once."""
    config, data, out, state = fit.config, fit.data, fit.out, fit.state
    replicas = int(fit.strategy.num_replicas_in_sync)
    result = {"out": out, "metrics": None, "history": fit.history, "params": rc.get("params"),
              "train_images_per_s": images_per_second(state), "replicas": replicas}
    if not fit.chief:
        # Every collective is behind us: the chief calibrates, saves and evaluates its local copy alone.
        _log.info("%s: training finished; the chief writes the run folder", cluster.describe())
        return result
    calibration = calibrate(fit.local, data, config, out)
    final = RunConfig.read(out / RunConfig.FILENAME)
    final.extra["selected"] = ({"by": "val_macro_f1", **fit.best} if fit.select and fit.best is not None
                               else {"by": "last epoch", "step": config.n_steps - 1,
                                     "epoch": config.steps()[-1]["epochs"]})
    final.calibration = calibration
    final.extra["validation"] = {"source": data.val_source, "n": len(data.val[0]) if fit.with_val else 0,
                                 "fraction": config.val_fraction if data.val_source == "carved" else None}
    if cluster is not None:
        final.extra["distributed"] = {
            "strategy": "MultiWorkerMirroredStrategy", "workers": cluster.num_workers, "replicas": replicas,
            "global_batch": fit.batch, "per_replica_batch": fit.batch // replicas,
            "batchnorm": "synchronised over the global batch while a block trains"}
    final.write(out / RunConfig.FILENAME)
    save_model(fit.local, out / "model.keras")
    _plot_history(fit.history, out / "history.png")
    if evaluate:
        result["metrics"] = evaluate_model(fit.local, data, config, out, calibration=calibration)
    state["complete"] = True
    write_json(out / "checkpoints" / "state.json", state)
    return {**result, "params": final.get("params"), "train_images_per_s": images_per_second(state)}


def _worker_lost(exc: BaseException, out: Path, where: str, resume: bool, state: dict[str, Any]):
    """The one-line error when another worker stops answering mid-training."""
    from edge_derm.training.distributed import WorkerLostError, first_line

    done = int(state.get("completed_step", -1))
    if done >= 0 or resume:
        keep = (f"steps up to {done} are kept in {out}: restart every worker with the same command and --resume")
    else:
        keep = "no step had finished, so nothing was kept: restart every worker with the same command"
    return WorkerLostError(f"lost contact with another worker at {where} ({first_line(exc)}); {keep}")


def _plot_history(history: list[dict[str, Any]], path: Path) -> None:
    try:
        from edge_derm.evaluation import plot_history

        plot_history(history, path, title="training history")
    except Exception as exc:  # a missing plot never fails a finished run
        _log.warning("could not plot the history: %s", exc)
