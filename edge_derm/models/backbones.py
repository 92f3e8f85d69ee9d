"""The built-in backbones: MobileNetV2, ResNet50, EfficientNet-B3 and a tiny test backbone.

Block maps follow the paper: MobileNetV2 = head, A (block 16), B (13-15), C (10-12), D (6-9);
ResNet50 = head, conv5, conv4, conv3, conv2; EfficientNet-B3 = head + its last 6 stages.
Each map ends with ``rest`` (every remaining layer), unfrozen only when asked for (``blocks``
beyond the paper's), e.g. to train from scratch.
"""

from __future__ import annotations

from typing import Any

from edge_derm.models.registry import PREPROCESS_PREFIX, BackboneSpec, register

_MOBILENET_SIZES = (96, 128, 160, 192, 224)
_MOBILENET_ALPHAS = (0.35, 0.5, 0.75, 1.0, 1.3, 1.4)
# Caffe-style ImageNet means (BGR) of keras.applications.resnet50.preprocess_input.
_CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
_IMAGENET_STDDEV_RGB = (0.229, 0.224, 0.225)


def _keras_application(app_name: str, feature_layer: str, uses_alpha: bool = False):
    """A builder for a keras.applications backbone.

    With ``x`` None it returns the standalone application (used to load weights); otherwise it
    builds the application on ``x`` (flat, no nested Model) and returns the feature layer's output.
    """
    def build(x, size: int, alpha: Any, weights: str | None = None):
        from edge_derm.models._tf import keras

        app = getattr(keras.applications, app_name)
        kw = {"alpha": alpha} if uses_alpha else {}
        if x is None:
            return app(include_top=False, weights=weights, input_shape=(size, size, 3), **kw)
        return app(include_top=False, weights=None, input_tensor=x, **kw).get_layer(feature_layer).output

    return build


# -- MobileNetV2 -------------------------------------------------------------------------------

def _mobilenet_preprocess(x):
    from edge_derm.models._tf import keras

    return keras.layers.Rescaling(1.0 / 127.5, offset=-1.0, name=f"{PREPROCESS_PREFIX}rescale")(x)


def _mobilenet_file(alpha: float | None, size: int) -> str:
    rows = size if size in _MOBILENET_SIZES else 224  # keras.applications does the same
    return f"mobilenet_v2_weights_tf_dim_ordering_tf_kernels_{float(alpha)}_{rows}_no_top.h5"


register(BackboneSpec(
    name="mobilenet_v2",
    default_size=300,
    imagenet_sizes=_MOBILENET_SIZES,
    min_size=32,
    preprocessing="x/127.5 - 1 (inside the model)",
    blocks=(("head", r"^head_"), ("A", r"^(block_16_|Conv_1|out_relu)"), ("B", r"^block_1[3-5]_"),
            ("C", r"^block_1[0-2]_"), ("D", r"^block_[6-9]_"), ("rest", r".")),
    feature_layer="out_relu",
    paper_blocks=4,
    builder=_keras_application("MobileNetV2", "out_relu", uses_alpha=True),
    preprocess=_mobilenet_preprocess,
    weights_file=_mobilenet_file,
    alphas=_MOBILENET_ALPHAS,
    default_alpha=1.0,
    description="MobileNetV2 (Sandler et al. 2018), width multiplier alpha",
))


# -- ResNet50 ----------------------------------------------------------------------------------

def _resnet_preprocess(x):
    """RGB -> BGR and mean subtraction as one fixed (non-trainable) 1x1 convolution."""
    import numpy as np

    from edge_derm.models._tf import keras

    kernel = np.zeros((1, 1, 3, 3), dtype="float32")
    for out_ch, in_ch in enumerate((2, 1, 0)):
        kernel[0, 0, in_ch, out_ch] = 1.0
    conv = keras.layers.Conv2D(
        3, 1, name=f"{PREPROCESS_PREFIX}rgb_to_bgr_minus_mean", trainable=False,
        kernel_initializer=keras.initializers.Constant(kernel.tolist()),
        bias_initializer=keras.initializers.Constant([-m for m in _CAFFE_MEAN_BGR]))
    return conv(x)


register(BackboneSpec(
    name="resnet50",
    default_size=300,
    imagenet_sizes=(224,),
    min_size=32,
    preprocessing="RGB->BGR, minus ImageNet mean (103.939, 116.779, 123.68) (caffe; inside the model)",
    blocks=(("head", r"^head_"), ("conv5", r"^conv5_"), ("conv4", r"^conv4_"), ("conv3", r"^conv3_"),
            ("conv2", r"^conv2_"), ("rest", r".")),
    feature_layer="conv5_block3_out",
    paper_blocks=4,
    builder=_keras_application("ResNet50", "conv5_block3_out"),
    preprocess=_resnet_preprocess,
    weights_file=lambda alpha, size: "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5",
    description="ResNet50 (He et al. 2016)",
))


# -- EfficientNet-B3 ---------------------------------------------------------------------------

def _identity(x):
    return x


def _efficientnet_fixup(source, target) -> None:
    """Fold the extra 1/sqrt(stddev) rescaling that Keras adds for ImageNet weights into the variance.

    keras.applications inserts ``Rescaling(1/sqrt(std))`` after its Normalization layer only when
    ``weights="imagenet"``; our model keeps one structure whatever the weights, so the same
    scaling goes into the Normalization variance: (x - m) / (sqrt(v) sqrt(s)) = (x - m) / sqrt(v s).
    Applied to ImageNet weights and to keras.applications weight files (their Normalization holds
    the ImageNet statistics), not to weights copied from an edge-derm model.
    """
    import numpy as np

    norm = target.get_layer("normalization")
    mean, var, count = norm.get_weights()
    norm.set_weights([mean, var * np.asarray(_IMAGENET_STDDEV_RGB, dtype=var.dtype).reshape(var.shape), count])


register(BackboneSpec(
    name="efficientnet_b3",
    default_size=300,
    imagenet_sizes=(300,),
    min_size=32,
    preprocessing="x/255, minus ImageNet mean, divided by ImageNet std (EfficientNet's own layers, inside the model)",
    blocks=(("head", r"^head_"), ("stage7", r"^(block7|top_)"), ("stage6", r"^block6"), ("stage5", r"^block5"),
            ("stage4", r"^block4"), ("stage3", r"^block3"), ("stage2", r"^block2"), ("rest", r".")),
    feature_layer="top_activation",
    paper_blocks=6,
    builder=_keras_application("EfficientNetB3", "top_activation"),
    preprocess=_identity,
    weights_file=lambda alpha, size: "efficientnetb3_notop.h5",
    description="EfficientNet-B3 (Tan & Le 2019)",
    after_copy=_efficientnet_fixup,
))


# -- tiny (tests) ------------------------------------------------------------------------------

def _tiny(x, size: int, alpha: Any, weights: str | None = None):
    from edge_derm.models._tf import keras

    if x is None:
        inputs = keras.Input((size, size, 3), name="image")
        model = keras.Model(inputs, _tiny(_tiny_preprocess(inputs), size, alpha), name="tiny")
        if weights:
            model.load_weights(weights)
        return model
    L = keras.layers
    for name, filters, stride in (("stem", 8, 2), ("b1", 8, 1), ("b2", 16, 2), ("b3", 16, 1)):
        x = L.Conv2D(filters, 3, strides=stride, padding="same", use_bias=False, name=f"tiny_{name}_conv")(x)
        x = L.BatchNormalization(name=f"tiny_{name}_bn")(x)
        x = L.ReLU(name=f"tiny_{name}_relu")(x)
    return x


def _tiny_preprocess(x):
    from edge_derm.models._tf import keras

    return keras.layers.Rescaling(1.0 / 255.0, name=f"{PREPROCESS_PREFIX}rescale")(x)


register(BackboneSpec(
    name="tiny",
    default_size=32,
    imagenet_sizes=(),
    min_size=8,
    preprocessing="x/255 (inside the model)",
    blocks=(("head", r"^head_"), ("b3", r"^tiny_b3_"), ("b2", r"^tiny_b2_"), ("b1", r"^tiny_b1_"), ("rest", r".")),
    feature_layer="tiny_b3_relu",
    paper_blocks=3,
    builder=_tiny,
    preprocess=_tiny_preprocess,
    weights_file=lambda alpha, size: None,
    description="a 4-convolution test backbone (no pretrained weights)",
))
