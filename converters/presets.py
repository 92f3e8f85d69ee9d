"""Quantisation presets: the one table that drives CLI choices, validation and the benchmark loop.

No TensorFlow here; the converter reads a preset's fields to decide how to convert and verify.
"""

from __future__ import annotations

from dataclasses import dataclass

from edge_derm.errors import ConfigError

IO_TYPES = ("uint8", "int8", "float32")  # the first is the integer presets' default


@dataclass(frozen=True)
class Tolerance:
    """What verification accepts, against the Keras model on the fixed evaluation batch.

    Attributes:
        min_top1_agreement: smallest share of images whose top-1 class matches the Keras model.
        max_abs_diff: largest absolute probability difference on any image and class.
        mean_abs_diff: largest mean absolute probability difference.
        min_integer_op_share: smallest share of compute ops that must run in integer.
    """

    min_top1_agreement: float
    max_abs_diff: float
    mean_abs_diff: float
    min_integer_op_share: float = 0.0

    def as_dict(self) -> dict[str, float]:
        return {"min_top1_agreement": self.min_top1_agreement, "max_abs_diff": self.max_abs_diff,
                "mean_abs_diff": self.mean_abs_diff, "min_integer_op_share": self.min_integer_op_share}


@dataclass(frozen=True)
class Preset:
    """One quantisation mode.

    Attributes:
        name: the ``--quantize`` value and the ``model.<name>.tflite`` suffix.
        description: one line for ``--help`` and reports.
        calibration: needs representative images (full-integer quantisation).
        training: needs the run's training data (quantisation-aware fine-tuning).
        integer: the graph must run in integer arithmetic (checked by verification).
        io_types: the input/output dtypes it can have; the first is the default.
        tolerance: documented verification tolerance.
    """

    name: str
    description: str
    calibration: bool
    training: bool
    integer: bool
    io_types: tuple[str, ...]
    tolerance: Tolerance


# Tolerances catch broken conversions, not rounding noise: fp32 must be numerically the Keras
# model; fp16 rounds weights to 11 significant bits (a barely trained 64 px MobileNetV2 already
# moves a probability by 0.05 and flips near-ties); dynamic-range quantises weights only; int8
# and qat quantise activations too, so top-1 agreement is their main bar. Accuracy itself is
# measured on the whole test set by the benchmark, not here. qat is compared with its own
# quantisation-aware Keras model (the conversion's source). max_abs_diff is the largest of
# 64 images x C classes, so it is set by the one image nearest a tie: on the fine-tuned 224 px
# MobileNetV2 alpha 0.35 of benchmarks/results/quantization.md, fp16 (top-1 agreement 98 %, mean
# difference 0.005) reached 0.106 and int8 (agreement 92 %, mean 0.025) 0.618, so the bounds
# below (0.2, 0.75) only catch broken conversions; agreement and the mean are the main bars.
PRESETS: dict[str, Preset] = {p.name: p for p in (
    Preset("fp32", "float32, no quantisation (the reference)", False, False, False, ("float32",),
           Tolerance(0.99, 1e-3, 1e-4)),
    Preset("fp16", "float16 weights, float32 compute on CPU (half the size)", False, False, False, ("float32",),
           Tolerance(0.95, 0.2, 0.01)),
    Preset("dynamic", "dynamic-range: int8 weights, float activations", False, False, False, ("float32",),
           Tolerance(0.85, 0.3, 0.04)),
    Preset("int8", "full-integer post-training quantisation (calibrated)", True, False, True, IO_TYPES,
           Tolerance(0.80, 0.75, 0.08, min_integer_op_share=1.0)),
    Preset("qat", "quantisation-aware fine-tuning, then full-integer conversion", True, True, True, IO_TYPES,
           Tolerance(0.80, 0.75, 0.08, min_integer_op_share=1.0)),
)}

MODES: tuple[str, ...] = tuple(PRESETS)


def get_preset(name: str) -> Preset:
    """The preset called ``name``; ConfigError listing the known names otherwise."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ConfigError(f"unknown quantisation mode {name!r}; use one of {', '.join(MODES)}") from None


def resolve_io(preset: Preset, io: str | None) -> str:
    """The input/output dtype for ``preset``: ``io`` validated, or the preset's default.

    ``io`` applies to the integer presets only (``--io uint8`` with fp16 and int8 in one call
    gives a float fp16 model and a uint8 int8 model); the float presets always have float32.
    """
    if io is not None and io not in IO_TYPES:
        raise ConfigError(f"unknown --io {io!r}; use one of {', '.join(IO_TYPES)}")
    if io is None or io not in preset.io_types:
        return preset.io_types[0]
    return io
