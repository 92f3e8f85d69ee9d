"""What a phone and a benchmark binary are, read without running anything on the phone.

The ELF header of the binary (its ABI and word size), which of the two LiteRT benchmark tools it is (from
its ``--help`` text or the strings inside it), the big cores' ``taskset`` mask from per-CPU capacities, and
the names of Android's thermal levels. Pure functions: the adb client (:mod:`.adb`) reads the phone, the
runner (:mod:`.runner`) decides with these.
"""

from __future__ import annotations

from pathlib import Path

from edge_derm.benchmarks.config import CPU_MASK
from edge_derm.benchmarks.parsers import LITERT, TFLITE
from edge_derm.errors import DeviceError

THERMAL_NAMES = {0: "none", 1: "light", 2: "moderate", 3: "severe", 4: "critical", 5: "emergency", 6: "shutdown"}
THERMAL_LEVELS = {v: k for k, v in THERMAL_NAMES.items()}
# ELF e_machine -> the Android ABIs that can run it
_ELF_ABIS = {0xB7: ("arm64-v8a",), 0x28: ("armeabi-v7a", "armeabi"), 0x3E: ("x86_64",), 0x03: ("x86",),
             0xF3: ("riscv64",)}
ABI_64 = ("arm64-v8a", "x86_64", "riscv64")

# what each tool prints for --help (tflite/tools/command_line_flags.cc Flags::Usage lists "--name=default";
# litert/tools/benchmark_litert_model_main.cc prints "NPU Vendor Flags from LiteRT:" and its own flags)
_HELP_MARKERS = {LITERT: ("NPU Vendor Flags from LiteRT", "--use_npu=", "--use_cpu=", "[benchmark_litert_model"),
                 TFLITE: ("--use_xnnpack=", "--use_nnapi=", "--use_hexagon=")}
_BINARY_MARKERS = {LITERT: (b"NPU Vendor Flags from LiteRT", b"========== BENCHMARK RESULTS =========="),
                   TFLITE: (b"use_xnnpack", b"Explicitly applied ")}


def elf_abis(binary: Path) -> tuple[str, ...]:
    """Android ABIs an ELF executable is built for; raises DeviceError if it is not an ELF file."""
    return elf_info(binary)[0]


def elf_info(binary: Path) -> tuple[tuple[str, ...], int]:
    """(Android ABIs, 32 or 64 bits) of an ELF executable; DeviceError if it is not an ELF file or cannot
    be read."""
    try:
        with open(binary, "rb") as fh:
            head = fh.read(20)
    except OSError as exc:
        raise _unreadable(binary, exc) from exc
    if len(head) < 20 or head[:4] != b"\x7fELF":
        raise DeviceError(f"{binary} is not an Android executable (no ELF header); "
                          "pass LiteRT's benchmark_model built for android_arm64")
    bits = 64 if head[4] == 2 else 32
    machine = int.from_bytes(head[18:20], "little" if head[5] == 1 else "big")
    return _ELF_ABIS.get(machine, (f"elf-machine-{machine:#x}",)), bits


def check_cpu_mask(mask: str) -> str:
    """Validate a ``taskset`` CPU mask (hex, e.g. ``f0``); raises ValueError otherwise."""
    if not CPU_MASK.match(mask):
        raise ValueError(f"--cpu-mask {mask!r} is not a hex CPU mask; use e.g. f0 for CPUs 4-7")
    return mask


def tool_from_help(text: str) -> str | None:
    """``tflite`` or ``litert`` from what the binary printed for ``--help``; None if it does not say."""
    hits = {tool: any(m in text for m in markers) for tool, markers in _HELP_MARKERS.items()}
    if hits[LITERT] != hits[TFLITE]:
        return LITERT if hits[LITERT] else TFLITE
    return None


def tool_from_binary(binary: Path) -> str | None:
    """``tflite`` or ``litert`` from strings inside the executable; None if neither or both kinds occur."""
    hits = {tool: False for tool in _BINARY_MARKERS}
    tail = b""
    try:
        with open(binary, "rb") as fh:
            while chunk := fh.read(1 << 20):
                window = tail + chunk
                for tool, markers in _BINARY_MARKERS.items():
                    hits[tool] = hits[tool] or any(m in window for m in markers)
                tail = chunk[-64:]
    except OSError as exc:
        raise _unreadable(binary, exc) from exc
    if hits[LITERT] != hits[TFLITE]:
        return LITERT if hits[LITERT] else TFLITE
    return None


def _unreadable(binary: Path, exc: OSError) -> DeviceError:
    return DeviceError(f"cannot read the benchmark binary {binary}: {exc.strerror or exc}; check the path "
                       "and its permissions")


def big_core_mask(values: dict[int, int]) -> str | None:
    """``taskset`` mask of the CPUs above the slowest tier, from per-CPU ``cpu_capacity`` or
    ``cpuinfo_max_freq``; None when every CPU is alike (no mask is then better than any)."""
    if len(set(values.values())) < 2:
        return None
    low = min(values.values())
    mask = sum(1 << cpu for cpu, v in values.items() if v > low)
    return f"{mask:x}"


def cpu_list(text: str) -> list[int]:
    """``0-3,6`` -> [0, 1, 2, 3, 6] (the kernel's cpulist format)."""
    cpus: list[int] = []
    for part in text.strip().split(","):
        lo, _, hi = part.strip().partition("-")
        if lo.isdigit():
            cpus += list(range(int(lo), int(hi) + 1)) if hi.isdigit() else [int(lo)]
    return cpus


def thermal_name(level: int | None) -> str | None:
    """The name of a thermal level (``none`` ... ``shutdown``; the number itself when unknown), None for None."""
    return None if level is None else THERMAL_NAMES.get(level, str(level))
