"""Quantisation-aware training with tensorflow-model-optimization (tfmot): annotation and scheme.

This module owns the graph surgery (the quantisation-aware rewrite of a model); the fine-tuning loop is
:mod:`edge_derm.training.qat`, which :func:`finetune` calls with :func:`qat_transform`.

tfmot's default 8-bit scheme needs one flat functional model: nested models (a keras.applications
backbone used as a layer) are inlined first (:func:`flatten_model`). Layers the scheme does not
know (Rescaling, Normalization, ...) are annotated with a QuantizeConfig that quantises nothing
inside them and only learns their output range, so ``quantize_apply`` accepts the model and the
converter finds a range on every tensor.
Conv/BatchNorm/ReLU patterns are folded by tfmot's own transforms, which is why the model must
be flat (they match layer sequences inside one graph).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from edge_derm.errors import ConversionError

_log = logging.getLogger(__name__)


def _is_functional(layer) -> bool:
    import tf_keras as keras

    return isinstance(layer, keras.Model) and getattr(layer, "_is_graph_network", False)


def flatten_model(model):
    """One flat functional model with the same layers (and weights) as ``model``.

    Nested functional/Sequential models are inlined recursively. A model with no nested model
    is returned unchanged.
    """
    import tf_keras as keras

    if not any(_is_functional(layer) for layer in model.layers):
        return model
    if not _is_functional(model):
        raise ConversionError("QAT needs a functional or Sequential Keras model; subclassed models "
                              "cannot be flattened")
    inputs = [keras.Input(shape=t.shape[1:], dtype=t.dtype, name=t.name.split(":")[0].split("/")[0])
              for t in model.inputs]
    outputs = _call_inlined(model, inputs)
    return keras.Model(inputs, outputs, name=model.name)


def _call_inlined(model, inputs: list) -> list:
    """Re-run ``model``'s graph on ``inputs``, descending into nested models."""
    import tensorflow as tf

    tensor_dict: dict[str, list] = {}
    usage = model._tensor_usage_count
    for ref, new in zip(model.inputs, inputs):
        tensor_dict[str(id(ref))] = [new] * max(usage[str(id(ref))], 1)
    for depth in sorted(model._nodes_by_depth, reverse=True):
        for node in model._nodes_by_depth[depth]:
            if node.is_input or any(t not in tensor_dict for t in node.flat_input_ids):
                continue
            args, kwargs = node.map_arguments(tensor_dict)
            if _is_functional(node.layer):
                outs = _call_inlined(node.layer, tf.nest.flatten((args, kwargs))[:len(node.layer.inputs)])
                outs = outs if len(outs) > 1 else outs[0]
            else:
                outs = node.layer(*args, **kwargs)
            for x_id, y in zip(node.flat_output_ids, tf.nest.flatten(outs)):
                tensor_dict[x_id] = [y] * max(usage.get(x_id, 1), 1)
    return [tensor_dict[str(id(t))].pop() for t in model.outputs]


def _config_classes():
    import tensorflow_model_optimization as tfmot

    qk = tfmot.quantization.keras

    class NoOpQuantizeConfig(qk.QuantizeConfig):
        """Leave a layer unquantised in QAT."""

        def get_weights_and_quantizers(self, layer):
            return []

        def get_activations_and_quantizers(self, layer):
            return []

        def set_quantize_weights(self, layer, quantize_weights):
            pass

        def set_quantize_activations(self, layer, quantize_activations):
            pass

        def get_output_quantizers(self, layer):
            return []

        def get_config(self):
            return {}

    class OutputQuantizeConfig(NoOpQuantizeConfig):
        """No weights to quantise; learn the output's 8-bit range (Rescaling, Normalization, ...).

        Without it the converter would meet a float tensor with no range in a QAT graph.
        """

        def get_output_quantizers(self, layer):
            return [qk.quantizers.MovingAverageQuantizer(num_bits=8, per_axis=False, symmetric=False,
                                                         narrow_range=False)]

    return NoOpQuantizeConfig, OutputQuantizeConfig


def _depthwise_scheme():
    """tfmot's default 8-bit scheme with per-channel DepthwiseConv2D weights.

    tfmot ranges a DepthwiseConv2D kernel (h, w, C, M) along its last axis, M (the depth
    multiplier, 1 in MobileNetV2 and EfficientNet): one range for the whole kernel, i.e. per-tensor
    quantisation, which is what makes MobileNetV2 lose accuracy under per-tensor int8 (the
    channels' ranges differ by orders of magnitude once BatchNorm is folded in). TFLite stores
    depthwise weights per output channel (C*M), so the QAT model here fakes exactly that.

    Returns:
        The scheme, its registry, and the custom objects a saved QAT model needs.
    """
    import tf_keras as keras
    from tensorflow_model_optimization.python.core.quantization.keras.default_8bit import (
        default_8bit_quantize_registry as reg,
    )
    from tensorflow_model_optimization.python.core.quantization.keras.default_8bit import (
        default_8bit_quantize_scheme as sch,
    )

    weights_quantizer = _depthwise_weights_quantizer()

    class DepthwiseQuantizeConfig(reg.Default8BitConvQuantizeConfig):
        def __init__(self, weight_attrs=("depthwise_kernel",), activation_attrs=("activation",),
                     quantize_output=False):
            super().__init__(list(weight_attrs), list(activation_attrs), quantize_output)
            self.weight_quantizer = weights_quantizer()

    class Registry(reg.Default8BitQuantizeRegistry):
        def __init__(self):
            super().__init__()
            self._layer_quantize_map[keras.layers.DepthwiseConv2D] = DepthwiseQuantizeConfig()

    class Scheme(sch.Default8BitQuantizeScheme):
        def get_quantize_registry(self):
            return Registry()

    objects = {"DepthwiseWeightsQuantizer": weights_quantizer, "DepthwiseQuantizeConfig": DepthwiseQuantizeConfig}
    return Scheme(), Registry(), objects


def _depthwise_weights_quantizer():
    """The class of a symmetric 8-bit quantiser with one range per output channel (C*M) of a depthwise kernel."""
    import tensorflow as tf
    import tf_keras as keras
    import tensorflow_model_optimization as tfmot

    qk = tfmot.quantization.keras

    class DepthwiseWeightsQuantizer(qk.quantizers.LastValueQuantizer):
        """Symmetric 8-bit weights with one range per output channel of a depthwise kernel."""

        def __init__(self, **_ignored):
            super().__init__(num_bits=8, per_axis=True, symmetric=True, narrow_range=True)

        def build(self, tensor_shape, name, layer):
            n = int(tensor_shape[-2]) * int(tensor_shape[-1])
            lo = layer.add_weight(name + "_min", shape=(n,), initializer=keras.initializers.Constant(-6.0),
                                  trainable=False)
            hi = layer.add_weight(name + "_max", shape=(n,), initializer=keras.initializers.Constant(6.0),
                                  trainable=False)
            return {"min_var": lo, "max_var": hi}

        def __call__(self, inputs, training, weights, **kwargs):
            h, w, c, m = inputs.shape
            flat = tf.reshape(inputs, (h, w, 1, c * m))  # TFLite's [1, h, w, C*M] channel order
            out = super().__call__(flat, training, weights, **kwargs)
            return tf.reshape(out, (h, w, c, m))

        def get_config(self):
            return {}

    return DepthwiseWeightsQuantizer


def _follows_conv(layer) -> bool:
    """A BatchNormalization whose only input is a Conv2D/DepthwiseConv2D (tfmot folds the pair)."""
    import tf_keras as keras

    if not isinstance(layer, keras.layers.BatchNormalization):
        return False
    try:
        inbound = [n.inbound_layers for n in layer.inbound_nodes]
    except Exception:  # noqa: BLE001 - a layer not yet called has no nodes
        return False
    conv = inbound[0] if len(inbound) == 1 else None
    # tfmot's pattern needs a linear convolution; any other BatchNorm keeps the output-only config.
    return (isinstance(conv, (keras.layers.Conv2D, keras.layers.DepthwiseConv2D))
            and keras.activations.serialize(conv.activation) == "linear")


def init_ranges(qmodel, float_model, images: np.ndarray, batch_size: int = 32) -> int:
    """Start every activation quantiser at the float model's observed range on ``images``.

    tfmot starts activation ranges at [-6, 6] and moves them by an EMA (decay 0.999), so after a
    few hundred steps a BatchNorm or Add output of +-30 is still clipped to about +-11 and the QAT
    model (and its .tflite) no longer matches the float model. Returns how many ranges were set.
    """
    import tf_keras as keras

    pairs = []
    names = {layer.name for layer in float_model.layers}
    for layer in qmodel.layers:
        orig = layer.name[len("quant_"):] if layer.name.startswith("quant_") else None
        if orig not in names:
            continue
        ranged = [w for w in layer.weights if w.name.split("/")[-1].split(":")[0]
                  in ("output_min", "output_max", "post_activation_min", "post_activation_max")]
        if ranged:
            pairs.append((orig, ranged))
    if not pairs or images is None or len(images) == 0:
        return 0
    probe = keras.Model(float_model.inputs, [float_model.get_layer(n).output for n, _ in pairs])
    outs = probe.predict(images, batch_size=batch_size, verbose=0)
    outs = outs if isinstance(outs, list) else [outs]
    for (_, ranged), out in zip(pairs, outs):
        lo, hi = min(float(out.min()), 0.0), max(float(out.max()), 0.0)
        for w in ranged:
            w.assign(lo if w.name.split("/")[-1].split(":")[0].endswith("min") else hi)
    return len(pairs)


def quantize_model(model):
    """A quantisation-aware copy of ``model`` (flattened, weights kept, not compiled)."""
    import tf_keras as keras
    import tensorflow_model_optimization as tfmot

    qk = tfmot.quantization.keras
    flat = flatten_model(model)
    scheme, registry, objects = _depthwise_scheme()
    noop, output_only = _config_classes()
    skipped: list[str] = []

    def annotate(layer):
        if isinstance(layer, keras.layers.InputLayer):
            return layer
        if registry.supports(layer) or _follows_conv(layer):
            # BatchNormalization after a convolution has no registry entry: tfmot's Conv+BN(+ReLU)
            # transforms handle it, and only when it carries no custom config. A custom config here
            # would leave a fake-quant between Conv and BatchNorm (clipping the unfolded conv output)
            # and a graph the converter cannot fold.
            return qk.quantize_annotate_layer(layer)
        skipped.append(f"{layer.name} ({type(layer).__name__})")
        return qk.quantize_annotate_layer(layer, quantize_config=output_only())

    try:
        annotated = keras.models.clone_model(flat, clone_function=annotate)
        with qk.quantize_scope({"NoOpQuantizeConfig": noop, "OutputQuantizeConfig": output_only, **objects}):
            qmodel = qk.quantize_apply(annotated, scheme=scheme)
    except Exception as exc:  # noqa: BLE001 - tfmot raises ValueError/RuntimeError/TypeError
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConversionError(f"QAT could not prepare the model: {first}") from exc
    if skipped:
        _log.info("QAT quantises only the output of %d layer(s): %s", len(skipped), ", ".join(skipped[:10]))
    return qmodel


def qat_transform(paths: list[str], image_size: int, resize_mode: str, *, seed: int = 0,
                  range_images: np.ndarray | None = None):
    """The model transform of QAT for :func:`edge_derm.training.qat.finetune`: the quantisation-aware copy
    (:func:`quantize_model`) with its activation ranges started at the float model's (:func:`init_ranges`)
    on ``range_images`` (default: 64 seeded training images of ``paths``, preprocessed as at evaluation)."""
    def transform(model):
        qmodel = quantize_model(model)
        images = range_images
        if images is None:
            from edge_derm.data.images import load_for_model

            pick = np.random.default_rng(seed).permutation(len(paths))[:64]
            images = np.stack([load_for_model(paths[i], image_size, resize_mode) for i in pick])
        return qmodel, {"ranges_initialised": init_ranges(qmodel, flatten_model(model), images)}

    return transform


def finetune(model, paths: list[str], labels: np.ndarray, num_classes: int, image_size: int, resize_mode: str, *,
             epochs: int = 1, learning_rate: float = 1e-5, batch_size: int | None = None, seed: int = 0,
             steps_per_epoch: int | None = None, range_images: np.ndarray | None = None,
             quantize: bool = True, augment: bool = False) -> tuple[Any, dict[str, Any]]:
    """Quantisation-aware fine-tuning on the run's training data (the loop is :mod:`edge_derm.training.qat`).

    Batches are class-balanced and, by default, not augmented (``augment``): QAT adapts weights and
    activation ranges to the images the model will see, and the paper's augmentation (brightness
    0.2-0.8, which only darkens) pulls tfmot's moving-average ranges towards darker images and clips
    real ones (measured in benchmarks/results/quantization.md). BatchNorm statistics stay frozen.
    Activation ranges start at the float model's ranges on ``range_images`` (default: 64 seeded
    training images), not tfmot's [-6, 6], then follow tfmot's EMA (decay 0.999).

    ``quantize=False`` runs the very same loop with no transform, on a float copy of the flattened
    ``model``: the control that separates what QAT's extra training changes from what quantisation costs.

    Returns:
        The trained quantisation-aware (or float) model and a summary (``quantize``, ``augment``, epochs,
        steps, learning rate, batch, ``n_train``, ``ranges_initialised``, final loss/accuracy).
    """
    from edge_derm.training.qat import finetune as train_loop

    if not paths:
        raise ConversionError("QAT needs training images and the run's dataset has none; "
                              "pass --calibration DIR with a dataset that has a train split")
    transform = (qat_transform(paths, image_size, resize_mode, seed=seed, range_images=range_images)
                 if quantize else None)
    trained, facts = train_loop(model if quantize else flatten_model(model), paths, labels, num_classes,
                                image_size, resize_mode, transform=transform, epochs=epochs,
                                learning_rate=learning_rate, batch_size=batch_size, seed=seed,
                                steps_per_epoch=steps_per_epoch, augment=augment)
    keys = ("augment", "epochs", "steps_per_epoch", "learning_rate", "batch_size", "n_train")
    summary = {"quantize": quantize, **{k: facts[k] for k in keys},
               "ranges_initialised": facts.get("ranges_initialised", 0),
               "final_loss": facts["final_loss"], "final_accuracy": facts["final_accuracy"]}
    return trained, summary
