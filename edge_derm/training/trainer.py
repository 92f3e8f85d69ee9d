"""Block-wise (frozen-block) fine-tuning with checkpoints, resume and per-group learning rates.

Step 0 trains the head with the backbone frozen; step k also trains the backbone blocks 1..k of
the spec's block map. Each group has its own Adam optimizer (head 1e-4, backbone 1e-5 by default),
created fresh at each step (as the paper re-compiles per block), so a checkpoint of the model
after a step is all the state a resume needs. Each step reseeds with ``seed + step``, so a
resumed run reproduces the uninterrupted one. Frozen layers have ``trainable=False``, which in
Keras 2 also runs their BatchNormalization in inference mode.

``unfreeze = "full"`` (the from-scratch recipe, plan ``o``) is one step that trains every layer
from the start (1e-3 by default), with BatchNorm momentum 0.9 while it trains so the moving
averages follow the weights; the block-wise schedule leaves a random backbone at chance.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from edge_derm import progress
from edge_derm.errors import ConfigError, ModelError, OutputExistsError
from edge_derm.fsutil import atomic_write_text, read_json, write_json
from edge_derm.training.config import FULL_BN_MOMENTUM, TrainConfig, config_diff
from edge_derm.training.data import TrainingData, load_data

_log = logging.getLogger(__name__)

HISTORY_COLUMNS = ("step", "block", "epoch", "loss", "accuracy", "val_loss", "val_accuracy")
FORMAT_VERSION = 1
EVAL_BATCH = 64


class TrainingError(ModelError):
    """Training stopped (e.g. a NaN loss); the run keeps its last good checkpoint."""


# -- schedule ----------------------------------------------------------------------------------

def apply_schedule(model, spec, step: int) -> tuple[list, list]:
    """Freeze every layer except those of the head and the first ``step`` backbone blocks.

    Returns:
        ``(head_variables, backbone_variables)``: the trainable variables of each group.
    """
    from edge_derm.models import layer_blocks

    names = spec.block_names
    if not 0 <= step < len(names):
        raise ConfigError(f"schedule step {step} out of range 0..{len(names) - 1} for {spec.name}")
    active = set(names[: step + 1])
    model.trainable = True
    for layer in model.layers:
        layer.trainable = False
    groups = layer_blocks(model, spec)
    for block in active:
        for layer in groups[block]:
            layer.trainable = True
    head = [v for layer in groups["head"] for v in layer.trainable_weights]
    backbone = [v for b in names[1: step + 1] for layer in groups[b] for v in layer.trainable_weights]
    return head, backbone


def make_train_function(model, head_vars: list, backbone_vars: list, *, lr_head: float, lr_backbone: float,
                        global_batch: int, label_smoothing: float = 0.0, strategy=None) -> Callable:
    """A compiled training step ``fn((x, y)) -> (loss, correct)`` with one Adam per group.

    Must be called inside ``strategy.scope()`` when a strategy is given (the optimizers' slots
    are created here).
    """
    from edge_derm.models._tf import keras, tf

    strategy = strategy or tf.distribute.get_strategy()
    opt_head = keras.optimizers.Adam(learning_rate=lr_head)
    opt_backbone = keras.optimizers.Adam(learning_rate=lr_backbone)
    opt_head.build(head_vars)
    if backbone_vars:
        opt_backbone.build(backbone_vars)
    variables = list(head_vars) + list(backbone_vars)
    n_head = len(head_vars)

    def replica_step(x, y):
        with tf.GradientTape() as tape:
            probs = model(x, training=True)
            per_example = keras.losses.categorical_crossentropy(y, probs, label_smoothing=label_smoothing)
            loss = tf.nn.compute_average_loss(per_example, global_batch_size=global_batch)
            if model.losses:
                loss += tf.nn.scale_regularization_loss(tf.add_n(model.losses))
        grads = tape.gradient(loss, variables)
        opt_head.apply_gradients(zip(grads[:n_head], head_vars))
        if backbone_vars:
            opt_backbone.apply_gradients(zip(grads[n_head:], backbone_vars))
        correct = tf.reduce_sum(tf.cast(tf.equal(tf.argmax(probs, -1), tf.argmax(y, -1)), tf.float32))
        return loss, correct

    @tf.function
    def train_step(batch):
        x, y = batch
        loss, correct = strategy.run(replica_step, args=(x, y))
        sum_ = tf.distribute.ReduceOp.SUM
        return strategy.reduce(sum_, loss, axis=None), strategy.reduce(sum_, correct, axis=None)

    train_step.optimizers = (opt_head, opt_backbone)
    return train_step


def make_strategy(name: str):
    """``none`` -> the default strategy; ``mirrored`` -> all local GPUs (else all logical CPUs);
    ``multiworker`` -> MultiWorkerMirroredStrategy (reads TF_CONFIG)."""
    from edge_derm.models._tf import tf

    if name == "none":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
        return tf.distribute.MirroredStrategy(devices=[d.name for d in devices])
    if name == "multiworker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise ConfigError(f"unknown distribution {name!r}; use none, mirrored or multiworker")


def _is_chief(strategy) -> bool:
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not getattr(resolver, "task_type", None):
        return True
    if resolver.task_type == "chief":
        return True
    spec = resolver.cluster_spec().as_dict() if resolver.cluster_spec() else {}
    return resolver.task_type == "worker" and resolver.task_id == 0 and "chief" not in spec


# -- prediction --------------------------------------------------------------------------------

def predict(model, paths: list[str], image_size: int, resize_mode: str = "nearest",
            batch_size: int = EVAL_BATCH, description: str = "predicting") -> np.ndarray:
    """Class probabilities (N, C) for image files, in order, the last partial batch included."""
    from edge_derm.data.pipeline import make_dataset

    n_classes = int(model.output_shape[-1])
    if not paths:
        return np.zeros((0, n_classes), np.float32)
    labels = np.zeros(len(paths), dtype=np.int64)
    ds = make_dataset(list(paths), labels, n_classes, image_size, training=False, batch_size=batch_size,
                      resize_mode=resize_mode)
    _log.info("%s %d images", description, len(paths))
    # model.predict keeps one compiled predict function per model (no retracing per call).
    return np.asarray(model.predict(ds.map(lambda x, y: x), verbose=0), dtype=np.float32)


def _loss_accuracy(probs: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    p = np.clip(probs[np.arange(len(labels)), labels], 1e-7, 1.0)
    return float(-np.log(p).mean()), float((probs.argmax(1) == labels).mean())


# -- the run folder ----------------------------------------------------------------------------

def run_config(config: TrainConfig, data: TrainingData) -> dict[str, Any]:
    """The ``config.json`` of a run (without ``params``, added once the model exists)."""
    from edge_derm.models import get_spec
    from edge_derm.provenance import hash_json, versions

    spec = get_spec(config.backbone)
    identity = {"train": config.identity(), "data": data.datasets, "classes": data.classes}
    return {
        "kind": "run",
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
        "data": data.datasets,
        "weights": config.weights,
        "seed": config.seed,
        "schedule": config.schedule(),
        "train": config.to_dict(),
        "versions": versions(),
        "config_hash": hash_json(identity),
    }


def _prepare_folder(out: Path, rc: dict[str, Any], *, resume: bool, force: bool) -> dict[str, Any]:
    """Create, replace or reopen the run folder; returns the saved state ({} for a new run)."""
    if resume and force:
        raise ConfigError("--resume and --force contradict each other; pass one")
    config_path = out / "config.json"
    state_path = out / "checkpoints" / "state.json"
    exists = out.exists() and (not out.is_dir() or any(out.iterdir()))
    if resume:
        if not config_path.is_file() or not state_path.is_file():
            raise ConfigError(f"nothing to resume in {out} (no config.json / checkpoints/state.json); "
                              "start it without --resume")
        old = read_json(config_path)
        if old.get("config_hash") != rc["config_hash"]:
            diff = config_diff(_flat(old), _flat(rc))
            raise ConfigError(f"--resume with a different configuration than {out} ("
                              + "; ".join(diff or ["dataset content changed"])
                              + "); use the same options, or --force to start again")
        return read_json(state_path)
    if exists:
        if not force:
            raise OutputExistsError(f"{out} already exists; pass --resume to continue it or --force to replace it")
        if out.is_dir() and not (out / "config.json").is_file() and any(out.iterdir()):
            raise OutputExistsError(f"{out} is not empty and not a run folder; refusing to replace it even "
                                    "with --force; choose another --out")
        shutil.rmtree(out) if out.is_dir() else out.unlink()
    (out / "checkpoints").mkdir(parents=True, exist_ok=True)
    write_json(config_path, rc)
    state = {"completed_step": -1, "history": [], "complete": False, "train_seconds": 0.0, "train_images": 0}
    write_json(state_path, state)
    return state


def _flat(rc: dict[str, Any]) -> dict[str, Any]:
    flat = {k: v for k, v in rc.get("train", {}).items() if k != "distribute"}
    flat["datasets"] = [d.get("hash") for d in rc.get("data", [])]
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


# -- training ----------------------------------------------------------------------------------

def train(config: TrainConfig, out: str | os.PathLike, *, resume: bool = False, force: bool = False,
          evaluate: bool = True, on_step_end: Callable[[int, Any], None] | None = None) -> dict[str, Any]:
    """Train one run into ``out`` (block-wise schedule, a checkpoint per step, final evaluation).

    Args:
        config: The validated configuration.
        out: Run folder.
        resume: Continue after the last completed step of an existing run with the same config.
        force: Replace an existing run folder.
        evaluate: Evaluate the final model on the last dataset's test split (metrics.json, report.md).
        on_step_end: Called as ``on_step_end(step, model)`` after each step's checkpoint (tests).

    Returns:
        ``{"out", "metrics" (or None), "history", "train_images_per_s" (warm-up batches excluded),
        "params", "replicas"}``.

    Raises:
        ConfigError, DataError, OutputExistsError: Bad options, data or folder.
        TrainingError: A non-finite loss (the last good checkpoint is kept).
    """
    from edge_derm.models import build_classifier, count_params, get_spec, load_model
    from edge_derm.models._tf import keras, tf

    out = Path(out)
    spec = get_spec(config.backbone)
    if config.weights == "none" and config.unfreeze == "blockwise":
        _log.warning("training from random weights with the block-wise schedule: the backbone is frozen at "
                     "step 0 and then trained at lr_backbone %g; for a from-scratch recipe use "
                     "unfreeze = \"full\" (plan o)", config.lr_backbone)
    data = load_data(config.data, merge=config.merge)
    rc = run_config(config, data)
    state = _prepare_folder(out, rc, resume=resume, force=force)
    ckpt_dir = out / "checkpoints"
    with_val = data.val is not None

    if state.get("complete"):
        _log.info("%s is already complete; nothing to resume", out)
        metrics = read_json(out / "metrics.json") if (out / "metrics.json").is_file() else None
        return {"out": out, "metrics": metrics, "history": state["history"],
                "params": read_json(out / "config.json").get("params"), "train_images_per_s": _rate(state),
                "replicas": None}

    if config.deterministic:
        tf.config.experimental.enable_op_determinism()
    strategy = make_strategy(config.distribute)
    chief = _is_chief(strategy)
    start = int(state["completed_step"]) + 1
    keras.utils.set_random_seed(config.seed)
    with strategy.scope():
        if start > 0:
            model = load_model(ckpt_dir / f"step_{start - 1}.keras")
            _log.info("resuming %s after step %d", out, start - 1)
        else:
            model = build_classifier(config.backbone, len(data.classes), image_size=config.image_size,
                                     alpha=config.alpha, weights=config.weights, dropout=config.dropout)
    if "params" not in rc:
        rc["params"] = count_params(model)
        if chief:
            write_json(out / "config.json", rc)

    from edge_derm.data.pipeline import AugmentConfig, make_dataset, steps_per_epoch

    n_classes = len(data.classes)
    batch = config.batch_size or n_classes * config.batch_multiple
    spe = config.steps_per_epoch or steps_per_epoch(len(data.train[0]), batch)
    history: list[dict[str, Any]] = list(state["history"])
    steps = config.steps()
    for k in range(start, config.n_steps):
        block, n_epochs = steps[k]["block"], steps[k]["epochs"]
        keras.utils.set_random_seed(config.seed + k)
        with strategy.scope():
            head_vars, bb_vars = apply_schedule(model, spec, steps[k]["level"])
            step_fn = make_train_function(model, head_vars, bb_vars, lr_head=config.lr_head,
                                          lr_backbone=config.lr_backbone, global_batch=batch,
                                          label_smoothing=config.label_smoothing, strategy=strategy)
        momenta = _set_bn_momentum(model, FULL_BN_MOMENTUM) if config.unfreeze == "full" else {}
        ds = make_dataset(data.train[0], data.train[1], n_classes, config.image_size, training=True,
                          batch_size=batch, augment=AugmentConfig(enabled=config.augment),
                          resize_mode=config.resize_mode, seed=config.seed + k)
        iterator = iter(strategy.experimental_distribute_dataset(ds))
        for epoch in range(1, n_epochs + 1):
            losses, correct, seen, t0 = [], 0.0, 0, time.perf_counter()
            with progress.task(f"step {k}/{config.n_steps - 1} ({block}) epoch {epoch}/{n_epochs}",
                               total=spe) as advance:
                for b in range(spe):
                    loss, corr = step_fn(next(iterator))
                    loss = float(loss)
                    if not math.isfinite(loss):
                        last = f"checkpoints/step_{k - 1}.keras" if k > 0 else "none (step 0 did not finish)"
                        raise TrainingError(
                            f"loss became {loss} at step {k} (block {block}), epoch {epoch}, batch {b + 1}; "
                            f"training stopped, the last good checkpoint is {last}; "
                            "lower the learning rates or check the data")
                    losses.append(loss)
                    correct += float(corr)
                    if epoch == 1 and b == 0:
                        t0 = time.perf_counter()  # the first batch of a step traces the function: warm-up
                    else:
                        seen += batch
                    advance(1)
            state["train_seconds"] = state.get("train_seconds", 0.0) + time.perf_counter() - t0
            state["train_images"] = state.get("train_images", 0) + seen
            row: dict[str, Any] = {"step": k, "block": block, "epoch": epoch, "loss": float(np.mean(losses)),
                                   "accuracy": correct / (batch * len(losses))}
            if with_val:
                probs = predict(model, data.val[0], config.image_size, config.resize_mode, description="validating")
                row["val_loss"], row["val_accuracy"] = _loss_accuracy(probs, data.val[1])
            history.append(row)
            _log.info("step %d [%s] epoch %d: %s", k, block, epoch, row)
        _restore_bn_momentum(model, momenta)
        if config.bn_recalibration:
            with strategy.scope():
                recalibrate_batchnorm(model, data, config)
        # Checkpoint first, then the state that points at it: a crash in between keeps the old state.
        target = ckpt_dir if chief else Path(tempfile.mkdtemp())
        save_model(model, target / f"step_{k}.keras")
        if chief:
            state.update(completed_step=k, history=history)
            write_json(ckpt_dir / "state.json", state)
            write_history(out / "history.csv", history, with_val)
        if on_step_end is not None:
            on_step_end(k, model)

    metrics = None
    if chief:
        save_model(model, out / "model.keras")
        _plot_history(history, out / "history.png")
        if evaluate:
            metrics = evaluate_model(model, data, config, out)
        state["complete"] = True
        write_json(ckpt_dir / "state.json", state)
    return {"out": out, "metrics": metrics, "history": history, "params": rc["params"],
            "train_images_per_s": _rate(state), "replicas": int(strategy.num_replicas_in_sync)}


def recalibrate_batchnorm(model, data: TrainingData, config: TrainConfig) -> int:
    """Set the moving averages of the trainable BatchNorm layers to the statistics of training images.

    Uses ``config.bn_recalibration`` training images (a seeded sample, no augmentation) in one batch
    with momentum 0; call it after ``apply_schedule`` for the step just trained (frozen layers run in
    inference mode in Keras 2 and keep theirs). Returns the number of layers updated.
    """
    from edge_derm.data.pipeline import make_dataset
    from edge_derm.models._tf import keras

    paths, labels = data.train
    pick = np.sort(np.random.default_rng(config.seed).permutation(len(paths))[: config.bn_recalibration])
    ds = make_dataset([paths[i] for i in pick], labels[pick], len(data.classes), config.image_size,
                      training=False, batch_size=len(pick), resize_mode=config.resize_mode)
    images = next(iter(ds))[0]
    bns = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization) and layer.trainable]
    momenta = _set_bn_momentum(model, 0.0)
    model(images, training=True)
    _restore_bn_momentum(model, momenta)
    _log.info("recomputed the moving averages of %d BatchNorm layers on %d training images", len(bns), len(pick))
    return len(bns)


def _set_bn_momentum(model, momentum: float) -> dict[Any, float]:
    """Set the momentum of every trainable BatchNormalization layer; returns the old values."""
    from edge_derm.models._tf import keras

    old = {}
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization) and layer.trainable:
            old[layer] = layer.momentum
            layer.momentum = momentum
    return old


def _restore_bn_momentum(model, momenta: dict[Any, float]) -> None:
    for layer, momentum in momenta.items():
        layer.momentum = momentum


def _rate(state: dict[str, Any]) -> float | None:
    secs = state.get("train_seconds") or 0.0
    return state.get("train_images", 0) / secs if secs > 0 else None


def _plot_history(history: list[dict[str, Any]], path: Path) -> None:
    try:
        from edge_derm.evaluation import plot_history

        plot_history(history, path, title="training history")
    except Exception as exc:  # a missing plot never fails a finished run
        _log.warning("could not plot the history: %s", exc)


def evaluate_model(model, data: TrainingData, config: TrainConfig, out: Path) -> dict[str, Any] | None:
    """Evaluate on the last dataset's test split and write metrics.json / report.md / confusion.png."""
    from edge_derm.evaluation import compute_metrics, write_evaluation

    if data.test is None:
        _log.warning("%s has no test split; no metrics.json written", data.datasets[-1]["dir"])
        return None
    probs = predict(model, data.test[0], config.image_size, config.resize_mode, description="evaluating")
    metrics = compute_metrics(data.test[1], probs, data.classes, triage=data.triage,
                              bootstrap=config.bootstrap, seed=config.seed)
    metrics["split"] = "test"
    metrics["data"] = data.datasets[-1]
    write_evaluation(out, metrics, title=f"{out.name}: {config.backbone} on {Path(data.datasets[-1]['dir']).name} (test)")
    return metrics
