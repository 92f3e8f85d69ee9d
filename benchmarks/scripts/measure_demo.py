"""Measure: wall time of ``edge-derm demo`` (default and ``--quick``) against its budgets, and how far
above chance (1/13) its model lands on the synthetic test split.

    python benchmarks/scripts/measure_demo.py [--only quick|default] [--keras-home DIR]
        [--offline] [--json out.json] [--keep DIR] [-- EXTRA DEMO ARGS]

Each demo runs in a fresh subprocess (``python -m edge_derm.cli ... demo --out TMP``, TensorFlow
start-up included), like a user's first command. Budgets: default <= 5 min, ``--quick`` <= 90 s, on a
2-core CPU. ``--keras-home`` points ``KERAS_HOME`` at a folder holding ImageNet weights (the
pretrained path); ``--offline`` sets ``EDGE_DERM_OFFLINE`` (the from-scratch path, no network probe).

Runs from any folder; the measured figures are ``benchmarks/results/demo-*.json`` (``--json``).
A script, not library code: it prints its table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from edge_derm.demo.config import CHANCE  # 1 / the demo taxonomy's classes

BUDGETS = {"quick": 90.0, "default": 300.0}  # issue 16: --quick <= 90 s, default <= 5 min


def run_one(kind: str, out: Path, extra: list[str], env: dict[str, str]) -> dict:
    """Run one demo in a subprocess; returns its wall time, exit code and summary figures."""
    cmd = [sys.executable, "-c", "import sys; from edge_derm.cli import main; sys.exit(main(sys.argv[1:]))",
           "--quiet", "demo", "--out", str(out), *(["--quick"] if kind == "quick" else []), *extra]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    wall = time.perf_counter() - t0
    res = {"kind": kind, "wall_s": round(wall, 1), "budget_s": BUDGETS[kind], "within_budget": wall < BUDGETS[kind],
           "exit_code": proc.returncode}
    if proc.returncode != 0:
        res["error"] = (proc.stderr.strip().splitlines() or ["?"])[-1]
        return res
    s = json.loads((out / "summary.json").read_text())
    k = s["metrics"]["keras"]
    res.update({
        "stages_s": {st["name"]: st["seconds"] for st in s["stages"]},
        "weights": s["weights"]["note"],
        "model": f"{s['training']['backbone']} alpha {s['training']['alpha']} {s['training']['image_size']} px",
        "schedule": f"{' -> '.join(s['training']['steps'])} x {s['training']['epochs_per_block']} epochs",
        "images": s["dataset"]["images"], "test_n": k["n"],
        "accuracy": k["accuracy"], "macro_f1": k["macro_f1"],
        "x_chance": (k["accuracy"] or 0) / CHANCE,
        "variants": {q: {"accuracy": v["accuracy"], "macro_f1": v["macro_f1"], "size_mb": v["size_mb"],
                         "latency_ms": v["latency_ms"]} for q, v in s["metrics"]["variants"].items()},
        "gates_passed": s["gates"]["passed"], "gate_failures": s["gates"]["failures"],
        "conversion_warnings": s["conversion"]["warnings"],
    })
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", choices=sorted(BUDGETS), help="measure just one flavour")
    ap.add_argument("--keras-home", type=Path, help="KERAS_HOME for the runs (ImageNet weights there)")
    ap.add_argument("--offline", action="store_true", help="set EDGE_DERM_OFFLINE=1 (no network probe)")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    ap.add_argument("--keep", type=Path, help="keep the demo folders under this folder (must not exist)")
    ap.add_argument("extra", nargs="*", help="extra demo arguments (after --)")
    args = ap.parse_args(argv)
    env = dict(os.environ)
    if args.keras_home:
        env["KERAS_HOME"] = str(args.keras_home.resolve())
    if args.offline:
        env["EDGE_DERM_OFFLINE"] = "1"
    kinds = [args.only] if args.only else ["quick", "default"]
    results = []
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"load average {os.getloadavg()[0]:.1f}", flush=True)
    if args.keep is not None and args.keep.exists():
        ap.error(f"--keep {args.keep} already exists; choose a new folder")
    with tempfile.TemporaryDirectory(prefix="edge-derm-demo-measure-") as tmp:
        base = args.keep.resolve() if args.keep is not None else Path(tmp)
        for kind in kinds:
            r = run_one(kind, base / kind, list(args.extra), env)
            results.append(r)
            verdict = "within" if r["within_budget"] else "OVER"
            print(f"{kind:8s} wall {r['wall_s']:7.1f} s ({verdict} the {r['budget_s']:.0f} s budget), exit {r['exit_code']}")
            if r["exit_code"] != 0:
                print(f"         error: {r['error']}")
                continue
            print(f"         {r['model']}, {r['schedule']}, {r['images']} images (test n={r['test_n']})")
            print(f"         weights: {r['weights']}")
            print("         stages: " + ", ".join(f"{k} {v:.0f} s" for k, v in r["stages_s"].items()))
            print(f"         test accuracy {100 * r['accuracy']:.1f} % ({r['x_chance']:.1f}x chance {100 * CHANCE:.1f} %), "
                  f"macro F1 {100 * r['macro_f1']:.1f} %")
            for q, v in r["variants"].items():
                lat = ", ".join(f"{ms:.2f} ms@{t}" for t, ms in v["latency_ms"].items() if ms is not None)
                print(f"           {q:8s} {v['size_mb']:.2f} MB acc {100 * (v['accuracy'] or 0):.1f} % "
                      f"F1 {100 * (v['macro_f1'] or 0):.1f} % {lat}")
            print(f"         gates passed: {r['gates_passed']}" + "".join(f"\n           - {f}" for f in r["gate_failures"]))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0 if all(r["exit_code"] == 0 and r["within_budget"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
