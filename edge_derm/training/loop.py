"""The epoch loop: each schedule step's epochs of batches, the validation row of each epoch, the best
epoch kept by ``select_best``, and the checkpoint written after each step.

Each step reseeds with ``seed + step``, so a resumed run reproduces the uninterrupted one. Under
``multiworker`` every worker runs this loop together (every collective in the same order); ``local`` is a
plain copy of the distributed model that validates, re-estimates BatchNorm and is saved, and only the
chief writes files.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from edge_derm import progress
from edge_derm.errors import ModelError
from edge_derm.fsutil import write_json
import edge_derm.training.distributed as distributed
from edge_derm.training.batchnorm import recalibrate_batchnorm, restore_bn_momentum, set_bn_momentum
from edge_derm.training.config import FULL_BN_MOMENTUM, TrainConfig
from edge_derm.training.data import TrainingData
from edge_derm.training.runfolder import save_model, save_weights, write_history
from edge_derm.training.schedule import apply_schedule, augment_config, lr_schedule, make_train_function
from edge_derm.training.scoring import loss_accuracy, macro_f1, predict

_log = logging.getLogger(__name__)


class TrainingError(ModelError):
    """Training stopped (e.g. a NaN loss); the run keeps its last good checkpoint."""


@dataclass
class Fit:
    """One run while its steps train: what the loop reads, and the history and best epoch it updates."""

    config: TrainConfig
    data: TrainingData
    out: Path
    spec: Any
    strategy: Any
    model: Any
    state: dict[str, Any]
    batch: int
    steps_per_epoch: int
    multi: bool = False
    chief: bool = True
    #: The model that validates, re-estimates BatchNorm and is saved (multiworker: a plain clone).
    local: Any = None
    history: list[dict[str, Any]] = field(default_factory=list)
    #: ``{"step", "epoch", "val_macro_f1", "file"}`` of the epoch ``select_best`` keeps so far.
    best: dict[str, Any] | None = None
    best_weights: list | None = None
    best_path: Path | None = None
    #: Where training is, for the error when another worker stops answering.
    where: str = ""

    def __post_init__(self) -> None:
        self.local = self.model if self.local is None else self.local
        self.history = list(self.state["history"])
        self.best = self.state.get("best")

    @property
    def ckpt_dir(self) -> Path:
        """The run's checkpoints/ folder (state.json, step_<k>.keras, the best epoch's weights)."""
        return self.out / "checkpoints"

    @property
    def with_val(self) -> bool:
        """Whether the run has a validation split (the val_* columns, model selection, calibration)."""
        return self.data.val is not None

    @property
    def select(self) -> bool:
        """Whether the best epoch is kept at the end (``select_best`` and a validation split to judge by)."""
        return bool(self.config.select_best and self.with_val)

    def find_best(self, start: int) -> None:
        """Point at the best epoch's weights file of a resumed run; TrainingError when it is missing."""
        best = self.best
        self.best_path = self.ckpt_dir / best["file"] if best and start > 0 and best.get("file") else None
        if self.best_path is not None and not self.best_path.is_file():
            raise TrainingError(f"{self.best_path} (the best epoch so far) is missing; start again with --force")


def run_steps(fit: Fit, start: int, on_step_end: Callable[[int, Any], None] | None = None) -> None:
    """Train the schedule's steps ``start..n_steps-1``, a checkpoint after each, then keep the best epoch."""
    config = fit.config
    fit.where = f"step {start}"
    for k in range(start, config.n_steps):
        new_best = _run_step(fit, k)
        _checkpoint(fit, k, new_best)
        if on_step_end is not None:
            on_step_end(k, fit.model)
    fit.where = "the end of training"
    if fit.multi and fit.local is fit.model:  # nothing left to train (resumed after the last step): copy once
        fit.local = distributed.local_copy(fit.model)
        distributed.sync_into(fit.local, fit.model)
    if fit.select and fit.best is not None:
        _restore_best(fit)


def _run_step(fit: Fit, k: int) -> bool:
    """Train step ``k`` (its block and epochs); returns whether one of its epochs became the best."""
    from edge_derm.models._tf import keras

    config = fit.config
    step = config.steps()[k]
    block, n_epochs = step["block"], step["epochs"]
    keras.utils.set_random_seed(config.seed + k)
    fit.where = f"the start of step {k} (block {block})"
    step_fn, head_lr = _compile_step(fit, step)
    if fit.multi:
        fit.local = distributed.local_copy(fit.model)  # this step's trainable flags, the backbone's BN momentum
        # BatchNorm layers that train normalise with the global batch's statistics, as on one worker.
        distributed.sync_batchnorm(fit.model, True)
    momentum = FULL_BN_MOMENTUM if config.unfreeze == "full" else config.bn_momentum
    momenta = set_bn_momentum(fit.model, momentum) if momentum else {}
    iterator = _train_batches(fit, config.seed + k)
    label = f"step {k + 1}/{config.n_steps} ({block})" if config.n_steps > 1 else f"training ({block} layers)"
    new_best = False
    for epoch in range(1, n_epochs + 1):
        losses, correct = _run_epoch(fit, k, block, epoch, step_fn, iterator, f"{label} epoch {epoch}/{n_epochs}")
        fit.where = f"step {k} (block {block}), end of epoch {epoch}"
        _after_epoch_batchnorm(fit)
        lr_end = float(head_lr(epoch * fit.steps_per_epoch - 1)) if callable(head_lr) else float(head_lr)
        row: dict[str, Any] = {"step": k, "block": block, "epoch": epoch, "lr_end": lr_end,
                               "loss": float(np.mean(losses)), "accuracy": correct / (fit.batch * len(losses))}
        new_best = _validate(fit, row) or new_best
        fit.history.append(row)
        _log.info("step %d [%s] epoch %d: %s", k, block, epoch, row)
    if fit.multi:
        distributed.sync_batchnorm(fit.model, False)
    restore_bn_momentum(fit.model, momenta)
    return new_best


def _compile_step(fit: Fit, step: dict[str, Any]) -> tuple[Callable, Any]:
    """Apply the step's schedule and build its training function; returns it and the head's learning rate."""
    config = fit.config
    total = fit.steps_per_epoch * step["epochs"]
    with fit.strategy.scope():
        head_vars, bb_vars = apply_schedule(fit.model, fit.spec, step["level"])
        warm = int(round(config.warmup_epochs * fit.steps_per_epoch))
        head_lr = lr_schedule(config.lr_head, config.lr_schedule, total, warm)
        step_fn = make_train_function(
            fit.model, head_vars, bb_vars,
            lr_head=head_lr,
            lr_backbone=lr_schedule(config.lr_backbone, config.lr_schedule, total, warm),
            global_batch=fit.batch, label_smoothing=config.label_smoothing, strategy=fit.strategy)
    return step_fn, head_lr


def _train_batches(fit: Fit, seed: int):
    """An iterator over the step's augmented, class-balanced training batches (sharded per worker)."""
    from edge_derm.data.pipeline import make_dataset

    config, data = fit.config, fit.data

    def make_train_ds(seed: int = seed):
        return make_dataset(data.train[0], data.train[1], len(data.classes), config.image_size, training=True,
                            batch_size=fit.batch, augment=augment_config(config),
                            resize_mode=config.resize_mode, seed=seed)

    if fit.multi:
        return iter(distributed.distribute_sharded(fit.strategy, make_train_ds, fit.batch))
    return iter(fit.strategy.experimental_distribute_dataset(make_train_ds()))


def _run_epoch(fit: Fit, k: int, block: str, epoch: int, step_fn: Callable, iterator,
               label: str) -> tuple[list[float], float]:
    """One epoch of ``steps_per_epoch`` batches; returns the batch losses and the number correct.

    Adds the epoch's time and images to the state (the first batch of a step traces the function and is
    not timed). A non-finite loss stops training with a TrainingError naming the last good checkpoint.
    """
    state, spe = fit.state, fit.steps_per_epoch
    losses, correct, seen, t0 = [], 0.0, 0, time.perf_counter()
    with progress.task(label, total=spe) as advance:
        for b in range(spe):
            fit.where = f"step {k} (block {block}), epoch {epoch}, batch {b + 1}"
            loss, corr = step_fn(next(iterator))
            loss = float(loss)
            if not math.isfinite(loss):
                last = f"checkpoints/step_{k - 1}.keras" if k > 0 else "none (step 0 did not finish)"
                raise TrainingError(
                    f"loss became {loss} at {fit.where}; "
                    f"training stopped, the last good checkpoint is {last}; "
                    "lower the learning rates or check the data")
            losses.append(loss)
            correct += float(corr)
            if epoch == 1 and b == 0:
                t0 = time.perf_counter()  # the first batch of a step traces the function: warm-up
            else:
                seen += fit.batch
            advance(1)
    state["train_seconds"] = state.get("train_seconds", 0.0) + time.perf_counter() - t0
    state["train_images"] = state.get("train_images", 0) + seen
    return losses, correct


def _after_epoch_batchnorm(fit: Fit) -> None:
    """Bring ``local`` up to date and re-estimate the BatchNorm statistics (``bn_recalibration``)."""
    config = fit.config
    if fit.multi:
        distributed.sync_batchnorm(fit.model, False)
        distributed.sync_into(fit.local, fit.model)  # every worker, together
        if config.bn_recalibration:
            # The same seeded batches on every worker: identical statistics, then shared back.
            recalibrate_batchnorm(fit.local, fit.data, config)
            fit.model.set_weights(fit.local.get_weights())
        distributed.sync_batchnorm(fit.model, True)
    elif config.bn_recalibration:
        # Before validation, so the epoch is judged (and kept) with the statistics it will ship with.
        with fit.strategy.scope():
            recalibrate_batchnorm(fit.model, fit.data, config)


def _validate(fit: Fit, row: dict[str, Any]) -> bool:
    """Add the val_* columns to the epoch's ``row``; returns whether the epoch is the best so far."""
    if not fit.with_val:
        return False
    config, val = fit.config, fit.data.val
    probs = predict(fit.local, val[0], config.image_size, config.resize_mode, description="validating")
    row["val_loss"], row["val_accuracy"] = loss_accuracy(probs, val[1])
    row["val_macro_f1"] = macro_f1(probs, val[1])
    if not fit.select or (fit.best is not None and row["val_macro_f1"] <= fit.best["val_macro_f1"]):
        return False
    fit.best = {"step": row["step"], "epoch": row["epoch"], "val_macro_f1": row["val_macro_f1"],
                "file": f"best_step{row['step']}.weights.h5"}
    fit.best_weights = [w.copy() for w in fit.local.get_weights()]
    return True


def _checkpoint(fit: Fit, k: int, new_best: bool) -> None:
    """After step ``k``: the chief writes its model, the best epoch's weights, then the state that points at
    them, and history.csv; every worker records the step as completed."""
    old_best = fit.best_path
    if fit.chief:
        # Checkpoint first, then the state that points at it: a crash in between keeps the old state.
        save_model(fit.local, fit.ckpt_dir / f"step_{k}.keras")
    if new_best:
        fit.best_path = fit.ckpt_dir / fit.best["file"]
        if fit.chief:
            save_weights(fit.local, fit.best_weights, fit.best_path)
        # Multiworker: every worker keeps the best weights in memory (the chief's file may not be written,
        # or visible, when another worker needs it); one worker: the file is enough.
        fit.best_weights = fit.best_weights if fit.multi else None
    fit.state.update(completed_step=k, history=fit.history, best=fit.best)
    if fit.chief:
        # A new file name per step, then the state that points at it: a crash in between keeps the old pair.
        write_json(fit.ckpt_dir / "state.json", fit.state)
        write_history(fit.out / "history.csv", fit.history, fit.with_val)
        if old_best is not None and fit.best_path is not None and old_best != fit.best_path:
            old_best.unlink(missing_ok=True)


def _restore_best(fit: Fit) -> None:
    """Load the best epoch's weights into ``local`` (from memory, or from its file after a resume)."""
    if fit.best_weights is None and fit.best_path is not None:
        fit.local.load_weights(str(fit.best_path))
    elif fit.best_weights is not None:
        fit.local.set_weights(fit.best_weights)
    _log.info("kept step %d epoch %d (best validation macro F1 %.3f)", fit.best["step"], fit.best["epoch"],
              fit.best["val_macro_f1"])
