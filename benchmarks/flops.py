"""Multiply-accumulate counts read from a .tflite graph, and a nominal CPU peak (no TensorFlow).

Used for the FLOP lower bound: no implementation can beat ``MACs / peak MAC rate``, so
``measured / lower bound`` says how far a variant is from the hardware's limit.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

_CONV_OPS = {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV", "BATCH_MATMUL"}


def count_macs(interp: Any) -> int:
    """Multiply-accumulates of the convolution, depthwise and fully-connected ops of one invoke.

    Args:
        interp: an allocated LiteRT interpreter (op details are those of the graph before delegation).
    """
    shapes = {t["index"]: [int(d) for d in t["shape"]] for t in interp.get_tensor_details()}
    total = 0
    for op in interp._get_ops_details():  # noqa: SLF001 - the public API has no op list
        name = op["op_name"]
        if name not in _CONV_OPS:
            continue
        ins = [int(i) for i in op["inputs"]]
        out = shapes.get(int(op["outputs"][0]))
        if not out or len(ins) < 2:
            continue
        w = shapes.get(ins[1])
        if not w:
            continue
        out_elems = int(np.prod(out))
        if name == "CONV_2D":  # weights [cout, kh, kw, cin]
            total += out_elems * w[1] * w[2] * w[3]
        elif name == "DEPTHWISE_CONV_2D":  # weights [1, kh, kw, cout]
            total += out_elems * w[1] * w[2]
        elif name == "FULLY_CONNECTED":  # weights [out, in]
            total += out_elems * w[-1]
        elif name == "TRANSPOSE_CONV":  # weights [cout, kh, kw, cin]; input is ins[2]
            inp = shapes.get(ins[2], [])
            total += int(np.prod(inp)) * w[0] * w[1] * w[2] if inp else 0
        elif name == "BATCH_MATMUL":
            a = shapes.get(ins[0], [])
            total += out_elems * (a[-1] if a else 0)
    return total


def cpu_info() -> dict[str, Any]:
    """Model name, clock (MHz) and SIMD flags of this CPU from /proc/cpuinfo (Linux)."""
    from edge_derm.provenance import cpuinfo

    raw = cpuinfo()
    return {"model": raw.get("model name", "unknown"), "mhz": float(raw["cpu MHz"]) if raw.get("cpu MHz") else None,
            "flags": set(raw.get("flags", "").split()), "cores": os.cpu_count() or 1}
    for line in path.read_text().splitlines():
        key, _, value = line.partition(":")
        key, value = key.strip(), value.strip()
        if key == "model name" and info["model"] == "unknown":
            info["model"] = value
        elif key == "cpu MHz" and info["mhz"] is None:
            info["mhz"] = float(value)
        elif key == "flags" and not info["flags"]:
            info["flags"] = set(value.split())
    return info


def nominal_peak_gmacs(threads: int, dtype: str, info: dict[str, Any] | None = None) -> float:
    """Nominal peak multiply-accumulate rate (GMAC/s) for ``threads`` cores.

    Assumes two FMA pipes per core of the widest vector width the flags allow (AVX-512 counted as
    2 x 512-bit, AVX2 as 2 x 256-bit, else 2 x 128-bit) and, for int8, 4 MACs per 32-bit lane with
    VNNI (2 without). A nominal figure: an upper bound on speed, so the latency bound is a lower bound.
    """
    info = info or cpu_info()
    flags = info["flags"]
    lanes32 = 16 if "avx512f" in flags else 8 if "avx2" in flags else 4
    per_cycle = 2 * lanes32
    if dtype == "int8":
        per_cycle *= 4 if ("avx512_vnni" in flags or "avx_vnni" in flags) else 2
    ghz = (info["mhz"] or 2000.0) / 1000.0
    return per_cycle * ghz * min(threads, info["cores"])
