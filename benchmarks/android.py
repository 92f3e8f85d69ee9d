"""Android phones over adb: discover devices, push LiteRT's ``benchmark_model`` and models, run, parse.

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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_derm.benchmarks.config import CPU_MASK
from edge_derm.benchmarks.parsers import DeviceTimings, parse_benchmark_output
from edge_derm.errors import DeviceError

_log = logging.getLogger(__name__)

REMOTE_DIR = "/data/local/tmp/edge_derm"
THERMAL_NAMES = {0: "none", 1: "light", 2: "moderate", 3: "severe", 4: "critical", 5: "emergency", 6: "shutdown"}
# ELF e_machine -> the Android ABIs that can run it
_ELF_ABIS = {0xB7: ("arm64-v8a",), 0x28: ("armeabi-v7a", "armeabi"), 0x3E: ("x86_64",), 0x03: ("x86",),
             0xF3: ("riscv64",)}
_NOT_EXECUTABLE = ("not executable", "exec format error", "permission denied", "cannot execute",
                   "can't execute")


class BenchmarkRunFailed(DeviceError):
    """One model failed on a healthy device (the row gets this status; other models go on)."""


@dataclass
class AdbDevice:
    """One line of ``adb devices -l``."""

    serial: str
    state: str
    description: str = ""


def elf_abis(binary: Path) -> tuple[str, ...]:
    """Android ABIs an ELF executable is built for; raises DeviceError if it is not an ELF file."""
    head = Path(binary).read_bytes()[:20]
    if len(head) < 20 or head[:4] != b"\x7fELF":
        raise DeviceError(f"{binary} is not an Android executable (no ELF header); "
                          "pass the benchmark_model binary built for android_arm64")
    little = head[5] == 1
    machine = int.from_bytes(head[18:20], "little" if little else "big")
    return _ELF_ABIS.get(machine, (f"elf-machine-{machine:#x}",))


def check_cpu_mask(mask: str) -> str:
    """Validate a ``taskset`` CPU mask (hex, e.g. ``f0``); raises ValueError otherwise."""
    if not CPU_MASK.match(mask):
        raise ValueError(f"--cpu-mask {mask!r} is not a hex CPU mask; use e.g. f0 for CPUs 4-7")
    return mask


class Adb:
    """A thin adb client.

    Args:
        adb: the adb executable (name on PATH or path); default ``adb``.
        timeout: seconds allowed for each quick adb call (push and benchmark runs take their own).
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
            raise DeviceError(f"{what}{where} timed out after {limit:g} s; check the phone "
                              "(screen lock, thermal throttling) or raise --timeout") from exc
        except OSError as exc:
            raise DeviceError(f"cannot run {self.adb}: {exc.strerror or exc}") from exc
        if proc.returncode != 0 and serial:
            # only adb's own complaints ("adb: device offline", "error: device 'X' not found"),
            # never words in a tool's output on the phone
            low = "\n".join(ln for ln in (proc.stderr or "").lower().splitlines()
                            if ln.startswith(("adb: ", "error: ")) and "device" in ln)
            if "unauthorized" in low:
                raise DeviceError(f"device {serial} is unauthorized; unlock it and accept the USB debugging prompt")
            if "offline" in low:
                raise DeviceError(f"device {serial} is offline; reconnect the cable or run 'adb reconnect'")
            if "not found" in low:
                raise DeviceError(f"device {serial} is no longer connected; check the cable and 'adb devices'")
        return proc

    def shell(self, serial: str, argv: list[str], *, timeout: float | None = None, what: str = "adb shell",
              check: bool = True) -> subprocess.CompletedProcess:
        """Run ``argv`` on the phone; each word is quoted, so nothing is interpreted by the remote shell."""
        proc = self._run(["shell", shlex.join([str(a) for a in argv])], serial=serial, timeout=timeout, what=what)
        if check and proc.returncode != 0:
            raise DeviceError(f"{what} failed on {serial} (exit {proc.returncode}): {_last_line(proc)}")
        return proc

    # -- devices ----------------------------------------------------------------------------
    def devices(self) -> list[AdbDevice]:
        """Devices adb knows of, in any state."""
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

    def thermal_status(self, serial: str) -> str | None:
        """The phone's thermal status (none, light, moderate, ...) or None when it does not say."""
        proc = self.shell(serial, ["dumpsys", "thermalservice"], what="dumpsys thermalservice", check=False)
        m = re.search(r"Thermal Status:\s*(\d+)", proc.stdout or "")
        if not m:
            return None
        return THERMAL_NAMES.get(int(m.group(1)), m.group(1))


@dataclass
class AndroidOptions:
    """How ``benchmark_model`` runs on the phone."""

    binary: Path
    use_gpu: bool = False
    use_nnapi: bool = False
    cpu_mask: str | None = None
    timeout: float = 600.0


class AndroidBenchmark:
    """``benchmark_model`` on one phone: prepared once, then run per (model, threads)."""

    def __init__(self, adb: Adb, serial: str, options: AndroidOptions) -> None:
        self.adb, self.serial, self.options = adb, serial, options
        self.remote_binary = f"{REMOTE_DIR}/benchmark_model"
        self.info: dict[str, Any] = {}
        self._pushed: dict[Path, str] = {}

    def prepare(self) -> dict[str, Any]:
        """Read the device facts, check the binary's ABI, push it and make it executable."""
        binary = Path(self.options.binary)
        if not binary.is_file():
            raise DeviceError(f"benchmark binary {binary} not found; download LiteRT's benchmark_model "
                              "for android_arm64 and pass it with --benchmark-binary")
        self.info = self.adb.device_info(self.serial)
        built_for = elf_abis(binary)
        device_abis = self.info["abilist"] or ([self.info["abi"]] if self.info["abi"] else [])
        if device_abis and not set(built_for) & set(device_abis):
            raise DeviceError(f"{binary.name} is built for {built_for[0]} but {self.serial} runs "
                              f"{', '.join(device_abis)}; use the benchmark_model build for {device_abis[0]}")
        self.adb.shell(self.serial, ["mkdir", "-p", REMOTE_DIR], what="mkdir")
        self.adb.push(self.serial, binary, self.remote_binary)
        self.adb.shell(self.serial, ["chmod", "755", self.remote_binary], what="chmod")
        if self.adb.shell(self.serial, ["test", "-x", self.remote_binary], check=False).returncode != 0:
            raise DeviceError(f"benchmark binary is not executable on {self.serial} ({self.remote_binary}); "
                              "/data/local/tmp may be mounted noexec on this phone")
        return self.info

    def push_model(self, model: Path) -> str:
        """Copy a .tflite to the phone once; returns its remote path."""
        model = Path(model)
        if model not in self._pushed:
            safe = re.sub(r"[^A-Za-z0-9._-]", "_", model.name)
            remote = f"{REMOTE_DIR}/m{len(self._pushed)}_{safe}"
            self.adb.push(self.serial, model, remote)
            self._pushed[model] = remote
        return self._pushed[model]

    def command(self, remote_model: str, threads: int, warmup: int, runs: int) -> list[str]:
        """The argument list run on the phone (quoted by :meth:`Adb.shell`)."""
        o = self.options
        argv = ["taskset", check_cpu_mask(o.cpu_mask)] if o.cpu_mask else []
        argv += [self.remote_binary, f"--graph={remote_model}", f"--num_threads={int(threads)}",
                 f"--warmup_runs={int(warmup)}", f"--num_runs={int(runs)}", "--warmup_min_secs=0", "--min_secs=0",
                 f"--use_xnnpack={'false' if (o.use_gpu or o.use_nnapi) else 'true'}"]
        if o.use_gpu:
            argv.append("--use_gpu=true")
        if o.use_nnapi:
            argv.append("--use_nnapi=true")
        return argv

    def run(self, model: Path, threads: int, warmup: int, runs: int) -> DeviceTimings:
        """Run ``benchmark_model`` on one model; BenchmarkRunFailed if the tool reports no timings."""
        remote = self.push_model(model)
        try:
            proc = self.adb.shell(self.serial, self.command(remote, threads, warmup, runs), timeout=self.options.timeout,
                                  what=f"benchmark_model ({Path(model).name}, {threads} threads)", check=False)
        except DeviceError as exc:
            if "timed out" in str(exc):  # the host gave up; stop the phone's run too (best effort)
                try:
                    self.adb.shell(self.serial, ["pkill", "-f", self.remote_binary], timeout=15, check=False)
                except DeviceError:
                    pass
            raise
        text = (proc.stdout or "") + "\n" + (proc.stderr or "")
        if proc.returncode in (126, 127) or any(s in text.lower() for s in _NOT_EXECUTABLE):
            raise DeviceError(f"benchmark_model cannot run on {self.serial}: {_last_line(proc)}; "
                              "check it is the android build for this phone's ABI")
        try:
            return parse_benchmark_output(text)
        except DeviceError as exc:
            raise BenchmarkRunFailed(f"{exc} (exit {proc.returncode})") from exc

    def cleanup(self) -> None:
        """Remove the pushed models (the binary stays for the next run)."""
        if self._pushed:
            self.adb.shell(self.serial, ["rm", "-f", *self._pushed.values()], what="rm", check=False)
            self._pushed.clear()


def _last_line(proc: subprocess.CompletedProcess) -> str:
    for stream in (proc.stderr, proc.stdout):
        lines = [ln.strip() for ln in (stream or "").splitlines() if ln.strip()]
        if lines:
            return lines[-1][:200]
    return "no output"
