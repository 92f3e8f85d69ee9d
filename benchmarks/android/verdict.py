"""What a benchmark run on the phone came to: its row status from the tool's output, and its failures.

A backend the tool cannot run fully is never a row timed on the CPU under another label: the delegation
lines each tool prints (parsed by :func:`edge_derm.benchmarks.parsers.parse_delegation`) decide whether an
accelerator row is ``ok``, ``partially delegated`` or ``not delegated``.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from typing import Any

from edge_derm.artefacts import NOT_DELEGATED, OK, PARTIAL
from edge_derm.benchmarks.android.adb import last_line
from edge_derm.benchmarks.parsers import LITERT, Delegation, DeviceTimings, clean_lines

_NOT_EXECUTABLE = ("not executable", "exec format error", "permission denied", "cannot execute",
                   "can't execute")
# the classic tool's delegate provider names (tflite/tools/delegates/*_delegate_provider.cc GetName())
_PROVIDERS = {"gpu": "GPU", "nnapi": "NNAPI"}
_CPU_DELEGATES = ("xnnpack", "ynnpack")


@dataclass
class RunOutcome:
    """One row's run: its timings (None if it gave none), status, reason and delegation facts."""

    timings: DeviceTimings | None
    status: str
    reason: str = ""
    delegation: dict[str, Any] | None = None


def judge(tool: str | None, backend: str, timings: DeviceTimings, delegation: Delegation,
          strict: bool) -> RunOutcome:
    """The status of a run that gave timings, from the delegation lines of ``tool`` (``litert`` or the
    classic ``tflite``) for ``backend``; ``strict``: it ran with ``--require_full_delegation``."""
    detail = delegation_dict(delegation, backend)
    if backend == "cpu":
        return RunOutcome(timings, OK, "", detail)
    if tool == LITERT:
        return _judge_litert(backend.upper(), timings, delegation, detail, strict)
    return _judge_tflite(_PROVIDERS[backend], timings, delegation, detail)


def _judge_litert(name: str, timings: DeviceTimings, delegation: Delegation, detail: dict[str, Any] | None,
                  strict: bool) -> RunOutcome:
    """An accelerator row of the CompiledModel tool: its "Replacing N out of M node(s)" lines decide."""
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
    cpu = delegation_dict(delegation, "cpu")
    said = f"only {cpu['delegate']}'s" if cpu else "no"
    return RunOutcome(timings, NOT_DELEGATED, f"{said} 'Replacing N out of M node(s)' line, none for the "
                      f"{name}: the {name} took no node, so the CPU ran the model", detail or cpu)


def _judge_tflite(provider: str, timings: DeviceTimings, delegation: Delegation,
                  detail: dict[str, Any] | None) -> RunOutcome:
    """An accelerator row of the classic tool: its "Explicitly applied <provider> delegate" line decides."""
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


def delegation_dict(d: Delegation, backend: str) -> dict[str, Any] | None:
    """The accelerator's share of the graph from the first "Replacing N out of M node(s)" line of a non-CPU
    delegate (for ``cpu``: of the CPU delegate)."""
    for name, nodes, total, parts in d.replaced:
        is_cpu = any(c in name.lower() for c in _CPU_DELEGATES)
        if is_cpu == (backend == "cpu"):
            return {"delegate": name, "nodes": nodes, "total": total, "partitions": parts}
    return None


def cannot_run(proc: subprocess.CompletedProcess, text: str, started: bool) -> bool:
    """The phone's shell could not start the binary: exit 126/127, or, where the binary shows no sign of
    having started, the shell's words for it (never searched in the output of a tool that ran: a driver
    line saying "permission denied" is not a wrong ABI)."""
    if proc.returncode in (126, 127):
        return True
    return not started and any(s in text.lower() for s in _NOT_EXECUTABLE)


def failure(proc: subprocess.CompletedProcess, text: str) -> str:
    """One line for a run that exited non-zero: its first ``ERROR:``/``FATAL:`` line (and its last one if
    different), else the output's last line."""
    raw = text.splitlines()
    start = 0
    while start < len(raw) and raw[start].lstrip().startswith("#"):
        start += 1
    errors = [c.strip() for r, c in zip(raw[start:], clean_lines(text))
              if r.lstrip().startswith(("ERROR:", "FATAL:")) and c.strip()]
    first = errors[0][:160] if errors else None
    last = last_line(proc)
    if first is None:
        return f"the benchmark tool failed (exit {proc.returncode}): {last}"
    more = f"; last: {errors[-1][:80]}" if len(errors) > 1 and errors[-1] != errors[0] else ""
    return f"the benchmark tool failed (exit {proc.returncode}): {first}{more}"
