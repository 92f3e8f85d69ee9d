"""``edge-derm demo``: the whole product on the embedded synthetic dataset, in minutes on a CPU.

One call runs every stage and leaves one folder::

    <out>/data/        synthetic images (the folder layout) + synth.json
    <out>/dataset/     manifest.csv + dataset.json (grouped, stratified 80:20 split)
    <out>/run/         training run (model.keras, config.json, history, metrics): block-wise from
                       ImageNet weights, every layer from epoch 1 when trained from scratch
    <out>/convert/     model.{fp32,fp16,dynamic,int8}.tflite (--quick: fp32, int8) + labels.txt + model.json
    <out>/benchmark/   results.csv / results.json / plots (this CPU, per class, gates)
    <out>/report.html, report.md, report_assets/
    <out>/summary.json stages, timings, the weights decision, headline metrics, gate status

The folder is built in place (stages record absolute paths of each other), and removed again if
any stage fails, so a failed demo leaves neither a half-written folder nor a half-written report;
with ``force`` the previous demo folder is restored on failure and deleted only on success.
Failing quantisation gates are reported in the summary, they do not fail the demo.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import threading
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

from edge_derm.errors import ConfigError, ModelError, OutputExistsError
from edge_derm.fsutil import read_json, write_json

_log = logging.getLogger(__name__)

FORMAT_VERSION = 1
N_CLASSES = 13  # the synthetic dataset always has every dermai13 class
CHANCE = 1.0 / N_CLASSES
#: Training images that recompute the BatchNorm statistics after each step (TrainConfig.bn_recalibration).
BN_IMAGES = 256
MODES = ("fp32", "fp16", "dynamic", "int8")
#: ``--quick`` converts only these: each conversion is ~20 s here, and fp32 + int8 are the two the tour needs.
QUICK_MODES = ("fp32", "int8")
DEFAULT_GATES = ("macro_f1=2", "sensitivity:MM=5")
WEIGHT_CHOICES = ("auto", "imagenet", "none")
#: Where keras.applications downloads ImageNet weight files from.
WEIGHTS_HOST = ("storage.googleapis.com", 443)
STAGES = ("synthesise", "dataset", "train", "convert", "benchmark", "report")
_STAGE_TITLES = {
    "synthesise": "synthesising the lesion images",
    "dataset": "building and splitting the dataset",
    "train": "training the classifier",
    "convert": "converting to TFLite",
    "benchmark": "benchmarking on this CPU (per class, gates)",
    "report": "writing the report",
}


@dataclass(frozen=True)
class Preset:
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
    modes: tuple[str, ...] = MODES


#: The default demo (budget 5 min on a 2-core CPU) and ``--quick`` (90 s: fp32 and int8 only); measured by
#: benchmarks/measure_demo.py.
PRESETS = {
    "default": Preset(backbone="mobilenet_v2", alpha=0.35, image_size=96, per_class=80, synth_size=128,
                      threads=(1, 2), runs=20, calibration_size=130, verify_size=65),
    "quick": Preset(backbone="mobilenet_v2", alpha=0.35, image_size=64, per_class=30, synth_size=64,
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
    ``epochs_per_block x 6`` epochs for MobileNetV2: 18 (default), 12 (``--quick``). Measured offline on
    a loaded 2-core CPU (benchmarks/measure_demo.py --offline): default 292 s, 4.1x chance;
    ``--quick`` 90 s, 2.2x chance.
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
        quick: The small preset (90 s budget; converts fp32 and int8 only) instead of the default (5 min).
        backbone: Registry name (None = the preset's, ``mobilenet_v2``).
        weights: ``auto`` (ImageNet when cached or downloadable, else from scratch), ``imagenet``,
            ``none`` or a weights file.
        alpha: MobileNetV2 width multiplier (None = the preset's for MobileNetV2).
        image_size: Model input size in pixels (None = the preset's).
        per_class: Synthetic images per class (None = the preset's).
        synth_size: Side of the synthetic images (None = the preset's, at least ``image_size``).
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
        preset = self.preset
        if self.backbone is None:
            self.backbone = preset.backbone
        spec = get_spec(self.backbone)  # ConfigError listing the names
        if self.alpha is None and spec.alphas:
            self.alpha = preset.alpha if preset.alpha in spec.alphas else spec.default_alpha
        w = str(self.weights)
        if w.lower() in WEIGHT_CHOICES:
            self.weights = w.lower()
        else:
            path = Path(w).expanduser()
            if not path.is_file():
                raise ConfigError(f"--weights {w!r} is neither auto, imagenet, none nor an existing file; "
                                  "pass one of those or the path of a weights file")
            self.weights = str(path.resolve())
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
    def preset(self) -> Preset:
        return PRESETS["quick" if self.quick else "default"]

    def resolved(self) -> dict[str, Any]:
        """Every size the demo will use (preset values filled in)."""
        p = self.preset
        size = self.image_size or (p.image_size if self.backbone == p.backbone else _default_size(self.backbone, p))
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


def _default_size(backbone: str, preset: Preset) -> int:
    from edge_derm.models import get_spec

    return max(preset.image_size, get_spec(backbone).min_size)


# -- the weights decision ----------------------------------------------------------------------

@dataclass(frozen=True)
class WeightsDecision:
    """Which backbone weights the demo trains from, and why (shown in the summary and report)."""

    requested: str
    weights: str  # what TrainConfig gets: "imagenet", "none" or a file path
    pretrained: bool
    note: str


def find_cached_weights(backbone: str, alpha: float | None, image_size: int) -> tuple[Path | None, bool]:
    """The cached ImageNet weight file for this backbone and alpha, if any.

    Returns:
        ``(path, exact)``: ``exact`` when the file is the one for ``image_size``; otherwise a file of
        another input size (same alpha), which loads just as well (convolution weights do not depend
        on the input size). ``(None, False)`` when nothing is cached.
    """
    from edge_derm.models import get_spec
    from edge_derm.models.registry import keras_cache_dir

    spec = get_spec(backbone)
    cache = keras_cache_dir()
    exact = spec.weights_file(alpha, image_size)
    if exact is None:
        return None, False
    if (cache / exact).is_file():
        return cache / exact, True
    for size in sorted(spec.imagenet_sizes, reverse=True):
        name = spec.weights_file(alpha, size)
        if name and (cache / name).is_file():
            return cache / name, False
    return None, False


def host_reachable(host: tuple[str, int] = WEIGHTS_HOST, timeout: float = 3.0) -> bool:
    """Whether a TCP connection to ``host`` opens within ``timeout`` seconds (DNS included).

    The check runs in a daemon thread joined with a timeout, because name resolution ignores socket
    timeouts and can hang for long offline.
    """
    result: list[bool] = []

    def probe() -> None:
        try:
            with socket.create_connection(host, timeout=timeout):
                result.append(True)
        except OSError:
            result.append(False)

    t = threading.Thread(target=probe, name="edge-derm-weights-probe", daemon=True)
    t.start()
    t.join(timeout)
    return bool(result and result[0])


def decide_weights(requested: str, backbone: str, alpha: float | None, image_size: int, *,
                   timeout: float = 3.0) -> WeightsDecision:
    """Resolve ``auto`` / ``imagenet`` / ``none`` / a path into the weights to train from.

    ``auto`` uses ImageNet weights when the Keras cache (``$KERAS_HOME/models`` or
    ``~/.keras/models``) holds the file for this backbone and alpha, or when the download host
    answers within ``timeout`` seconds (skipped when ``EDGE_DERM_OFFLINE`` is set); else it trains
    from scratch. The download itself happens in :func:`fetch_imagenet`.
    """
    from edge_derm.models import get_spec
    from edge_derm.models.registry import keras_cache_dir

    spec = get_spec(backbone)
    if requested == "none":
        return WeightsDecision(requested, "none", False, "--weights none: trained from scratch")
    if requested not in ("auto", "imagenet"):
        return WeightsDecision(requested, requested, True, f"weights loaded from {requested}")
    has_imagenet = spec.weights_file(alpha, image_size) is not None and (not spec.alphas or alpha in spec.alphas)
    if not has_imagenet:
        if requested == "imagenet":
            from edge_derm.models.registry import check_imagenet

            check_imagenet(spec, alpha, image_size)  # raises the one-line ConfigError
        what = f"{backbone}" + (f" alpha {alpha}" if spec.alphas else "")
        return WeightsDecision(requested, "none", False,
                               f"{what} has no ImageNet weights: trained from scratch")
    cached, exact = find_cached_weights(backbone, alpha, image_size)
    if cached is not None:
        if exact:
            return WeightsDecision(requested, "imagenet", True, f"ImageNet weights from the Keras cache ({cached})")
        return WeightsDecision(requested, str(cached), True,
                               f"ImageNet weights from the Keras cache ({cached.parent}, the {cached.name.split('_')[-3]} px "
                               f"file; convolution weights do not depend on the input size)")
    if requested == "imagenet":
        return WeightsDecision(requested, "imagenet", True, "ImageNet weights (--weights imagenet)")
    wanted = keras_cache_dir() / spec.weights_file(alpha, image_size)
    if os.environ.get("EDGE_DERM_OFFLINE"):
        return WeightsDecision(requested, "none", False,
                               f"ImageNet weights not cached ({wanted} absent) and EDGE_DERM_OFFLINE is set: "
                               "trained from scratch")
    if host_reachable(WEIGHTS_HOST, timeout):
        return WeightsDecision(requested, "imagenet", True,
                               f"ImageNet weights downloaded from {WEIGHTS_HOST[0]} into {keras_cache_dir()}")
    return WeightsDecision(requested, "none", False,
                           f"ImageNet weights not cached ({wanted} absent) and {WEIGHTS_HOST[0]} not reachable "
                           f"within {timeout:g} s (offline?): trained from scratch")


def fetch_imagenet(decision: WeightsDecision, backbone: str, alpha: float | None, image_size: int) -> WeightsDecision:
    """Download ImageNet weights for an ``auto`` decision; fall back to from scratch if that fails."""
    if decision.requested != "auto" or decision.weights != "imagenet":
        return decision
    from edge_derm.models import create_backbone
    from edge_derm.models.registry import keras_cache_dir

    if (keras_cache_dir() / _weights_file(backbone, alpha, image_size)).is_file():
        return decision
    try:
        create_backbone(backbone, image_size=image_size, alpha=alpha, weights="imagenet")
    except ModelError as exc:
        return replace(decision, weights="none", pretrained=False,
                       note=f"ImageNet weights could not be downloaded ({str(exc)[:160]}): trained from scratch")
    return decision


def _weights_file(backbone: str, alpha: float | None, image_size: int) -> str:
    from edge_derm.models import get_spec

    return get_spec(backbone).weights_file(alpha, image_size) or ""


# -- the demo ----------------------------------------------------------------------------------

StageCallback = Callable[[int, int, str, str], None]


def run_demo(config: DemoConfig, on_stage: StageCallback | None = None) -> dict[str, Any]:
    """Run every stage into ``config.out`` and return the summary (also written to summary.json).

    Args:
        config: The validated options.
        on_stage: Called as ``on_stage(index, total, name, title)`` when a stage starts (the CLI
            prints a header; the stages draw their own progress bars).

    Raises:
        OutputExistsError: ``out`` exists (and is not empty) without ``force``, or with ``force`` but it
            is not a demo folder.
        EdgeDermError, OSError: A stage failed; the folder is removed (the previous one restored).
    """
    out = config.out.resolve()
    existed = out.is_dir()
    previous = _prepare_out(out, config.force)
    try:
        summary = _run_stages(config, out, on_stage)
    except BaseException:
        shutil.rmtree(out, ignore_errors=True)
        if previous is not None:
            os.replace(previous, out)
        elif existed:  # it was an empty folder: leave it as it was
            out.mkdir(exist_ok=True)
        raise
    if previous is not None:
        shutil.rmtree(previous, ignore_errors=True)
    return summary


def _is_demo_folder(path: Path) -> bool:
    try:
        info = read_json(path / "summary.json")
    except (OSError, ValueError):
        return False
    return isinstance(info, dict) and info.get("kind") == "demo"


def _prepare_out(out: Path, force: bool) -> Path | None:
    """Create ``out``; with ``force`` move an existing demo folder aside (returned, to restore on failure)."""
    if out.exists() and not (out.is_dir() and not any(out.iterdir())):
        if not force:
            raise OutputExistsError(f"{out} already exists; choose another --out or pass --force to replace it")
        if not out.is_dir() or not _is_demo_folder(out):
            raise OutputExistsError(f"{out} is not a demo folder (no summary.json of kind demo); refusing to "
                                    "replace it even with --force; choose another --out")
        aside = out.parent / f".{out.name}.old-{os.getpid()}"
        shutil.rmtree(aside, ignore_errors=True)
        os.replace(out, aside)
        out.mkdir()
        return aside
    out.mkdir(parents=True, exist_ok=True)
    return None


def _run_stages(config: DemoConfig, out: Path, on_stage: StageCallback | None) -> dict[str, Any]:
    from edge_derm import provenance

    sizes = config.resolved()
    started = time.perf_counter()
    stages: list[dict[str, Any]] = []
    summary: dict[str, Any] = {"kind": "demo", "format_version": FORMAT_VERSION, "status": "running",
                               "out": str(out), "quick": config.quick, "config": config.as_dict(), "sizes": sizes}
    write_json(out / "summary.json", summary)  # marks the folder as a demo (--force may replace it)

    def stage(name: str):
        if on_stage is not None:
            title = _STAGE_TITLES[name] + (f" ({', '.join(sizes['modes'])})" if name == "convert" else "")
            on_stage(len(stages) + 1, len(STAGES), name, title)
        _log.info("demo stage %s", name)
        return _Timer(stages, name)

    with stage("synthesise"):
        from edge_derm.data.synth import generate_dataset

        synth = generate_dataset(out / "data", per_class=sizes["per_class"], size=sizes["synth_size"],
                                 seed=config.seed, workers=0)

    with stage("dataset"):
        from edge_derm.data.build import build_dataset

        manifest = build_dataset("folder", out / "data", out / "dataset", taxonomy="dermai13",
                                 test_fraction=0.2, seed=config.seed)
        counts = {s: len(manifest.subset(s)) for s in ("train", "val", "test")}

    with stage("train"):
        decision = decide_weights(config.weights, sizes["backbone"], sizes["alpha"], sizes["image_size"],
                                  timeout=config.network_timeout)
        decision = fetch_imagenet(decision, sizes["backbone"], sizes["alpha"], sizes["image_size"])
        _log.info("weights: %s", decision.note)
        sched = schedule_for(decision.pretrained, config.quick)
        blocks = config.blocks if config.blocks is not None else sched.blocks
        epochs = config.epochs_per_block or sched.epochs_per_block
        from edge_derm.training import TrainConfig
        from edge_derm.training.trainer import train

        # The paper recipe under the demo's own short schedule: its budgets and figures (README) were
        # measured so; a user's `edge-derm train` defaults to the recommended recipe.
        tcfg = TrainConfig(data=[str(out / "dataset")], recipe="paper", backbone=sizes["backbone"], alpha=sizes["alpha"],
                           image_size=sizes["image_size"], weights=decision.weights, epochs_per_block=epochs,
                           blocks=blocks, unfreeze=sched.unfreeze, lr_head=sched.lr_head,
                           lr_backbone=sched.lr_backbone, steps_per_epoch=config.steps_per_epoch, seed=config.seed,
                           bn_recalibration=BN_IMAGES)
        trained = train(tcfg, out / "run")
        bn_note = (f"; BatchNorm statistics of the trained blocks recomputed on {BN_IMAGES} training images "
                   "after each step (bn_recalibration)")
        epochs = [s["epochs"] for s in tcfg.steps()]
        schedule_note = (f"demo schedule ({sched.why}): {tcfg.unfreeze}, {len(epochs)} step(s) x {epochs[0]} "
                         f"epochs, lr head {tcfg.lr_head:g} / backbone {tcfg.lr_backbone:g}")
        run_cfg = read_json(out / "run" / "config.json")
        run_cfg["weights_note"] = f"{decision.note}; {schedule_note}{bn_note}"
        write_json(out / "run" / "config.json", run_cfg)

    with stage("convert"):
        from edge_derm.converters.convert import ConvertConfig, convert_run

        converted = convert_run(ConvertConfig(run=out / "run", modes=list(sizes["modes"]), out=out / "convert",
                                              calibration_size=sizes["calibration_size"],
                                              verify_size=sizes["verify_size"], keep_failed=True,
                                              layer_report=not config.quick,
                                              seed=config.seed))

    with stage("benchmark"):
        from edge_derm.benchmarks import BenchmarkConfig, run_benchmark, write_results

        bcfg = BenchmarkConfig(models=[out / "convert"], data=out / "dataset", split="test", device="cpu",
                               threads=sizes["threads"], warmup=3, runs=sizes["runs"], gates=list(config.gates))
        bench = run_benchmark(bcfg)
        write_results(out / "benchmark", bench)

    keras_metrics = trained.get("metrics") or {}
    summary.update({
        "weights": {"requested": decision.requested, "used": decision.weights, "pretrained": decision.pretrained,
                    "note": decision.note},
        "dataset": {"dir": "dataset", "images": synth.get("total"), "classes": manifest.classes,
                    "per_class": sizes["per_class"], "image_px": sizes["synth_size"], "splits": counts,
                    "hash": manifest.hash},
        "training": {"dir": "run", "backbone": tcfg.backbone, "alpha": tcfg.alpha, "image_size": tcfg.image_size,
                     "weights": tcfg.weights, "unfreeze": tcfg.unfreeze,
                     "steps": [s["block"] for s in tcfg.schedule()["steps"]],
                     "epochs_per_block": tcfg.epochs_per_block, "epochs": sum(s["epochs"] for s in tcfg.steps()),
                     "steps_per_epoch": tcfg.steps_per_epoch,
                     "lr_head": tcfg.lr_head, "lr_backbone": tcfg.lr_backbone, "why": sched.why,
                     "params": trained.get("params"), "train_images_per_s": trained.get("train_images_per_s")},
        "metrics": {"chance_accuracy": CHANCE, "keras": _headline(keras_metrics), "variants": _variants(bench.rows)},
        "conversion": {"dir": "convert", "warnings": converted.get("warnings", []),
                       "verification": {m: (v.get("verification") or {}).get("passed")
                                        for m, v in converted.get("variants", {}).items()}},
        "gates": {"rules": list(config.gates), "passed": not bench.gate_failures,
                  "failures": list(bench.gate_failures)},
        "benchmark": {"dir": "benchmark", "devices": bench.devices},
        "versions": provenance.versions(),
    })

    summary["stages"] = stages  # the report's Demo section shows the timings so far
    write_json(out / "summary.json", summary)
    with stage("report"):
        from edge_derm.report import write_report

        write_report(out)

    summary["stages"] = stages
    summary["seconds"] = round(time.perf_counter() - started, 2)
    summary["report"] = {"html": "report.html", "markdown": "report.md"}
    summary["status"] = "complete"
    write_json(out / "summary.json", summary)
    return summary


class _Timer:
    """Context manager appending ``{"name", "seconds"}`` to a stage list."""

    def __init__(self, stages: list[dict[str, Any]], name: str):
        self.stages, self.name = stages, name

    def __enter__(self) -> "_Timer":
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc: Any) -> None:
        if exc[0] is None:
            self.stages.append({"name": self.name, "seconds": round(time.perf_counter() - self.t0, 2)})


def _headline(m: dict[str, Any]) -> dict[str, Any]:
    return {k: m.get(k) for k in ("n", "accuracy", "macro_f1", "weighted_f1", "balanced_accuracy")}


def _variants(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per quantisation: size, accuracy, macro F1, deltas and the fastest latency of the CPU rows."""
    out: dict[str, Any] = {}
    for r in rows:
        q = r.get("quantization") or r.get("model")
        m = r.get("metrics") or {}
        d = r.get("deltas") or {}
        v = out.setdefault(q, {"model": r.get("model"), "status": r.get("status"), "size_mb": r.get("size_mb"),
                               "accuracy": m.get("accuracy"), "macro_f1": m.get("macro_f1"),
                               "delta_macro_f1": d.get("macro_f1"),
                               "sensitivity_mm": ((m.get("per_class") or {}).get("MM") or {}).get("sensitivity"),
                               "latency_ms": {}})
        v["latency_ms"][str(r.get("threads"))] = r.get("latency_median_ms")
    return out
