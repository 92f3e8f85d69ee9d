"""The benchmark tool on one phone: push it and its libraries, tell which tool it is, run a model, judge.

Two tools are supported, told apart on the phone (:func:`.device.tool_from_help`,
:func:`.device.tool_from_binary`): the classic TFLite ``benchmark_model`` (``--use_xnnpack/--use_gpu/
--use_nnapi``) and LiteRT's CompiledModel ``benchmark_litert_model`` (``--use_cpu/--use_gpu/--use_npu``;
Bazel builds it as ``//litert/tools:benchmark_model``, so its file name proves nothing). Each gets its own
flags; a backend the tool cannot run is a one-line error, never a row timed on the CPU under another label.
"""

from __future__ import annotations

import logging
import re
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from edge_derm.artefacts import NOT_DELEGATED, OK, PARTIAL
from edge_derm.benchmarks.android.adb import Adb, AdbTimeout, BenchmarkRunFailed, DeviceLost, last_line
from edge_derm.benchmarks.android.device import (ABI_64, big_core_mask, check_cpu_mask, elf_info, thermal_name,
                                                 tool_from_binary, tool_from_help)
from edge_derm.benchmarks.android.verdict import RunOutcome, cannot_run, delegation_dict, failure, judge
from edge_derm.benchmarks.parsers import LITERT, TFLITE, TOOL_NAMES, Delegation, parse_benchmark_output, parse_delegation
from edge_derm.errors import DeviceError

_log = logging.getLogger(__name__)

REMOTE_DIR = "/data/local/tmp/edge_derm"
BACKENDS = ("cpu", "gpu", "nnapi")
TOOL_CHOICES = ("auto", TFLITE, LITERT)

#: injectable for tests: cool-down waits never sleep for real there
SLEEP: Callable[[float], None] = time.sleep
CLOCK: Callable[[], float] = time.monotonic


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
        if bits == 32 and any(a in ABI_64 for a in device_abis):
            self.warn(f"{binary.name} is a 32-bit {built_for[0]} build but {self.serial} is a 64-bit phone "
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
        if cannot_run(proc, text, started=by_help is not None or "STARTING!" in text):
            raise DeviceError(f"{binary.name} cannot run on {self.serial}: {last_line(proc)}; "
                              "check it is the android build for this phone's ABI")
        self._help = text
        by_file = tool_from_binary(binary)
        detected, how = (by_help, "--help") if by_help else (by_file, "strings in the binary")
        if self.tool is not None:  # --benchmark-tool given
            if detected and detected != self.tool:
                self.warn(f"--benchmark-tool {self.tool} overrides what {how} says ({detected}) for {binary.name}")
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
                self.warn(f"cannot read CPU capacities on {self.serial}; running without a CPU mask "
                           "(give one with --cpu-mask)")
            else:
                source = name if self.cpu_mask else f"{name} (all alike)"
        self.info["cpu_mask_source"] = source

    def warn(self, msg: str) -> None:
        """Log ``msg`` and keep it in the phone's record (its ``warnings`` in the results)."""
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
                self.warn("benchmark_litert_model's --help does not list --num_threads: older builds ignore it "
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
                    self.warn(f"{self.serial} reports no thermal status ('dumpsys thermalservice'); "
                               "--max-thermal cannot wait for it")
            else:
                while level > o.max_thermal and self._clock() - start < o.cool_down_timeout_s + o.cool_down_s:
                    left = o.cool_down_timeout_s + o.cool_down_s - (self._clock() - start)
                    self._sleep(max(0.0, min(o.poll_s, left)))
                    level = self.adb.thermal_level(self.serial)
                    if level is None:  # dumpsys stopped saying: nothing left to wait for
                        self.warn(f"{self.serial} reported no thermal status ('dumpsys thermalservice') while "
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
            exc = BenchmarkRunFailed(failure(proc, text))
            if strict:
                return self._refused(model, remote, threads, warmup, runs, delegation, exc, proc.returncode)
            raise exc
        try:
            timings = parse_benchmark_output(text)
        except DeviceError as exc:
            if not strict:
                raise BenchmarkRunFailed(f"{exc} (exit {proc.returncode})") from exc
            return self._refused(model, remote, threads, warmup, runs, delegation, exc, proc.returncode)
        return judge(self.tool, self.options.backend, timings, delegation, strict)

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
        if cannot_run(proc, text, started="STARTING!" in text):
            raise DeviceError(f"the benchmark binary cannot run on {self.serial}: {last_line(proc)}; "
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
        backend = self.options.backend.upper()
        if delegation.accelerator_missing:
            return RunOutcome(None, NOT_DELEGATED, f"LiteRT could not load its {backend} accelerator library; push "
                              "libLiteRtClGlAccelerator.so with --benchmark-lib")
        if delegation.refused:
            return RunOutcome(None, PARTIAL, f"the {backend} cannot take the whole model: the tool refused the "
                              f"CPU fallback ({delegation.refused})", delegation_dict(delegation, self.options.backend))
        why = str(exc) if isinstance(exc, BenchmarkRunFailed) else f"{exc} (exit {code})"  # the former says it
        if self.tool != LITERT:
            raise BenchmarkRunFailed(why) from exc
        # An optimised benchmark_litert_model logs no reason for a failed compile (litert/cc/litert_macros.h
        # PrintLog is compiled out under NDEBUG): the interpreter's "Replacing" line may tell, and a second
        # run with the CPU fallback tells for sure (and gives the row its timings).
        detail = delegation_dict(delegation, self.options.backend)
        if self.options.require_full_delegation is True:
            if detail and detail["nodes"] < detail["total"]:
                return RunOutcome(None, PARTIAL, f"the {backend} took {detail['nodes']} of {detail['total']} nodes; "
                                  "the tool refused the CPU fallback (--require-full-delegation)", detail)
            raise BenchmarkRunFailed(f"{why} (with --require_full_delegation an optimised benchmark_litert_model "
                                     "does not say whether the GPU refused part of the model)") from exc
        proc, text = self._invoke(model, remote, threads, warmup, runs, strict=False)
        if proc.returncode != 0:
            raise BenchmarkRunFailed(f"{failure(proc, text)}; with and without --require_full_delegation")
        try:
            timings = parse_benchmark_output(text)
        except DeviceError as exc2:
            raise BenchmarkRunFailed(f"{exc2} (exit {proc.returncode}; with and without "
                                     "--require_full_delegation)") from exc2
        # the rerun's own lines decide, as for any run with the CPU fallback allowed
        out = judge(self.tool, self.options.backend, timings, parse_delegation(text), strict=False)
        if out.status != OK:
            out.reason = f"{out.reason} (refused with --require_full_delegation, rerun with the CPU fallback)"
        return out

    def cleanup(self) -> None:
        """Remove the pushed models (the binary stays for the next run)."""
        if self._pushed:
            self.adb.shell(self.serial, ["rm", "-f", *self._pushed.values()], what="rm", check=False)
            self._pushed.clear()
