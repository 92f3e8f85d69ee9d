"""The convert section of ``edge-derm report``: one row per converted variant (size, dtypes, the converter's
verification against the Keras model), checked against the .tflite files themselves."""

from __future__ import annotations

from pathlib import Path

from edge_derm.artefacts import ConvertResult, VariantRecord
from edge_derm.reporting.document import Doc
from edge_derm.reporting.files import file_size, hash_files, rel
from edge_derm.reporting.format import DASH, fmt, mb, pct, verdict


def convert_section(doc: Doc, path: Path, result: ConvertResult, root: Path, prov: list) -> None:
    """Variant table of a convert folder: size, dtypes, verification against the Keras model."""
    name = rel(path, root)
    doc.h(1, f"Conversion: {name}")
    variants = result.variants
    doc.kv([("source run", result.run), ("variants", ", ".join(variants) or None)])
    rows, mismatches = [], []
    for q, rec in variants.items():
        f = path / rec.file_name(q)
        ver = rec.verification or {}
        passed = rec.passed
        problem = file_disagrees(f, rec)
        if problem:
            mismatches.append(f"{f.name}: {problem}")
            passed = False
        rows.append([q, mb(file_size(f)), rec.input.get("dtype"), rec.output.get("dtype"),
                     pct(ver.get("top1_agreement")), fmt(ver.get("max_abs_diff"), 4),
                     fmt(ver.get("mean_abs_diff"), 5), pct(ver.get("integer_op_share"), 1), ver.get("n"),
                     verdict(passed)])
    if rows:
        doc.table(["variant", "size MB", "input", "output", "top-1 agreement %", "max |diff|", "mean |diff|",
                   "integer ops %", "n", "verification"], rows, ["l"] + ["r"] * 8 + ["l"])
    for line in mismatches:
        doc.p(f"**Warning: model.json does not describe the file.** {line}; convert again.")
    first = next(iter(variants.values()), None)
    if first is not None and first.labels:
        doc.p("Labels (output order): " + ", ".join(map(str, first.labels)) + ".")
    if first is not None and first.input:
        inp = first.input
        doc.p(f"Input: {inp.get('size')} {inp.get('color', 'RGB')}, resize {inp.get('resize')}, range "
              f"{inp.get('range')}; preprocessing inside the model: {inp.get('preprocessing_in_model', DASH)}.")
    provenance = {q: rec.get("provenance") for q, rec in variants.items()}
    versions = next((p["versions"] for p in provenance.values() if isinstance(p, dict) and p.get("versions")), None)
    prov.append((f"Conversion: {name}", {"run": result.run, "versions": versions, "provenance": provenance},
                 [(f"sha256 {rec.file_name(q)}", h) for q, rec in variants.items()
                  for _, h in hash_files(path, [rec.file_name(q)])]))


def file_disagrees(f: Path, record: VariantRecord) -> str | None:
    """What in ``model.json``'s record contradicts the .tflite itself (hash, input size), or None. The
    report shows the file, not what a hand-edited document says about it."""
    from edge_derm.errors import ModelError
    from edge_derm.runtime import inspect_tflite, sha256_bytes

    if not f.is_file():
        return None
    data = f.read_bytes()
    if isinstance(record.sha256, str) and record.sha256 != sha256_bytes(data):
        return "its SHA-256 differs from the one model.json recorded (the file was changed)"
    try:
        shape = inspect_tflite(data).input_tensors[0].shape
    except (ModelError, IndexError) as exc:
        return f"it is not a sound model ({exc})"
    size = record.input.get("size")
    if isinstance(size, list) and len(size) == 2 and list(size) != [int(shape[1]), int(shape[2])]:
        return f"model.json says input {size[0]} x {size[1]} but the file takes {shape[1]} x {shape[2]}"
    return None
