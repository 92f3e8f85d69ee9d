"""Measure: fp32 vs int8 latency of the three backbones on this CPU, and the harness overhead.

    python benchmarks/scripts/measure_latency.py [--threads 1,2] [--runs 30] [--json out.json]

For MobileNetV2 (224), EfficientNet-B3 (300) and ResNet50 (224), built with ``weights=None`` (latency
does not depend on the weights' values) and the paper's head (1x1 conv, GAP, softmax), converted to
fp32 and int8 (full integer, calibrated on random pixels: again only latency is measured), at 1 and
2 threads, it reports:

* median latency of the harness (``edge_derm.benchmarks.latency.cpu_latency``) per variant;
* the int8 speed-up over fp32 (goal: >= 1.8x);
* the FLOP lower bound (MACs / the CPU's nominal peak, see ``flops.nominal_peak_gmacs``) and the
  ratio measured / bound;
* the harness overhead: the harness median over the median of a bare ``interpreter.invoke()``
  loop timed in the same process, interleaved in rounds so drift hits both alike (goal: <= 5 %).

Runs from any folder. The measured table is in ``benchmarks/README.md``. A script, not library
code: it prints its table.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import edge_derm  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow)
from edge_derm.benchmarks import flops
from edge_derm.benchmarks.latency import cpu_latency, fill_inputs, open_interpreter

BACKBONES = {"mobilenet_v2": 224, "efficientnet_b3": 300, "resnet50": 224}
NUM_CLASSES = 7


def build_model(name: str, size: int):
    """The contract's classifier (``models.build_classifier``) with random weights."""
    from edge_derm.models import build_classifier

    return build_classifier(name, NUM_CLASSES, image_size=size, weights="none")


def convert(model, size: int, quantization: str) -> bytes:
    """fp32 or full-integer int8 (uint8 in/out) .tflite bytes from the project's converter, calibrated on
    random pixels."""
    from edge_derm.converters.presets import get_preset
    from edge_derm.converters.tflite import convert as project_convert

    rng = np.random.default_rng(0)
    calib = rng.uniform(0, 255, (8, size, size, 3)).astype(np.float32)
    io = "uint8" if quantization == "int8" else "float32"
    return project_convert(model, get_preset(quantization), io=io, calibration=calib if quantization == "int8" else None)


def bare_loop(interp, warmup: int, runs: int) -> list[float]:
    """The reference: a hand-written loop timing ``interpreter.invoke()`` alone."""
    for _ in range(warmup):
        interp.invoke()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        interp.invoke()
        times.append(time.perf_counter() - t0)
    return times


def measure_pair(paths: dict[str, Path], threads: int, warmup: int, runs: int, rounds: int) -> dict[str, dict]:
    """fp32 and int8, harness and bare loop, interleaved in ``rounds`` rounds of four adjacent blocks.

    Every ratio (int8 speed-up, harness overhead) is taken within a round and the median over rounds
    reported: the blocks of a round run back to back, so load from elsewhere on a shared machine
    skews one round's ratio, not the estimate. The block order rotates between rounds.
    """
    interps = {q: open_interpreter(p, threads) for q, p in paths.items()}
    for interp in interps.values():
        fill_inputs(interp)
    blocks = [(q, kind) for q in paths for kind in ("bare", "harness")]
    rec: dict[tuple[str, str], list[float]] = {b: [] for b in blocks}
    mins: dict[tuple[str, str], float] = {b: float("inf") for b in blocks}
    for r in range(rounds):
        k = r % len(blocks)
        order = blocks[k:] + blocks[:k]
        if r % 2:
            order = order[::-1]
        for q, kind in order:
            if kind == "bare":
                times = np.array(bare_loop(interps[q], warmup, runs)) * 1000
                med, low = float(np.median(times)), float(times.min())
            else:
                stats = cpu_latency(paths[q], threads, warmup, runs, interp=interps[q])
                med, low = stats.median_ms, stats.min_ms
            rec[(q, kind)].append(med)
            mins[(q, kind)] = min(mins[(q, kind)], low)
    out = {}
    for q in paths:
        h, b = np.array(rec[(q, "harness")]), np.array(rec[(q, "bare")])
        out[q] = {"median_ms": float(np.median(h)), "bare_median_ms": float(np.median(b)),
                  "best_round_ms": float(h.min()), "overhead": float(np.median(h / b)) - 1.0,
                  # fastest single run of each: the least disturbed figure on a loaded machine
                  "overhead_min": mins[(q, "harness")] / mins[(q, "bare")] - 1.0,
                  "macs": flops.count_macs(interps[q]), "round_medians_ms": h.tolist()}
    if "fp32" in paths and "int8" in paths:
        ratio = np.array(rec[("fp32", "harness")]) / np.array(rec[("int8", "harness")])
        out["int8"]["int8_speedup"] = float(np.median(ratio))
        out["int8"]["int8_speedup_of_medians"] = out["fp32"]["median_ms"] / out["int8"]["median_ms"]
    return out


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--backbones", default=",".join(BACKBONES))
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--runs", type=int, default=15)
    ap.add_argument("--rounds", type=int, default=8, help="interleaved rounds (fp32/int8 x harness/bare)")
    ap.add_argument("--models-dir", type=Path, default=None, help="keep the .tflite files here (reused when present)")
    ap.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = ap.parse_args(argv)
    args.names = [n.strip() for n in args.backbones.split(",") if n.strip()]
    unknown = sorted(set(args.names) - set(BACKBONES))
    if unknown:
        ap.error(f"unknown backbone(s) {unknown}; choose from {sorted(BACKBONES)}")
    args.thread_counts = [int(t) for t in args.threads.split(",")]
    return args


def backbone_files(name: str, models_dir: Path) -> dict[str, Path]:
    """The backbone's fp32 and int8 .tflite in ``models_dir``, converted once (reused when present)."""
    size = BACKBONES[name]
    model = None
    paths = {}
    for q in ("fp32", "int8"):
        paths[q] = models_dir / f"{name}_{size}.{q}.tflite"
        if not paths[q].exists():
            if model is None:
                model = build_model(name, size)
            t0 = time.perf_counter()
            paths[q].write_bytes(convert(model, size, q))
            print(f"converted {paths[q].name} in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    return paths


def print_table(results: list[dict], info: dict, load_before: str) -> None:
    """The markdown table and the two goals (int8 speed-up, harness overhead) on stdout."""
    speedups = [r["int8_speedup"] for r in results if "int8_speedup" in r]
    print(f"CPU: {info['model']}, {info['cores']} cores, {info['mhz']} MHz; 1-min load average {load_before} "
          f"before, {_load()} after")
    print("| backbone | input | quant | threads | size MB | GMACs | median ms | best round ms | int8 speed-up | "
          "FLOP bound ms | median/bound | harness overhead (medians / minimums) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        sp = f"{r['int8_speedup']:.2f}x" if "int8_speedup" in r else ""
        print(f"| {r['backbone']} | {r['size']} | {r['quantization']} | {r['threads']} | {r['size_mb']:.1f} | "
              f"{r['macs'] / 1e9:.2f} | {r['median_ms']:.1f} | {r['best_round_ms']:.1f} | {sp} | {r['bound_ms']:.1f} | "
              f"{r['bound_ratio']:.1f} | {100 * r['overhead']:+.2f} % / {100 * r['overhead_min']:+.2f} % |")
    worst_overhead = max(abs(r["overhead"]) for r in results)
    print(f"\nint8 >= 1.8x faster for every backbone and thread count: {all(s >= 1.8 for s in speedups)} "
          f"(min {min(speedups):.2f}x); worst |harness overhead| {100 * worst_overhead:.2f} % (goal <= 5 %)")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    info = flops.cpu_info()
    load_before = _load()
    tmp = tempfile.TemporaryDirectory(prefix="edge-derm-latency-")
    models_dir = args.models_dir or Path(tmp.name)
    models_dir.mkdir(parents=True, exist_ok=True)
    results = []
    for name in args.names:
        paths = backbone_files(name, models_dir)
        for th in args.thread_counts:
            pair = measure_pair(paths, th, args.warmup, args.runs, args.rounds)
            for q, m in pair.items():
                bound_ms = m["macs"] / (flops.nominal_peak_gmacs(th, q, info) * 1e9) * 1000
                results.append({"backbone": name, "size": BACKBONES[name], "quantization": q, "threads": th,
                                "size_mb": paths[q].stat().st_size / 1e6, "bound_ms": bound_ms,
                                "bound_ratio": m["median_ms"] / bound_ms, **m})
                sp = f", int8 speed-up {m['int8_speedup']:.2f}x" if "int8_speedup" in m else ""
                print(f"{name} {q} {th}t: {m['median_ms']:.1f} ms (bare {m['bare_median_ms']:.1f}, overhead "
                      f"{100 * m['overhead']:+.2f} %{sp}); load {_load()}", file=sys.stderr)
    print_table(results, info, load_before)
    if args.json:
        args.json.write_text(json.dumps({"cpu": {**info, "flags": None}, "load_before": load_before,
                                         "load_after": _load(), "results": results}, indent=2) + "\n")
    return 0


def _load() -> str:
    return f"{os.getloadavg()[0]:.1f}" if hasattr(os, "getloadavg") else "?"


if __name__ == "__main__":
    sys.exit(main())
