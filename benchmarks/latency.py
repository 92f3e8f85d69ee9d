"""CPU latency in-process with the LiteRT interpreter (XNNPACK); no TensorFlow import.

The timed loop is deliberately bare (``perf_counter`` around ``invoke()`` only, input set once
before the warm-up) so that the harness adds almost nothing over a hand-written invoke loop;
``benchmarks/scripts/measure_latency.py`` checks this.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

_log = logging.getLogger(__name__)


@dataclass
class LatencyStats:
    """Latency of one (model, threads) pair, in milliseconds."""

    runs: int
    median_ms: float
    p90_ms: float
    min_ms: float
    mean_ms: float
    max_ms: float

    @property
    def images_per_s(self) -> float:
        return 1000.0 / self.median_ms if self.median_ms > 0 else float("inf")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def summarize(times_s: list[float] | np.ndarray) -> LatencyStats:
    """Median / p90 / min / mean / max (ms) of per-run times given in seconds."""
    arr = np.asarray(times_s, dtype=np.float64) * 1000.0
    if arr.size == 0:
        raise ValueError("no timed runs to summarise; use --runs 1 or more")
    return LatencyStats(runs=int(arr.size), median_ms=float(np.median(arr)), p90_ms=float(np.percentile(arr, 90)),
                        min_ms=float(arr.min()), mean_ms=float(arr.mean()), max_ms=float(arr.max()))


def time_calls(fn: Callable[[], Any], warmup: int, runs: int) -> LatencyStats:
    """Call ``fn`` ``warmup`` times untimed, then ``runs`` times each timed with ``perf_counter``."""
    for _ in range(warmup):
        fn()
    times = np.empty(runs, dtype=np.float64)
    clock = time.perf_counter
    for i in range(runs):
        t0 = clock()
        fn()
        times[i] = clock() - t0
    return summarize(times)


def open_model(path: Path, num_threads: int | None = None) -> Any:
    """A validated ``edge_derm.runtime.TFLiteModel`` (LiteRT; XNNPACK is its default CPU delegate).

    Host benchmarks thus run exactly what ``edge-derm predict`` runs. Raises ModelError.
    """
    from edge_derm.runtime import TFLiteModel

    return TFLiteModel(Path(path), num_threads=num_threads)


def open_interpreter(path: Path, num_threads: int | None = None) -> Any:
    """The allocated LiteRT interpreter of :func:`open_model`."""
    return open_model(path, num_threads).interpreter


def fill_inputs(interp: Any, seed: int = 0) -> None:
    """Set every input tensor to reproducible random data in the tensor's own dtype."""
    rng = np.random.default_rng(seed)
    for det in interp.get_input_details():
        shape = [max(1, int(d)) for d in det["shape"]]
        dtype = np.dtype(det["dtype"])
        if np.issubdtype(dtype, np.integer):
            info = np.iinfo(dtype)
            data = rng.integers(max(info.min, -128), min(info.max, 255) + 1, size=shape).astype(dtype)
        else:
            data = rng.uniform(0, 255, size=shape).astype(dtype)
        interp.set_tensor(det["index"], data)


def cpu_latency(path: Path, num_threads: int, warmup: int, runs: int, interp: Any = None) -> LatencyStats:
    """Latency of ``path`` on this CPU with ``num_threads`` threads.

    Args:
        path: the .tflite file.
        num_threads: interpreter threads.
        warmup: untimed runs first.
        runs: timed runs.
        interp: an interpreter already opened with those threads (reused, not reopened).
    """
    if interp is None:
        interp = open_interpreter(path, num_threads)
    fill_inputs(interp)
    return time_calls(interp.invoke, warmup, runs)


class PeakMemory:
    """Peak resident memory (MB) of this process over a ``with`` block (Linux; None elsewhere).

    Resets the kernel's high-water mark (``/proc/self/clear_refs``) on entry, so the figure is the
    peak while the block ran, model load included, not since the process started.
    """

    def __init__(self) -> None:
        self.peak_mb: float | None = None
        self.baseline_mb: float | None = None

    def __enter__(self) -> "PeakMemory":
        try:
            with open("/proc/self/clear_refs", "w") as fh:
                fh.write("5")
        except OSError:
            pass
        self.baseline_mb = _status_mb("VmRSS")
        return self

    def __exit__(self, *exc: Any) -> None:
        self.peak_mb = _status_mb("VmHWM")

    @property
    def delta_mb(self) -> float | None:
        if self.peak_mb is None or self.baseline_mb is None:
            return None
        return max(0.0, self.peak_mb - self.baseline_mb)


def _status_mb(key: str) -> float | None:
    if not os.path.exists("/proc/self/status"):
        return None
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024.0
    return None


