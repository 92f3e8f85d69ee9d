"""A thin adb client: devices, ``adb shell`` with quoted arguments, push, and the phone's facts.

Every adb call takes an argument list (no shell on the host); the one string that ``adb shell`` hands to
the phone's shell is built with ``shlex.join`` from a list, so no user text is ever interpreted there.
Every fault is a one-line :class:`DeviceError`; a phone that went away is :class:`DeviceLost`, a call that
ran past its time :class:`AdbTimeout`.
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

from edge_derm.benchmarks.android.device import cpu_list, thermal_name
from edge_derm.errors import DeviceError

_log = logging.getLogger(__name__)

# adb's own complaints that the phone is gone (whole stderr lines, case as adb prints them); a tool's
# "ERROR: ..." lines on the phone never match
_ADB_LOST = re.compile(r"^(?:adb: |error: )(?:device '[^']*' not found|device (?:offline|unauthorized)\b.*|closed|"
                       r"no devices/emulators found)$")


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
            raise DeviceError(f"{what} failed on {serial} (exit {proc.returncode}): {last_line(proc)}")
        return proc

    # -- devices ----------------------------------------------------------------------------
    def devices(self) -> list[AdbDevice]:
        """Devices adb knows of, in any state (the call honours ``timeout``)."""
        proc = self._run(["devices", "-l"], what="adb devices")
        if proc.returncode != 0:
            raise DeviceError(f"'adb devices' failed: {last_line(proc)}")
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
            raise DeviceError(f"adb push {local} to {serial}:{remote} failed: {last_line(proc)}")

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
        cpus = cpu_list(proc.stdout or "") if proc.returncode == 0 else []
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


def last_line(proc: subprocess.CompletedProcess) -> str:
    """The last non-empty line of stderr (else stdout), for one-line errors."""
    for stream in (proc.stderr, proc.stdout):
        lines = [ln.strip() for ln in (stream or "").splitlines() if ln.strip()]
        if lines:
            return lines[-1][:200]
    return "no output"
