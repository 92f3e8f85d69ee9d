"""TrainConfig: the one typed configuration of a training run (saved into the run folder)."""

from __future__ import annotations

import logging
import math
import os
import tomllib
from dataclasses import asdict, dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import Any

from edge_derm.errors import ConfigError

RESIZE_MODES = ("nearest", "pad")
DISTRIBUTE = ("none", "mirrored", "multiworker")
SCHEDULES = ("blockwise", "full")
LR_SCHEDULES = ("constant", "cosine")
PREVALENCE = ("balanced", "dataset", "fit")
_RECIPES = "edge_derm.training.recipes"
DEFAULT_RECIPE = "recommended"
# TrainConfig fields a recipe may set (None in a TrainConfig = "take it from the recipe").
RECIPE_FIELDS = ("unfreeze", "epochs_per_block", "lr_head", "lr_backbone", "lr_schedule", "warmup_epochs",
                 "batch_multiple", "brightness", "label_smoothing", "dropout", "bn_momentum", "bn_recalibration",
                 "select_best", "val_fraction", "calibrate", "prevalence", "triage_target")
# Values of the recipe fields before recipes existed (every run saved without a "recipe" behaved so).
_LEGACY = {"lr_schedule": "constant", "warmup_epochs": 0.0, "brightness": [0.2, 0.8], "bn_momentum": 0.0,
           "select_best": False, "val_fraction": 0.0, "calibrate": True, "prevalence": "balanced",
           "triage_target": 0.9}
# Learning rates when lr_head / lr_backbone are not given: the paper's for the block-wise schedule,
# a from-scratch rate for the full one (a random backbone needs to move fast, not be protected).
DEFAULT_LR = {"blockwise": (1e-4, 1e-5), "full": (1e-3, 1e-3)}
# BatchNorm momentum while the full schedule trains (restored before saving): MobileNetV2's 0.999
# leaves the moving averages near their random-init values after a few hundred steps, so a model
# trained from scratch would be evaluated with the wrong statistics.
FULL_BN_MOMENTUM = 0.9

_log = logging.getLogger(__name__)

# Fields that do not change the trained model (allowed to differ on --resume).
_RUNTIME_FIELDS = ("distribute", "recipe")  # the recipe is resolved into the other fields
# Fields added after runs were saved, with their defaults (left out of the identity at the default).
_LATER_FIELDS = {"bn_recalibration": 0, **_LEGACY}


@dataclass
class TrainConfig:
    """Everything that decides what a training run produces.

    Attributes:
        data: Dataset folders (manifest + dataset.json); their train splits are concatenated,
            and the last one's test split is the evaluation set.
        recipe: The preset that fills every option left at None: ``recommended`` (the default; its
            comparison with ``paper`` is in benchmarks/results/recipes.md) or ``paper`` (the literal
            method); ``edge-derm recipes`` lists them.
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
        lr_head: Adam learning rate of the head (None = the recipe's for block-wise: recommended 1e-3,
            paper 1e-4; 1e-3 for full).
        lr_backbone: Adam learning rate of the unfrozen backbone blocks (None = recommended 1e-4, paper 1e-5;
            1e-3 for full).
        batch_multiple: Class-balanced batch = number of classes x this.
        batch_size: Explicit batch size (overrides batch_multiple).
        steps_per_epoch: Batches per epoch (None = ceil(train images / batch)).
        label_smoothing: Categorical cross-entropy label smoothing.
        dropout: Dropout before global pooling in the head (0 = none).
        augment: Training-time augmentation in the input pipeline.
        brightness: ``[low, high]`` range of the brightness factor (the paper's ``[0.2, 0.8]`` always
            darkens; ``recommended``: ``[0.8, 1.2]``).
        lr_schedule: ``constant`` or ``cosine`` (per schedule step: linear warm-up over ``warmup_epochs``
            epochs, then cosine decay to 0 at the step's last batch).
        warmup_epochs: Warm-up length of each step, in epochs (may be fractional).
        bn_momentum: BatchNorm momentum of the layers a step trains, while it trains (0 = keep the
            backbone's own, 0.999 for MobileNetV2; ``full`` always uses 0.9).
        select_best: Restore, at the end, the epoch with the best validation macro F1 (needs a val split).
        val_fraction: When the data has no val split, this share of each class's training images
            (whole groups) becomes the validation split (0 = none).
        calibrate: Fit a temperature and the triage operating point on the val split (when there is one).
        prevalence: ``balanced`` (probabilities as trained on class-balanced batches), ``dataset`` (the
            training set's class frequencies are restored by a log-prior shift in the calibration) or
            ``fit`` (that shift at the strength in [0, 1] with the best validation macro F1).
        triage_target: Target sensitivity of the referral (malignant) group on the val split, in (0, 1).
        seed: Seed of weights, data order and augmentation.
        deterministic: Deterministic TensorFlow ops (reproducible, resumable to the same model).
        distribute: ``none``, ``mirrored`` (all local GPUs) or ``multiworker`` (TF_CONFIG).
        bootstrap: Bootstrap resamples for confidence intervals in the final evaluation.
        bn_recalibration: Training images (0 = off; class-balanced, un-augmented, in training-size batches)
            used after each epoch, before validation, to recompute the moving averages of the BatchNorm
            layers that step trained (the mean of the batches' statistics). Short runs need it: MobileNetV2's momentum 0.999 leaves
            the averages near their initial values after a few hundred steps, so the model is right in
            training mode and far worse in inference mode. Frozen layers keep their statistics.
    """

    data: list[str] = field(default_factory=list)
    recipe: str = DEFAULT_RECIPE
    backbone: str = "mobilenet_v2"
    alpha: float | None = None
    image_size: int | None = None
    resize_mode: str = "nearest"
    weights: str = "imagenet"
    epochs_per_block: int | None = None
    blocks: int | str | None = None
    unfreeze: str | None = None
    merge: str = "union"
    lr_head: float | None = None
    lr_backbone: float | None = None
    lr_schedule: str | None = None
    warmup_epochs: float | None = None
    batch_multiple: int | None = None
    batch_size: int | None = None
    steps_per_epoch: int | None = None
    label_smoothing: float | None = None
    dropout: float | None = None
    augment: bool = True
    brightness: list[float] | None = None
    seed: int = 0
    deterministic: bool = True
    distribute: str = "none"
    bootstrap: int = 0
    bn_momentum: float | None = None
    bn_recalibration: int | None = None
    select_best: bool | None = None
    val_fraction: float | None = None
    calibrate: bool | None = None
    prevalence: str | None = None
    triage_target: float | None = None

    def __post_init__(self) -> None:
        """Fill the options left at None (recipe, backbone defaults), then check every field.

        The checks run in a fixed order, so a config with several mistakes always names the same first one.
        """
        if isinstance(self.data, (str, bytes)) or not self.data:
            raise ConfigError("no training data: pass --data DIR (a folder made by `edge-derm data build`)")
        self.data = [str(Path(d).expanduser().resolve()) for d in self.data]
        self._apply_recipe()
        spec = self._resolve_model()
        _positive_int("epochs_per_block", self.epochs_per_block, "--epochs-per-block 3")
        self._resolve_blocks(spec)
        self._resolve_schedule()
        self._check_batches()
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ConfigError(f"seed must be a non-negative integer, got {self.seed!r}")
        if self.merge not in ("union", "last"):
            raise ConfigError(f"unknown merge {self.merge!r}; use union or last")
        if self.distribute not in DISTRIBUTE:
            raise ConfigError(f"unknown distribution {self.distribute!r}; use one of {', '.join(DISTRIBUTE)}")
        self._check_recipe_fields()
        if isinstance(self.bootstrap, bool) or not isinstance(self.bootstrap, int) or self.bootstrap < 0:
            raise ConfigError(f"bootstrap must be a non-negative integer, got {self.bootstrap!r}")
        if (isinstance(self.bn_recalibration, bool) or not isinstance(self.bn_recalibration, int)
                or self.bn_recalibration < 0):
            raise ConfigError("bn_recalibration must be a non-negative number of images (0 = off, e.g. 256), "
                              f"got {self.bn_recalibration!r}")

    def _resolve_model(self):
        """The backbone's spec; fills alpha and image_size from it, normalises weights, checks resize_mode
        and that the ImageNet weights exist for this alpha and size. Returns the spec."""
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
        return spec

    def _resolve_blocks(self, spec) -> None:
        """``blocks``: None -> the paper's count for the backbone, ``"all"`` -> every backbone block."""
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

    def _resolve_schedule(self) -> None:
        """Check ``unfreeze``; learning rates left at None get the schedule's defaults (DEFAULT_LR)."""
        if self.unfreeze not in SCHEDULES:
            raise ConfigError(f"unknown unfreeze schedule {self.unfreeze!r}; use blockwise (the paper's) or full "
                              "(every layer from the start, for weights none)")
        for name, default in zip(("lr_head", "lr_backbone"), DEFAULT_LR[self.unfreeze]):
            if getattr(self, name) is None:
                setattr(self, name, default)
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
                raise ConfigError(f"{name} must be a positive number, e.g. 1e-4, got {value!r}")

    def _check_batches(self) -> None:
        """Batch size options, label smoothing and dropout."""
        _positive_int("batch_multiple", self.batch_multiple, "--batch-multiple 1")
        if self.batch_size is not None:
            _positive_int("batch_size", self.batch_size, "--batch-size 32")
        if self.steps_per_epoch is not None:
            _positive_int("steps_per_epoch", self.steps_per_epoch, "--steps-per-epoch 50")
        _number("label_smoothing", self.label_smoothing, 0.0, 1.0, "0.1", high_open=True)
        _number("dropout", self.dropout, 0.0, 1.0, "0.2", high_open=True)

    def _apply_recipe(self) -> None:
        """Fill every recipe field left at None from the recipe (or the defaults a recipe file leaves out)."""
        preset = load_recipe(self.recipe)
        unfreeze = self.unfreeze if self.unfreeze is not None else preset.get("unfreeze", "blockwise")
        for name in RECIPE_FIELDS:
            if getattr(self, name) is not None:
                continue
            if name in ("lr_head", "lr_backbone") and unfreeze != preset.get("unfreeze", "blockwise"):
                continue  # a recipe's rates are for its own schedule; the other schedule keeps DEFAULT_LR
            if name in preset:
                setattr(self, name, preset[name])
            elif name in _DEFAULTS:
                setattr(self, name, _DEFAULTS[name])

    def _check_recipe_fields(self) -> None:
        """Check the fields a recipe sets (schedule shape, augmentation, selection, calibration)."""
        if self.lr_schedule not in LR_SCHEDULES:
            raise ConfigError(f"unknown lr_schedule {self.lr_schedule!r}; use {' or '.join(LR_SCHEDULES)}")
        _number("warmup_epochs", self.warmup_epochs, 0.0, None, "0.5")
        if self.brightness is not None:
            b = self.brightness
            if (not isinstance(b, (list, tuple)) or len(b) != 2
                    or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in b)
                    or not 0 < b[0] <= b[1]):
                raise ConfigError(f"brightness must be [low, high] with 0 < low <= high, e.g. [0.8, 1.2], got {b!r}")
            self.brightness = [float(b[0]), float(b[1])]
        _number("bn_momentum", self.bn_momentum, 0.0, 1.0, "0.9", high_open=True)
        for name in ("select_best", "calibrate"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name} must be true or false, got {getattr(self, name)!r}")
        _number("val_fraction", self.val_fraction, 0.0, 1.0, "0.15", high_open=True)
        if self.prevalence not in PREVALENCE:
            raise ConfigError(f"unknown prevalence {self.prevalence!r}; use {' or '.join(PREVALENCE)}")
        t = self.triage_target
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t) or not 0 < t < 1:
            raise ConfigError(f"triage_target must be a sensitivity in (0, 1), e.g. 0.9, got {t!r}")
        self.triage_target = float(t)

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
            "lr_schedule": self.lr_schedule,
            "warmup_epochs": self.warmup_epochs,
            "loss": "categorical_crossentropy",
            "label_smoothing": self.label_smoothing,
            "recipe": self.recipe,
            "brightness": self.brightness if self.augment else None,
            "bn_momentum": self.bn_momentum or None,
            "bn_recalibration": self.bn_recalibration,
            "select_best": "val_macro_f1" if self.select_best else None,
            "batch_multiple": self.batch_multiple,
            "batch_size": self.batch_size,
            "steps_per_epoch": self.steps_per_epoch,
        }
        if self.unfreeze == "full":
            out["batchnorm_momentum_while_training"] = FULL_BN_MOMENTUM
        return out

    def to_dict(self) -> dict[str, Any]:
        """Every field, as saved under ``train`` in config.json."""
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


# Values of recipe fields that a recipe file leaves out.
_DEFAULTS = {"unfreeze": "blockwise", "epochs_per_block": 3, "batch_multiple": 1, "label_smoothing": 0.0,
             "dropout": 0.0, **{k: v for k, v in _LEGACY.items()}, "bn_recalibration": 0}


def list_recipes() -> dict[str, str]:
    """The shipped recipes: ``{name: description}``."""
    out = {}
    for p in sorted(resources.files(_RECIPES).iterdir(), key=lambda p: p.name):
        if p.name.endswith(".toml"):
            out[p.name[:-5]] = str(tomllib.loads(p.read_text(encoding="utf-8")).get("description", ""))
    return out


def load_recipe(name: str) -> dict[str, Any]:
    """The ``[train]`` table of a shipped recipe (``paper``, ``recommended``) or a recipe .toml file.

    Raises:
        ConfigError: An unknown name, an unreadable file, or a key that is not a recipe field.
    """
    name = str(name)
    if name.endswith(".toml") or "/" in name or os.sep in name:
        path = Path(name).expanduser()
        if not path.is_file():
            raise ConfigError(f"recipe file {path} does not exist; pass a shipped recipe "
                              f"({', '.join(list_recipes())}) or an existing .toml file")
        from edge_derm.fsutil import read_config_text

        text = read_config_text(path, "recipe file")
    else:
        known = list_recipes()
        if name not in known:
            raise ConfigError(f"unknown recipe {name!r}; known: {', '.join(known)} (or a .toml file)")
        text = resources.files(_RECIPES).joinpath(f"{name}.toml").read_text(encoding="utf-8")
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"recipe {name} is not valid TOML: {exc}") from None
    unknown_top = sorted(set(doc) - {"description", "train"})
    table = doc.get("train", {})
    if not isinstance(table, dict):
        raise ConfigError(f"recipe {name}: [train] must be a table of options, got {table!r}")
    unknown = unknown_top + sorted(f"train.{k}" for k in set(table) - set(RECIPE_FIELDS))
    if unknown:
        raise ConfigError(f"recipe {name}: unknown key(s) {', '.join(unknown) or 'train'}; "
                          f"a recipe has description and [train] with {', '.join(RECIPE_FIELDS)}")
    return dict(table)


def _number(name: str, value: Any, low: float, high: float | None, example: str, high_open: bool = False) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value >= low
    if ok and high is not None:
        ok = value < high if high_open else value <= high
    if not ok:
        bound = f"[{low}, {high}{')' if high_open else ']'}" if high is not None else f">= {low}"
        raise ConfigError(f"{name} must be a number in {bound}, e.g. {example}, got {value!r}")


def _positive_int(name: str, value: Any, example: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{name} must be a positive integer (e.g. {example}), got {value!r}")
