"""BatchNorm during training: the momentum of the layers a step trains, and the recalibration of their
moving averages after each epoch.

Short runs need the recalibration: MobileNetV2's momentum 0.999 leaves the moving averages near their
initial values after a few hundred steps, so a model that is right in training mode is far worse in
inference mode (what ships). The measured effect: variant ``rec-no-bn`` in benchmarks/results/recipes.md.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np

from edge_derm.training.config import TrainConfig
from edge_derm.training.data import TrainingData

_log = logging.getLogger(__name__)

#: The traced training-mode forward pass of the model being recalibrated (one entry: the current model and step).
_BN_FORWARD: dict[tuple, Any] = {}


def recalibrate_batchnorm(model, data: TrainingData, config: TrainConfig, batch_size: int | None = None) -> int:
    """Set the moving averages of the trainable BatchNorm layers to the statistics of training batches.

    Uses about ``config.bn_recalibration`` un-augmented training images drawn as the training batches are
    (class-balanced, seeded): the weights were learnt under the statistics of balanced batches, and
    estimating them on the natural class mix instead shifts every feature. Each batch runs in training mode
    and the moving averages end as the mean of the batches' statistics; in training mode a BatchNorm layer
    normalises with the batch's own statistics, so the result does not depend on the old averages. Call it
    while the step's schedule applies (frozen layers run in inference mode in Keras 2 and keep theirs).
    Returns the number of layers updated.
    """
    from edge_derm.data.pipeline import AugmentConfig, make_dataset
    from edge_derm.models._tf import keras

    n_classes = len(data.classes)
    batch = batch_size or config.batch_size or n_classes * config.batch_multiple
    n_batches = max(1, math.ceil(config.bn_recalibration / batch))
    ds = make_dataset(data.train[0], data.train[1], n_classes, config.image_size, training=True,
                      batch_size=batch, augment=AugmentConfig.off(), resize_mode=config.resize_mode,
                      seed=config.seed).take(n_batches)
    bns = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization) and layer.trainable]
    momenta = set_bn_momentum(model, 0.0)
    try:
        sums, n = _batch_statistics(model, bns, ds)
        for layer, (mean, var) in zip(bns, sums or []):
            layer.moving_mean.assign(mean / n)
            layer.moving_variance.assign(var / n)
    finally:
        restore_bn_momentum(model, momenta)
    _log.info("recomputed the moving averages of %d BatchNorm layers on %d class-balanced batches of %d",
              len(bns), n_batches, batch)
    return len(bns)


def _batch_statistics(model, bns: list, ds) -> tuple[list[list[np.ndarray]] | None, int]:
    """The sums over the batches of ``ds`` of each BatchNorm layer's batch mean and variance, and the count.

    With momentum 0 each batch leaves its own statistics in the moving averages; their running mean over the
    batches is what a momentum of k / (k + 1) at batch k gives, with one traced graph instead of eager calls
    (the demo recalibrates after every epoch, so the graph is kept for the current model and step).
    """
    import tensorflow as tf

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
    return sums, n


def set_bn_momentum(model, momentum: float) -> dict[Any, float]:
    """Set the momentum of every trainable BatchNormalization layer; returns the old values."""
    from edge_derm.models._tf import keras

    old = {}
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization) and layer.trainable:
            old[layer] = layer.momentum
            layer.momentum = momentum
    return old


def restore_bn_momentum(model, momenta: dict[Any, float]) -> None:
    """Put back the momenta :func:`set_bn_momentum` returned (before a checkpoint is saved)."""
    for layer, momentum in momenta.items():
        layer.momentum = momentum
