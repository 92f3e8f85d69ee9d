"""Android phones over adb: discover devices, push LiteRT's benchmark binary and the models, run, parse.

Two tools are supported, told apart on the phone (see :func:`tool_from_help`, :func:`tool_from_binary`):
the classic TFLite ``benchmark_model`` (``--use_xnnpack/--use_gpu/--use_nnapi``) and LiteRT's
CompiledModel ``benchmark_litert_model`` (``--use_cpu/--use_gpu/--use_npu``; Bazel builds it as
``//litert/tools:benchmark_model``, so its file name proves nothing). Each gets its own flags; a backend
the tool cannot run is a one-line error, never a row timed on the CPU under another label.

Every adb call takes an argument list (no shell on the host); the one string that ``adb shell``
hands to the phone's shell is built with ``shlex.join`` from a list, so no user text is ever
interpreted there. Every fault is a one-line :class:`DeviceError`.
"""

from __future__ import annotations

import logging
import re
import shlex
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from edge_derm.benchmarks.config import CPU_MASK
from edge_derm.benchmarks.parsers import (LITERT, TFLITE, TOOL_NAMES, Delegation, DeviceTimings, clean_lines,
                                          parse_benchmark_output, parse_delegation)
from edge_derm.errors import DeviceError

_log = logging.getLogger(__name__)

REMOTE_DIR = "/data/local/tmp/edge_derm"
THERMAL_NAMES = {0: "none", 1: "light", 2: "moderate", 3: "severe", 4: "critical", 5: "emergency", 6: "shutdown"}
THERMAL_LEVELS = {v: k for k, v in THERMAL_NAMES.items()}
BACKENDS = ("cpu", "gpu", "nnapi")
TOOL_CHOICES = ("auto", TFLITE, LITERT)
# row statuses besides harness.OK / FAILED_RUN
PARTIAL = "partially delegated"
NOT_DELEGATED = "not delegated"
THROTTLED = "throttled"
# ELF e_machine -> the Android ABIs that can run it
_ELF_ABIS = {0xB7: ("arm64-v8a",), 0x28: ("armeabi-v7a", "armeabi"), 0x3E: ("x86_64",), 0x03: ("x86",),
             0xF3: ("riscv64",)}
_ABI_64 = ("arm64-v8a", "x86_64", "riscv64")
_NOT_EXECUTABLE = ("not executable", "exec format error", "permission denied", "cannot execute",
                   "can't execute")
# adb's own complaints that the phone is gone (whole stderr lines, case as adb prints them); a tool's
# "ERROR: ..." lines on the phone never match
_ADB_LOST = re.compile(r"^(?:adb: |error: )(?:device '[^']*' not found|device (?:offline|unauthorized)\b.*|closed|"
                       r"no devices/emulators found)$")
# what each tool prints for --help (tflite/tools/command_line_flags.cc Flags::Usage lists "--name=default";
# litert/tools/benchmark_litert_model_main.cc prints "NPU Vendor Flags from LiteRT:" and its own flags)
_HELP_MARKERS = {LITERT: ("NPU Vendor Flags from LiteRT", "--use_npu=", "--use_cpu=", "[benchmark_litert_model"),
                 TFLITE: ("--use_xnnpack=", "--use_nnapi=", "--use_hexagon=")}
_BINARY_MARKERS = {LITERT: (b"NPU Vendor Flags from LiteRT", b"========== BENCHMARK RESULTS =========="),
                   TFLITE: (b"use_xnnpack", b"Explicitly applied ")}
# the classic tool's delegate provider names (tflite/tools/delegates/*_delegate_provider.cc GetName())
_PROVIDERS = {"gpu": "GPU", "nnapi": "NNAPI"}
_CPU_DELEGATES = ("xnnpack", "ynnpack")

#: injectable for tests: cool-down waits never sleep for real there
SLEEP: Callable[[float], None] = time.sleep
CLOCK: Callable[[], float] = time.monotonic


class BenchmarkRunFailed(DeviceError):
    """One model failed on a healthy device (the row gets this status; other models go on)."""


class DeviceLost(DeviceError):
    """The phone went offline or away; nothing more can run on it."""


class AdbTimeout(DeviceError):
    """An adb call ran past its time limit (the phone may still be there)."""


@dataclass
class AdbDevice:
    """One line of ``adb devices -l``."""

    serial: str
    state: str
    description: str = ""


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


def _cpu_list(text: str) -> list[int]:
    """``0-3,6`` -> [0, 1, 2, 3, 6] (the kernel's cpulist format)."""
    cpus: list[int] = []
    for part in text.strip().split(","):
        lo, _, hi = part.strip().partition("-")
        if lo.isdigit():
            cpus += list(range(int(lo), int(hi) + 1)) if hi.isdigit() else [int(lo)]
    return cpus


class Adb:
    """A thin adb client.

    Args:
        adb: the adb executable (name on PATH or path); default ``adb``.
        timeout: seconds allowed for each quick adb call, ``adb devices`` included (push and benchmark
            runs take their own).
    """

    def __init__(self, adb: str = "adb", timeout: float = 60.0) -> None:
        found = shutil.which(adb)
        if found is None:
            raise DeviceError(f"{adb!r} not found on PATH; install Android platform-tools "
                              "(e.g. apt install adb) or put adb on PATH")
        self.adb = found
        self.timeout = timeout

    # -- plumbing ---------------------------------------------------------------------------
    def _run(self, args: list[str], *, serial: str | None = None, timeout: float | None = None,
             what: str = "adb") -> subprocess.CompletedProcess:
        argv = [self.adb] + (["-s", serial] if serial else []) + [str(a) for a in args]
        limit = timeout if timeout is not None else self.timeout
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, errors="replace", timeout=limit,
                                  stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired as exc:
            where = f" on {serial}" if serial else ""
            raise AdbTimeout(f"{what}{where} timed out after {limit:g} s; check the phone "
                             "(screen lock, thermal throttling) or raise --timeout") from exc
        except OSError as exc:
            raise DeviceError(f"cannot run {self.adb}: {exc.strerror or exc}") from exc
        if proc.returncode != 0 and serial:
            # only adb's own complaints ("adb: device offline", "error: device 'X' not found", "error: closed",
            # "error: no devices/emulators found"), never a tool's "ERROR: ..." lines; and only if the phone
            # is really gone ('adb get-state'), since "error: closed" can be a transport hiccup
            said = [ln.strip() for ln in (proc.stderr or "").splitlines() if _ADB_LOST.match(ln.strip())]
            if said and self.state(serial) != "device":
                text = " ".join(said)
                if "unauthorized" in text:
                    raise DeviceLost(f"device {serial} is unauthorized; unlock it and accept the USB debugging prompt")
                if "offline" in text:
                    raise DeviceLost(f"device {serial} is offline; reconnect the cable or run 'adb reconnect'")
                raise DeviceLost(f"device {serial} is no longer connected; check the cable and 'adb devices'")
            if said:
                _log.warning("adb said %r on %s but the device is still there", said[0], serial)
        return proc

    def state(self, serial: str) -> str | None:
        """``adb get-state`` of the phone (``device`` when ready), None when adb cannot tell."""
        try:
            proc = self._run(["-s", serial, "get-state"], timeout=min(self.timeout, 15.0), what="adb get-state")
        except DeviceError:
            return None
        if proc.returncode != 0:
            return None
        return proc.stdout.strip() or None

    def shell(self, serial: str, argv: list[str], *, timeout: float | None = None, what: str = "adb shell",
              check: bool = True) -> subprocess.CompletedProcess:
        """Run ``argv`` on the phone; each word is quoted, so nothing is interpreted by the remote shell."""
        proc = self._run(["shell", shlex.join([str(a) for a in argv])], serial=serial, timeout=timeout, what=what)
        if check and proc.returncode != 0:
            raise DeviceError(f"{what} failed on {serial} (exit {proc.returncode}): {_last_line(proc)}")
        return proc

    # -- devices ----------------------------------------------------------------------------
    def devices(self) -> list[AdbDevice]:
        """Devices adb knows of, in any state (the call honours ``timeout``)."""
        proc = self._run(["devices", "-l"], what="adb devices")
        if proc.returncode != 0:
            raise DeviceError(f"'adb devices' failed: {_last_line(proc)}")
        out = []
        for line in proc.stdout.splitlines():
            line = line.strip()
            if not line or line.startswith(("List of devices", "*")):
                continue
            parts = line.split()
            if len(parts) >= 2:
                out.append(AdbDevice(parts[0], parts[1], " ".join(parts[2:])))
        return out

    def select(self, serials: list[str] | None) -> list[str]:
        """The serials to run on: the given ones (each must be ready) or the only device connected."""
        devices = self.devices()
        by_serial = {d.serial: d for d in devices}
        if not serials:
            if not devices:
                raise DeviceError("no Android device connected ('adb devices' lists none); plug a phone in "
                                  "with USB debugging enabled")
            if len(devices) > 1:
                raise DeviceError(f"several devices connected ({', '.join(by_serial)}); choose with --serial")
            serials = [devices[0].serial]
        for serial in serials:
            dev = by_serial.get(serial)
            if dev is None:
                known = ", ".join(by_serial) or "none"
                raise DeviceError(f"device {serial} not found (connected: {known}); check --serial and 'adb devices'")
            if dev.state == "unauthorized":
                raise DeviceError(f"device {serial} is unauthorized; unlock it and accept the USB debugging prompt")
            if dev.state == "offline":
                raise DeviceError(f"device {serial} is offline; reconnect the cable or run 'adb reconnect'")
            if dev.state != "device":
                raise DeviceError(f"device {serial} is not ready (state {dev.state!r}); wait for it to boot")
        return list(serials)

    def push(self, serial: str, local: Path, remote: str, timeout: float | None = None) -> None:
        """Copy ``local`` to ``remote`` on the phone."""
        proc = self._run(["push", str(local), remote], serial=serial, timeout=timeout or max(self.timeout, 300),
                         what=f"adb push {Path(local).name}")
        if proc.returncode != 0:
            raise DeviceError(f"adb push {local} to {serial}:{remote} failed: {_last_line(proc)}")

    # -- facts ------------------------------------------------------------------------------
    def properties(self, serial: str) -> dict[str, str]:
        """All ``getprop`` properties of the phone."""
        proc = self.shell(serial, ["getprop"], what="getprop")
        return dict(re.findall(r"^\[([^\]]+)\]:\s*\[(.*)\]\s*$", proc.stdout, flags=re.MULTILINE))

    def device_info(self, serial: str) -> dict[str, Any]:
        """Model, SoC, Android version, SDK and ABI of the phone."""
        p = self.properties(serial)
        soc = " ".join(x for x in (p.get("ro.soc.manufacturer"), p.get("ro.soc.model")) if x)
        abilist = p.get("ro.product.cpu.abilist") or p.get("ro.product.cpu.abi", "")
        return {"serial": serial, "manufacturer": p.get("ro.product.manufacturer"),
                "model": p.get("ro.product.model"),
                "soc": soc or p.get("ro.board.platform") or p.get("ro.hardware"),
                "android": p.get("ro.build.version.release"), "sdk": p.get("ro.build.version.sdk"),
                "abi": p.get("ro.product.cpu.abi"), "abilist": [a for a in abilist.split(",") if a]}

    def thermal_level(self, serial: str) -> int | None:
        """The phone's thermal status as a number (0 none ... 6 shutdown), None when it does not say."""
        proc = self.shell(serial, ["dumpsys", "thermalservice"], what="dumpsys thermalservice", check=False)
        m = re.search(r"Thermal Status:\s*(\d+)", proc.stdout or "")
        return int(m.group(1)) if m else None

    def thermal_status(self, serial: str) -> str | None:
        """The phone's thermal status (none, light, moderate, ...) or None when it does not say."""
        return thermal_name(self.thermal_level(serial))

    def cpu_values(self, serial: str) -> tuple[dict[int, int], str | None]:
        """Per-CPU ``cpu_capacity`` (or, where the kernel has none, ``cpufreq/cpuinfo_max_freq``) and
        which of the two it is; ({}, None) when neither can be read."""
        proc = self.shell(serial, ["cat", "/sys/devices/system/cpu/possible"], what="read CPU list", check=False)
        cpus = _cpu_list(proc.stdout or "") if proc.returncode == 0 else []
        if not cpus:
            return {}, None
        for name in ("cpu_capacity", "cpufreq/cpuinfo_max_freq"):
            paths = [f"/sys/devices/system/cpu/cpu{c}/{name}" for c in cpus]
            proc = self.shell(serial, ["grep", "-H", ".", *paths], what=f"read {name}", check=False)
            values = {}
            for cpu, value in re.findall(r"/cpu(\d+)/[\w/]+:\s*(\d+)\s*$", proc.stdout or "", flags=re.MULTILINE):
                values[int(cpu)] = int(value)
            if len(values) == len(cpus):
                return values, name
        return {}, None


def thermal_name(level: int | None) -> str | None:
    return None if level is None else THERMAL_NAMES.get(level, str(level))


@dataclass
class AndroidOptions:
    """How the benchmark tool runs on the phone.

    Attributes:
        binary: the tool built for the phone.
        backend: ``cpu``, ``gpu`` or ``nnapi`` (the last only on the classic tool).
        tool: ``auto`` (told from ``--help`` on the phone, then from strings in the binary), ``tflite``
            or ``litert``.
        cpu_mask: ``taskset`` hex mask; None derives the big cores' mask from the phone; ``none`` runs
            without ``taskset``.
        require_full_delegation: None = automatic (the CompiledModel tool runs accelerator rows with
            ``--require_full_delegation`` and, if refused, once more with a CPU fallback to tell partial
            delegation from failure; the classic tool's delegation lines are read instead); True = the
            tool must refuse a partial delegation (no timings for such a row); False = never ask.
        libs: shared libraries pushed next to the binary (e.g. LiteRT's GPU accelerator
            ``libLiteRtClGlAccelerator.so``); the tool then runs with ``LD_LIBRARY_PATH`` on them.
        timeout: seconds allowed for one run.
        cool_down_s: pause before each row.
        max_thermal: wait before each row until the thermal status is at most this (0 none ... 6);
            None = do not wait.
        cool_down_timeout_s: longest wait for ``max_thermal``; a row still hotter then runs with status
            ``throttled``.
        poll_s: seconds between thermal readings while waiting.
    """

    binary: Path
    backend: str = "cpu"
    tool: str = "auto"
    cpu_mask: str | None = None
    require_full_delegation: bool | None = None
    libs: list[Path] = field(default_factory=list)
    timeout: float = 600.0
    cool_down_s: float = 0.0
    max_thermal: int | None = None
    cool_down_timeout_s: float = 300.0
    poll_s: float = 10.0
    use_gpu: bool = False  # kept for callers of the earlier API: use_gpu / use_nnapi set ``backend``
    use_nnapi: bool = False

    def __post_init__(self) -> None:
        if self.use_gpu:
            self.backend = "gpu"
        elif self.use_nnapi:
            self.backend = "nnapi"
        if self.backend not in BACKENDS:
            raise ValueError(f"backend {self.backend!r} is unknown; use one of {', '.join(BACKENDS)}")
        if self.tool not in TOOL_CHOICES:
            raise ValueError(f"--benchmark-tool {self.tool!r} is unknown; use one of {', '.join(TOOL_CHOICES)}")


@dataclass
class RunOutcome:
    """One row's run: its timings (None if it gave none), status, reason and delegation facts."""

    timings: DeviceTimings | None
    status: str
    reason: str = ""
    delegation: dict[str, Any] | None = None


class AndroidBenchmark:
    """The benchmark tool on one phone: prepared once, then run per (model, threads)."""

    def __init__(self, adb: Adb, serial: str, options: AndroidOptions, *, sleep: Callable[[float], None] | None = None,
                 clock: Callable[[], float] | None = None) -> None:
        self.adb, self.serial, self.options = adb, serial, options
        self.remote_binary = f"{REMOTE_DIR}/benchmark_model"
        self.info: dict[str, Any] = {}
        self.tool: str | None = options.tool if options.tool != "auto" else None
        self.cpu_mask: str | None = None
        self.warnings: list[str] = []
        self._pushed: dict[Path, str] = {}
        self._libs: list[str] = []
        self._help = ""  # what the binary printed for --help on the phone
        self._sleep = sleep or SLEEP
        self._clock = clock or CLOCK

    # -- preparing --------------------------------------------------------------------------
    def prepare(self) -> dict[str, Any]:
        """Read the device facts, check the binary's ABI, push it (and its libraries), tell which tool it
        is, check the backend against it, and settle the CPU mask."""
        o = self.options
        binary = Path(o.binary)
        if not binary.is_file():
            raise DeviceError(f"benchmark binary {binary} not found; download LiteRT's benchmark_model "
                              "for android_arm64 and pass it with --benchmark-binary")
        for lib in o.libs:
            if not Path(lib).is_file():
                raise DeviceError(f"--benchmark-lib {lib} not found")
        self.info = self.adb.device_info(self.serial)
        built_for, bits = elf_info(binary)
        device_abis = self.info["abilist"] or ([self.info["abi"]] if self.info["abi"] else [])
        if device_abis and not set(built_for) & set(device_abis):
            raise DeviceError(f"{binary.name} is built for {built_for[0]} but {self.serial} runs "
                              f"{', '.join(device_abis)}; use the benchmark build for {device_abis[0]}")
        if bits == 32 and any(a in _ABI_64 for a in device_abis):
            self._warn(f"{binary.name} is a 32-bit {built_for[0]} build but {self.serial} is a 64-bit phone "
                       f"({device_abis[0]}): its timings are not those of a 64-bit app; use the "
                       f"{device_abis[0]} build")
        self.info.update(binary_abi=built_for[0], binary_bits=bits)
        self.adb.shell(self.serial, ["mkdir", "-p", REMOTE_DIR], what="mkdir")
        self.adb.push(self.serial, binary, self.remote_binary)
        for lib in o.libs:
            remote = f"{REMOTE_DIR}/{Path(lib).name}"
            self.adb.push(self.serial, Path(lib), remote)
            self._libs.append(remote)
        self.adb.shell(self.serial, ["chmod", "755", self.remote_binary], what="chmod")
        if self.adb.shell(self.serial, ["test", "-x", self.remote_binary], check=False).returncode != 0:
            raise DeviceError(f"benchmark binary is not executable on {self.serial} ({self.remote_binary}); "
                              "/data/local/tmp may be mounted noexec on this phone")
        self._detect_tool(binary)
        if self.tool == LITERT and o.backend == "nnapi":
            raise DeviceError(f"{binary.name} is LiteRT's CompiledModel benchmark_litert_model, which has no NNAPI "
                              "backend (its flags are --use_cpu/--use_gpu/--use_npu); drop --use-nnapi or use "
                              "the TFLite benchmark_model")
        self._settle_cpu_mask()
        self.info.update(benchmark_tool=self.tool, cpu_mask=self.cpu_mask, warnings=self.warnings)
        return self.info

    def _detect_tool(self, binary: Path) -> None:
        """Run ``--help`` on the phone: it proves the binary starts there and, with strings in the file as
        the fallback, tells which tool it is. ``--benchmark-tool`` overrides both."""
        proc = self.adb.shell(self.serial, self._env() + [self.remote_binary, "--help"], timeout=min(60.0, self.options.timeout),
                              what="benchmark binary --help", check=False)
        text = (proc.stdout or "") + "\n" + (proc.stderr or "")
        by_help = tool_from_help(text)
        if _cannot_run(proc, text, started=by_help is not None or "STARTING!" in text):
            raise DeviceError(f"{binary.name} cannot run on {self.serial}: {_last_line(proc)}; "
                              "check it is the android build for this phone's ABI")
        self._help = text
        by_file = tool_from_binary(binary)
        detected, how = (by_help, "--help") if by_help else (by_file, "strings in the binary")
        if self.tool is not None:  # --benchmark-tool given
            if detected and detected != self.tool:
                self._warn(f"--benchmark-tool {self.tool} overrides what {how} says ({detected}) for {binary.name}")
            self.info["tool_detected_by"] = "--benchmark-tool"
            return
        if detected is None:
            raise DeviceError(f"{binary.name} is neither LiteRT's benchmark_model nor benchmark_litert_model (its "
                              "--help and its strings name neither tool's flags); pass the right binary, or "
                              "--benchmark-tool tflite|litert if it is one")
        self.tool = detected
        self.info["tool_detected_by"] = how
        _log.info("%s on %s is %s (from %s)", binary.name, self.serial, TOOL_NAMES[detected], how)

    def _settle_cpu_mask(self) -> None:
        o = self.options
        if o.cpu_mask is not None and o.cpu_mask.lower() == "none":
            self.cpu_mask, source = None, "none"
        elif o.cpu_mask is not None:
            self.cpu_mask, source = check_cpu_mask(o.cpu_mask), "user"
        else:
            values, name = self.adb.cpu_values(self.serial)
            self.cpu_mask = big_core_mask(values) if values else None
            if not values:
                source = "unknown"
                self._warn(f"cannot read CPU capacities on {self.serial}; running without a CPU mask "
                           "(give one with --cpu-mask)")
            else:
                source = name if self.cpu_mask else f"{name} (all alike)"
        self.info["cpu_mask_source"] = source

    def _warn(self, msg: str) -> None:
        _log.warning("%s", msg)
        self.warnings.append(msg)

    # -- per row ----------------------------------------------------------------------------
    def push_model(self, model: Path) -> str:
        """Copy a .tflite to the phone once; returns its remote path."""
        model = Path(model)
        if model not in self._pushed:
            safe = re.sub(r"[^A-Za-z0-9._-]", "_", model.name)
            remote = f"{REMOTE_DIR}/m{len(self._pushed)}_{safe}"
            self.adb.push(self.serial, model, remote)
            self._pushed[model] = remote
        return self._pushed[model]

    def _env(self) -> list[str]:
        return ["env", f"LD_LIBRARY_PATH={REMOTE_DIR}"] if self._libs else []

    def strict(self) -> bool:
        """Whether accelerator rows ask the tool to refuse a CPU fallback."""
        o = self.options
        if o.backend == "cpu" or o.require_full_delegation is False:
            return False
        return o.require_full_delegation is True or self.tool == LITERT

    def command(self, remote_model: str, threads: int, warmup: int, runs: int, strict: bool | None = None) -> list[str]:
        """The argument list run on the phone (quoted by :meth:`Adb.shell`), with the flags of its tool."""
        o = self.options
        tool = self.tool or TFLITE
        strict = self.strict() if strict is None else strict
        argv = self._env() + (["taskset", check_cpu_mask(self.cpu_mask)] if self.cpu_mask else [])
        argv += [self.remote_binary, f"--graph={remote_model}", f"--num_threads={int(threads)}",
                 f"--warmup_runs={int(warmup)}", f"--num_runs={int(runs)}", "--warmup_min_secs=0", "--min_secs=0"]
        if tool == TFLITE:
            # tflite/tools/delegates/*_delegate_provider.cc; benchmark_tflite_model.cc "require_full_delegation"
            argv.append(f"--use_xnnpack={'true' if o.backend == 'cpu' else 'false'}")
            if o.backend in ("gpu", "nnapi"):
                argv.append(f"--use_{o.backend}=true")
            if strict:
                argv.append("--require_full_delegation=true")
        else:
            # litert/tools/benchmark_litert_model.h DefaultParams(): use_cpu defaults to true, and
            # use_cpu together with require_full_delegation aborts (benchmark_litert_model.cc:109-114)
            if self._help and "num_threads" not in self._help and not any("--num_threads" in w for w in self.warnings):
                self._warn("benchmark_litert_model's --help does not list --num_threads: older builds ignore it "
                           "and run with their default thread count whatever --threads says; use a newer build "
                           "to trust the thread counts of the rows")
            if o.backend == "cpu":
                argv += ["--use_cpu=true", "--use_gpu=false", "--use_npu=false"]
            else:
                argv += ["--use_gpu=true", "--use_npu=false", f"--use_cpu={'false' if strict else 'true'}"]
                if strict:
                    argv.append("--require_full_delegation=true")
        return argv

    def cool_down(self) -> dict[str, Any]:
        """Wait as the options ask before a row; returns the row's ``thermal_before`` and ``cool_down_s``,
        and ``too_hot`` (the level still above ``max_thermal`` after the longest wait)."""
        o = self.options
        start = self._clock()
        if o.cool_down_s > 0:
            self._sleep(o.cool_down_s)
        level = self.adb.thermal_level(self.serial)
        too_hot = False
        if o.max_thermal is not None:
            if level is None:
                if "no thermal status" not in " ".join(self.warnings):
                    self._warn(f"{self.serial} reports no thermal status ('dumpsys thermalservice'); "
                               "--max-thermal cannot wait for it")
            else:
                while level > o.max_thermal and self._clock() - start < o.cool_down_timeout_s + o.cool_down_s:
                    left = o.cool_down_timeout_s + o.cool_down_s - (self._clock() - start)
                    self._sleep(max(0.0, min(o.poll_s, left)))
                    level = self.adb.thermal_level(self.serial)
                    if level is None:  # dumpsys stopped saying: nothing left to wait for
                        self._warn(f"{self.serial} reported no thermal status ('dumpsys thermalservice') while "
                                   "cooling down; the row runs without waiting further")
                        break
                too_hot = level is not None and level > o.max_thermal
        return {"thermal_before": thermal_name(level), "cool_down_s": round(self._clock() - start, 3),
                "too_hot": too_hot}

    def run(self, model: Path, threads: int, warmup: int, runs: int) -> RunOutcome:
        """Run one model; the outcome's status is ``ok``, partial / no delegation, or BenchmarkRunFailed
        is raised when the tool exits non-zero, gives no timings or runs past ``timeout`` on a phone that is
        still there. DeviceError (DeviceLost) when the phone is gone."""
        remote = self.push_model(model)
        strict = self.strict()
        proc, text = self._invoke(model, remote, threads, warmup, runs, strict)
        delegation = parse_delegation(text)
        if proc.returncode != 0:  # whatever figures it printed before failing (a warm-up, the results)
            exc = BenchmarkRunFailed(_failure(proc, text))
            if strict:
                return self._refused(model, remote, threads, warmup, runs, delegation, exc, proc.returncode)
            raise exc
        try:
            timings = parse_benchmark_output(text)
        except DeviceError as exc:
            if not strict:
                raise BenchmarkRunFailed(f"{exc} (exit {proc.returncode})") from exc
            return self._refused(model, remote, threads, warmup, runs, delegation, exc, proc.returncode)
        return self._judge(timings, delegation, strict)

    def _invoke(self, model: Path, remote: str, threads: int, warmup: int, runs: int,
                strict: bool) -> tuple[subprocess.CompletedProcess, str]:
        what = f"benchmark ({Path(model).name}, {threads} threads)"
        try:
            proc = self.adb.shell(self.serial, self.command(remote, threads, warmup, runs, strict),
                                  timeout=self.options.timeout, what=what, check=False)
        except AdbTimeout as exc:  # the host gave up; stop the phone's run too (best effort)
            try:
                self.adb.shell(self.serial, ["pkill", "-f", self.remote_binary], timeout=15, check=False)
            except DeviceError:
                pass
            if self.adb.state(self.serial) == "device":  # a model that hangs on a healthy phone: its row fails
                raise BenchmarkRunFailed(str(exc)) from exc
            raise DeviceLost(f"{exc}; {self.serial} no longer answers 'adb get-state'") from exc
        text = (proc.stdout or "") + "\n" + (proc.stderr or "")
        if _cannot_run(proc, text, started="STARTING!" in text):
            raise DeviceError(f"the benchmark binary cannot run on {self.serial}: {_last_line(proc)}; "
                              "check it is the android build for this phone's ABI")
        m = re.search(r"Unconsumed cmdline flags:\s*(.+)", text)
        if m:  # the tool ignores flags it does not know: every row would be mislabelled
            raise DeviceError(f"the benchmark binary ignored {m.group(1).strip()[:120]}: it is not "
                              f"{TOOL_NAMES[self.tool or TFLITE]}; pass --benchmark-tool "
                              f"{LITERT if (self.tool or TFLITE) == TFLITE else TFLITE} or the right binary")
        return proc, text

    def _refused(self, model: Path, remote: str, threads: int, warmup: int, runs: int, delegation: Delegation,
                 exc: DeviceError, code: int) -> RunOutcome:
        """A strict accelerator run failed: partial delegation, a missing accelerator, or a failure."""
        from edge_derm.benchmarks.harness import OK

        backend = self.options.backend.upper()
        if delegation.accelerator_missing:
            return RunOutcome(None, NOT_DELEGATED, f"LiteRT could not load its {backend} accelerator library; push "
                              "libLiteRtClGlAccelerator.so with --benchmark-lib")
        if delegation.refused:
            return RunOutcome(None, PARTIAL, f"the {backend} cannot take the whole model: the tool refused the "
                              f"CPU fallback ({delegation.refused})", _delegation_dict(delegation, self.options.backend))
        why = str(exc) if isinstance(exc, BenchmarkRunFailed) else f"{exc} (exit {code})"  # the former says it
        if self.tool != LITERT:
            raise BenchmarkRunFailed(why) from exc
        # An optimised benchmark_litert_model logs no reason for a failed compile (litert/cc/litert_macros.h
        # PrintLog is compiled out under NDEBUG): the interpreter's "Replacing" line may tell, and a second
        # run with the CPU fallback tells for sure (and gives the row its timings).
        detail = _delegation_dict(delegation, self.options.backend)
        if self.options.require_full_delegation is True:
            if detail and detail["nodes"] < detail["total"]:
                return RunOutcome(None, PARTIAL, f"the {backend} took {detail['nodes']} of {detail['total']} nodes; "
                                  "the tool refused the CPU fallback (--require-full-delegation)", detail)
            raise BenchmarkRunFailed(f"{why} (with --require_full_delegation an optimised benchmark_litert_model "
                                     "does not say whether the GPU refused part of the model)") from exc
        proc, text = self._invoke(model, remote, threads, warmup, runs, strict=False)
        if proc.returncode != 0:
            raise BenchmarkRunFailed(f"{_failure(proc, text)}; with and without --require_full_delegation")
        try:
            timings = parse_benchmark_output(text)
        except DeviceError as exc2:
            raise BenchmarkRunFailed(f"{exc2} (exit {proc.returncode}; with and without "
                                     "--require_full_delegation)") from exc2
        # the rerun's own lines decide, as for any run with the CPU fallback allowed
        out = self._judge(timings, parse_delegation(text), strict=False)
        if out.status != OK:
            out.reason = f"{out.reason} (refused with --require_full_delegation, rerun with the CPU fallback)"
        return out

    def _judge(self, timings: DeviceTimings, delegation: Delegation, strict: bool) -> RunOutcome:
        """The status of a run that gave timings, from the delegation lines."""
        from edge_derm.benchmarks.harness import OK

        backend = self.options.backend
        detail = _delegation_dict(delegation, backend)
        if backend == "cpu":
            return RunOutcome(timings, OK, "", detail)
        name = backend.upper()
        if self.tool == LITERT:
            if strict:  # it ran with no CPU in the accelerator set: fully delegated by construction
                return RunOutcome(timings, OK, "", detail or {"full": True})
            if delegation.accelerator_missing:
                return RunOutcome(timings, NOT_DELEGATED, f"LiteRT could not load its {name} accelerator "
                                  "library, so the CPU ran the model; push it with --benchmark-lib", detail)
            if detail and detail.get("total") and detail["nodes"] > 0:
                if detail["nodes"] < detail["total"]:
                    return RunOutcome(timings, PARTIAL, f"the {name} took {detail['nodes']} of {detail['total']} "
                                      f"nodes ({detail['partitions']} partitions); the CPU ran the rest", detail)
                return RunOutcome(timings, OK, "", detail)
            # On Android the interpreter always prints "Replacing N out of M node(s)" (TFLITE_LOG_PROD): no
            # such line for the accelerator means it took nothing
            cpu = _delegation_dict(delegation, "cpu")
            said = f"only {cpu['delegate']}'s" if cpu else "no"
            return RunOutcome(timings, NOT_DELEGATED, f"{said} 'Replacing N out of M node(s)' line, none for the "
                              f"{name}: the {name} took no node, so the CPU ran the model", detail or cpu)
        provider = _PROVIDERS[backend]
        applied = [a for a in delegation.applied if a[0].upper() == provider]
        if not applied:
            return RunOutcome(timings, NOT_DELEGATED, f"no 'Explicitly applied {provider} delegate' line: the "
                              f"{provider} delegate was not created, so the CPU ran the model", detail)
        kind, kernels = applied[0][1], applied[0][2]
        if kind == "full":
            return RunOutcome(timings, OK, "", detail)
        if kind == "none":
            return RunOutcome(timings, NOT_DELEGATED, f"the {provider} delegate took no node of the model; the "
                              "CPU ran it", detail)
        took = (f"{detail['nodes']} of {detail['total']} nodes" if detail and detail.get("total")
                else f"{kernels} delegate kernels")
        return RunOutcome(timings, PARTIAL, f"the {provider} delegate took {took}; the CPU ran the rest", detail)

    def cleanup(self) -> None:
        """Remove the pushed models (the binary stays for the next run)."""
        if self._pushed:
            self.adb.shell(self.serial, ["rm", "-f", *self._pushed.values()], what="rm", check=False)
            self._pushed.clear()


def _delegation_dict(d: Delegation, backend: str) -> dict[str, Any] | None:
    """The accelerator's share of the graph from the first "Replacing N out of M node(s)" line of a non-CPU
    delegate (for ``cpu``: of the CPU delegate)."""
    for name, nodes, total, parts in d.replaced:
        is_cpu = any(c in name.lower() for c in _CPU_DELEGATES)
        if is_cpu == (backend == "cpu"):
            return {"delegate": name, "nodes": nodes, "total": total, "partitions": parts}
    return None


def android_rows(entries: list[Any], config: Any, base_row: Callable[[Any, str, int], dict[str, Any]]
                 ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Every (model, threads) row on every phone of ``config``, one phone after another.

    Args:
        entries: the harness's model entries (``path``, ``name``, ``status``).
        config: the :class:`BenchmarkConfig`.
        base_row: builds a row's common fields for (entry, device, threads).

    Raises:
        DeviceError: a fault no row can survive (no device, wrong binary or ABI, a backend the tool
            lacks, the phone lost mid-run), as one line.
    """
    from edge_derm import progress
    from edge_derm.benchmarks.harness import FAILED_RUN, OK

    adb = Adb(config.adb, timeout=min(60.0, config.timeout))  # quick calls (devices, getprop) honour --timeout too
    serials = adb.select(config.serials)
    options = AndroidOptions(binary=config.benchmark_binary, use_gpu=config.use_gpu, use_nnapi=config.use_nnapi,
                             tool=config.benchmark_tool, cpu_mask=config.cpu_mask,
                             require_full_delegation=config.require_full_delegation, libs=list(config.benchmark_libs),
                             timeout=config.timeout, cool_down_s=config.cool_down,
                             max_thermal=THERMAL_LEVELS[config.max_thermal] if config.max_thermal else None,
                             cool_down_timeout_s=config.cool_down_timeout)
    delegate = {"cpu": "xnnpack", "gpu": "gpu", "nnapi": "nnapi"}[options.backend]
    rows, devices = [], []
    for serial in serials:  # one after another: phones share the host's USB bus and our attention
        bench = AndroidBenchmark(adb, serial, options)
        info = dict(bench.prepare())
        big = bin(int(bench.cpu_mask, 16)).count("1") if bench.cpu_mask else None
        for t in config.threads:
            if big is not None and t > big:
                bench._warn(f"{t} threads on {serial} exceed the {big} CPUs of mask {bench.cpu_mask}; "
                            "they will share cores")
        total = len(entries) * len(config.threads)
        done = 0
        try:
            for e in progress.track(entries, f"timing on {info.get('model') or serial}"):
                for threads in config.threads:
                    done += 1
                    row = base_row(e, f"android:{serial}", threads)
                    row.update(delegate=delegate, benchmark_tool=bench.tool, cpu_mask=bench.cpu_mask,
                               cpu_mask_source=info.get("cpu_mask_source"), device_model=info.get("model"),
                               soc=info.get("soc"), android=info.get("android"))
                    if e.status == OK:
                        try:
                            _time_row(bench, e, threads, config, row, FAILED_RUN, OK)
                        except DeviceLost as exc:
                            raise DeviceLost(f"{exc} (lost during row {done} of {total}: {e.name}, {threads} "
                                             f"threads; rows before it were measured but are not kept)") from exc
                    rows.append(row)
        finally:
            try:
                bench.cleanup()
            except DeviceError as exc:  # never mask the first fault with a cleanup one
                _log.warning("cleanup on %s failed: %s", serial, exc)
        info["warnings"] = list(bench.warnings)
        devices.append({"device": f"android:{serial}", **info})
    return rows, devices


def _time_row(bench: AndroidBenchmark, e: Any, threads: int, config: Any, row: dict[str, Any], failed: str,
              ok: str) -> None:
    """Cool down, run, and fill ``row`` (timings, status, thermal readings, delegation)."""
    cool = bench.cool_down()
    row.update(thermal_before=cool["thermal_before"], cool_down_s=cool["cool_down_s"])
    try:
        out = bench.run(e.path, threads, config.warmup, config.runs)
    except BenchmarkRunFailed as exc:
        row["status"], row["reason"] = failed, str(exc)
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
    if cool["too_hot"] and row["status"] == ok:
        row["status"] = THROTTLED
        row["reason"] = (f"thermal status still {cool['thermal_before']} after {cool['cool_down_s']:g} s "
                         f"(--max-thermal {config.max_thermal}); the timings may be throttled")


def _cannot_run(proc: subprocess.CompletedProcess, text: str, started: bool) -> bool:
    """The phone's shell could not start the binary: exit 126/127, or, where the binary shows no sign of
    having started, the shell's words for it (never searched in the output of a tool that ran: a driver
    line saying "permission denied" is not a wrong ABI)."""
    if proc.returncode in (126, 127):
        return True
    return not started and any(s in text.lower() for s in _NOT_EXECUTABLE)


def _failure(proc: subprocess.CompletedProcess, text: str) -> str:
    """One line for a run that exited non-zero: its first ``ERROR:``/``FATAL:`` line (and its last one if
    different), else the output's last line."""
    raw = text.splitlines()
    start = 0
    while start < len(raw) and raw[start].lstrip().startswith("#"):
        start += 1
    errors = [c.strip() for r, c in zip(raw[start:], clean_lines(text))
              if r.lstrip().startswith(("ERROR:", "FATAL:")) and c.strip()]
    first = errors[0][:160] if errors else None
    last = _last_line(proc)
    if first is None:
        return f"the benchmark tool failed (exit {proc.returncode}): {last}"
    more = f"; last: {errors[-1][:80]}" if len(errors) > 1 and errors[-1] != errors[0] else ""
    return f"the benchmark tool failed (exit {proc.returncode}): {first}{more}"


def _last_line(proc: subprocess.CompletedProcess) -> str:
    for stream in (proc.stderr, proc.stdout):
        lines = [ln.strip() for ln in (stream or "").splitlines() if ln.strip()]
        if lines:
            return lines[-1][:200]
    return "no output"
