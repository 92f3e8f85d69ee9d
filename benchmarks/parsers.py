"""Parsers for the text output of LiteRT's two Android benchmark tools.

* ``tflite``: the classic TFLite ``benchmark_model`` (``tflite/tools/benchmark/``; interpreter +
  delegates, flags ``--use_xnnpack/--use_gpu/--use_nnapi``). Its results are the base tool's
  ``count=... first=... curr=... min=... max=... avg=... std=... p5=... median=... p95=...`` lines in
  microseconds (warm-up first, timed runs last), ``Inference timings in us: Init: ..., First inference:
  ..., Warmup (avg): ..., Inference (avg): ...`` and ``Memory footprint delta from the start of the tool
  (MB): init=... overall=...`` (old builds: ``Peak memory footprint (MB): init=... overall=...``).
* ``litert``: LiteRT's CompiledModel ``benchmark_litert_model`` (``litert/tools/``, built as
  ``//litert/tools:benchmark_model``; flags ``--use_cpu/--use_gpu/--use_npu``). It prints the same base
  ``count=`` lines, then a block headed ``========== BENCHMARK RESULTS ==========`` (``Model
  initialization: 119.52 ms``, ``Inference (avg): 63.74 ms (50 runs)``, ``Init footprint``, ``Overall
  footprint``, ``Peak memory`` in MB), every line of it behind a ``[file.cc:line]`` log prefix.

Lines may carry ``INFO: ``/``WARN: ``/``WARNING: ``/``ERROR: ``/``VERBOSE: ``, glog and ``[file:line]``
prefixes; numbers may be in scientific notation. A leading block of ``#`` lines (the fixtures' header
comments) is skipped. Both return a :class:`DeviceTimings` in milliseconds; fields a build does not
print are None. :func:`parse_delegation` reads which delegate took how much of the graph.

The fixtures in ``fixtures/`` are derived from the tools' printing code; each names its source.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field
from typing import Any

from edge_derm.errors import DeviceError

TFLITE = "tflite"
LITERT = "litert"
TOOLS = (TFLITE, LITERT)
TOOL_NAMES = {TFLITE: "benchmark_model (TFLite)", LITERT: "benchmark_litert_model (LiteRT CompiledModel)"}

_NUM = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|[-+]?(?:inf|nan)"
# glog header ("I0000 00:00:1700000000.1 1234 file.cc:12] "), a severity ("INFO: ", tflite/tools/logging.h
# writes "WARN: "), and LiteRT's "[file.cc:123] " (litert/c/internal/litert_logging.h LITERT_LOGGER_LOG_PROD).
_PREFIX = re.compile(r"^\s*(?:[IWEF]\d{4} [\d:.]+\s+\d+ [\w./-]+:\d+\]\s*)?"
                     r"(?:(?:INFO|WARN|WARNING|ERROR|VERBOSE|FATAL):\s*)?(?:\[[\w.+-]+:\d+\]\s*)?")
_STATS_LINE = re.compile(r"^count=(\d+)\b")
_KV = re.compile(rf"\b(\w+)=({_NUM})")
_TIMINGS = re.compile(r"Inference timings in us:\s*(.*)", re.IGNORECASE)
_MEM_V1 = re.compile(rf"(Memory footprint delta from the start of the tool|Peak memory footprint) \(MB\):"
                     rf"\s*init=({_NUM})\s+overall=({_NUM})", re.IGNORECASE)
_MEM_PERIODIC = re.compile(rf"peak memory footprint \(MB\) via periodic monitoring:\s*({_NUM})", re.IGNORECASE)
_RESULTS_HEADER = re.compile(r"=+\s*BENCHMARK RESULTS\s*=+", re.IGNORECASE)
_RESULTS_LINE = re.compile(rf"^([A-Za-z][\w ]*?(?:\s*\([\w ]+\))?)\s*:\s*({_NUM})\s*(ms|us|µs|s|MB|KB|GB)?"
                           rf"(?:\s*\((\d+)\s*runs?\))?", re.IGNORECASE)
_RESULTS_KEYS = {
    "model initialization": "init_ms", "warmup (first)": "first_ms", "warmup (avg)": "warmup_avg_ms",
    "inference (avg)": "avg_ms", "inference (min)": "min_ms", "inference (max)": "max_ms",
    "inference (std)": "std_ms",
}
_RESULTS_MEMORY = {"init footprint": "memory_init_mb", "overall footprint": "memory_overall_mb",
                   "peak memory": "peak_memory_mb"}


@dataclass
class DeviceTimings:
    """What one benchmark run reported, in milliseconds and MB; ``format`` is the tool (tflite or litert)."""

    format: str
    init_ms: float | None = None
    first_ms: float | None = None
    warmup_avg_ms: float | None = None
    warmup_runs: int | None = None
    avg_ms: float | None = None
    runs: int | None = None
    min_ms: float | None = None
    max_ms: float | None = None
    std_ms: float | None = None
    median_ms: float | None = None
    p5_ms: float | None = None
    p95_ms: float | None = None
    memory_init_mb: float | None = None
    memory_overall_mb: float | None = None
    peak_memory_mb: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Delegation:
    """Which delegate took how much of the graph, as the tool's output says.

    Attributes:
        applied: classic tool's "Explicitly applied X delegate ..." lines: (provider, "full" | "partial" |
            "none", delegate kernels or None) (tflite/tools/benchmark/benchmark_tflite_model.cc).
        replaced: the interpreter's "Replacing N out of M node(s) with delegate (NAME) node, yielding P
            partitions" lines: (NAME, N, M, P) (tflite/core/subgraph.cc; printed by both tools).
        refused: the line in which the tool refused a CPU fallback ("Disallowed CPU fallback detected."),
            or None.
        accelerator_missing: LiteRT could not load its GPU accelerator library.
    """

    applied: list[tuple[str, str, int | None]] = field(default_factory=list)
    replaced: list[tuple[str, int, int, int]] = field(default_factory=list)
    refused: str | None = None
    accelerator_missing: bool = False


_APPLIED = re.compile(r"Explicitly applied (\S+) delegate, and the model graph will be (completely|partially) "
                      r"executed by the delegate(?: w/ (\d+) delegate kernels)?")
_NOT_APPLIED = re.compile(r"Though (\S+) delegate is explicitly applied, the model graph will not be executed")
_REPLACED = re.compile(r"Replacing (\d+) out of (\d+) node\(s\) with delegate \(([^)]*)\) node,? yielding (\d+) "
                       r"partitions")
_REFUSED = re.compile(r"Disallowed CPU fallback detected|Some ops are not accelerated")
_GPU_MISSING = re.compile(r"GPU accelerator could not be loaded")


def clean_lines(text: str) -> list[str]:
    """The output's lines without log prefixes, after the leading ``#`` comment block (fixture headers)."""
    raw = text.splitlines()
    start = 0
    while start < len(raw) and raw[start].lstrip().startswith("#"):
        start += 1
    return [_PREFIX.sub("", line, count=1).rstrip() for line in raw[start:]]


def output_format(text: str) -> str:
    """``litert`` if the output has the CompiledModel tool's results block, else ``tflite``."""
    return LITERT if any(_RESULTS_HEADER.search(line) for line in clean_lines(text)) else TFLITE


def parse_benchmark_output(text: str) -> DeviceTimings:
    """Parse the output of either tool (the caller checks the exit status: a failed run may have printed
    some figures).

    Raises:
        DeviceError: no inference timings in ``text`` (the tool failed or printed something else), or a
            latency no run can have (not finite, zero or negative).
    """
    lines = clean_lines(text)
    if any(_RESULTS_HEADER.search(line) for line in lines):
        result = _parse_litert(lines)
    else:
        result = _parse_tflite(lines)
    if result.avg_ms is None:
        tail = next((ln for ln in reversed(lines) if ln.strip()), "no output").strip()
        first_error = next((_PREFIX.sub("", ln, count=1).strip() for ln in text.splitlines()
                            if ln.lstrip().startswith(("ERROR:", "FATAL:"))), None)
        said = f"error {first_error[:120]!r}; " if first_error and first_error != tail else ""
        raise DeviceError(f"the benchmark tool printed no inference timings ({said}last line: {tail[:120]!r})")
    _check_timings(result)
    return result


def parse_delegation(text: str) -> Delegation:
    """The delegation lines of either tool's output (see :class:`Delegation`)."""
    out = Delegation()
    for line in clean_lines(text):
        m = _APPLIED.search(line)
        if m:
            out.applied.append((m.group(1), "full" if m.group(2) == "completely" else "partial",
                                int(m.group(3)) if m.group(3) else None))
            continue
        m = _NOT_APPLIED.search(line)
        if m:
            out.applied.append((m.group(1), "none", 0))
            continue
        m = _REPLACED.search(line)
        if m:
            out.replaced.append((m.group(3), int(m.group(1)), int(m.group(2)), int(m.group(4))))
            continue
        if out.refused is None and _REFUSED.search(line):
            out.refused = line.strip()[:200]
        if _GPU_MISSING.search(line):
            out.accelerator_missing = True
    return out


def _check_timings(t: DeviceTimings) -> None:
    """DeviceError on a latency no run can have: not finite, negative or zero (only the spread may be 0),
    so an impossible figure is never reported as ok and results.json stays valid JSON."""
    for name, value in t.as_dict().items():
        if not name.endswith("_ms") or value is None:
            continue
        if not math.isfinite(value) or value < 0 or (value == 0 and name != "std_ms"):
            raise DeviceError(f"the benchmark tool reported an impossible {name[:-3].replace('_', ' ')} latency "
                              f"({value} ms); rerun it, and check the device and the binary")


def _us(value: str | float | None) -> float | None:
    return None if value is None else float(value) / 1000.0


def _stats_lines(lines: list[str]) -> list[dict[str, str]]:
    """The base tool's ``count=`` lines (``Stat::OutputToStream``), in order; ``count=N curr=X(all same)``
    stands for N identical runs."""
    stats = []
    for line in lines:
        m = _STATS_LINE.match(line.strip())
        if not m:
            continue
        kv = dict(_KV.findall(line))
        if "avg" not in kv and "curr" in kv and int(m.group(1)) > 0:  # all runs the same
            kv.update(avg=kv["curr"], min=kv["curr"], max=kv["curr"], first=kv.get("first", kv["curr"]), std="0")
        stats.append(kv)
    return stats


def _apply_stats(out: DeviceTimings, stats: list[dict[str, str]], results: bool) -> None:
    """Warm-up and timed runs from the ``count=`` lines. ``results``: the tool printed its results
    (``Inference timings`` or the results block); without them a lone ``count=`` line is the warm-up of a
    run that failed before its timed runs, not the timed runs."""
    if len(stats) >= 2:
        warm, timed = stats[0], stats[-1]
        if int(float(warm["count"])) > 0:
            out.warmup_runs = int(float(warm["count"]))
            out.warmup_avg_ms = _us(warm.get("avg"))
            out.first_ms = _us(warm.get("first"))
    elif stats and results:  # only the timed line (an old build run with warm-up disabled)
        timed = stats[0]
    else:
        return
    if int(float(timed["count"])) == 0:
        return
    out.runs = int(float(timed["count"]))
    out.avg_ms = _us(timed.get("avg"))
    out.min_ms = _us(timed.get("min"))
    out.max_ms = _us(timed.get("max"))
    out.std_ms = _us(timed.get("std"))
    out.median_ms = _us(timed.get("median"))
    out.p5_ms = _us(timed.get("p5"))
    out.p95_ms = _us(timed.get("p95"))


def _parse_tflite(lines: list[str]) -> DeviceTimings:
    out = DeviceTimings(format=TFLITE)
    _apply_stats(out, _stats_lines(lines), results=any(_TIMINGS.search(line) for line in lines))
    for line in lines:
        m = _TIMINGS.search(line)
        if m:
            parts = dict((k.strip().lower(), v) for k, v in re.findall(rf"([A-Za-z][\w ()]*?):\s*({_NUM})", m.group(1)))
            out.init_ms = _us(parts.get("init"))
            out.first_ms = _us(parts.get("first inference")) if "first inference" in parts else out.first_ms
            if "warmup (avg)" in parts:
                out.warmup_avg_ms = _us(parts["warmup (avg)"])
            if "inference (avg)" in parts:
                out.avg_ms = _us(parts["inference (avg)"])
        m = _MEM_V1.search(line)
        if m:
            out.memory_init_mb, out.memory_overall_mb = float(m.group(2)), float(m.group(3))
        m = _MEM_PERIODIC.search(line)
        if m:
            out.peak_memory_mb = float(m.group(1))
    if out.peak_memory_mb is None:
        out.peak_memory_mb = out.memory_overall_mb
    return out


def _parse_litert(lines: list[str]) -> DeviceTimings:
    """The results block, completed by the base ``count=`` lines (percentiles, microsecond precision)."""
    out = DeviceTimings(format=LITERT)
    block = DeviceTimings(format=LITERT)
    start = next(i for i, line in enumerate(lines) if _RESULTS_HEADER.search(line))
    for line in lines[start + 1:]:
        if line.strip().startswith("=====") and not _RESULTS_HEADER.search(line):
            break  # the block's closing rule
        m = _RESULTS_LINE.match(line.strip())
        if not m:
            continue
        label = re.sub(r"\s+", " ", m.group(1).strip().lower())
        value, unit, runs = float(m.group(2)), (m.group(3) or ""), m.group(4)
        if label in _RESULTS_MEMORY:
            mb = value / 1024.0 if unit.upper() == "KB" else value * 1024.0 if unit.upper() == "GB" else value
            setattr(block, _RESULTS_MEMORY[label], mb)
            continue
        key = _RESULTS_KEYS.get(label)
        if key is None:
            continue
        ms = value / 1000.0 if unit in ("us", "µs") else value * 1000.0 if unit == "s" else value
        setattr(block, key, ms)
        if runs is not None:
            if key == "warmup_avg_ms":
                block.warmup_runs = int(runs)
            elif key == "avg_ms":
                block.runs = int(runs)
    _apply_stats(out, _stats_lines(lines[:start]), results=True)
    for name, value in block.as_dict().items():  # the block fills what the count= lines did not give
        if name != "format" and getattr(out, name) is None:
            setattr(out, name, value)
    if block.runs == 0:  # "No inference runs were performed."
        out.avg_ms = None
    if out.peak_memory_mb is None:  # "Peak memory usage not available" unless --report_peak_memory_footprint
        out.peak_memory_mb = out.memory_overall_mb
    return out
