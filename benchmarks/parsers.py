"""Parsers for the text output of LiteRT's ``benchmark_model`` tool (both formats).

* v1 (TFLite ``benchmark_model``): ``count=... first=... curr=... min=... max=... avg=... std=...
  [p5=... median=... p95=...]`` lines in microseconds (first = warm-up, second = timed runs),
  ``Inference timings in us: Init: ..., First inference: ..., Warmup (avg): ..., Inference (avg): ...``
  and ``Memory footprint delta from the start of the tool (MB): init=... overall=...`` (older builds:
  ``Peak memory footprint (MB): ...``). Lines may or may not carry an ``INFO: `` prefix; numbers may
  be in scientific notation.
* v2 (newer LiteRT tool): a block headed ``========== BENCHMARK RESULTS ==========`` with lines
  such as ``Inference (avg): 63.74 ms (50 runs)``.

Both return a :class:`DeviceTimings` with milliseconds; fields a build does not print are None.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any

from edge_derm.errors import DeviceError

_NUM = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
# glog header ("I0000 00:00:1700000000.1 1234 file.cc:12] ") and/or "INFO: " prefixes.
_PREFIX = re.compile(r"^\s*(?:[IWEF]\d{4} [\d:.]+\s+\d+ [\w./-]+:\d+\]\s*)?(?:(?:INFO|WARNING|VERBOSE):\s*)?")
_STATS_LINE = re.compile(rf"\bcount=(\d+)\b.*\bavg=({_NUM})")
_KV = re.compile(rf"\b(\w+)=({_NUM})")
_TIMINGS = re.compile(r"Inference timings in us:\s*(.*)", re.IGNORECASE)
_MEM_V1 = re.compile(rf"(Memory footprint delta from the start of the tool|Peak memory footprint) \(MB\):"
                     rf"\s*init=({_NUM})\s+overall=({_NUM})", re.IGNORECASE)
_MEM_PERIODIC = re.compile(rf"peak memory footprint \(MB\) via periodic monitoring:\s*({_NUM})", re.IGNORECASE)
_V2_HEADER = re.compile(r"=+\s*BENCHMARK RESULTS\s*=+", re.IGNORECASE)
_V2_LINE = re.compile(rf"^([A-Za-z][\w ]*?(?:\s*\([\w ]+\))?)\s*:\s*({_NUM})\s*(ms|us|µs|s|MB|KB|GB)?"
                      rf"(?:\s*\((\d+)\s*runs?\))?")


@dataclass
class DeviceTimings:
    """What one ``benchmark_model`` run reported, in milliseconds and MB."""

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


def parse_benchmark_output(text: str) -> DeviceTimings:
    """Parse ``benchmark_model`` output of either format.

    Raises:
        DeviceError: no inference timings in ``text`` (the tool failed or printed something else).
    """
    lines = [_strip_prefix(line) for line in text.splitlines()]
    if any(_V2_HEADER.search(line) for line in lines):
        result = _parse_v2(lines)
    else:
        result = _parse_v1(lines)
    if result.avg_ms is None:
        tail = next((ln for ln in reversed(lines) if ln.strip()), "no output")
        raise DeviceError(f"benchmark_model printed no inference timings (last line: {tail.strip()[:160]!r})")
    _check_timings(result)
    return result


def _check_timings(t: DeviceTimings) -> None:
    """DeviceError on a latency no run can have: not finite, negative, or a zero average / median
    (results.json must stay valid JSON, and an impossible figure must never be reported as ok)."""
    import math

    for name, value in t.as_dict().items():
        if not name.endswith("_ms") or value is None:
            continue
        zero_ok = name not in ("avg_ms", "median_ms")
        if not math.isfinite(value) or value < 0 or (value == 0 and not zero_ok):
            raise DeviceError(f"benchmark_model reported an impossible {name[:-3].replace('_', ' ')} latency "
                              f"({value} ms); rerun it, and check the device and the binary")


def _strip_prefix(line: str) -> str:
    return _PREFIX.sub("", line, count=1).rstrip()


def _us(value: str | None) -> float | None:
    return None if value is None else float(value) / 1000.0


def _parse_v1(lines: list[str]) -> DeviceTimings:
    out = DeviceTimings(format="v1")
    stats = []
    for line in lines:
        if _STATS_LINE.search(line):
            stats.append(dict(_KV.findall(line)))
    if len(stats) >= 2:
        warm, timed = stats[0], stats[-1]
        out.warmup_runs = int(float(warm["count"]))
        out.warmup_avg_ms = _us(warm.get("avg"))
        out.first_ms = _us(warm.get("first"))
    elif stats:  # only the timed line (a build run with warm-up disabled)
        timed = stats[0]
    else:
        timed = None
    if timed is not None:
        out.runs = int(float(timed["count"]))
        out.avg_ms = _us(timed.get("avg"))
        out.min_ms = _us(timed.get("min"))
        out.max_ms = _us(timed.get("max"))
        out.std_ms = _us(timed.get("std"))
        out.median_ms = _us(timed.get("median"))
        out.p5_ms = _us(timed.get("p5"))
        out.p95_ms = _us(timed.get("p95"))
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


_V2_KEYS = {
    "model initialization": "init_ms", "initialization": "init_ms", "init": "init_ms",
    "warmup (first)": "first_ms", "first inference": "first_ms",
    "warmup (avg)": "warmup_avg_ms", "inference (avg)": "avg_ms", "inference (min)": "min_ms",
    "inference (max)": "max_ms", "inference (std)": "std_ms", "inference (median)": "median_ms",
    "inference (p5)": "p5_ms", "inference (p95)": "p95_ms",
}
_MEM_WORDS = ("memory",)


def _parse_v2(lines: list[str]) -> DeviceTimings:
    out = DeviceTimings(format="v2")
    start = next(i for i, line in enumerate(lines) if _V2_HEADER.search(line))
    for line in lines[start + 1:]:
        m = _V2_LINE.match(line.strip())
        if not m:
            continue
        label, value, unit, runs = m.group(1).strip().lower(), float(m.group(2)), (m.group(3) or ""), m.group(4)
        label = re.sub(r"\s+", " ", label)
        if any(word in label for word in _MEM_WORDS):
            mb = value / 1024.0 if unit == "KB" else value * 1024.0 if unit == "GB" else value
            if "init" in label:
                out.memory_init_mb = mb
            elif "peak" in label:
                out.peak_memory_mb = mb
            else:
                out.memory_overall_mb = mb
            continue
        key = _V2_KEYS.get(label)
        if key is None:
            continue
        ms = value / 1000.0 if unit in ("us", "µs") else value * 1000.0 if unit == "s" else value
        setattr(out, key, ms)
        if runs is not None:
            if key == "warmup_avg_ms":
                out.warmup_runs = int(runs)
            elif key == "avg_ms":
                out.runs = int(runs)
    if out.peak_memory_mb is None:
        out.peak_memory_mb = out.memory_overall_mb
    return out
