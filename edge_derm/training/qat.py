"""The fine-tuning loop of quantisation-aware training (QAT), and of its float control.

One loop, an optional model transform: :func:`edge_derm.converters.qat.finetune` passes the
quantisation-aware rewrite (graph surgery on the model, owned by the converters), and the float control
passes none, so both fine-tune with the very same data, schedule, seed and frozen BatchNorm, and what QAT's
extra training changes can be told apart from what quantisation costs.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from edge_derm.errors import DataError

#: A model transform: the model to train instead of a copy of the given one, and facts for the summary.
Transform = Callable[[Any], "tuple[Any, dict[str, Any]]"]


def finetune(model, paths: list[str], labels: np.ndarray, num_classes: int, image_size: int, resize_mode: str, *,
             transform: Transform | None = None, epochs: int = 1, learning_rate: float = 1e-5,
             batch_size: int | None = None, seed: int = 0, steps_per_epoch: int | None = None,
             augment: bool = False) -> tuple[Any, dict[str, Any]]:
    """Fine-tune ``transform(model)`` (default: a float copy of ``model``) on class-balanced training batches.

    The batches come from the project's input pipeline (class-balanced, as in training), augmented only
    when ``augment`` is set: fine-tuning before quantisation adapts weights and activation ranges to the
    images the model will see, and the training augmentation would pull those ranges elsewhere.
    BatchNorm statistics stay frozen (see below). ``model`` itself is never trained.

    Returns:
        The trained model and a summary: ``augment``, ``epochs``, ``steps_per_epoch``, ``learning_rate``,
        ``batch_size``, ``n_train``, the transform's own facts, ``final_loss``, ``final_accuracy``.
    """
    import tensorflow as tf

    from edge_derm.data import pipeline

    if not paths:
        raise DataError("fine-tuning needs training images and the dataset has none; "
                        "pass a dataset that has a train split")
    tf.random.set_seed(seed)
    trained, facts = transform(model) if transform is not None else (_float_copy(model), {})
    _freeze_batchnorm(trained)
    import tf_keras as keras

    trained.compile(optimizer=keras.optimizers.Adam(learning_rate), loss="categorical_crossentropy",
                    metrics=["accuracy"])
    aug = pipeline.AugmentConfig() if augment else pipeline.AugmentConfig.off()
    ds = pipeline.make_dataset(paths, labels, num_classes, image_size, training=True, batch_size=batch_size,
                               resize_mode=resize_mode, seed=seed, augment=aug)
    batch = batch_size or num_classes
    steps = steps_per_epoch or pipeline.steps_per_epoch(len(paths), batch)
    history = trained.fit(ds, epochs=epochs, steps_per_epoch=steps, verbose=0)
    summary = {"augment": augment, "epochs": epochs, "steps_per_epoch": steps, "learning_rate": learning_rate,
               "batch_size": batch, "n_train": len(paths), **facts,
               "final_loss": round(float(history.history["loss"][-1]), 6),
               "final_accuracy": round(float(history.history.get("accuracy", [float("nan")])[-1]), 6)}
    return trained, summary


def _float_copy(model):
    """A trainable copy of ``model`` with its weights (the layers are not shared, so it trains alone)."""
    import tf_keras as keras

    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    return copy


def _freeze_batchnorm(model) -> None:
    """BatchNorm in inference mode (frozen statistics), inside quantisation wrappers too.

    Class-balanced batches are small (one image per class): BatchNorm statistics from them would drift.
    """
    import tf_keras as keras

    for layer in model.layers:
        inner = getattr(layer, "layer", layer)
        if isinstance(inner, keras.layers.BatchNormalization):
            inner.trainable = False
