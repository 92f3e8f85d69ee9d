"""The block-wise schedule: which layers train at each step, their optimiser groups and learning rates.

Step 0 trains the head with the backbone frozen; step k also trains the backbone blocks 1..k of the spec's
block map (``unfreeze = "full"``: one step that trains every layer). Each group (head, backbone) has its
own Adam, created fresh at each step as the paper re-compiles per block, so a checkpoint of the model after
a step is all the state a resume needs. Frozen layers have ``trainable=False``, which in Keras 2 also runs
their BatchNormalization in inference mode. Also here: the distribution strategy the steps run under and
the augmentation of the training batches.
"""

from __future__ import annotations

import math
from typing import Any, Callable

from edge_derm.errors import ConfigError
from edge_derm.training.config import TrainConfig


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


def augment_config(config: TrainConfig):
    """The AugmentConfig of the training batches (off, or the recipe's brightness range)."""
    from edge_derm.data.pipeline import AugmentConfig

    if not config.augment:
        return AugmentConfig.off()
    return AugmentConfig(brightness=tuple(config.brightness) if config.brightness else None)
