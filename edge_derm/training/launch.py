"""Start N training workers on this machine for a try-out of multi-worker training (``--workers N``).

Only what ``TF_CONFIG`` needs: N free loopback ports, one ``TF_CONFIG`` per worker (``worker`` i at
``127.0.0.1:port_i``; worker 0 is the chief) and N processes of the same command. On a cluster each node
sets its own ``TF_CONFIG`` and runs ``edge-derm train --distribute multiworker`` itself (README).
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
from pathlib import Path
from typing import Sequence

from edge_derm.errors import ConfigError

_log = logging.getLogger(__name__)

#: Most local workers: each runs a whole TensorFlow runtime.
MAX_LOCAL_WORKERS = 16


def free_ports(n: int) -> list[int]:
    """``n`` distinct TCP ports free on 127.0.0.1 now (the OS picks them)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def local_tf_configs(n: int, ports: Sequence[int] | None = None) -> list[str]:
    """``TF_CONFIG`` of each of ``n`` workers on the loopback interface (worker 0 is the chief)."""
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


def run_local_workers(command: Sequence[str], n: int, *, grace: float = 30.0) -> tuple[int, str | None]:
    """Run ``command`` as ``n`` workers with loopback ``TF_CONFIG``s; wait for all of them.

    Worker 0 (the chief) shares this process's stdout and stderr; the others' output goes to
    temporary log files that are removed afterwards. When one worker fails, the others get ``grace``
    seconds to notice (the chief reports a lost worker itself), then they are stopped. Every worker is
    stopped when this function is left early (Ctrl-C).

    Returns:
        ``(exit code, message)``: the chief's exit code if it failed, else the first failure's; the
        message is a failed non-chief worker's ``error:`` line when the chief did not fail.
    """
    configs = local_tf_configs(n)
    procs: list[subprocess.Popen] = []
    with tempfile.TemporaryDirectory(prefix="edge-derm-workers-") as logs:
        log_paths = [Path(logs) / f"worker{i}.log" for i in range(n)]
        try:
            for i, tf_config in enumerate(configs):
                env = {**os.environ, "TF_CONFIG": tf_config}
                if i == 0:
                    procs.append(subprocess.Popen(list(command), env=env))
                else:
                    with open(log_paths[i], "wb") as log:
                        procs.append(subprocess.Popen(list(command), env=env, stdin=subprocess.DEVNULL,
                                                      stdout=subprocess.DEVNULL, stderr=log))
            _log.info("started %d local workers (TF_CONFIG on 127.0.0.1, ports %s)", n,
                      ", ".join(json.loads(configs[0])["cluster"]["worker"]))
            failed_at: float | None = None
            while any(p.poll() is None for p in procs):
                codes = [p.poll() for p in procs]
                if failed_at is None and any(c not in (None, 0) for c in codes):
                    failed_at = time.monotonic()
                if failed_at is not None and time.monotonic() - failed_at > grace:
                    break
                time.sleep(0.2)
        finally:
            _stop(procs)
        codes = [p.returncode for p in procs]
        message = None
        if codes[0] != 0:
            code = codes[0]
        else:
            bad = [i for i, c in enumerate(codes) if c != 0]
            code = codes[bad[0]] if bad else 0
            if bad:
                message = (f"worker {bad[0]} failed (exit {codes[bad[0]]}): "
                           f"{_last_error(log_paths[bad[0]]) or 'no error message'}")
    return code, message


def _stop(procs: list[subprocess.Popen], wait: float = 5.0) -> None:
    """SIGTERM the workers still running, then SIGKILL those that did not stop within ``wait`` seconds."""
    running = [p for p in procs if p.poll() is None]
    for p in running:
        p.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + wait
    for p in running:
        try:
            p.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
