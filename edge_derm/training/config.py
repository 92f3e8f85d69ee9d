"""TrainConfig: the one typed configuration of a training run (saved into the run folder)."""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from edge_derm.errors import ConfigError

RESIZE_MODES = ("nearest", "pad")
DISTRIBUTE = ("none", "mirrored", "multiworker")
SCHEDULES = ("blockwise", "full")
# Learning rates when lr_head / lr_backbone are not given: the paper's for the block-wise schedule,
# a from-scratch rate for the full one (a random backbone needs to move fast, not be protected).
DEFAULT_LR = {"blockwise": (1e-4, 1e-5), "full": (1e-3, 1e-3)}
# BatchNorm momentum while the full schedule trains (restored before saving): MobileNetV2's 0.999
# leaves the moving averages near their random-init values after a few hundred steps, so a model
# trained from scratch would be evaluated with the wrong statistics.
FULL_BN_MOMENTUM = 0.9

_log = logging.getLogger(__name__)

# Fields that do not change the trained model (allowed to differ on --resume).
_RUNTIME_FIELDS = ("distribute",)
# Fields added after runs were saved, with their defaults (left out of the identity at the default).
_LATER_FIELDS = {"bn_recalibration": 0}


@dataclass
class TrainConfig:
    """Everything that decides what a training run produces.

    Attributes:
        data: Dataset folders (manifest + dataset.json); their train splits are concatenated,
            and the last one's test split is the evaluation set.
        backbone: Registry name (``edge-derm models list``).
        alpha: Width multiplier (MobileNetV2 only; None = the backbone's default).
        image_size: Square input size in pixels (None = the backbone's default, 300).
        resize_mode: ``nearest`` (the paper) or ``pad`` (aspect-preserving).
        weights: ``imagenet``, ``none`` or a path (weights file or a previous run's model.keras).
        epochs_per_block: Epochs of each schedule step (``unfreeze = "full"``: the single step trains
            ``epochs_per_block x (blocks + 1)`` epochs, the block-wise schedule's total).
        blocks: Backbone blocks to unfreeze one by one after the head step (None = the paper's
            count for the backbone; ``"all"`` adds ``rest``, i.e. the whole backbone, e.g. from scratch).
        unfreeze: The schedule: ``blockwise`` (the paper's: the head alone, then one more block per step) or
            ``full`` (one step that trains every layer from the start, at ``lr_backbone`` for the
            backbone, with BatchNorm momentum 0.9 while training; the recipe for ``weights = "none"``,
            plan ``o``: a random backbone frozen at step 0 and then trained at 1e-5 learns nothing).
        merge: With several datasets: ``union`` of their classes, or only the ``last`` one's classes
            (the other datasets' images of other classes are left out; the paper's strategy x).
        lr_head: Adam learning rate of the head (None = 1e-4 block-wise, 1e-3 full).
        lr_backbone: Adam learning rate of the unfrozen backbone blocks (None = 1e-5 block-wise, 1e-3 full).
        batch_multiple: Class-balanced batch = number of classes x this.
        batch_size: Explicit batch size (overrides batch_multiple).
        steps_per_epoch: Batches per epoch (None = ceil(train images / batch)).
        label_smoothing: Categorical cross-entropy label smoothing.
        dropout: Dropout before global pooling in the head (0 = none).
        augment: Training-time augmentation in the input pipeline.
        seed: Seed of weights, data order and augmentation.
        deterministic: Deterministic TensorFlow ops (reproducible, resumable to the same model).
        distribute: ``none``, ``mirrored`` (all local GPUs) or ``multiworker`` (TF_CONFIG).
        bootstrap: Bootstrap resamples for confidence intervals in the final evaluation.
        bn_recalibration: Training images (0 = off) used after each schedule step, before the step is
            saved, to recompute the moving averages of the BatchNorm layers that step trained (one
            un-augmented batch, momentum 0). Short runs need it: MobileNetV2's momentum 0.999 leaves
            the averages near their initial values after a few hundred steps, so the model is right in
            training mode and far worse in inference mode. Frozen layers keep their statistics.
    """

    data: list[str] = field(default_factory=list)
    backbone: str = "mobilenet_v2"
    alpha: float | None = None
    image_size: int | None = None
    resize_mode: str = "nearest"
    weights: str = "imagenet"
    epochs_per_block: int = 3
    blocks: int | str | None = None
    unfreeze: str = "blockwise"
    merge: str = "union"
    lr_head: float | None = None
    lr_backbone: float | None = None
    batch_multiple: int = 1
    batch_size: int | None = None
    steps_per_epoch: int | None = None
    label_smoothing: float = 0.0
    dropout: float = 0.0
    augment: bool = True
    seed: int = 0
    deterministic: bool = True
    distribute: str = "none"
    bootstrap: int = 0
    bn_recalibration: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.data, (str, bytes)) or not self.data:
            raise ConfigError("no training data: pass --data DIR (a folder made by `edge-derm data build`)")
        self.data = [str(Path(d).expanduser().resolve()) for d in self.data]
        from edge_derm.models import get_spec
        from edge_derm.models.registry import resolve_alpha, resolve_size

        spec = get_spec(self.backbone)
        self.alpha = resolve_alpha(spec, self.alpha)
        self.image_size = resolve_size(spec, self.image_size)
        if self.resize_mode not in RESIZE_MODES:
            raise ConfigError(f"unknown resize mode {self.resize_mode!r}; use {' or '.join(RESIZE_MODES)}")
        self.weights = str(self.weights)
        if self.weights.lower() in ("imagenet", "none"):
            self.weights = self.weights.lower()
        else:
            self.weights = str(Path(self.weights).expanduser().resolve())
        if self.weights == "imagenet":
            from edge_derm.models.registry import check_imagenet

            check_imagenet(spec, self.alpha, self.image_size)
        _positive_int("epochs_per_block", self.epochs_per_block, "--epochs-per-block 3")
        n_backbone = len(spec.blocks) - 1
        if self.blocks is None:
            self.blocks = spec.paper_blocks
        elif self.blocks == "all":
            self.blocks = n_backbone
        elif isinstance(self.blocks, str) and self.blocks.isdigit():
            self.blocks = int(self.blocks)
        if isinstance(self.blocks, bool) or not isinstance(self.blocks, int) or not 0 <= self.blocks <= n_backbone:
            raise ConfigError(f"blocks must be an integer from 0 to {n_backbone} for {self.backbone} "
                              f"(blocks: {', '.join(spec.block_names[1:])}), got {self.blocks!r}")
        if self.unfreeze not in SCHEDULES:
            raise ConfigError(f"unknown unfreeze schedule {self.unfreeze!r}; use blockwise (the paper's) or full "
                              "(every layer from the start, for weights none)")
        for name, default in zip(("lr_head", "lr_backbone"), DEFAULT_LR[self.unfreeze]):
            if getattr(self, name) is None:
                setattr(self, name, default)
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
                raise ConfigError(f"{name} must be a positive number, e.g. 1e-4, got {value!r}")
        _positive_int("batch_multiple", self.batch_multiple, "--batch-multiple 1")
        if self.batch_size is not None:
            _positive_int("batch_size", self.batch_size, "--batch-size 32")
        if self.steps_per_epoch is not None:
            _positive_int("steps_per_epoch", self.steps_per_epoch, "--steps-per-epoch 50")
        if not 0.0 <= float(self.label_smoothing) < 1.0:
            raise ConfigError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if not 0.0 <= float(self.dropout) < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ConfigError(f"seed must be a non-negative integer, got {self.seed!r}")
        if self.merge not in ("union", "last"):
            raise ConfigError(f"unknown merge {self.merge!r}; use union or last")
        if self.distribute not in DISTRIBUTE:
            raise ConfigError(f"unknown distribution {self.distribute!r}; use one of {', '.join(DISTRIBUTE)}")
        if isinstance(self.bootstrap, bool) or not isinstance(self.bootstrap, int) or self.bootstrap < 0:
            raise ConfigError(f"bootstrap must be a non-negative integer, got {self.bootstrap!r}")
        if (isinstance(self.bn_recalibration, bool) or not isinstance(self.bn_recalibration, int)
                or self.bn_recalibration < 0):
            raise ConfigError("bn_recalibration must be a non-negative number of images (0 = off, e.g. 256), "
                              f"got {self.bn_recalibration!r}")

    @property
    def n_steps(self) -> int:
        """Schedule steps: the head alone, then one per unfrozen block (``unfreeze = "full"``: one)."""
        return 1 if self.unfreeze == "full" else int(self.blocks) + 1

    def steps(self) -> list[dict[str, Any]]:
        """The schedule's steps: ``{"step", "block", "trainable" (block names), "level", "epochs"}``.

        ``level`` is the index into the backbone's block map that ``apply_schedule`` takes.
        """
        from edge_derm.models import get_spec

        names = get_spec(self.backbone).block_names
        if self.unfreeze == "full":
            return [{"step": 0, "block": "all", "trainable": list(names), "level": len(names) - 1,
                     "epochs": self.epochs_per_block * (int(self.blocks) + 1)}]
        return [{"step": k, "block": names[k], "trainable": names[: k + 1], "level": k,
                 "epochs": self.epochs_per_block} for k in range(self.n_steps)]

    def schedule(self) -> dict[str, Any]:
        """The schedule as saved in config.json."""
        steps = [{k: v for k, v in s.items() if k != "level"} for s in self.steps()]
        if self.unfreeze == "blockwise":  # keep the saved form of existing runs
            steps = [{k: v for k, v in s.items() if k != "epochs"} for s in steps]
        out = {
            "kind": self.unfreeze,
            "steps": steps,
            "epochs_per_block": self.epochs_per_block,
            "lr": {"head": self.lr_head, "backbone": self.lr_backbone},
            "optimizer": "adam (one per group, new at each step)",
            "loss": "categorical_crossentropy",
            "label_smoothing": self.label_smoothing,
            "batch_multiple": self.batch_multiple,
            "batch_size": self.batch_size,
            "steps_per_epoch": self.steps_per_epoch,
        }
        if self.unfreeze == "full":
            out["batchnorm_momentum_while_training"] = FULL_BN_MOMENTUM
        return out

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        """Build from a dict; unknown keys raise ConfigError naming the known ones."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"unknown training option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        return cls(**d)

    def identity(self) -> dict[str, Any]:
        """The fields that decide the trained model (compared on --resume).

        Options added later are left out while they have their default, so runs saved before them resume.
        """
        d = self.to_dict()
        for key in _RUNTIME_FIELDS:
            d.pop(key, None)
        for key, default in _LATER_FIELDS.items():
            if d.get(key) == default:
                d.pop(key)
        return d


def config_diff(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Human-readable differences ``key: old -> new`` between two flat dicts."""
    out = []
    for key in sorted(set(old) | set(new)):
        if old.get(key) != new.get(key):
            out.append(f"{key}: {old.get(key)!r} -> {new.get(key)!r}")
    return out


def _positive_int(name: str, value: Any, example: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{name} must be a positive integer (e.g. {example}), got {value!r}")
