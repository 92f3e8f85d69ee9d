"""Running the demo: the folder built in place, each stage one library call, the summary (``DemoSummary``)."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from edge_derm.artefacts import DemoSummary
from edge_derm.demo.config import BN_IMAGES, CHANCE, STAGES, TAXONOMY, WATCH, DemoConfig, Schedule, schedule_for
from edge_derm.errors import OutputExistsError
from edge_derm.fsutil import read_json

_log = logging.getLogger(__name__)

_STAGE_TITLES = {
    "synthesise": "synthesising the lesion images",
    "dataset": "building and splitting the dataset",
    "train": "training the classifier",
    "convert": "converting to TFLite",
    "benchmark": "benchmarking on this CPU (per class, gates)",
    "report": "writing the report",
}


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
    with _demo_folder(out, config.force):
        return _run_stages(config, out, on_stage)


@contextlib.contextmanager
def _demo_folder(out: Path, force: bool) -> Iterator[None]:
    """Build ``out`` in place; on failure remove it and put back what was there (a demo, or an empty folder).

    Not ``fsutil.staged_dir``: that builds in a temporary sibling and renames it at the end, while the
    stages record each other's absolute paths (the run its dataset, the benchmark its models), which
    would then name the temporary folder.
    """
    existed = out.is_dir()
    previous = _prepare_out(out, force)
    try:
        yield
    except BaseException:
        shutil.rmtree(out, ignore_errors=True)
        if previous is not None:
            os.replace(previous, out)
        elif existed:  # it was an empty folder: leave it as it was
            out.mkdir(exist_ok=True)
        raise
    if previous is not None:
        shutil.rmtree(previous, ignore_errors=True)


def _is_demo_folder(path: Path) -> bool:
    """Whether ``path`` holds a summary.json of kind demo (any format version: an older demo may be replaced)."""
    try:
        info = read_json(path / DemoSummary.FILENAME)
    except (OSError, ValueError):
        return False
    return isinstance(info, dict) and info.get("kind") == DemoSummary.KIND


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


class _Stages:
    """``with stages(name):`` announces a stage (``on_stage``), logs it and records its wall time if it succeeds."""

    def __init__(self, modes: list[str], on_stage: StageCallback | None):
        self.modes, self.on_stage = modes, on_stage
        self.done: list[dict[str, Any]] = []

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        if self.on_stage is not None:
            title = _STAGE_TITLES[name] + (f" ({', '.join(self.modes)})" if name == "convert" else "")
            self.on_stage(len(self.done) + 1, len(STAGES), name, title)
        _log.info("demo stage %s", name)
        t0 = time.perf_counter()
        yield
        self.done.append({"name": name, "seconds": round(time.perf_counter() - t0, 2)})


def _run_stages(config: DemoConfig, out: Path, on_stage: StageCallback | None) -> dict[str, Any]:
    """Every stage in order, the summary written before the report (which shows it) and once more at the end."""
    sizes = config.resolved()
    started = time.perf_counter()
    summary = DemoSummary(status="running", out=str(out), quick=config.quick, config=config.as_dict(), sizes=sizes)
    summary.write(out)  # marks the folder as a demo (--force may replace it)
    stage = _Stages(sizes["modes"], on_stage)
    with stage("synthesise"):
        synth = _synthesise(config, out, sizes)
    with stage("dataset"):
        manifest = _dataset(config, out)
    with stage("train"):
        trained = _train(config, out, sizes)
    with stage("convert"):
        converted = _convert(config, out, sizes)
    with stage("benchmark"):
        bench = _benchmark(config, out, sizes)
    summary.extra.update(_results(config, sizes, synth, manifest, trained, converted, bench))
    summary.stages = list(stage.done)  # the report's Demo section shows the timings so far
    summary.write(out)
    with stage("report"):
        from edge_derm.report import write_report

        write_report(out)
    summary.stages = list(stage.done)
    summary.extra["seconds"] = round(time.perf_counter() - started, 2)
    summary.extra["report"] = {"html": "report.html", "markdown": "report.md"}
    summary.status = "complete"
    summary.write(out)
    return summary.to_json()


# -- the stages: each one library call -------------------------------------------------------------

def _synthesise(config: DemoConfig, out: Path, sizes: dict[str, Any]) -> dict[str, Any]:
    from edge_derm.data.synth import generate_dataset

    return generate_dataset(out / "data", per_class=sizes["per_class"], size=sizes["synth_size"],
                            seed=config.seed, workers=0)


def _dataset(config: DemoConfig, out: Path):
    from edge_derm.data.build import build_dataset

    return build_dataset("folder", out / "data", out / "dataset", taxonomy=TAXONOMY, test_fraction=0.2,
                         seed=config.seed)


@dataclass(frozen=True)
class _Trained:
    """What the train stage decided and produced (the summary reports all of it)."""

    decision: Any  # models.pretrained.WeightsDecision
    schedule: Schedule
    config: Any  # training.TrainConfig
    result: dict[str, Any]


def _train(config: DemoConfig, out: Path, sizes: dict[str, Any]) -> _Trained:
    """Choose the weights (models.pretrained), then train under the demo's schedule for that choice."""
    from edge_derm.models.pretrained import choose_weights
    from edge_derm.training import TrainConfig
    from edge_derm.training.trainer import train

    decision = choose_weights(config.weights, sizes["backbone"], sizes["alpha"], sizes["image_size"],
                              timeout=config.network_timeout)
    sched = schedule_for(decision.pretrained, config.quick)
    # The paper recipe under the demo's own short schedule: its budgets and figures (README) were
    # measured so; a user's `edge-derm train` defaults to the recommended recipe.
    tcfg = TrainConfig(data=[str(out / "dataset")], recipe="paper", backbone=sizes["backbone"], alpha=sizes["alpha"],
                       image_size=sizes["image_size"], weights=decision.weights,
                       epochs_per_block=config.epochs_per_block or sched.epochs_per_block,
                       blocks=config.blocks if config.blocks is not None else sched.blocks,
                       unfreeze=sched.unfreeze, lr_head=sched.lr_head, lr_backbone=sched.lr_backbone,
                       steps_per_epoch=config.steps_per_epoch, seed=config.seed, bn_recalibration=BN_IMAGES)
    return _Trained(decision, sched, tcfg, train(tcfg, out / "run"))


def _convert(config: DemoConfig, out: Path, sizes: dict[str, Any]) -> dict[str, Any]:
    from edge_derm.converters.convert import ConvertConfig, convert_run

    return convert_run(ConvertConfig(run=out / "run", modes=list(sizes["modes"]), out=out / "convert",
                                     calibration_size=sizes["calibration_size"], verify_size=sizes["verify_size"],
                                     keep_failed=True, layer_report=not config.quick, seed=config.seed))


def _benchmark(config: DemoConfig, out: Path, sizes: dict[str, Any]):
    from edge_derm.benchmarks import BenchmarkConfig, run_benchmark, write_results

    bcfg = BenchmarkConfig(models=[out / "convert"], data=out / "dataset", split="test", device="cpu",
                           threads=sizes["threads"], warmup=3, runs=sizes["runs"], gates=list(config.gates))
    bench = run_benchmark(bcfg)
    write_results(out / "benchmark", bench)
    return bench


# -- the summary -------------------------------------------------------------------------------------

def _results(config: DemoConfig, sizes: dict[str, Any], synth: dict[str, Any], manifest, trained: _Trained,
             converted: dict[str, Any], bench) -> dict[str, Any]:
    """The summary's sections after the benchmark: weights, data, training, metrics, conversion, gates."""
    from edge_derm import provenance

    d = trained.decision
    return {
        "weights": {"requested": d.requested, "used": d.weights, "pretrained": d.pretrained, "note": d.note},
        "weights_note": _weights_note(trained),
        "dataset": {"dir": "dataset", "images": synth.get("total"), "classes": manifest.classes,
                    "per_class": sizes["per_class"], "image_px": sizes["synth_size"],
                    "splits": {s: len(manifest.subset(s)) for s in ("train", "val", "test")}, "hash": manifest.hash},
        "training": _training_section(trained),
        "metrics": {"chance_accuracy": CHANCE, "keras": _headline(trained.result.get("metrics") or {}),
                    "variants": _variants(bench.rows)},
        "conversion": {"dir": "convert", "warnings": converted.get("warnings", []),
                       "verification": {m: (v.get("verification") or {}).get("passed")
                                        for m, v in converted.get("variants", {}).items()}},
        "gates": {"rules": list(config.gates), "passed": not bench.gate_failures,
                  "failures": list(bench.gate_failures)},
        "benchmark": {"dir": "benchmark", "devices": bench.devices},
        "versions": provenance.versions(),
    }


def _weights_note(trained: _Trained) -> str:
    """The weights decision, the schedule trained under it and the BatchNorm re-estimation, in words.

    The demo's own record of why the run starts where it does (the run folder is training's alone).
    """
    tcfg, sched = trained.config, trained.schedule
    epochs = [s["epochs"] for s in tcfg.steps()]
    schedule_note = (f"demo schedule ({sched.why}): {tcfg.unfreeze}, {len(epochs)} step(s) x {epochs[0]} "
                     f"epochs, lr head {tcfg.lr_head:g} / backbone {tcfg.lr_backbone:g}")
    bn_note = (f"; BatchNorm statistics of the trained blocks recomputed on {BN_IMAGES} training images "
               "after each step (bn_recalibration)")
    return f"{trained.decision.note}; {schedule_note}{bn_note}"


def _training_section(trained: _Trained) -> dict[str, Any]:
    tcfg, result = trained.config, trained.result
    return {"dir": "run", "backbone": tcfg.backbone, "alpha": tcfg.alpha, "image_size": tcfg.image_size,
            "weights": tcfg.weights, "unfreeze": tcfg.unfreeze,
            "steps": [s["block"] for s in tcfg.schedule()["steps"]],
            "epochs_per_block": tcfg.epochs_per_block, "epochs": sum(s["epochs"] for s in tcfg.steps()),
            "steps_per_epoch": tcfg.steps_per_epoch,
            "lr_head": tcfg.lr_head, "lr_backbone": tcfg.lr_backbone, "why": trained.schedule.why,
            "params": result.get("params"), "train_images_per_s": result.get("train_images_per_s")}


def _headline(m: dict[str, Any]) -> dict[str, Any]:
    return {k: m.get(k) for k in ("n", "accuracy", "macro_f1", "weighted_f1", "balanced_accuracy")}


def _variants(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per quantisation: size, accuracy, macro F1, deltas, the watched class's sensitivity and the CPU latencies
    (``rows``: the harness's rows, each with the keys a :class:`~edge_derm.artefacts.BenchmarkRow` has)."""
    out: dict[str, Any] = {}
    for r in rows:
        m, d = r["metrics"] or {}, r.get("deltas") or {}
        v = out.setdefault(r["quantization"], {
            "model": r["model"], "status": r["status"], "size_mb": r["size_mb"], "accuracy": m.get("accuracy"),
            "macro_f1": m.get("macro_f1"), "delta_macro_f1": d.get("macro_f1"),
            f"sensitivity_{WATCH.lower()}": ((m.get("per_class") or {}).get(WATCH) or {}).get("sensitivity"),
            "latency_ms": {}})
        v["latency_ms"][str(r["threads"])] = r["latency_median_ms"]
    return out
