"""Quantisation presets: the one table that drives CLI choices, validation, conversion and the benchmark loop.

No TensorFlow here. A preset's fields are the converter settings (optimisations, supported types,
integer-only ops and I/O types, calibration, quantisation-aware training, recipe tuning, the collapse
check) and the verification tolerance; the converter reads them and never branches on a mode's name.
"""

from __future__ import annotations

from dataclasses import dataclass

from edge_derm.errors import ConfigError

IO_TYPES = ("uint8", "int8", "float32")  # the first is the integer presets' default


@dataclass(frozen=True)
class Tolerance:
    """What verification accepts, against the reference model on every fidelity image.

    Attributes:
        min_top1_agreement: smallest share of images whose top-1 class matches the reference model.
        max_watch_flip_rate: largest share of the images the reference calls a watched class
            (melanoma, BCC) whose top-1 class changes, for each watched class separately.
        mean_abs_diff: largest mean absolute probability difference.
        max_abs_diff: largest absolute probability difference on any image and class; None when it is
            reported but not a bar (over thousands of images it is set by the one nearest a tie).
        min_integer_op_share: smallest share of compute ops that must run in integer.
    """

    min_top1_agreement: float
    max_watch_flip_rate: float
    mean_abs_diff: float
    max_abs_diff: float | None = None
    min_integer_op_share: float = 0.0

    def as_dict(self) -> dict[str, float | None]:
        return {"min_top1_agreement": self.min_top1_agreement, "max_watch_flip_rate": self.max_watch_flip_rate,
                "mean_abs_diff": self.mean_abs_diff, "max_abs_diff": self.max_abs_diff,
                "min_integer_op_share": self.min_integer_op_share}


@dataclass(frozen=True)
class Preset:
    """One quantisation mode: what it needs, how the converter is set and how its file is checked.

    Attributes:
        name: the ``--quantize`` value and the ``model.<name>.tflite`` suffix.
        description: one line for ``--help`` and reports.
        calibration: needs representative images (full-integer quantisation).
        training: needs the run's training data (quantisation-aware fine-tuning first; the converted
            model is the fine-tuned one, and verification compares the file with it).
        integer: the graph must run in integer arithmetic (integer builtins only, inference input/output
            of the chosen I/O type; checked by verification).
        io_types: the input/output dtypes it can have; the first is the default.
        tolerance: documented verification tolerance.
        optimize: the converter's default optimisations (``tf.lite.Optimize.DEFAULT``: weight quantisation).
        supported_types: the converter's ``target_spec.supported_types`` (TensorFlow dtype names), e.g.
            ``("float16",)`` to store the weights in half precision.
        recipes: post-training integer quantisation of the run model, whose recipe can be tuned:
            ``--min-agreement`` searches recipes, ``--float-layers`` keeps layers in float.
        collapse_check: its accuracy drop on the labelled fidelity images is checked and, past
            ``--collapse-threshold``, a per-layer report (``debug.int8.csv``) is written.
    """

    name: str
    description: str
    calibration: bool
    training: bool
    integer: bool
    io_types: tuple[str, ...]
    tolerance: Tolerance
    optimize: bool = False
    supported_types: tuple[str, ...] = ()
    recipes: bool = False
    collapse_check: bool = False


# Tolerances are fidelity bars, measured on every image the run holds out (validation + test, or
# --verify-data; labels are not needed). fp32 must be numerically the Keras model. fp16 rounds
# weights to 11 significant bits: it may flip only near-ties (99.5 %). dynamic, int8 and qat must
# keep 97 % of top-1 decisions and, for each watched class (melanoma and BCC: the ones a flip
# makes dangerous), change at most 3 % of the images the reference assigns to it (fp16: 0.5 %).
# ``convert --min-agreement`` raises the int8 bar. qat is compared with its own quantisation-aware
# Keras model (the conversion's source). The mean |dp| bar catches a broken conversion whose top-1
# survives; max |dp| over thousands of images is one near-tie image, so it is reported, not a bar
# (fp32 keeps it: any difference there is a bug).
PRESETS: dict[str, Preset] = {p.name: p for p in (
    Preset("fp32", "float32, no quantisation (the reference)", False, False, False, ("float32",),
           Tolerance(0.999, 0.0, 1e-4, max_abs_diff=1e-3)),
    Preset("fp16", "float16 weights, float32 compute on CPU (half the size)", False, False, False, ("float32",),
           Tolerance(0.995, 0.005, 0.01), optimize=True, supported_types=("float16",)),
    Preset("dynamic", "dynamic-range: int8 weights, float activations", False, False, False, ("float32",),
           Tolerance(0.97, 0.03, 0.04), optimize=True),
    Preset("int8", "full-integer post-training quantisation (calibrated)", True, False, True, IO_TYPES,
           Tolerance(0.97, 0.03, 0.08, min_integer_op_share=1.0), optimize=True, recipes=True,
           collapse_check=True),
    Preset("qat", "quantisation-aware fine-tuning, then full-integer conversion", True, True, True, IO_TYPES,
           Tolerance(0.97, 0.03, 0.08, min_integer_op_share=1.0), optimize=True),
)}

#: Classes whose flips verification bounds separately (when the model has them).
WATCH_CLASSES: tuple[str, ...] = ("MM", "BCC")

#: The quantisation modes, in table order: the only list of them (CLI choices, demo, export, benchmarks).
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
