"""The demo's options and sizes: the two demo sizes (full and ``--quick``), its schedule, ``DemoConfig``.

No TensorFlow here; :mod:`edge_derm.demo.run` runs the stages. Wall times and accuracies of both
sizes: benchmarks/results/demo-*.json (``python benchmarks/scripts/measure_demo.py``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edge_derm.converters.presets import MODES, PRESETS, WATCH_CLASSES
from edge_derm.data.taxonomy import load_taxonomy
from edge_derm.errors import ConfigError

#: The synthetic dataset has every class of this taxonomy.
TAXONOMY = "dermai13"
CHANCE = 1.0 / len(load_taxonomy(TAXONOMY).classes)
#: The class whose sensitivity the default gate guards and the summary reports (melanoma).
WATCH = WATCH_CLASSES[0]
#: Training images that recompute the BatchNorm statistics after each step (TrainConfig.bn_recalibration).
BN_IMAGES = 256
#: Every quantisation mode that converts the trained model as it is (not those that fine-tune it again).
DEMO_MODES = tuple(m for m in MODES if not PRESETS[m].training)
#: ``--quick`` converts only the two modes the tour needs (conversion dominates its wall time).
QUICK_MODES = ("fp32", "int8")
DEFAULT_GATES = ("macro_f1=2", f"sensitivity:{WATCH}=5")
STAGES = ("synthesise", "dataset", "train", "convert", "benchmark", "report")


@dataclass(frozen=True)
class DemoSize:
    """Sizes of one demo flavour (full or ``--quick``); any field can be overridden by DemoConfig."""

    backbone: str
    alpha: float | None
    image_size: int
    per_class: int
    synth_size: int
    threads: tuple[int, ...]
    runs: int
    calibration_size: int
    verify_size: int
    modes: tuple[str, ...] = DEMO_MODES


#: The default demo (budget 5 min on a 2-core CPU) and ``--quick`` (budget 90 s: fp32 and int8 only);
#: measured by benchmarks/scripts/measure_demo.py (benchmarks/results/demo-*.json).
DEMO_SIZES = {
    "default": DemoSize(backbone="mobilenet_v2", alpha=0.35, image_size=96, per_class=80, synth_size=128,
                        threads=(1, 2), runs=20, calibration_size=130, verify_size=65),
    "quick": DemoSize(backbone="mobilenet_v2", alpha=0.35, image_size=64, per_class=30, synth_size=64,
                      threads=(1,), runs=10, calibration_size=65, verify_size=39, modes=QUICK_MODES),
}


@dataclass(frozen=True)
class Schedule:
    """The shortened schedule the demo trains with (recorded in the run and summary)."""

    unfreeze: str  # TrainConfig.unfreeze: "blockwise" or "full"
    blocks: int | str
    epochs_per_block: int
    lr_head: float
    lr_backbone: float
    why: str


def schedule_for(pretrained: bool, quick: bool) -> Schedule:
    """The demo's schedule, shortened.

    A pretrained backbone follows the paper's shape (head, then one more block per step; ``--quick``:
    2 blocks) at the paper's learning rates x30 (head 3e-3) and x100 (backbone 1e-3): the demo trains
    for a few hundred steps, the paper for thousands. A backbone trained from scratch uses the
    from-scratch recipe instead (``unfreeze = "full"``: every layer from epoch 1, lr 3e-3, which learned
    faster than 1e-3 on the synthetic images): frozen random blocks learn nothing, so block-wise
    unfreezing stays near chance. Its ``blocks = "all"`` makes the one step last
    ``epochs_per_block x 6`` epochs for MobileNetV2: 18 (default), 12 (``--quick``). Wall times and
    accuracies: benchmarks/results/demo-*.json.
    """
    if pretrained:
        return Schedule(unfreeze="blockwise", blocks=2 if quick else 4, epochs_per_block=2 if quick else 3,
                        lr_head=3e-3, lr_backbone=1e-3,
                        why="ImageNet features: head + the last " + ("2" if quick else "4") + " blocks")
    return Schedule(unfreeze="full", blocks="all", epochs_per_block=2 if quick else 3, lr_head=3e-3,
                    lr_backbone=3e-3, why="from scratch: every layer trained from epoch 1 (unfreeze full); "
                    "expect far lower accuracy than from ImageNet")


@dataclass
class DemoConfig:
    """Options of one demo run.

    Attributes:
        out: The demo folder (must not exist, or be empty, unless ``force``).
        quick: The small size (90 s budget; converts fp32 and int8 only) instead of the default (5 min).
        backbone: Registry name (None = the demo size's, ``mobilenet_v2``).
        weights: ``auto`` (ImageNet when cached or downloadable, else from scratch), ``imagenet``,
            ``none`` or a weights file.
        alpha: MobileNetV2 width multiplier (None = the demo size's for MobileNetV2).
        image_size: Model input size in pixels (None = the demo size's).
        per_class: Synthetic images per class (None = the demo size's).
        synth_size: Side of the synthetic images (None = the demo size's, at least ``image_size``).
        epochs_per_block: Override the schedule's epochs per step (from scratch, ``unfreeze = "full"``:
            the one step trains this x (blocks + 1) epochs).
        blocks: Override the schedule's number of unfrozen blocks (an int or ``all``).
        steps_per_epoch: Batches per epoch (None = one pass over the training images).
        gates: Largest allowed drops against fp32, reported (not enforced) in the summary.
        seed: Seed of the images, the split, the weights and the sampling.
        force: Replace an existing demo folder.
        network_timeout: Seconds the ``auto`` reachability check of the weights host may take.
    """

    out: Path = Path("edge-derm-demo")
    quick: bool = False
    backbone: str | None = None
    weights: str = "auto"
    alpha: float | None = None
    image_size: int | None = None
    per_class: int | None = None
    synth_size: int | None = None
    epochs_per_block: int | None = None
    blocks: int | str | None = None
    steps_per_epoch: int | None = None
    gates: list[str] = field(default_factory=lambda: list(DEFAULT_GATES))
    seed: int = 0
    force: bool = False
    network_timeout: float = 3.0

    def __post_init__(self) -> None:
        from edge_derm.benchmarks.config import Gate
        from edge_derm.models import get_spec

        self.out = Path(self.out).expanduser()
        size = self.demo_size
        if self.backbone is None:
            self.backbone = size.backbone
        spec = get_spec(self.backbone)  # ConfigError listing the names
        if self.alpha is None and spec.alphas:
            self.alpha = size.alpha if size.alpha in spec.alphas else spec.default_alpha
        self.weights = _check_weights(self.weights)
        for name in ("image_size", "per_class", "synth_size", "epochs_per_block", "steps_per_epoch"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ConfigError(f"--{name.replace('_', '-')} must be a positive integer, got {value!r}")
        if self.image_size is not None and self.image_size < spec.min_size:
            raise ConfigError(f"--image-size {self.image_size} is too small for {spec.name}; "
                              f"use at least {spec.min_size}")
        if self.per_class is not None and self.per_class < 5:
            raise ConfigError(f"--per-class {self.per_class} is too few to split 80:20 with test images in "
                              "every class; use at least 5")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ConfigError(f"--seed must be a non-negative integer, got {self.seed!r}")
        self.gates = [g if isinstance(g, str) else f"{g.key}={g.max_drop:g}" for g in self.gates]
        for g in self.gates:
            Gate.parse(g)
        if not self.network_timeout > 0:
            raise ConfigError(f"network_timeout must be a positive number of seconds, got {self.network_timeout}")

    @property
    def demo_size(self) -> DemoSize:
        return DEMO_SIZES["quick" if self.quick else "default"]

    def resolved(self) -> dict[str, Any]:
        """Every size the demo will use (the demo size's values filled in)."""
        from edge_derm.models import get_spec

        p = self.demo_size
        size = self.image_size or (p.image_size if self.backbone == p.backbone
                                   else max(p.image_size, get_spec(self.backbone).min_size))
        return {
            "backbone": self.backbone,
            "alpha": self.alpha,
            "image_size": size,
            "per_class": self.per_class or p.per_class,
            "synth_size": self.synth_size or max(p.synth_size, size),
            "threads": list(p.threads),
            "runs": p.runs,
            "calibration_size": p.calibration_size,
            "verify_size": p.verify_size,
            "modes": list(p.modes),
        }

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["out"] = str(self.out)
        return d


def _check_weights(weights: str) -> str:
    """``auto`` / ``imagenet`` / ``none`` (any case), or the absolute path of an existing file."""
    from edge_derm.models.pretrained import CHOICES

    w = str(weights)
    if w.lower() in CHOICES:
        return w.lower()
    path = Path(w).expanduser()
    if not path.is_file():
        raise ConfigError(f"--weights {w!r} is neither auto, imagenet, none nor an existing file; "
                          "pass one of those or the path of a weights file")
    return str(path.resolve())
