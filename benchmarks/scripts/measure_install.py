"""Measure: the runtime-only install against the full (train) install, and start-up times.

    python benchmarks/scripts/measure_install.py --out /tmp/install [--model M.tflite --image I]
        [--md benchmarks/results/install.md]

Creates two fresh virtual environments in ``--out``: ``pip install .`` (the runtime: predict, benchmark,
report, export; no TensorFlow) and ``pip install '.[train]'``. Reports each install's wall time (pip's
cache warm or cold as this machine has it; said in the output), its size on disk, and in each: the wall
time of ``edge-derm --help`` and of one ``edge-derm predict`` (median of ``--repeats`` fresh processes),
and whether TensorFlow is importable. Writes ``install.json`` / ``install.md`` into ``--out`` (and ``--md``;
the repository's copy is ``benchmarks/results/install.md``). Runs from any folder; the repository it
installs is the one this script sits in (``measure_common.REPO_ROOT``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from measure_common import REPO_ROOT  # the scripts are never installed: the repository is two folders up

_log = logging.getLogger("measure_install")


def du(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())


def timed(cmd: list[str], repeats: int) -> float:
    """Median wall seconds of ``repeats`` fresh runs of ``cmd`` (each must exit 0)."""
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True, timeout=600)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def install(venv: Path, spec: str) -> dict:
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = venv / "bin" / "python"
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    t = time.perf_counter()
    proc = subprocess.run([str(py), "-m", "pip", "install", "--quiet", spec], capture_output=True, text=True,
                          env=env, timeout=3600)
    seconds = time.perf_counter() - t
    if proc.returncode != 0:
        raise SystemExit(f"pip install {spec} failed: {proc.stderr[-500:]}")
    # setuptools' own warnings (pip's notes about this machine's index configuration are not the project's)
    warnings = [ln for ln in proc.stderr.splitlines()
                if any(k in ln for k in ("BuildBackendWarning", "SetuptoolsDeprecationWarning", "would be ignored"))]
    tf = subprocess.run([str(py), "-c", "import importlib.util as u; print(u.find_spec('tensorflow') is not None)"],
                        capture_output=True, text=True, check=True).stdout.strip() == "True"
    return {"spec": spec, "install_s": round(seconds, 1), "size_mb": round(du(venv) / 1e6, 1),
            "setuptools_warnings": warnings, "tensorflow": tf}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 epilog=f"Installs the repository at {REPO_ROOT} (two folders above this script: benchmarks/scripts/ is never installed).")
    ap.add_argument("--out", type=Path, required=True, help="a new folder for the two virtual environments")
    ap.add_argument("--model", type=Path, help="a .tflite for the predict start-up (default: none measured)")
    ap.add_argument("--image", type=Path, help="an image for the predict start-up")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--md", type=Path)
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    a.out.mkdir(parents=True, exist_ok=False)
    rows = {}
    for name, spec in (("runtime", str(REPO_ROOT)), ("train", f"{REPO_ROOT}[train]")):
        _log.info("installing %s (%s)", name, spec)
        row = install(a.out / name, spec)
        exe = str(a.out / name / "bin" / "edge-derm")
        row["help_s"] = round(timed([exe, "--help"], a.repeats), 3)
        if a.model and a.image:
            row["predict_s"] = round(timed([exe, "predict", str(a.model), str(a.image)], a.repeats), 3)
        rows[name] = row
        _log.info("%s: %s", name, row)
    from edge_derm.benchmarks.flops import cpu_info

    cpu = cpu_info()
    lines = ["# Runtime-only vs full install", "",
             f"`python benchmarks/scripts/measure_install.py --out DIR{' --model M --image I' if a.model else ''}`; "
             f"{cpu['model']}, {cpu['cores']} cores; pip's cache as this machine had it (a first install on a new "
             "machine downloads more); medians of "
             f"{a.repeats} fresh processes.", "",
             "| install | pip install s | size MB | TensorFlow | `--help` s | `predict` s | setuptools warnings |",
             "|---|--:|--:|---|--:|--:|--:|"]
    for name, r in rows.items():
        lines.append(f"| `{'pip install edge-derm' if name == 'runtime' else 'pip install edge-derm[train]'}` | "
                     f"{r['install_s']} | {r['size_mb']} | {'yes' if r['tensorflow'] else 'no'} | {r['help_s']} | "
                     f"{r.get('predict_s', '-')} | {len(r['setuptools_warnings'])} |")
    text = "\n".join(lines) + "\n"
    (a.out / "install.json").write_text(json.dumps({"rows": rows, "cpu": cpu["model"]}, indent=2))
    (a.out / "install.md").write_text(text)
    if a.md:
        a.md.write_text(text)
        a.md.with_suffix(".json").write_text(json.dumps({"rows": rows, "cpu": cpu["model"]}, indent=2))
    _log.info("%s", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
