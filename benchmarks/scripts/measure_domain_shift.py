"""Measure: the domain gap of a model and its quantised variants, in-domain vs another domain.

    python benchmarks/scripts/measure_domain_shift.py --out /tmp/domain \\
        [--image-size 128] [--alpha 0.35] [--md benchmarks/results/domain-shift.md]

The only real images in ``../shared`` are HAM10000's (dermoscopy, ``../shared/data/ham10000-dev``), so
the other domain is the one that dataset itself holds: **body site**. The lesions of the head and neck
(HAM10000 ``localization`` face, scalp, ear, neck) are set apart as domain B; a MobileNetV2 is trained
on the other sites (domain A, its grouped train part) and scored on A's lesion-disjoint test part and
on all of B. B has fewer classes than the model (no dermatofibroma or vascular lesion of the head in
this sample), which is the case ``benchmark`` and ``evaluate`` now score: predictions of a class B does
not have count as errors and are reported apart. This is a site shift within one acquisition
modality, not the smartphone-vs-dermoscopy shift of the paper; it shows the tool, and a real gap.

Steps, each through the CLI as a user runs it: ``data build ham10000`` (dermai13), a site filter of
the manifest (this script), ``train`` (``--recipe recommended``, ImageNet weights from ``../shared``),
``convert`` (fp32, fp16, dynamic, int8; ``--keep-failed``, so that a variant below its fidelity bar is
still measured, and the table says which passed), ``benchmark --data A --data B``. Finished steps in ``--out``
are reused. Writes ``results.md`` / ``results.json`` into ``--out`` (and ``--md`` with its ``.json``; the
repository's copy is ``benchmarks/results/domain-shift.md``). Runs from any folder: ``../shared`` beside the
repository root (or ``$EDGE_DERM_SHARED``) holds the data.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

import edge_derm  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow)
import measure_common as common

SHARED = Path(os.environ.get("EDGE_DERM_SHARED", common.SHARED))
HAM = SHARED / "data" / "ham10000-dev"
HEAD_NECK = ("face", "scalp", "ear", "neck")

_log = logging.getLogger("measure_domain_shift")


def weights_file(alpha: float) -> Path:
    return SHARED / "weights" / "keras" / "models" / f"mobilenet_v2_weights_tf_dim_ordering_tf_kernels_{alpha}_224_no_top.h5"


def cli(*argv: str) -> None:
    from edge_derm.cli import main

    _log.info("$ edge-derm %s", " ".join(argv))
    t = time.time()
    code = main(["--quiet", *argv])
    if code not in (0,):
        raise SystemExit(f"edge-derm {argv[0]} failed with exit code {code}")
    _log.info("  (%.0f s)", time.time() - t)


def split_by_site(full: Path, a: Path, b: Path) -> dict[str, int]:
    """Write domain A (every site but the head and neck; its own train/test split kept) and domain B
    (head and neck; every image in ``test``) from the full dataset, by HAM10000's ``localization``."""
    from edge_derm.data.csvfile import read_rows
    from edge_derm.data.manifest import Manifest, write_manifest

    rows = read_rows(HAM / "HAM10000_metadata.csv", ("image_id", "localization"), hint="is this HAM10000?", strip=True)
    site = {r["image_id"]: r["localization"] for r in rows}
    m = Manifest.load(full)
    base = {k: v for k, v in m.info.items() if k not in ("counts", "hash", "classes")}
    in_b = [r for r in m.records if site.get(Path(r.path).stem) in HEAD_NECK]
    in_a = [r for r in m.records if site.get(Path(r.path).stem) not in HEAD_NECK]
    for out, records, desc in ((a, in_a, "every site but the head and neck"), (b, in_b, "head and neck")):
        if records is in_b:
            records = [type(r)(r.path, r.label, r.source_label, r.source, r.group, "test") for r in records]
        classes = [c for c in m.classes if any(r.label == c for r in records)]
        out.mkdir(parents=True, exist_ok=True)
        write_manifest(out, records, {**base, "classes": classes, "description": f"HAM10000-dev, {desc}"})
    return {"A": len(in_a), "B": len(in_b)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 epilog=f"Data and weights come from $EDGE_DERM_SHARED, else ../shared relative to "
                                        f"the repository root (here: {SHARED}).")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--alpha", type=float, default=0.35)
    ap.add_argument("--image-size", type=int, default=128)
    ap.add_argument("--md", type=Path, default=None)
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    a.out.mkdir(parents=True, exist_ok=True)
    full, dom_a, dom_b = a.out / "ds-ham", a.out / "ds-A-body", a.out / "ds-B-head-neck"
    if not (full / "dataset.json").is_file():
        cli("data", "build", "ham10000", str(HAM), "--taxonomy", "dermai13", "--out", str(full))
    counts = split_by_site(full, dom_a, dom_b)
    run = a.out / "run"
    if not (run / "model.keras").is_file():
        cli("train", "--data", str(dom_a), "--backbone", "mobilenet_v2", "--alpha", str(a.alpha),
            "--image-size", str(a.image_size), "--weights", str(weights_file(a.alpha)), "--recipe", "recommended",
            "--out", str(run), "--force")
    conv = run / "convert"
    if not (conv / "model.json").is_file():
        from edge_derm.cli import main as edm

        argv = ["convert", str(run), "--quantize", "fp32", "--quantize", "fp16", "--quantize", "dynamic",
                "--quantize", "int8", "--keep-failed", "--out", str(conv), "--force"]
        _log.info("$ edge-derm %s", " ".join(argv))
        # exit 1 when a mode misses its fidelity bar; --keep-failed writes it anyway: its domain gap is the question
        edm(["--quiet", *argv])
    bench = a.out / "bench"
    if (bench / "results.json").is_file():
        write_results(a, json.loads((bench / "results.json").read_text()), counts, run)
        return 0
    cli("benchmark", str(conv), "--data", str(dom_a), "--data", str(dom_b), "--threads", "1", "--runs", "20",
        "--out", str(bench))
    doc = json.loads((bench / "results.json").read_text())
    write_results(a, doc, counts, run)
    return 0


def _wilson(m: dict) -> str:
    """``p % [lo, hi]``: the agreement with its 95 % Wilson score interval over ``n`` images."""
    import math

    p, n, z = m["agreement"], m["n"], 1.96
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return f"{100 * p:.1f} % [{100 * (centre - half):.1f}, {100 * (centre + half):.1f}]"


def write_results(a: argparse.Namespace, doc: dict, counts: dict, run: Path) -> None:
    from edge_derm.reporting.benchmark import domain_rows

    from edge_derm.benchmarks.flops import cpu_info

    info = cpu_info()
    cpu = {"model": info["model"], "cores": info["cores"],
           "isa": sorted(f for f in info["flags"] if f in ("avx2", "avx512f", "avx512_vnni", "avx_vnni"))}
    header = "| model | data | n | macro F1 % | bal. acc. % | MM sens. % | BCC sens. % | ECE | agree w/ fp32 % | absent % |"
    lines = ["# Domain shift: HAM10000-dev, other body sites (A) vs head and neck (B)", "",
             f"Command: `.venv/bin/python benchmarks/scripts/measure_domain_shift.py --out {a.out}`  ",
             f"Machine: {cpu['model']}, {cpu['cores']} cores; "
             f"MobileNetV2 alpha {a.alpha}, {a.image_size} px, recipe recommended, trained on A's train part "
             f"({counts['A']} images in A, {counts['B']} in B); one training run, so no interval over splits.", "",
             "Data 1 = A's lesion-disjoint test part (classes: " + ", ".join(doc["domains"][0]["classes"]) + "); "
             "data 2 = every head-and-neck image (classes: " + ", ".join(doc["domains"][1]["classes"]) + "). "
             "`absent` = predictions of a class B does not have (errors).", "",
             header, "|" + "|".join(["---"] * 10) + "|"]
    lines += ["| " + " | ".join(cells) + " |" for cells in domain_rows(doc["domains"])]
    lines += ["", "Agreement with fp32, 95 % Wilson interval (binomial, over images): " + "; ".join(
        f"{name.removesuffix('.tflite')} {' vs '.join(_wilson(d['models'][name]) for d in doc['domains'])}"
        for name in doc["domains"][0]["models"] if doc["domains"][0]["models"][name]["quantization"] != "fp32") + "."]
    verdicts = json.loads((run / "convert" / "model.json").read_text()).get("summary", [])
    if verdicts:
        lines += ["", "Conversion verdicts (fidelity to the Keras model on A's validation + test images): " + "; ".join(
            f"{v.get('mode')} {v.get('status')}" + (f" ({100 * v['top1_agreement']:.1f} % agreement)"
                                                    if v.get("top1_agreement") is not None else "")
            for v in verdicts) + "."]
    text = "\n".join(lines) + "\n"
    out = {"command": f"measure_domain_shift --out {a.out}", "counts": counts, "domains": doc["domains"],
           "alpha": a.alpha, "image_size": a.image_size, "cpu": cpu}
    (a.out / "results.md").write_text(text)
    (a.out / "results.json").write_text(json.dumps(out, indent=2))
    if a.md is not None:
        a.md.write_text(text)
        a.md.with_suffix(".json").write_text(json.dumps(out, indent=2))
    _log.info("%s", text)


if __name__ == "__main__":
    sys.exit(main())
