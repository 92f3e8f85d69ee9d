"""Block-wise (frozen-block) fine-tuning with checkpoints, resume and per-group learning rates.

Step 0 trains the head with the backbone frozen; step k also trains the backbone blocks 1..k of
the spec's block map. Each group has its own Adam optimizer (rates from the recipe: paper 1e-4 / 1e-5),
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
from edge_derm.errors import ConfigError, ModelError, OutputExistsError, data_error_from_tf
from edge_derm.fsutil import atomic_write_text, check_not_input, read_json, write_json
from edge_derm.training.config import FULL_BN_MOMENTUM, TrainConfig, config_diff
from edge_derm.training.data import TrainingData, carve_validation, load_data

_log = logging.getLogger(__name__)

HISTORY_COLUMNS = ("step", "block", "epoch", "lr_end", "loss", "accuracy", "val_loss", "val_accuracy", "val_macro_f1")
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


def lr_schedule(base: float, kind: str = "constant", total_steps: int = 1, warmup_steps: int = 0):
    """A learning rate for Adam: ``base`` (constant), or linear warm-up over ``warmup_steps`` batches
    then cosine decay to 0 at ``total_steps`` (``cosine``)."""
    from edge_derm.models._tf import keras, tf

    if kind == "constant":
        return base

    class WarmupCosine(keras.optimizers.schedules.LearningRateSchedule):
        def __call__(self, step):
            step = tf.cast(step, tf.float32)
            warm = float(max(warmup_steps, 0))
            total = float(max(total_steps, 1))
            warm_lr = base * (step + 1.0) / max(warm, 1.0)
            progress_ = tf.clip_by_value((step - warm) / max(total - warm, 1.0), 0.0, 1.0)
            cos_lr = 0.5 * base * (1.0 + tf.cos(math.pi * progress_))
            return tf.where(step < warm, warm_lr, cos_lr)

        def get_config(self):
            return {"base": base, "total_steps": total_steps, "warmup_steps": warmup_steps}

    return WarmupCosine()


def make_train_function(model, head_vars: list, backbone_vars: list, *, lr_head: Any, lr_backbone: Any,
                        global_batch: int, label_smoothing: float = 0.0, strategy=None) -> Callable:
    """A compiled training step ``fn((x, y)) -> (loss, correct)`` with one Adam per group.

    ``lr_head`` / ``lr_backbone`` are numbers or schedules (:func:`lr_schedule`). Must be called inside
    ``strategy.scope()`` when a strategy is given (the optimizers' slots are created here).
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


def make_strategy(name: str, **multiworker: Any):
    """``none`` -> the default strategy; ``mirrored`` -> all local GPUs (else all logical CPUs);
    ``multiworker`` -> MultiWorkerMirroredStrategy (reads TF_CONFIG; ``multiworker`` are the keyword
    arguments of :func:`edge_derm.training.distributed.make_multiworker_strategy`)."""
    from edge_derm.models._tf import tf

    if name == "none":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
        return tf.distribute.MirroredStrategy(devices=[d.name for d in devices])
    if name == "multiworker":
        from edge_derm.training.distributed import cluster_from_env, make_multiworker_strategy

        return make_multiworker_strategy(cluster_from_env(), **multiworker)
    raise ConfigError(f"unknown distribution {name!r}; use none, mirrored or multiworker")


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
        "descriptions": data.descriptions,
        "data": data.datasets,
        "weights": config.weights,
        "weights_file": _imagenet_file(config),
        "seed": config.seed,
        "schedule": config.schedule(),
        "train": config.to_dict(),
        "versions": versions(),
        "config_hash": hash_json(identity),
    }


def _imagenet_file(config: TrainConfig) -> str | None:
    """The ImageNet file a run starts from (cached, possibly of another input size), or None."""
    if config.weights != "imagenet":
        return None
    from edge_derm.models import get_spec
    from edge_derm.models.registry import find_cached_imagenet

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


def _prepare_folder(out: Path, rc: dict[str, Any], *, resume: bool, force: bool, create: bool = True) -> dict[str, Any]:
    """Create, replace or reopen the run folder; returns the saved state (step -1 for a new run).

    With ``create=False`` only the checks run (nothing is removed or written): a multi-worker chief
    checks before the cluster forms and creates the folder once it has formed.
    """
    if resume and force:
        raise ConfigError("--resume and --force contradict each other; pass one")
    config_path = out / "config.json"
    state_path = out / "checkpoints" / "state.json"
    exists = out.exists() and (not out.is_dir() or any(out.iterdir()))
    if resume:
        if not config_path.is_file() or not state_path.is_file():
            raise ConfigError(f"nothing to resume in {out} (no config.json / checkpoints/state.json); "
                              "start it without --resume")
        old, state = (_read_run_json(path, out) for path in (config_path, state_path))
        if old.get("config_hash") != rc["config_hash"]:
            diff = config_diff(_flat(old), _flat(rc))
            raise ConfigError(f"--resume with a different configuration than {out} ("
                              + "; ".join(diff or ["dataset content changed"])
                              + "); use the same options, or --force to start again")
        required = {"completed_step": int, "history": list}
        if any(not isinstance(state.get(k), t) for k, t in required.items()):
            raise ConfigError(f"{state_path} is damaged (no completed_step / history); start again with --force")
        return state
    if exists:
        if not force:
            raise OutputExistsError(f"{out} already exists; pass --resume to continue it or --force to replace it")
        if out.is_dir() and not (out / "config.json").is_file() and any(out.iterdir()):
            raise OutputExistsError(f"{out} is not empty and not a run folder; refusing to replace it even "
                                    "with --force; choose another --out")
    state = {"completed_step": -1, "history": [], "complete": False, "train_seconds": 0.0, "train_images": 0}
    if not create:
        return state
    if exists:
        shutil.rmtree(out) if out.is_dir() else out.unlink()
    (out / "checkpoints").mkdir(parents=True, exist_ok=True)
    write_json(config_path, rc)
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
          evaluate: bool = True, on_step_end: Callable[[int, Any], None] | None = None,
          worker_timeout: float | None = None) -> dict[str, Any]:
    """Train one run into ``out``; see :func:`_train`.

    A new run that fails before its first step is checkpointed leaves no folder behind (a skeleton
    would block the corrected rerun); an image that becomes unreadable after the build is a
    DataError naming it, not TensorFlow's traceback.
    """
    out = Path(out)
    existed = out.exists() and (not out.is_dir() or any(out.iterdir()))
    try:
        return _train(config, out, resume=resume, force=force, evaluate=evaluate, on_step_end=on_step_end,
                      worker_timeout=worker_timeout)
    except BaseException as exc:
        state_path = out / "checkpoints" / "state.json"
        if _writes_folder(config) and not resume and not (existed and not force) and state_path.is_file():
            try:
                started = int(read_json(state_path).get("completed_step", -1)) >= 0
            except (ValueError, OSError, TypeError, AttributeError):
                started = True
            if not started:
                shutil.rmtree(out, ignore_errors=True)
        translated = data_error_from_tf(exc)
        if translated is not None:
            raise translated from None
        raise


def _writes_folder(config: TrainConfig) -> bool:
    """Whether this process owns the run folder: always, except a non-chief multi-worker task."""
    if config.distribute != "multiworker":
        return True
    from edge_derm.training.distributed import cluster_from_env

    try:
        return cluster_from_env().is_chief
    except ConfigError:
        return False


def _train(config: TrainConfig, out: Path, *, resume: bool = False, force: bool = False,
           evaluate: bool = True, on_step_end: Callable[[int, Any], None] | None = None,
           worker_timeout: float | None = None) -> dict[str, Any]:
    """Train one run into ``out`` (block-wise schedule, a checkpoint per step, final evaluation).

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

    Under ``distribute = "multiworker"`` (TF_CONFIG) only the chief writes ``out``; the other workers
    read it only to resume (so ``out`` must be on storage they share) and write nothing anywhere.

    Returns:
        ``{"out", "metrics" (or None), "history", "train_images_per_s" (warm-up batches excluded),
        "params", "replicas"}``.

    Raises:
        ConfigError, DataError, OutputExistsError: Bad options, data or folder.
        TrainingError: A non-finite loss (the last good checkpoint is kept).
        WorkerLostError: ``multiworker``: another worker stopped answering (the completed steps are kept).
    """
    from edge_derm.models import build_classifier, count_params, get_spec, load_model
    from edge_derm.models._tf import keras, tf

    out = Path(out)
    multi = config.distribute == "multiworker"
    cluster = None
    if multi:
        from edge_derm.training import distributed

        cluster = distributed.cluster_from_env()  # a malformed TF_CONFIG fails before anything is read or written
    chief = cluster.is_chief if cluster is not None else True
    spec = get_spec(config.backbone)
    if config.weights == "none" and config.unfreeze == "blockwise":
        _log.warning("training from random weights with the block-wise schedule: the backbone is frozen at "
                     "step 0 and then trained at lr_backbone %g; for a from-scratch recipe use "
                     "unfreeze = \"full\" (plan o)", config.lr_backbone)
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
    rc = run_config(config, data)
    if not resume:
        check_not_input(out, train_inputs(config, data))
    if chief or resume:  # resuming only reads the folder; a new run's folder is the chief's alone
        # Multi-worker: check now, create (or replace) only once the cluster has formed, so a join that
        # fails or is killed leaves the folder as it was.
        state = _prepare_folder(out, rc, resume=resume, force=force, create=not multi)
    else:
        if force and resume:
            raise ConfigError("--resume and --force contradict each other; pass one")
        state = {"completed_step": -1, "history": [], "complete": False, "train_seconds": 0.0, "train_images": 0}
    ckpt_dir = out / "checkpoints"
    with_val = data.val is not None

    if state.get("complete"):
        _log.info("%s is already complete; nothing to resume", out)
        metrics = read_json(out / "metrics.json") if (out / "metrics.json").is_file() else None
        return {"out": out, "metrics": metrics, "history": state["history"],
                "params": read_json(out / "config.json").get("params"), "train_images_per_s": _rate(state),
                "replicas": None}

    if multi:
        # Before any other TensorFlow op (MultiWorkerMirroredStrategy configures the runtime for the cluster).
        timeouts = {"join_timeout": worker_timeout} if worker_timeout is not None else {}
        strategy = make_strategy("multiworker", **timeouts)
        if chief and not resume:
            state = _prepare_folder(out, rc, resume=False, force=force)
    else:
        strategy = make_strategy(config.distribute)
    if config.deterministic:
        tf.config.experimental.enable_op_determinism()
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
    if multi:
        distributed.check_global_batch(batch, int(strategy.num_replicas_in_sync))
        _log.info("%s: global batch %d, %d image(s) per replica", cluster.describe(), batch,
                  batch // int(strategy.num_replicas_in_sync))
    local = model  # the model that validates, re-estimates BatchNorm and is saved (multiworker: a plain clone)
    history: list[dict[str, Any]] = list(state["history"])
    best = state.get("best")  # {"step", "epoch", "val_macro_f1"} of the epoch kept by select_best
    best_weights = None
    best_path = ckpt_dir / best["file"] if best and start > 0 and best.get("file") else None
    if best_path is not None and not best_path.is_file():
        raise TrainingError(f"{best_path} (the best epoch so far) is missing; start again with --force")
    select = bool(config.select_best and with_val)
    steps = config.steps()
    where = f"step {start}"
    try:
        for k in range(start, config.n_steps):
            block, n_epochs = steps[k]["block"], steps[k]["epochs"]
            keras.utils.set_random_seed(config.seed + k)
            total = spe * n_epochs
            where = f"the start of step {k} (block {block})"
            with strategy.scope():
                head_vars, bb_vars = apply_schedule(model, spec, steps[k]["level"])
                warm = int(round(config.warmup_epochs * spe))
                head_lr = lr_schedule(config.lr_head, config.lr_schedule, total, warm)
                step_fn = make_train_function(
                    model, head_vars, bb_vars,
                    lr_head=head_lr,
                    lr_backbone=lr_schedule(config.lr_backbone, config.lr_schedule, total, warm),
                    global_batch=batch, label_smoothing=config.label_smoothing, strategy=strategy)
            if multi:
                local = distributed.local_copy(model)  # this step's trainable flags, the backbone's BN momentum
                # BatchNorm layers that train normalise with the global batch's statistics, as on one worker.
                distributed.sync_batchnorm(model, True)
            momentum = FULL_BN_MOMENTUM if config.unfreeze == "full" else config.bn_momentum
            momenta = _set_bn_momentum(model, momentum) if momentum else {}

            def make_train_ds(seed: int = config.seed + k):
                return make_dataset(data.train[0], data.train[1], n_classes, config.image_size, training=True,
                                    batch_size=batch, augment=_augment(config),
                                    resize_mode=config.resize_mode, seed=seed)

            if multi:
                iterator = iter(distributed.distribute_sharded(strategy, make_train_ds, batch))
            else:
                iterator = iter(strategy.experimental_distribute_dataset(make_train_ds()))
            label = f"step {k + 1}/{config.n_steps} ({block})" if config.n_steps > 1 else f"training ({block} layers)"
            new_best = False
            for epoch in range(1, n_epochs + 1):
                losses, correct, seen, t0 = [], 0.0, 0, time.perf_counter()
                with progress.task(f"{label} epoch {epoch}/{n_epochs}", total=spe) as advance:
                    for b in range(spe):
                        where = f"step {k} (block {block}), epoch {epoch}, batch {b + 1}"
                        loss, corr = step_fn(next(iterator))
                        loss = float(loss)
                        if not math.isfinite(loss):
                            last = f"checkpoints/step_{k - 1}.keras" if k > 0 else "none (step 0 did not finish)"
                            raise TrainingError(
                                f"loss became {loss} at {where}; "
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
                where = f"step {k} (block {block}), end of epoch {epoch}"
                if multi:
                    distributed.sync_batchnorm(model, False)
                    distributed.sync_into(local, model)  # every worker, together
                    if config.bn_recalibration:
                        # The same seeded batches on every worker: identical statistics, then shared back.
                        recalibrate_batchnorm(local, data, config)
                        model.set_weights(local.get_weights())
                    distributed.sync_batchnorm(model, True)
                elif config.bn_recalibration:
                    # Before validation, so the epoch is judged (and kept) with the statistics it will ship with.
                    with strategy.scope():
                        recalibrate_batchnorm(model, data, config)
                row: dict[str, Any] = {"step": k, "block": block, "epoch": epoch,
                                       "lr_end": float(head_lr(epoch * spe - 1)) if callable(head_lr) else float(head_lr),
                                       "loss": float(np.mean(losses)), "accuracy": correct / (batch * len(losses))}
                if with_val:
                    probs = predict(local, data.val[0], config.image_size, config.resize_mode, description="validating")
                    row["val_loss"], row["val_accuracy"] = _loss_accuracy(probs, data.val[1])
                    row["val_macro_f1"] = _macro_f1(probs, data.val[1])
                    if select and (best is None or row["val_macro_f1"] > best["val_macro_f1"]):
                        best = {"step": k, "epoch": epoch, "val_macro_f1": row["val_macro_f1"],
                                "file": f"best_step{k}.weights.h5"}
                        best_weights = [w.copy() for w in local.get_weights()]
                        new_best = True
                history.append(row)
                _log.info("step %d [%s] epoch %d: %s", k, block, epoch, row)
            if multi:
                distributed.sync_batchnorm(model, False)
            _restore_bn_momentum(model, momenta)
            old_best = best_path
            if chief:
                # Checkpoint first, then the state that points at it: a crash in between keeps the old state.
                save_model(local, ckpt_dir / f"step_{k}.keras")
            if new_best:
                best_path = ckpt_dir / best["file"]
                if chief:
                    _save_weights(local, best_weights, best_path)
                # Multiworker: every worker keeps the best weights in memory (the chief's file may not be written,
                # or visible, when another worker needs it); one worker: the file is enough.
                best_weights = best_weights if multi else None
            state.update(completed_step=k, history=history, best=best)
            if chief:
                # A new file name per step, then the state that points at it: a crash in between keeps the old pair.
                write_json(ckpt_dir / "state.json", state)
                write_history(out / "history.csv", history, with_val)
                if old_best is not None and best_path is not None and old_best != best_path:
                    old_best.unlink(missing_ok=True)
            if on_step_end is not None:
                on_step_end(k, model)

        where = "the end of training"
        if multi and local is model:  # nothing left to train (resumed after the last step): copy once
            local = distributed.local_copy(model)
            distributed.sync_into(local, model)
        if select and best is not None:
            if best_weights is None and best_path is not None:
                local.load_weights(str(best_path))
            elif best_weights is not None:
                local.set_weights(best_weights)
            _log.info("kept step %d epoch %d (best validation macro F1 %.3f)", best["step"], best["epoch"],
                      best["val_macro_f1"])
    except Exception as exc:
        if multi and distributed.is_connection_error(exc):
            raise _worker_lost(exc, out, where, resume, state) from None
        raise
    replicas = int(strategy.num_replicas_in_sync)
    if not chief:
        # Every collective is behind us: the chief calibrates, saves and evaluates its local copy alone.
        _log.info("%s: training finished; the chief writes the run folder", cluster.describe())
        return {"out": out, "metrics": None, "history": history, "params": rc["params"],
                "train_images_per_s": _rate(state), "replicas": replicas}
    calibration = _calibrate(local, data, config, out)
    rc = read_json(out / "config.json")
    rc["selected"] = ({"by": "val_macro_f1", **best} if select and best is not None
                      else {"by": "last epoch", "step": config.n_steps - 1, "epoch": steps[-1]["epochs"]})
    rc["calibration"] = calibration
    rc["validation"] = {"source": data.val_source, "n": len(data.val[0]) if with_val else 0,
                        "fraction": config.val_fraction if data.val_source == "carved" else None}
    if multi:
        rc["distributed"] = {"strategy": "MultiWorkerMirroredStrategy", "workers": cluster.num_workers,
                             "replicas": replicas, "global_batch": batch, "per_replica_batch": batch // replicas,
                             "batchnorm": "synchronised over the global batch while a block trains"}
    write_json(out / "config.json", rc)

    metrics = None
    save_model(local, out / "model.keras")
    _plot_history(history, out / "history.png")
    if evaluate:
        metrics = evaluate_model(local, data, config, out, calibration=calibration)
    state["complete"] = True
    write_json(ckpt_dir / "state.json", state)
    return {"out": out, "metrics": metrics, "history": history, "params": rc["params"],
            "train_images_per_s": _rate(state), "replicas": replicas}


def _worker_lost(exc: BaseException, out: Path, where: str, resume: bool, state: dict[str, Any]):
    """The one-line error when another worker stops answering mid-training."""
    from edge_derm.training.distributed import WorkerLostError, first_line

    done = int(state.get("completed_step", -1))
    if done >= 0 or resume:
        keep = (f"steps up to {done} are kept in {out}: restart every worker with the same command and --resume")
    else:
        keep = "no step had finished, so nothing was kept: restart every worker with the same command"
    return WorkerLostError(f"lost contact with another worker at {where} ({first_line(exc)}); {keep}")


#: The traced training-mode forward pass of the model being recalibrated (one entry: the current model and step).
_BN_FORWARD: dict[tuple, Any] = {}


def recalibrate_batchnorm(model, data: TrainingData, config: TrainConfig, batch_size: int | None = None) -> int:
    """Set the moving averages of the trainable BatchNorm layers to the statistics of training batches.

    Uses about ``config.bn_recalibration`` un-augmented training images drawn as the training batches are
    (class-balanced, seeded): the weights were learnt under the statistics of balanced batches, and
    estimating them on the natural class mix instead shifts every feature (on ham10000-dev that cost 18
    points of macro F1). Each batch runs in training mode with momentum ``k / (k + 1)``, so the moving
    averages end as the mean of the batches' statistics; in training mode a BatchNorm layer normalises
    with the batch's own statistics, so the result does not depend on the old averages. Call it while the
    step's schedule applies (frozen layers run in inference mode in Keras 2 and keep theirs). Returns the
    number of layers updated.
    """
    from edge_derm.data.pipeline import AugmentConfig, make_dataset
    from edge_derm.models._tf import keras

    n_classes = len(data.classes)
    batch = batch_size or config.batch_size or n_classes * config.batch_multiple
    n_batches = max(1, math.ceil(config.bn_recalibration / batch))
    ds = make_dataset(data.train[0], data.train[1], n_classes, config.image_size, training=True,
                      batch_size=batch, augment=AugmentConfig.off(), resize_mode=config.resize_mode,
                      seed=config.seed).take(n_batches)
    import tensorflow as tf

    bns = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization) and layer.trainable]
    momenta = _set_bn_momentum(model, 0.0)
    try:
        # With momentum 0 each batch leaves its own statistics in the moving averages; their running mean over
        # the batches is what a momentum of k / (k + 1) at batch k gives, with one traced graph instead of
        # eager calls (12x faster for MobileNetV2: the demo recalibrates after every epoch).
        key = (id(model), tuple(layer.trainable for layer in model.layers))  # a new schedule step: a new graph
        forward = _BN_FORWARD.get(key)
        if forward is None:
            _BN_FORWARD.clear()
            forward = _BN_FORWARD[key] = tf.function(lambda x: model(x, training=True))
        sums: list[list[np.ndarray]] | None = None
        n = 0
        for images, _ in ds:
            forward(images)
            stats = [[layer.moving_mean.numpy(), layer.moving_variance.numpy()] for layer in bns]
            sums = stats if sums is None else [[a + b for a, b in zip(s_, t)] for s_, t in zip(sums, stats)]
            n += 1
        for layer, (mean, var) in zip(bns, sums or []):
            layer.moving_mean.assign(mean / n)
            layer.moving_variance.assign(var / n)
    finally:
        _restore_bn_momentum(model, momenta)
    _log.info("recomputed the moving averages of %d BatchNorm layers on %d class-balanced batches of %d",
              len(bns), n_batches, batch)
    return len(bns)


def _augment(config: TrainConfig):
    from edge_derm.data.pipeline import AugmentConfig

    if not config.augment:
        return AugmentConfig.off()
    return AugmentConfig(brightness=tuple(config.brightness) if config.brightness else None)


def _macro_f1(probs: np.ndarray, labels: np.ndarray) -> float:
    """Macro F1 over the classes present in ``labels`` (the validation split may lack a rare class)."""
    from sklearn.metrics import f1_score

    present = np.unique(labels)
    return float(f1_score(labels, probs.argmax(1), labels=present, average="macro", zero_division=0.0))


def _save_weights(model, weights: list, path: Path) -> Path:
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


def _calibrate(model, data: TrainingData, config: TrainConfig, out: Path | None) -> dict[str, Any] | None:
    """Fit the temperature and operating point on the val split; writes ``out/calibration.json`` (not when
    ``out`` is None: a non-chief worker)."""
    from edge_derm import calibration as cal

    if not config.calibrate:
        return None
    if data.val is None:
        _log.warning("no validation split: probabilities are not calibrated and no triage operating point is "
                     "stored (use val_fraction, e.g. --val-fraction 0.15)")
        return None
    probs = predict(model, data.val[0], config.image_size, config.resize_mode, description="calibrating")
    counts = np.bincount(data.train[1], minlength=len(data.classes)) if config.prevalence != "balanced" else None
    fitted = cal.fit(probs, data.val[1], data.classes, data.triage, target=config.triage_target, train_counts=counts,
                     prior_strength="fit" if config.prevalence == "fit" else 1.0)
    if fitted["referral_classes"] and fitted["threshold"] is None:
        _log.warning("the validation split has no image of %s: no triage operating point is stored",
                     ", ".join(fitted["referral_classes"]))
    if out is not None:
        write_json(out / "calibration.json", fitted)
    _log.info("temperature %.3f (validation ECE %.3f -> %.3f)", fitted["temperature"], fitted["val"]["ece_before"],
              fitted["val"]["ece_after"])
    return fitted


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


def evaluate_model(model, data: TrainingData, config: TrainConfig, out: Path,
                   calibration: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """Evaluate on the last dataset's test split and write metrics.json / report.md / confusion.png.

    With a ``calibration`` block the figures are of the calibrated probabilities (what the runtime shows),
    with the uncalibrated ECE and the operating point's test sensitivity / specificity beside them.
    """
    from edge_derm.evaluation import compute_metrics, write_evaluation

    if data.test is None:
        _log.warning("%s has no test split; no metrics.json written", data.datasets[-1]["dir"])
        return None
    probs = predict(model, data.test[0], config.image_size, config.resize_mode, description="evaluating")
    metrics = score_with_calibration(data.test[1], probs, data.classes, data.triage, calibration,
                                     bootstrap=config.bootstrap, seed=config.seed)
    metrics["split"] = "test"
    metrics["data"] = data.datasets[-1]
    write_evaluation(out, metrics, title=f"{out.name}: {config.backbone} on {Path(data.datasets[-1]['dir']).name} (test)")
    return metrics


def score_with_calibration(labels: np.ndarray, probs: np.ndarray, classes: list[str], triage: dict | None,
                           calibration: dict[str, Any] | None, *, bootstrap: int = 0, seed: int = 0,
                           dataset_classes: list[str] | None = None) -> dict[str, Any]:
    """compute_metrics on the calibrated probabilities, plus ``calibration`` (ECE before/after) and
    ``operating_point`` (the stored threshold's sensitivity / specificity on these images).
    ``dataset_classes``: see :func:`edge_derm.evaluation.compute_metrics` (another domain's fewer classes)."""
    from edge_derm import calibration as cal
    from edge_derm.evaluation import compute_metrics, expected_calibration_error

    if not calibration:
        return compute_metrics(labels, probs, classes, triage=triage, bootstrap=bootstrap, seed=seed,
                               dataset_classes=dataset_classes)
    calibrated = cal.apply(probs, calibration["temperature"], calibration.get("log_prior"))
    metrics = compute_metrics(labels, calibrated, classes, triage=triage, bootstrap=bootstrap, seed=seed,
                              dataset_classes=dataset_classes)
    metrics["calibration"] = {
        "temperature": calibration["temperature"],
        "prevalence": calibration.get("prevalence", "balanced"),
        "ece_before": expected_calibration_error(probs.max(1), probs.argmax(1) == labels),
        "ece_after": metrics["ece"],
        "nll_before": cal.nll(probs, labels),
        "nll_after": cal.nll(calibrated, labels),
    }
    if calibration.get("threshold") is not None:
        mask = np.array([c in calibration["referral_classes"] for c in classes], dtype=bool)
        stats = cal.operating_stats(cal.referral_score(calibrated, mask), mask[np.asarray(labels)],
                                    calibration["threshold"])
        metrics["operating_point"] = {"referral_classes": calibration["referral_classes"],
                                      "target_sensitivity": calibration.get("target_sensitivity"), **stats}
    return metrics
