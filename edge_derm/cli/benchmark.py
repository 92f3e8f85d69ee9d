"""CLI: ``edge-derm benchmark`` (latency and per-class accuracy of .tflite variants, CPU or Android)."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import List, Optional

import typer

from edge_derm.benchmarks.config import THERMAL_LEVELS
from edge_derm.cli._choices import Split


class Device(str, Enum):
    cpu = "cpu"
    android = "android"


class BenchmarkTool(str, Enum):
    auto = "auto"
    tflite = "tflite"
    litert = "litert"


#: --max-thermal choices: the one list of levels, benchmarks/config.py's (PowerManager THERMAL_STATUS_*)
Thermal = Enum("Thermal", {level: level for level in THERMAL_LEVELS}, type=str)


def _threads(value: str) -> list[int]:
    try:
        threads = [int(t) for t in value.split(",") if t.strip()]
    except ValueError:
        threads = []
    if not threads or any(t < 1 for t in threads):
        raise typer.BadParameter(f"{value!r} is not a list of positive thread counts; use e.g. --threads 1,2,4",
                                 param_hint="--threads")
    return threads


def benchmark(
    models: List[Path] = typer.Argument(None, metavar="MODELS...", help=".tflite files, or convert/run folders holding them."),
    keras: List[Path] = typer.Option([], "--keras", help="Run folder (config.json + model.keras) whose Keras model is scored as a row, repeatable: quantization 'keras', accuracy only, on this machine; --reference RUN makes it the reference of the deltas."),
    data: List[Path] = typer.Option([], "--data", help="Dataset folder to score accuracy on (latency only without it). Repeat for other domains: their figures are shown side by side with the first's (their classes may be a subset of the model's)."),
    split: Split = typer.Option(Split.test, "--split", help="Dataset split to score."),
    device: Device = typer.Option(Device.cpu, "--device", help="cpu: this machine, in-process; android: phones over adb."),
    threads: str = typer.Option("1", "--threads", help="Thread counts, comma-separated, e.g. 1,2,4."),
    warmup: int = typer.Option(5, "--warmup", min=0, help="Untimed runs first."),
    runs: int = typer.Option(30, "--runs", min=1, help="Timed runs."),
    reference: Optional[Path] = typer.Option(None, "--reference", help="Model the deltas are against (default: the fp32 model of the set)."),
    max_drop: List[str] = typer.Option([], "--max-drop", help="Gate, repeatable: METRIC=POINTS, e.g. macro_f1=1.0 or sensitivity:MM=2.0; exit 1 when exceeded."),
    out: Optional[Path] = typer.Option(None, "--out", help="Folder for results.csv, results.json and plots."),
    force: bool = typer.Option(False, "--force", help="Replace --out if it exists."),
    serial: List[str] = typer.Option([], "--serial", help="adb serial, repeatable (android; default the only device)."),
    benchmark_binary: Optional[Path] = typer.Option(None, "--benchmark-binary", help="LiteRT's benchmark_model (TFLite) or benchmark_litert_model (CompiledModel) built for the phone (android)."),
    benchmark_tool: BenchmarkTool = typer.Option(BenchmarkTool.auto, "--benchmark-tool", help="Which tool the binary is: auto (told from its --help on the phone, then its strings), tflite (benchmark_model) or litert (benchmark_litert_model) (android)."),
    benchmark_lib: List[Path] = typer.Option([], "--benchmark-lib", help="Shared library pushed next to the binary, repeatable, e.g. LiteRT's libLiteRtClGlAccelerator.so for --use-gpu with benchmark_litert_model (android)."),
    use_gpu: bool = typer.Option(False, "--use-gpu", help="GPU delegate / accelerator (android)."),
    use_nnapi: bool = typer.Option(False, "--use-nnapi", help="NNAPI delegate; TFLite benchmark_model only (android)."),
    require_full_delegation: Optional[bool] = typer.Option(None, "--require-full-delegation/--allow-partial-delegation", help="Have the tool refuse a GPU/NNAPI run that falls back to the CPU (such rows get no timings), or never ask. Default: automatic; a partly delegated row is marked 'partially delegated' either way (android)."),
    cpu_mask: Optional[str] = typer.Option(None, "--cpu-mask", help="taskset hex mask, e.g. f0; default: the big cores, from the phone's cpu_capacity or cpuinfo_max_freq; none: no mask (android)."),
    cool_down: float = typer.Option(0.0, "--cool-down", min=0, help="Seconds to pause before each row (android)."),
    max_thermal: Optional[Thermal] = typer.Option(None, "--max-thermal", help="Before each row, wait until the phone's thermal status is at most this (android)."),
    cool_down_timeout: float = typer.Option(300.0, "--cool-down-timeout", min=0, help="Longest wait for --max-thermal per row; a row still hotter is marked 'throttled' (android)."),
    timeout: float = typer.Option(600.0, "--timeout", help="Seconds allowed per benchmark run, and for each adb call (android)."),
) -> None:
    """Latency, size and per-class accuracy of every variant; one row per (model, device, threads)."""
    from edge_derm.benchmarks import BenchmarkConfig, run_benchmark, write_results
    from edge_derm.fsutil import check_output_dir

    config = BenchmarkConfig(models=list(models or []), keras=list(keras), data=data[0] if data else None,
                             domains=data[1:], split=split.value, device=device.value,
                             threads=_threads(threads), warmup=warmup, runs=runs, reference=reference,
                             gates=list(max_drop), serials=list(serial), benchmark_binary=benchmark_binary,
                             use_gpu=use_gpu, use_nnapi=use_nnapi, cpu_mask=cpu_mask, timeout=timeout,
                             benchmark_tool=benchmark_tool.value, benchmark_libs=list(benchmark_lib),
                             require_full_delegation=require_full_delegation, cool_down=cool_down,
                             max_thermal=max_thermal.value if max_thermal is not None else None,
                             cool_down_timeout=cool_down_timeout)
    if out is not None:
        check_output_dir(out, force, config.inputs())  # fail before minutes of measuring, not after
    result = run_benchmark(config)
    _print_result(result)
    if out is not None:
        written = write_results(out, result, force=force)
        typer.echo(f"wrote {', '.join(p.name for p in written)} to {out}")
    else:
        typer.echo("add --out DIR to save results.csv, results.json and plots")
    if result.gate_failures:
        for msg in result.gate_failures:
            typer.echo(f"gate failed: {msg}", err=True)
    _fail_on_rows(result.rows, out is not None)
    if result.gate_failures:
        raise typer.Exit(1)


def _print_result(result) -> None:
    """The table, its legend and notes, the side-by-side domain view and the latency warnings."""
    from edge_derm.benchmarks.report import TABLE_COLUMNS, absent_class_notes, failure_notes, table_rows
    from edge_derm.cli._tables import print_table

    print_table("edge-derm benchmark", TABLE_COLUMNS, table_rows(result.rows),
                right=[c for c in TABLE_COLUMNS if c not in ("model", "quant", "device", "status")])
    typer.echo("F1 = macro F1; ΔF1 = change against the reference, points; diff% = predictions that differ "
               "from the reference; ms = median latency (mean where a device build prints no median)")
    for note in failure_notes(result.rows):
        typer.echo(note)
    for note in absent_class_notes(result.rows):
        typer.echo(note)
    if result.domains:
        _print_domains(result.domains)
    for msg in result.latency_warnings:
        typer.echo(f"warning: {msg}", err=True)


def _fail_on_rows(rows: list[dict], written: bool) -> None:
    """ModelError when a row did not run, or ran other than asked (part of it off the delegate, on a hot
    phone): a failure of the command, not just a row (like convert); each model is named with its status."""
    from edge_derm.artefacts import OK

    failed = dict.fromkeys(f"{r['model']} ({r['status']})" for r in rows if r["status"] != OK)
    if not failed:
        return
    names = list(failed)
    shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
    n_models = len(dict.fromkeys(r["model"] for r in rows))
    n_bad = len(dict.fromkeys(r["model"] for r in rows if r["status"] != OK))
    from edge_derm.errors import ModelError

    raise ModelError(f"{n_bad} of {n_models} model(s) did not run as asked: {shown} (reasons under the table; "
                     f"the other rows are {'written' if written else 'shown'})")


def _print_domains(domains: list[dict]) -> None:
    """The side-by-side view: for each model, one line per dataset."""
    from edge_derm.reporting.benchmark import DOMAIN_COLUMNS, domain_rows
    from edge_derm.cli._tables import print_table

    print_table("across datasets (domain shift)", DOMAIN_COLUMNS, domain_rows(domains),
                right=[c for c in DOMAIN_COLUMNS if c not in ("model", "data")])
    for i, d in enumerate(domains):
        typer.echo(f"data {i + 1}: {d['data']}; classes {', '.join(d['classes'])}")
    typer.echo("F1 = macro F1 over the dataset's classes; bal = balanced accuracy; sens = sensitivity; agree = same "
               "class as the reference (fp32); absent = predictions of a class the dataset does not have (errors)")


def register(app: typer.Typer) -> None:
    """Add ``benchmark`` to the root app."""
    app.command("benchmark")(benchmark)
