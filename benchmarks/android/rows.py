"""Android benchmark rows: every (model, threads) on every phone of a benchmark config, one phone at a time.

A row keeps the keys the harness gives it (``base_row``) and adds the phone's: delegate, tool, CPU mask,
device model, SoC, Android version, the thermal readings around the run, its timings and delegation facts.
The harness turns these dicts into :class:`edge_derm.artefacts.BenchmarkRow` (the Android keys ride in
``extra``).
"""

from __future__ import annotations

import logging
from typing import Any, Callable

from edge_derm.artefacts import FAILED_RUN, OK, THROTTLED
from edge_derm.benchmarks.android.adb import Adb, BenchmarkRunFailed, DeviceLost
from edge_derm.benchmarks.android.device import THERMAL_LEVELS
from edge_derm.benchmarks.android.runner import AndroidBenchmark, AndroidOptions
from edge_derm.errors import DeviceError

_log = logging.getLogger(__name__)

#: the row's ``delegate`` for each backend
_DELEGATES = {"cpu": "xnnpack", "gpu": "gpu", "nnapi": "nnapi"}


def android_rows(entries: list[Any], config: Any, base_row: Callable[[Any, str, int], dict[str, Any]]
                 ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Every (model, threads) row on every phone of ``config``, one phone after another.

    Args:
        entries: the harness's model entries (``path``, ``name``, ``status``).
        config: the :class:`BenchmarkConfig`.
        base_row: builds a row's common fields for (entry, device, threads).

    Returns:
        The rows, and one record per phone (its facts and the warnings it gave).

    Raises:
        DeviceError: a fault no row can survive (no device, wrong binary or ABI, a backend the tool
            lacks, the phone lost mid-run), as one line.
    """
    adb = Adb(config.adb, timeout=min(60.0, config.timeout))  # quick calls (devices, getprop) honour --timeout too
    serials = adb.select(config.serials)
    options = _options(config)
    rows, devices = [], []
    for serial in serials:  # one after another: phones share the host's USB bus and our attention
        bench = AndroidBenchmark(adb, serial, options)
        info = dict(bench.prepare())
        _warn_shared_cores(bench, config.threads)
        try:
            rows += _phone_rows(bench, info, entries, config, base_row)
        finally:
            try:
                bench.cleanup()
            except DeviceError as exc:  # never mask the first fault with a cleanup one
                _log.warning("cleanup on %s failed: %s", serial, exc)
        info["warnings"] = list(bench.warnings)
        devices.append({"device": f"android:{serial}", **info})
    return rows, devices


def _options(config: Any) -> AndroidOptions:
    """The runner's options from the benchmark config's Android fields."""
    return AndroidOptions(binary=config.benchmark_binary, use_gpu=config.use_gpu, use_nnapi=config.use_nnapi,
                          tool=config.benchmark_tool, cpu_mask=config.cpu_mask,
                          require_full_delegation=config.require_full_delegation, libs=list(config.benchmark_libs),
                          timeout=config.timeout, cool_down_s=config.cool_down,
                          max_thermal=THERMAL_LEVELS[config.max_thermal] if config.max_thermal else None,
                          cool_down_timeout_s=config.cool_down_timeout)


def _warn_shared_cores(bench: AndroidBenchmark, threads: list[int]) -> None:
    """Warn about thread counts above the CPUs of the mask: those rows time cores shared by threads."""
    big = bin(int(bench.cpu_mask, 16)).count("1") if bench.cpu_mask else None
    for t in threads:
        if big is not None and t > big:
            bench.warn(f"{t} threads on {bench.serial} exceed the {big} CPUs of mask {bench.cpu_mask}; "
                        "they will share cores")


def _phone_rows(bench: AndroidBenchmark, info: dict[str, Any], entries: list[Any], config: Any,
                base_row: Callable[[Any, str, int], dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows of one prepared phone; DeviceLost names the row it was lost at."""
    from edge_derm import progress

    serial = bench.serial
    rows = []
    total = len(entries) * len(config.threads)
    done = 0
    for e in progress.track(entries, f"timing on {info.get('model') or serial}"):
        for threads in config.threads:
            done += 1
            row = base_row(e, f"android:{serial}", threads)
            row.update(delegate=_DELEGATES[bench.options.backend], benchmark_tool=bench.tool, cpu_mask=bench.cpu_mask,
                       cpu_mask_source=info.get("cpu_mask_source"), device_model=info.get("model"),
                       soc=info.get("soc"), android=info.get("android"))
            if e.status == OK:
                try:
                    _time_row(bench, e, threads, config, row)
                except DeviceLost as exc:
                    raise DeviceLost(f"{exc} (lost during row {done} of {total}: {e.name}, {threads} "
                                     f"threads; rows before it were measured but are not kept)") from exc
            rows.append(row)
    return rows


def _time_row(bench: AndroidBenchmark, e: Any, threads: int, config: Any, row: dict[str, Any]) -> None:
    """Cool down, run, and fill ``row`` (timings, status, thermal readings, delegation)."""
    cool = bench.cool_down()
    row.update(thermal_before=cool["thermal_before"], cool_down_s=cool["cool_down_s"])
    try:
        out = bench.run(e.path, threads, config.warmup, config.runs)
    except BenchmarkRunFailed as exc:
        row["status"], row["reason"] = FAILED_RUN, str(exc)
        out = None
    row["thermal_after"] = bench.adb.thermal_status(bench.serial)
    if out is None:
        return
    row.update(status=out.status, reason=out.reason, delegation=out.delegation)
    t = out.timings
    if t is not None:
        ms = t.median_ms if t.median_ms is not None else t.avg_ms
        row.update(latency_median_ms=t.median_ms, latency_p90_ms=None, latency_min_ms=t.min_ms,
                   latency_mean_ms=t.avg_ms, images_per_s=1000.0 / ms if ms else None,
                   peak_memory_mb=t.peak_memory_mb, runs=t.runs, device_timings=t.as_dict())
    if cool["too_hot"] and row["status"] == OK:
        row["status"] = THROTTLED
        row["reason"] = (f"thermal status still {cool['thermal_before']} after {cool['cool_down_s']:g} s "
                         f"(--max-thermal {config.max_thermal}); the timings may be throttled")
