"""What the measurement scripts share: where the repository, its results and ``../shared`` are, running
one ``edge-derm`` command in a fresh process, the CPU's ISA flags, and interleaved latency of several models.

Not library code (the scripts print); imported by the scripts as ``measure_common``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from edge_derm.benchmarks.latency import summarize
from edge_derm.provenance import cpuinfo

HERE = Path(__file__).resolve().parent
#: The repository root. The scripts are never installed (``benchmarks/scripts/`` is no package of the
#: distribution): they always sit in ``<repository>/benchmarks/scripts/``, so the root is two folders up
#: (``pip install`` of the repository and the CLI's working folder).
REPO_ROOT = HERE.parents[1]
#: The results files the scripts regenerate.
RESULTS = REPO_ROOT / "benchmarks" / "results"
#: Default of ``--shared`` (the folder holding ``data/`` and ``weights/``): ``../shared`` beside the repository root.
SHARED = REPO_ROOT.parent / "shared"
SHARED_HELP = "the folder holding data/ and weights/ (default: ../shared, relative to the repository root)"

ISA = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16",
       "avx_vnni", "amx_tile", "amx_int8")


def edge_derm_cli(args: list[str], ok_codes: tuple[int, ...] = (0,), env: dict | None = None) -> int:
    """Run one ``edge-derm`` command in a fresh process (in this folder, with ``env`` added to this
    process's environment); stop the script on an exit code not in ``ok_codes``."""
    cmd = [sys.executable, "-c", "from edge_derm.cli import entry; entry()", "--quiet", *args]
    print("$ edge-derm " + " ".join(args), flush=True)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env={**os.environ, **(env or {})})  # in the caller's folder, as its paths are
    if proc.returncode not in ok_codes:
        raise SystemExit(f"edge-derm {args[0]} failed (exit {proc.returncode})")
    print(f"  ({time.perf_counter() - t0:.0f} s, exit {proc.returncode})", flush=True)
    return proc.returncode


def cpu_flags() -> dict:
    """The ISA flags of this CPU (``/proc/cpuinfo``): the full line and the SIMD ones that matter."""
    line = cpuinfo().get("flags", "")
    flags = set(line.split())
    return {"simd": [f for f in ISA if f in flags], "flags": line}


def interleaved_median_ms(models: dict, image, rounds: int, runs: int) -> dict[str, float]:
    """Median milliseconds per invoke of each model (``TFLiteModel``s): 20 warm-up invokes each, then
    ``rounds`` rounds that time ``runs`` invokes of every model in turn (interleaved, so load changes on a
    shared machine hit all models alike; the harness's ``time_calls`` times one model at a time)."""
    times: dict[str, list[float]] = {name: [] for name in models}
    for m in models.values():
        m.set_input(image)
        for _ in range(20):
            m.invoke_raw()
    for _ in range(rounds):
        for name, m in models.items():
            m.set_input(image)
            for _ in range(runs):
                t0 = time.perf_counter()
                m.invoke_raw()
                times[name].append(time.perf_counter() - t0)
    return {name: summarize(np.asarray(t)).median_ms for name, t in times.items()}


@contextmanager
def kernel_noise(layers: list, rng: np.random.Generator, sd: float):
    """Multiply each Keras layer's kernel by ``1 + N(0, sd)`` (drawn from ``rng`` in layer order) for the
    block's duration, then restore the saved weights: weight noise of about int8's rounding, no quantiser."""
    saved = [layer.get_weights() for layer in layers]
    for layer, w in zip(layers, saved):
        layer.set_weights([w[0] * (1 + rng.normal(0, sd, w[0].shape)).astype(np.float32), *w[1:]])
    try:
        yield
    finally:
        for layer, w in zip(layers, saved):
            layer.set_weights(w)
