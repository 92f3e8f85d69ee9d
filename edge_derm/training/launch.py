"""Start N training workers on this machine for a try-out of multi-worker training (``--workers N``).

Only what ``TF_CONFIG`` needs: N free ports, one ``TF_CONFIG`` per worker (``worker`` i at
``127.0.0.1:port_i``; worker 0 is the chief) and N processes of the same command. On a cluster each node
sets its own ``TF_CONFIG`` and runs ``edge-derm train --distribute multiworker`` itself (README).

The workers dial each other at 127.0.0.1, so their traffic stays on the loopback interface, but
TensorFlow's gRPC server listens on every interface (it binds ``0.0.0.0:port``; TensorFlow 2.19 has
no option for the bind address): on a machine reachable from an untrusted network, firewall the ports.
Each worker runs in its own session (process group): a terminal's Ctrl-C reaches only the launcher,
which forwards it once, gives the workers ``grace`` seconds to clean up, then kills what is left.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from edge_derm.errors import ConfigError

_log = logging.getLogger(__name__)

#: Most local workers: each runs a whole TensorFlow runtime.
MAX_LOCAL_WORKERS = 16


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = (int(v) for v in Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
        return low, high
    except (OSError, ValueError):
        return 32768, 60999  # Linux's default


def free_ports(n: int) -> list[int]:
    """``n`` distinct TCP ports free now on every interface (TensorFlow binds ``0.0.0.0:port``).

    A port is free only until something binds it, and TensorFlow binds it seconds later, when the
    worker joins (it cannot be handed a bound socket). To narrow the window, the ports are drawn below
    the OS's ephemeral range: there no outgoing connection (not even the workers' own gRPC clients)
    takes them meanwhile, only a program that binds that very port. If too few of those are free, the
    OS picks (ephemeral) ports.
    """
    import random

    low, _ = _ephemeral_range()
    ports: list[int] = []
    if low > 10000 + 4 * n:
        rng = random.SystemRandom()
        for port in rng.sample(range(10000, low), min(64 * n, low - 10000)):
            if len(ports) == n:
                break
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                try:
                    s.bind(("0.0.0.0", port))  # what TensorFlow binds (no listen: nothing is exposed)
                except OSError:
                    continue
            ports.append(port)
    if len(ports) == n:
        return ports
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("0.0.0.0", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def local_tf_configs(n: int, ports: Sequence[int] | None = None) -> list[str]:
    """``TF_CONFIG`` of each of ``n`` workers dialling each other at 127.0.0.1 (worker 0 is the chief)."""
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_LOCAL_WORKERS:
        raise ConfigError(f"--workers must be from 1 to {MAX_LOCAL_WORKERS}, got {n!r}")
    ports = list(ports) if ports is not None else free_ports(n)
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    return [json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}}) for i in range(n)]


def _last_error(path: Path) -> str | None:
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return None
    errors = [line[len("error: "):] for line in lines if line.startswith("error: ")]
    return errors[-1] if errors else None


def _signal_name(code: int) -> str:
    try:
        return signal.Signals(-code).name
    except ValueError:
        return f"signal {-code}"


@dataclass
class LocalRun:
    """How a local multi-worker run ended."""

    #: Exit code for the launcher: 0, the chief's code when it failed with one, else 1 (130: interrupted).
    code: int
    #: One line for the launcher to print as its ``error:`` line (None: nothing failed, or the chief printed its own).
    message: str | None = None
    #: What failed first when the chief printed its own error line afterwards (e.g. "worker 1 (exit 1): ...").
    first_failure: str | None = None
    #: Exit code of each worker (negative: killed by that signal).
    codes: list[int] = field(default_factory=list)


def run_local_workers(command: Sequence[str], n: int, *, grace: float = 30.0, stop_wait: float = 10.0) -> LocalRun:
    """Run ``command`` as ``n`` workers with loopback ``TF_CONFIG``s; wait for all of them.

    Worker 0 (the chief) shares this process's stdout and stderr; the others' stderr goes to temporary
    log files (read before they are removed). When a non-chief worker fails, the others get ``grace``
    seconds to notice (the chief reports a lost worker itself and keeps the completed steps); when the
    chief fails, the others are stopped at once. Stopping is SIGTERM to the worker's process group,
    then SIGKILL after ``stop_wait`` seconds. On Ctrl-C (KeyboardInterrupt) the workers, which run in
    their own sessions and so did not get the terminal's SIGINT, get one SIGINT and ``grace`` seconds to
    clean up before they are killed; the KeyboardInterrupt is then re-raised.
    """
    configs = local_tf_configs(n)
    procs: list[subprocess.Popen] = []
    _log.warning("the local workers' gRPC servers listen on all interfaces (TensorFlow binds 0.0.0.0), ports %s; "
                 "they talk over 127.0.0.1 only", ", ".join(json.loads(configs[0])["cluster"]["worker"]))
    with tempfile.TemporaryDirectory(prefix="edge-derm-workers-") as logs:
        log_paths = [Path(logs) / f"worker{i}.log" for i in range(n)]
        failed: list[int] = []  # worker indices in the order their failure was seen
        try:
            for i, tf_config in enumerate(configs):
                procs.append(_start_worker(command, tf_config, None if i == 0 else log_paths[i]))
            _log.info("started %d local workers", n)
            try:
                _wait(procs, failed, grace)
            except KeyboardInterrupt:
                _stop(procs, signal.SIGINT, grace)
                raise
        finally:
            _stop(procs, signal.SIGTERM, stop_wait)
        codes = [p.returncode for p in procs]
        failed += [i for i, c in enumerate(codes) if c != 0 and i not in failed]
        return _outcome(codes, failed, log_paths)


def _start_worker(command: Sequence[str], tf_config: str, log_path: Path | None) -> subprocess.Popen:
    """Start one worker in its own session; the chief (``log_path`` None) keeps this process's output,
    the others write their stderr to ``log_path``."""
    env = {**os.environ, "TF_CONFIG": tf_config}
    if log_path is None:
        return subprocess.Popen(list(command), env=env, stdin=subprocess.DEVNULL, start_new_session=True)
    with open(log_path, "wb") as log:
        return subprocess.Popen(list(command), env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=log, start_new_session=True)


def _wait(procs: list[subprocess.Popen], failed: list[int], grace: float) -> None:
    """Wait until every worker has ended, the chief has failed, or ``grace`` seconds after the first failure.

    ``failed`` gets the index of each worker seen failing, in order.
    """
    failed_at: float | None = None
    while any(p.poll() is None for p in procs):
        for i, p in enumerate(procs):
            if p.poll() not in (None, 0) and i not in failed:
                failed.append(i)
        if failed and failed_at is None:
            failed_at = time.monotonic()
        if 0 in failed or (failed_at is not None and time.monotonic() - failed_at > grace):
            break
        time.sleep(0.2)


def _outcome(codes: list[int], failed: list[int], log_paths: list[Path]) -> LocalRun:
    """How the run ended, from the workers' exit codes and the order their failures were seen."""
    if not failed:
        return LocalRun(0, codes=codes)
    first = failed[0]

    def describe(i: int) -> str:
        who = "worker 0 (the chief)" if i == 0 else f"worker {i}"
        c = codes[i]
        if c < 0:
            return f"{who} was killed by {_signal_name(c)}"
        text = _last_error(log_paths[i]) if i else None
        return f"{who} failed (exit {c})" + (f": {text}" if text else "")

    chief = codes[0]
    if chief > 0:  # the chief printed its own error line
        return LocalRun(chief, first_failure=describe(first) if first != 0 else None, codes=codes)
    if chief < 0:
        extra = f" after {describe(first)}" if first != 0 else ""
        return LocalRun(1, f"{describe(0)}{extra}; the other workers were stopped", codes=codes)
    return LocalRun(1, describe(first), codes=codes)


def _stop(procs: list[subprocess.Popen], sig: int = signal.SIGTERM, wait: float = 10.0) -> None:
    """Send ``sig`` to the process group of each worker still running; SIGKILL the groups still there after
    ``wait`` seconds. Each worker leads its own group (``start_new_session``)."""
    running = [p for p in procs if p.poll() is None]
    for p in running:
        _killpg(p, sig)
    deadline = time.monotonic() + wait
    for p in running:
        try:
            p.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            _killpg(p, signal.SIGKILL)
            p.wait()


def _killpg(p: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(p.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass
