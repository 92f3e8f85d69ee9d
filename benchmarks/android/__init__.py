"""Android phones over adb: discover devices, push LiteRT's benchmark binary and the models, run, parse.

- :mod:`.adb`: the adb client (argument lists only; one-line :class:`DeviceError` faults).
- :mod:`.device`: facts read without the phone's help (ELF ABI, which benchmark tool, big-core mask,
  thermal level names).
- :mod:`.runner`: the benchmark tool on one phone (prepare, command line, cool-down, run).
- :mod:`.verdict`: a run's row status from the tool's delegation lines, and its failure line.
- :mod:`.rows`: the benchmark's rows on every phone (what the harness calls).

This package only re-exports; its modules import each other, never this file. The row statuses are
:mod:`edge_derm.artefacts`'s (re-exported here for callers of the earlier module).
"""

from __future__ import annotations

from edge_derm.artefacts import NOT_DELEGATED, PARTIAL, THROTTLED
from edge_derm.benchmarks.android.adb import Adb, AdbDevice, AdbTimeout, BenchmarkRunFailed, DeviceLost
from edge_derm.benchmarks.android.device import (THERMAL_LEVELS, THERMAL_NAMES, big_core_mask, check_cpu_mask,
                                                 elf_abis, elf_info, thermal_name, tool_from_binary, tool_from_help)
from edge_derm.benchmarks.android.rows import android_rows
from edge_derm.benchmarks.android.runner import (BACKENDS, REMOTE_DIR, TOOL_CHOICES, AndroidBenchmark,
                                                 AndroidOptions)
from edge_derm.benchmarks.android.verdict import RunOutcome

__all__ = ["Adb", "AdbDevice", "AdbTimeout", "AndroidBenchmark", "AndroidOptions", "BACKENDS", "BenchmarkRunFailed",
           "DeviceLost", "NOT_DELEGATED", "PARTIAL", "REMOTE_DIR", "RunOutcome", "THERMAL_LEVELS", "THERMAL_NAMES",
           "THROTTLED", "TOOL_CHOICES", "android_rows", "big_core_mask", "check_cpu_mask", "elf_abis", "elf_info",
           "thermal_name", "tool_from_binary", "tool_from_help"]
