"""``ConvertConfig``: the settings of one ``edge-derm convert`` call, validated against the preset table."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edge_derm.errors import ConfigError

from .presets import IO_TYPES, MODES, WATCH_CLASSES, get_preset


@dataclass
class ConvertConfig:
    """Settings of one ``edge-derm convert`` call.

    Attributes:
        run: the run folder (model.keras + config.json).
        modes: quantisation presets to produce, in order.
        out: output folder; default ``<run>/convert``.
        force: replace ``out`` if it exists.
        io: input/output dtype of the integer presets (``uint8`` default, ``int8``, ``float32``).
        calibration: dataset folder for calibration (and QAT); default the run's last dataset.
        calibration_size: calibration images (class-stratified, seeded).
        verify_size: at most this many fidelity images (class-stratified, seeded); None: all of them.
        verify_data: dataset folder whose every image measures fidelity (same taxonomy and classes as
            the run); default the validation and test images of the run's last dataset.
        min_agreement: int8 must keep this top-1 agreement; searches recipes from the cheapest upward
            (:mod:`edge_derm.converters.search`) and raises int8's verification bar to it.
        watch: classes whose flips verification bounds separately (those the model has).
        qat_epochs: quantisation-aware fine-tuning epochs.
        qat_steps: steps per QAT epoch (default: one pass over the training images).
        qat_batch_size: QAT batch size (default: the run's training batch, see :func:`run_batch_size`).
        qat_learning_rate: QAT learning rate (the paper's backbone rate).
        float_layers: ``auto`` or comma-separated layer names kept in float in int8 (selective).
        collapse_threshold: int8 accuracy drop (fraction) on the labelled fidelity images that triggers
            the per-layer report.
        layer_report: write that per-layer report (``debug.int8.csv``, tens of seconds) when int8 fails or
            collapses; ``demo --quick`` turns it off.
        keep_failed: also write variants that fail verification (marked ``passed: false``); without it they
            are left out and the passing ones are still written.
        seed: sampling and QAT seed.
    """

    run: Path
    modes: list[str] = field(default_factory=lambda: ["int8"])
    out: Path | None = None
    force: bool = False
    io: str | None = None
    calibration: Path | None = None
    calibration_size: int = 256
    verify_size: int | None = None
    verify_data: Path | None = None
    min_agreement: float | None = None
    watch: list[str] = field(default_factory=lambda: list(WATCH_CLASSES))
    qat_epochs: int = 1
    qat_steps: int | None = None
    qat_batch_size: int | None = None
    qat_learning_rate: float = 1e-5
    float_layers: str | None = None
    collapse_threshold: float = 0.05
    layer_report: bool = True
    keep_failed: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        self.run = Path(self.run)
        self.out = Path(self.out) if self.out is not None else self.run / "convert"
        if self.calibration is not None:
            self.calibration = Path(self.calibration)
        if self.verify_data is not None:
            self.verify_data = Path(self.verify_data)
        if not self.modes:
            raise ConfigError(f"no quantisation mode given; pass --quantize with one of {', '.join(MODES)}")
        for m in self.modes:
            get_preset(m)
        if len(set(self.modes)) != len(self.modes):
            raise ConfigError(f"--quantize repeats a mode ({', '.join(self.modes)}); give each once")
        if self.io is not None and self.io not in IO_TYPES:
            raise ConfigError(f"unknown --io {self.io!r}; use one of {', '.join(IO_TYPES)}")
        if self.io is not None and not any(get_preset(m).integer for m in self.modes):
            raise ConfigError("--io only applies to the integer modes; add --quantize int8 or qat, or drop --io")
        for name in ("calibration_size", "verify_size", "qat_epochs"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be at least 1")
        if self.qat_steps is not None and self.qat_steps < 1:
            raise ConfigError("--qat-steps must be at least 1")
        if self.qat_batch_size is not None and self.qat_batch_size < 1:
            raise ConfigError("--qat-batch-size must be at least 1")
        if not 0.0 <= self.collapse_threshold <= 1.0:
            raise ConfigError("--collapse-threshold is a fraction of accuracy between 0 and 1 (e.g. 0.05)")
        if self.min_agreement is not None:
            if not 0.0 < self.min_agreement <= 1.0:
                raise ConfigError(f"--min-agreement {self.min_agreement:g} is outside (0, 1]; give a fraction "
                                  "of top-1 decisions to keep, e.g. 0.99")
            if not any(get_preset(m).recipes for m in self.modes):
                raise ConfigError("--min-agreement searches int8 recipes; add --quantize int8")
            if self.float_layers is not None:
                raise ConfigError("--min-agreement chooses float layers itself; drop --float-layers")
        if self.float_layers is not None:
            if not any(get_preset(m).recipes for m in self.modes):
                raise ConfigError("--float-layers applies to int8; add --quantize int8")
            if self.io not in (None, "float32"):
                raise ConfigError("--float-layers keeps float layers, so input/output stay float32; drop --io")

    def as_dict(self) -> dict[str, Any]:
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(self).items()}
