"""``edge-derm report``: one self-contained HTML page and a markdown twin for any artefact folder.

The folder kind comes from its JSON: ``config.json`` (kind ``run``), ``model.json`` (``convert``),
``results.json`` (``benchmark``). A folder holding several of these below it (a demo folder) gets
every section. The report is built in memory as a list of blocks, rendered twice (markdown and
HTML), and only then written: ``report.md``, ``report.html`` (images base64-embedded, inline CSS,
no script, no network) and ``report_assets/*.png`` (the images that ``report.md`` links to).
"""

from __future__ import annotations

import base64
import csv
import html
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

from edge_derm.errors import DataError, EdgeDermError, OutputExistsError

_log = logging.getLogger(__name__)

#: JSON file and ``kind`` value that mark each artefact folder, in report order.
KINDS = (("run", "config.json"), ("convert", "model.json"), ("benchmark", "results.json"))
REPORT_FILES = ("report.html", "report.md")
ASSETS = "report_assets"
MAX_DEPTH = 3
DASH = "–"


@dataclass
class Section:
    """One artefact folder found under the report folder."""

    kind: str
    path: Path
    info: dict[str, Any]


# -- document model: blocks rendered to both markdown and HTML --------------------------------

@dataclass
class Doc:
    """An ordered list of blocks plus the PNG images they reference."""

    blocks: list[tuple] = field(default_factory=list)
    images: dict[str, bytes] = field(default_factory=dict)

    def h(self, level: int, text: str) -> None:
        self.blocks.append(("h", level, text))

    def p(self, text: str, cls: str = "") -> None:
        self.blocks.append(("p", text, cls))

    def table(self, header: list[str], rows: list[list[Any]], align: list[str] | None = None) -> None:
        align = align or ["l"] + ["r"] * (len(header) - 1)
        self.blocks.append(("table", header, [[_s(v) for v in r] for r in rows], align))

    def kv(self, pairs: Iterable[tuple[str, Any]]) -> None:
        self.table(["", ""], [[k, v] for k, v in pairs], ["l", "l"])

    def pre(self, summary: str, text: str) -> None:
        self.blocks.append(("pre", summary, text))

    def img(self, name: str, png: bytes, alt: str) -> None:
        name = _unique(name, self.images)
        self.images[name] = png
        self.blocks.append(("img", name, alt))


def _unique(name: str, taken: Mapping[str, Any]) -> str:
    stem, ext = os.path.splitext(name)
    k, out = 1, name
    while out in taken:
        k += 1
        out = f"{stem}_{k}{ext}"
    return out


def _s(v: Any) -> str:
    return DASH if v is None else str(v)


def render_markdown(doc: Doc, title: str) -> str:
    """Markdown of ``doc``; images link to ``report_assets/<name>``."""
    from edge_derm.evaluation.report import md_table

    out = [f"# {title}", ""]
    for b in doc.blocks:
        if b[0] == "h":
            out += ["#" * (b[1] + 1) + " " + b[2], ""]
        elif b[0] == "p":
            out += [b[1], ""]
        elif b[0] == "table":
            header = b[1] if any(b[1]) else ["item", "value"]
            out += [md_table(header, b[2], b[3]), ""]
        elif b[0] == "pre":
            out += [f"<details><summary>{b[1]}</summary>", "", "```", b[2], "```", "", "</details>", ""]
        elif b[0] == "img":
            out += [f"![{b[2]}]({ASSETS}/{b[1]})", ""]
    return "\n".join(out).rstrip() + "\n"


_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#1d2530;background:#f5f6f8}
main{max-width:1180px;margin:0 auto;padding:24px 32px 64px;background:#fff;min-height:100vh}
h1{font-size:1.7em;border-bottom:3px solid #2b6cb0;padding-bottom:.3em}
h2{font-size:1.35em;margin-top:2em;border-bottom:1px solid #d5dae1;padding-bottom:.2em;color:#1a4e86}
h3{font-size:1.1em;margin-top:1.5em}h4{font-size:1em;color:#444}
table{border-collapse:collapse;margin:.6em 0 1.2em;font-size:.88em}
th,td{border:1px solid #d5dae1;padding:3px 9px}th{background:#eef2f7;text-align:left}
td.r{text-align:right;font-variant-numeric:tabular-nums}tr:nth-child(even) td{background:#fafbfc}
td.bad{color:#b00020;font-weight:600}td.good{color:#1b7a32}
figure{display:inline-block;vertical-align:top;margin:.4em 12px 1em 0;max-width:100%}
img{max-width:100%;border:1px solid #e3e6ea}
pre{background:#f3f4f6;padding:10px;overflow-x:auto;font-size:.8em}
p.note{background:#fff8e1;border-left:4px solid #f0b400;padding:6px 10px}
p.meta{color:#666;font-size:.9em}nav a{margin-right:1em}
"""


def _cell_class(v: str, align: str) -> str:
    classes = ["r"] if align == "r" else []
    low = v.lower()
    if low.startswith(("fail", "error")) or low == "false":
        classes.append("bad")
    elif low in ("pass", "passed", "ok", "true"):
        classes.append("good")
    return f' class="{" ".join(classes)}"' if classes else ""


def render_html(doc: Doc, title: str) -> str:
    """A self-contained HTML page: inline CSS, images as data URIs, a CSP that forbids any fetch."""
    e = html.escape
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
           "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; "
           "img-src data:; style-src 'unsafe-inline'\">",
           '<meta name="viewport" content="width=device-width, initial-scale=1">',
           f"<title>{e(title)}</title><style>{_CSS}</style></head><body><main>", f"<h1>{e(title)}</h1>"]
    for b in doc.blocks:
        if b[0] == "h":
            out.append(f"<h{b[1] + 1}>{e(b[2])}</h{b[1] + 1}>")
        elif b[0] == "p":
            cls = f' class="{e(b[2])}"' if b[2] else ""
            out.append(f"<p{cls}>{e(b[1])}</p>")
        elif b[0] == "table":
            header, rows, align = b[1], b[2], b[3]
            out.append("<table>")
            if any(header):
                out.append("<tr>" + "".join(f"<th>{e(h)}</th>" for h in header) + "</tr>")
            for row in rows:
                out.append("<tr>" + "".join(f"<td{_cell_class(v, a)}>{e(v)}</td>" for v, a in zip(row, align)) + "</tr>")
            out.append("</table>")
        elif b[0] == "pre":
            out.append(f"<details><summary>{e(b[1])}</summary><pre>{e(b[2])}</pre></details>")
        elif b[0] == "img":
            data = base64.b64encode(doc.images[b[1]]).decode("ascii")
            out.append(f'<figure><img alt="{e(b[2])}" src="data:image/png;base64,{data}"></figure>')
    out.append("</main></body></html>")
    return "\n".join(out) + "\n"


# -- finding the artefact folders -------------------------------------------------------------

def _read_json(path: Path) -> Any:
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except json.JSONDecodeError as exc:
        raise DataError(f"{path} is not valid JSON ({exc.msg}, line {exc.lineno}); regenerate it") from None


def _kind_of(folder: Path) -> list[Section]:
    found = []
    for kind, name in KINDS:
        f = folder / name
        if f.is_file():
            info = _read_json(f)
            if isinstance(info, dict) and info.get("kind") == kind:
                found.append(Section(kind, folder, info))
    return found


def find_sections(folder: Path) -> list[Section]:
    """Every run / convert / benchmark folder at or below ``folder`` (at most 3 levels down).

    Raises:
        DataError: ``folder`` is missing or holds none of these.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder} is not a folder; give a run, convert or benchmark folder")
    sections: list[Section] = []
    todo = [(folder, 0)]
    while todo:
        here, depth = todo.pop(0)
        sections += _kind_of(here)
        if depth >= MAX_DEPTH:
            continue
        try:
            subs = sorted(p for p in here.iterdir() if p.is_dir() and not p.name.startswith(".")
                          and p.name not in (ASSETS, "checkpoints"))
        except OSError:
            continue
        todo += [(p, depth + 1) for p in subs]
    if not sections:
        raise DataError(f"{folder} is not a run, convert or benchmark folder (no config.json kind=run, "
                        "model.json kind=convert or results.json kind=benchmark in it or below it)")
    order = {k: i for i, (k, _) in enumerate(KINDS)}
    sections.sort(key=lambda s: (order[s.kind], str(s.path)))
    return sections


# -- small formatting helpers -----------------------------------------------------------------

def _num(v: Any) -> float | None:
    if isinstance(v, bool) or v is None or v == "":
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if f == f and f not in (float("inf"), float("-inf")) else None


def _pct(v: Any, digits: int = 2) -> str:
    f = _num(v)
    return DASH if f is None else f"{100 * f:.{digits}f}"


def _pp(v: Any) -> str:
    """A fraction difference as signed percentage points."""
    f = _num(v)
    return DASH if f is None else f"{100 * f:+.2f}"


def _fmt(v: Any, digits: int = 2) -> str:
    f = _num(v)
    return DASH if f is None else f"{f:.{digits}f}"


def _auto(v: Any) -> str:
    """Two decimals, or three significant digits below 1 (tiny models run in microseconds)."""
    f = _num(v)
    if f is None:
        return DASH
    return f"{f:.2f}" if abs(f) >= 1 or f == 0 else f"{f:.3g}"


def _mb(nbytes: Any) -> str:
    f = _num(nbytes)
    return DASH if f is None else _auto(f / 1e6)


def _get(row: Mapping[str, Any], *keys: str) -> Any:
    """First non-empty value among ``keys`` (dotted keys walk nested dicts)."""
    for key in keys:
        cur: Any = row
        for part in key.split("."):
            cur = cur.get(part) if isinstance(cur, Mapping) else None
        if cur is not None and cur != "":
            return cur
    return None


def _rel(path: Path, root: Path) -> str:
    try:
        rel = path.resolve().relative_to(root.resolve())
        return path.resolve().name if str(rel) == "." else str(rel)
    except ValueError:
        return str(path)


def _file_size(path: Path) -> int | None:
    try:
        return path.stat().st_size
    except OSError:
        return None


# -- sections ---------------------------------------------------------------------------------

def _dataset_section(doc: Doc, ds_dir: Path, expected_hash: str | None, seen: set[str]) -> None:
    key = str(ds_dir.resolve()) if ds_dir.exists() else str(ds_dir)
    if key in seen:
        doc.p(f"Dataset {ds_dir}: shown above.")
        return
    seen.add(key)
    info_path = ds_dir / "dataset.json"
    try:
        info = _read_json(info_path)
    except (OSError, DataError) as exc:
        doc.p(f"Dataset {ds_dir}: dataset.json not readable here ({type(exc).__name__}); counts not shown.",
              "note")
        return
    if not isinstance(info, dict):
        doc.p(f"Dataset {ds_dir}: dataset.json is not an object; counts not shown.", "note")
        return
    doc.h(3, f"Dataset: {info.get('source', ds_dir.name)}")
    doc.kv([("folder", str(ds_dir)), ("taxonomy", info.get("taxonomy")), ("hash", info.get("hash")),
            ("seed", info.get("seed")), ("test fraction", info.get("test_fraction")),
            ("validation fraction", info.get("val_fraction")), ("skipped files", info.get("skipped"))])
    if expected_hash and info.get("hash") and expected_hash != info.get("hash"):
        doc.p(f"Warning: the run was trained on dataset hash {expected_hash}, but {info_path} now has "
              f"hash {info.get('hash')}; the dataset changed since.", "note")
    counts = info.get("counts") or {}
    classes = list(info.get("classes") or counts.keys())
    splits = [s for s in ("train", "val", "test") if any(isinstance(counts.get(c), Mapping) and s in counts[c]
                                                         for c in classes)]
    extra = sorted({s for c in classes if isinstance(counts.get(c), Mapping) for s in counts[c]} - set(splits))
    splits += extra
    if classes:
        rows, totals = [], [0] * len(splits)
        for i, c in enumerate(classes, 1):
            cc = counts.get(c) if isinstance(counts.get(c), Mapping) else {}
            vals = [int(_num(cc.get(s)) or 0) for s in splits]
            totals = [t + v for t, v in zip(totals, vals)]
            rows.append([i, c] + vals + [sum(vals)])
        rows.append(["", "total"] + totals + [sum(totals)])
        doc.table(["#", "class"] + splits + ["all"], rows, ["r", "l"] + ["r"] * (len(splits) + 1))
    dropped = info.get("dropped") or {}
    if dropped:
        doc.p("Dropped source labels (not in the taxonomy): "
              + ", ".join(f"{k} ({v})" for k, v in sorted(dropped.items())) + ".")
    else:
        doc.p("No source labels were dropped.")


def _read_history(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return [dict(r) for r in csv.DictReader(fh)]


def _metrics_blocks(doc: Doc, metrics: Mapping[str, Any], name: str, level: int = 3) -> None:
    from edge_derm.evaluation.plots import plot_confusion
    from edge_derm.evaluation.report import per_class_rows, summary_rows

    doc.table(["metric", "%", "95% CI"], summary_rows(metrics))
    header, rows = per_class_rows(metrics)
    doc.table(header, rows, ["r", "l"] + ["r"] * (len(header) - 2))
    tri = metrics.get("triage")
    if tri:
        doc.h(level, "Triage view")
        trows = []
        for g in tri.get("groups", []):
            s = tri.get("per_group", {}).get(g, {})
            trows.append([g, _pct(s.get("sensitivity")), _pct(s.get("precision")), _pct(s.get("f1")),
                          s.get("support"), ", ".join(tri.get("classes", {}).get(g, []))])
        doc.table(["group", "Sens.", "Prec.", "F1", "Support", "classes"], trows, ["l", "r", "r", "r", "r", "l"])
    cal, op = metrics.get("calibration"), metrics.get("operating_point")
    if cal:
        doc.h(level, "Calibration (temperature fitted on the validation split)")
        doc.table(["", "temperature", "ECE", "NLL"],
                  [["before", "1", _fmt(cal.get("ece_before"), 3), _fmt(cal.get("nll_before"), 3)],
                   ["after", _fmt(cal.get("temperature"), 3), _fmt(cal.get("ece_after"), 3),
                    _fmt(cal.get("nll_after"), 3)]])
    if op:
        doc.h(level, "Triage operating point (chosen on the validation split)")
        doc.table(["refer when", "target sens.", "sensitivity", "specificity", "referred"],
                  [[f"P({' + '.join(op.get('referral_classes') or [])}) >= {_fmt(op.get('threshold'), 3)}",
                    _pct(op.get("target_sensitivity"), 0), _pct(op.get("sensitivity")), _pct(op.get("specificity")),
                    _pct(op.get("referral_rate"))]])
    if metrics.get("confusion") and metrics.get("classes"):
        try:
            doc.img(f"{name}_confusion.png", plot_confusion(metrics, None), "confusion matrix (counts)")
            doc.img(f"{name}_confusion_normalised.png", plot_confusion(metrics, None, normalised=True),
                    "confusion matrix (row-normalised)")
        except DataError as exc:
            doc.p(f"Confusion matrix not drawn: {exc}", "note")


def _run_section(doc: Doc, s: Section, root: Path, seen: set[str], prov: list) -> None:
    from edge_derm.evaluation.plots import plot_history

    cfg = s.info
    name = _rel(s.path, root)
    doc.h(1, f"Training run: {name}")
    weights = cfg.get("weights")
    if weights in (None, "none"):
        wtext = "none: trained from scratch (no pre-trained weights)"
    elif weights == "imagenet":
        wtext = "imagenet: ImageNet pre-trained weights"
    else:
        wtext = f"{weights}"
    note = cfg.get("weights_note") or cfg.get("weights_source")
    if note:
        wtext += f" ({note})"
    doc.kv([("backbone", cfg.get("backbone")), ("alpha", cfg.get("alpha")), ("input size", cfg.get("image_size")),
            ("resize", cfg.get("resize_mode")), ("preprocessing", cfg.get("preprocessing")),
            ("weights", wtext), ("taxonomy", cfg.get("taxonomy")),
            ("classes", ", ".join(map(str, cfg.get("classes") or [])) or None), ("seed", cfg.get("seed")),
            ("parameters", cfg.get("parameters") or cfg.get("params"))])
    data = cfg.get("data") or []
    if data:
        doc.h(2, "Dataset")
        for d in data:
            if isinstance(d, Mapping) and d.get("dir"):
                _dataset_section(doc, Path(d["dir"]), d.get("hash"), seen)
    hist = s.path / "history.csv"
    if hist.is_file():
        doc.h(2, "Training curves")
        try:
            rows = _read_history(hist)
            doc.img(f"{_slug(name)}_history.png", plot_history(rows, None, title=f"{name}: per block step"),
                    "training curves")
            _history_table(doc, rows)
        except (DataError, OSError, ValueError, csv.Error) as exc:
            doc.p(f"history.csv not plotted: {exc}", "note")
    mpath = s.path / "metrics.json"
    if mpath.is_file():
        doc.h(2, "Test metrics")
        metrics = _read_json(mpath)
        if isinstance(metrics, Mapping):
            _metrics_blocks(doc, metrics, _slug(name))
    fpath = s.path / "forgetting.json"
    if fpath.is_file():
        doc.h(2, "Forgetting across plan stages")
        _forgetting_blocks(doc, fpath)
    prov.append((f"Run: {name}", cfg, [("config hash", cfg.get("config_hash"))] +
                 [(f"dataset {i}", d.get("hash")) for i, d in enumerate(data) if isinstance(d, Mapping)] +
                 _hash_files(s.path, ["model.keras"])))


def _history_table(doc: Doc, rows: list[dict[str, str]]) -> None:
    """Last epoch of each block step: the figures at the end of the step."""
    last: dict[tuple[str, str], dict[str, str]] = {}
    epochs: dict[tuple[str, str], int] = {}
    for r in rows:
        key = (str(r.get("stage") or ""), str(r.get("step", "")))
        last[key] = r
        epochs[key] = epochs.get(key, 0) + 1
    cols = [c for c in ("loss", "accuracy", "val_loss", "val_accuracy") if any(_num(r.get(c)) is not None for r in rows)]
    if not last or not cols:
        return
    staged = any(k[0] for k in last)
    trows = [([k[0]] if staged else []) + [k[1], r.get("block") or DASH, epochs[k]] + [_fmt(r.get(c), 4) for c in cols]
             for k, r in last.items()]
    head = (["stage"] if staged else []) + ["step", "block", "epochs"] + [f"{c} (end)" for c in cols]
    doc.table(head, trows, (["l"] if staged else []) + ["r", "l", "r"] + ["r"] * len(cols))


def _forgetting_blocks(doc: Doc, path: Path) -> None:
    """The forgetting matrix of a sequential plan (``forgetting.json``)."""
    f = _read_json(path)
    names = f.get("stages") or []
    macro, acc = f.get("macro_f1") or [], f.get("accuracy") or []
    rows = []
    for i, name in enumerate(names):
        cells = []
        for j in range(len(names)):
            m = macro[i][j] if i < len(macro) and j < len(macro[i]) else None
            a = acc[i][j] if i < len(acc) and j < len(acc[i]) else None
            cells.append(DASH if m is None else f"{_pct(m, 1)} ({_pct(a, 1)})")
        rows.append([name] + cells)
    doc.p("Macro F1 % (accuracy %) of each stage's head on its own test set; rows: after training stage, "
          "columns: test set of stage.")
    doc.table(["after \\ test"] + list(names), rows)


def _slug(name: str) -> str:
    out = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in name).strip("_")
    return out or "root"


def _hash_files(folder: Path, names: list[str]) -> list[tuple[str, str]]:
    from edge_derm.provenance import hash_file

    out = []
    for n in names:
        p = folder / n
        if p.is_file():
            try:
                out.append((f"sha256 {n}", hash_file(p)[:16]))
            except OSError:
                pass
    return out


def _convert_section(doc: Doc, s: Section, root: Path, prov: list) -> None:
    """Variant table of a convert folder: size, dtypes, verification against the Keras model."""
    name = _rel(s.path, root)
    doc.h(1, f"Conversion: {name}")
    variants = s.info.get("variants") or {}
    doc.kv([("source run", s.info.get("run")), ("variants", ", ".join(variants) or None)])
    rows = []
    mismatches: list[str] = []
    for q, meta in variants.items():
        meta = meta if isinstance(meta, Mapping) else {}
        f = s.path / f"model.{q}.tflite"
        ver = meta.get("verification") or {}
        size = _file_size(f)
        passed = ver.get("passed")
        problem = _file_disagrees(f, meta)
        if problem:
            mismatches.append(f"model.{q}.tflite: {problem}")
            passed = False
        rows.append([q, _mb(size), _get(meta, "input.dtype"), _get(meta, "output.dtype"),
                     _pct(ver.get("top1_agreement")), _fmt(ver.get("max_abs_diff"), 4),
                     _fmt(ver.get("mean_abs_diff"), 5), _pct(ver.get("integer_op_share"), 1), ver.get("n"),
                     DASH if passed is None else ("pass" if passed else "FAIL")])
    if rows:
        doc.table(["variant", "size MB", "input", "output", "top-1 agreement %", "max |diff|", "mean |diff|",
                   "integer ops %", "n", "verification"], rows, ["l"] + ["r"] * 8 + ["l"])
    for line in mismatches:
        doc.p(f"**Warning: model.json does not describe the file.** {line}; convert again.")
    first = next((m for m in variants.values() if isinstance(m, Mapping)), {})
    if first.get("labels"):
        doc.p("Labels (output order): " + ", ".join(map(str, first["labels"])) + ".")
    if first.get("input"):
        inp = first["input"]
        doc.p(f"Input: {inp.get('size')} {inp.get('color', 'RGB')}, resize {inp.get('resize')}, range "
              f"{inp.get('range')}; preprocessing inside the model: {inp.get('preprocessing_in_model', DASH)}.")
    versions = next((m["provenance"]["versions"] for m in variants.values() if isinstance(m, Mapping)
                     and isinstance(m.get("provenance"), Mapping) and m["provenance"].get("versions")), None)
    prov.append((f"Conversion: {name}", {"run": s.info.get("run"), "versions": versions,
                                     "provenance": {q: (m or {}).get("provenance") for q, m in variants.items()
                                                    if isinstance(m, Mapping)}},
                 [(f"sha256 model.{q}.tflite", h) for q in variants
                  for _, h in _hash_files(s.path, [f"model.{q}.tflite"])]))


def _file_disagrees(f: Path, meta: Mapping[str, Any]) -> str | None:
    """What in ``model.json``'s entry contradicts the .tflite itself (hash, input size), or None. The
    report shows the file, not what a hand-edited document says about it."""
    from edge_derm.errors import ModelError
    from edge_derm.runtime import inspect_tflite, sha256_bytes

    if not f.is_file():
        return None
    data = f.read_bytes()
    recorded = meta.get("sha256")
    if isinstance(recorded, str) and recorded != sha256_bytes(data):
        return "its SHA-256 differs from the one model.json recorded (the file was changed)"
    try:
        shape = inspect_tflite(data).input_tensors[0].shape
    except (ModelError, IndexError) as exc:
        return f"it is not a sound model ({exc})"
    size = _get(meta, "input.size")
    if isinstance(size, list) and len(size) == 2 and list(size) != [int(shape[1]), int(shape[2])]:
        return f"model.json says input {size[0]} x {size[1]} but the file takes {shape[1]} x {shape[2]}"
    return None


def _row_label(row: Mapping[str, Any]) -> str:
    """How the benchmark names a row in its gate messages."""
    return f"{row.get('model')} ({row.get('device')}, {row.get('threads')} threads)"


def _quant(row: Mapping[str, Any]) -> str:
    q = _get(row, "quantization", "variant")
    if q is None:
        name = str(_get(row, "model", "path", "name") or "")
        parts = Path(name).name.split(".")
        q = parts[-2] if len(parts) >= 3 and parts[-1] == "tflite" else None
    return str(q) if q is not None else DASH


def _gate(row: Mapping[str, Any], configured: bool, failures: list[str]) -> str:
    """Gate status of a row: explicit in the row, else from results.json's gate failure messages."""
    g = _get(row, "gate", "gate_status", "gate_passed")
    if isinstance(g, bool):
        return "pass" if g else "FAIL"
    if g is not None:
        return str(g)
    if not configured:
        return DASH
    mine = [f for f in failures if str(f).startswith(_row_label(row))]
    return f"FAIL ({len(mine)})" if mine else "pass"


def _size_bytes(row: Mapping[str, Any]) -> float | None:
    """A benchmark row's file size in bytes (``size_bytes``, else ``size_mb``)."""
    size = _get(row, "size_bytes")
    if size is None and _num(_get(row, "size_mb")) is not None:
        size = _num(_get(row, "size_mb")) * 1e6
    return size


def _per_class(row: Mapping[str, Any]) -> dict[str, Any]:
    pc = _get(row, "metrics.per_class", "per_class")
    return dict(pc) if isinstance(pc, Mapping) else {}


def _is_reference(row: Mapping[str, Any]) -> bool:
    return row.get("reference") is True or (row.get("reference") is not None and row.get("reference") == row.get("model"))


def _fallback_reference(row: Mapping[str, Any], rows: list[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """For rows without ``deltas``: the fp32 row on the same device and threads."""
    same = [r for r in rows if _quant(r) == "fp32" and r is not row and r.get("device") == row.get("device")
            and r.get("threads") == row.get("threads") and _per_class(r)]
    return same[0] if len(same) == 1 else None


def _deltas(row: Mapping[str, Any], rows: list[Mapping[str, Any]]) -> dict[str, Any] | None:
    """``compare_metrics`` deltas of a row: its own ``deltas``, else against the fp32 row beside it."""
    d = _get(row, "deltas", "delta")
    if isinstance(d, Mapping):
        return dict(d)
    if _is_reference(row) or not _per_class(row):
        return None
    ref = _fallback_reference(row, rows)
    if ref is None:
        return None
    from edge_derm.evaluation.metrics import compare_metrics

    mine = {"macro_f1": _get(row, "metrics.macro_f1", "macro_f1"), "accuracy": _get(row, "metrics.accuracy", "accuracy"),
            "weighted_f1": _get(row, "metrics.weighted_f1", "weighted_f1"), "per_class": _per_class(row)}
    theirs = {"macro_f1": _get(ref, "metrics.macro_f1", "macro_f1"), "accuracy": _get(ref, "metrics.accuracy", "accuracy"),
              "weighted_f1": _get(ref, "metrics.weighted_f1", "weighted_f1"), "per_class": _per_class(ref)}
    return compare_metrics(mine, theirs)


def _verification(row: Mapping[str, Any], cache: dict[str, Any]) -> Mapping[str, Any]:
    """The convert verification of a benchmarked model, from the model.json beside its file."""
    path = _get(row, "path", "model")
    if not path or not str(path).endswith(".tflite"):
        return {}
    mj = Path(str(path)).parent / "model.json"
    key = str(mj)
    if key not in cache:
        try:
            cache[key] = _read_json(mj) if mj.is_file() else None
        except (OSError, DataError):
            cache[key] = None
    info = cache[key]
    if not isinstance(info, Mapping) or info.get("kind") != "convert":
        return {}
    meta = (info.get("variants") or {}).get(_quant(row))
    return (meta or {}).get("verification") or {} if isinstance(meta, Mapping) else {}


def _summary_section(doc: Doc, sections: list[Section], root: Path) -> None:
    """The answer first: one row per variant (size, latency, macro F1, melanoma / BCC sensitivity, agreement
    with fp32, verification, gates) and the latency-vs-accuracy plot, from the first benchmark folder; a
    convert folder's verdicts or a run's headline figures when there is no benchmark."""
    bench = next((s for s in sections if s.kind == "benchmark" and s.info.get("rows")), None)
    if bench is None:
        conv = next((s for s in sections if s.kind == "convert"), None)
        if conv is not None and conv.info.get("summary"):
            doc.h(1, "Summary")
            doc.table(["variant", "status", "size MB", "top-1 agreement with Keras %", "melanoma / BCC changed"],
                      [[r.get("mode"), r.get("status"), _mb(r.get("size_bytes")), _pct(r.get("top1_agreement")),
                        ", ".join(f"{k} {v}" for k, v in (r.get("watch_flips") or {}).items()) or DASH]
                       for r in conv.info["summary"] if isinstance(r, Mapping)], ["l", "l", "r", "r", "l"])
            doc.p("No benchmark in this folder: run `edge-derm benchmark` for latency and per-class accuracy.")
            return
        run = next((s for s in sections if s.kind == "run"), None)
        metrics = _read_json(run.path / "metrics.json") if run is not None and (run.path / "metrics.json").is_file() else None
        if isinstance(metrics, Mapping):
            pc = metrics.get("per_class") or {}
            doc.h(1, "Summary")
            doc.kv([("macro F1", f"{_pct(metrics.get('macro_f1'))} %"),
                    ("balanced accuracy", f"{_pct(metrics.get('balanced_accuracy'))} %"),
                    *((f"{c} sensitivity", f"{_pct((pc.get(c) or {}).get('sensitivity'))} %") for c in ("MM", "BCC")
                      if c in pc),
                    ("expected calibration error", _fmt(metrics.get("ece"), 3))])
        return
    doc.h(1, "Summary")
    rows = [r for r in bench.info["rows"] if isinstance(r, Mapping)]
    cfg = bench.info.get("config") if isinstance(bench.info.get("config"), Mapping) else {}
    gate_info = bench.info.get("gates") if isinstance(bench.info.get("gates"), Mapping) else {}
    failures = [str(f) for f in (gate_info.get("failures") or [])]
    watch = [c for c in ("MM", "BCC") if any(c in _per_class(r) for r in rows)]
    cache: dict[str, Any] = {}
    table, points = [], []
    for r in rows:
        size = _size_bytes(r)
        lat, macro = _get(r, "latency_median_ms", "latency_mean_ms"), _get(r, "metrics.macro_f1", "macro_f1")
        dis = _num(r.get("disagreement"))
        ver = _verification(r, cache)
        passed = ver.get("passed") if isinstance(ver, Mapping) else None
        ok = str(r.get("status") or "ok").lower() == "ok"
        table.append([f"{r.get('model')}" + ("" if ok else f" ({r.get('status')})"), f"{r.get('device')} x{r.get('threads')}",
                      _mb(size), _auto(lat), _pct(macro),
                      *(_pct((_per_class(r).get(c) or {}).get("sensitivity")) for c in watch),
                      "ref" if _is_reference(r) else (DASH if dis is None else f"{100 * (1 - dis):.1f}"),
                      DASH if passed is None else ("pass" if passed else "FAIL"),
                      _gate(r, bool(cfg.get("gates")), failures)])
        points.append({"label": str(r.get("model")), "latency_ms": _num(lat), "macro_f1": _num(macro),
                       "size_bytes": _num(size), "group": f"{r.get('device')} x{r.get('threads')}"})
    doc.table(["variant", "device", "size MB", "latency ms", "macro F1 %", *(f"{c} sens. %" for c in watch),
               "agreement w/ ref %", "verified", "gates"], table,
              ["l", "l"] + ["r"] * (4 + len(watch)) + ["l", "l"])
    doc.p(f"From {_rel(bench.path, root)}: {cfg.get('data') or 'no test data'} ({cfg.get('split', DASH)} split). "
          "Latency: median of the timed runs; agreement: same class as the reference (the fp32 model unless "
          "--reference named another); verified: the converter's "
          "fidelity check against the Keras model; details below.")
    from edge_derm.evaluation.plots import plot_latency_f1

    try:
        doc.img("summary_latency_f1.png", plot_latency_f1(points, None), "latency vs macro F1")
    except DataError as exc:
        doc.p(f"Latency-vs-F1 plot not drawn: {exc}", "note")


def _benchmark_section(doc: Doc, s: Section, root: Path, prov: list) -> None:
    from edge_derm.evaluation.plots import plot_latency_f1

    name = _rel(s.path, root)
    doc.h(1, f"Benchmark: {name}")
    rows = [r for r in (s.info.get("rows") or []) if isinstance(r, Mapping)]
    cfg = s.info.get("config") if isinstance(s.info.get("config"), Mapping) else {}
    gates_cfg = cfg.get("gates") or {}
    gate_info = s.info.get("gates") if isinstance(s.info.get("gates"), Mapping) else {}
    failures = [str(f) for f in (gate_info.get("failures") or [])]
    if cfg.get("data") or cfg.get("device"):
        doc.kv([("test data", cfg.get("data")), ("split", cfg.get("split")), ("device", cfg.get("device")),
                ("threads", cfg.get("threads")), ("warm-up / timed runs", f"{cfg.get('warmup', DASH)} / {cfg.get('runs', DASH)}"),
                ("gates (largest allowed drop, points)", ", ".join(f"{k} ≤ {v}" for k, v in gates_cfg.items()) or "none")])
    if not rows:
        doc.p("results.json has no rows.", "note")
        prov.append((f"Benchmark: {name}", _bench_prov(s, cfg), []))
        return
    # Label a model by its quantisation when that is unambiguous, else by its name.
    quant_of = {str(_get(r, "model", "path")): _quant(r) for r in rows}
    unique = len(set(quant_of.values())) == len(quant_of)
    def label(r: Mapping[str, Any]) -> str:
        q = _quant(r)
        return q if unique and q not in ("unknown", DASH) else str(_get(r, "model", "path") or q)

    doc.h(2, "Quantisation comparison")
    cache: dict[str, Any] = {}
    table, points, per_model = [], [], {}
    for r in rows:
        size = _size_bytes(r)
        lat = _get(r, "latency_median_ms", "median_ms", "latency_ms", "latency_mean_ms")
        macro = _get(r, "metrics.macro_f1", "macro_f1")
        d = _deltas(r, rows)
        ref = _is_reference(r)
        dis = _num(r.get("disagreement"))
        ver = _verification(r, cache)
        passed = ver.get("passed") if isinstance(ver, Mapping) else None
        threads = r.get("threads", r.get("num_threads"))
        group = f"{r.get('device') or DASH}" + (f" x{threads}" if threads not in (None, "") else "")
        table.append([label(r), r.get("device"), threads, r.get("status"), _mb(size), _auto(lat),
                      _auto(_get(r, "latency_p90_ms", "p90_ms")), _auto(_get(r, "peak_memory_mb")),
                      _pct(_get(r, "metrics.accuracy", "accuracy")), _pct(macro),
                      _pct(_get(r, "metrics.weighted_f1", "weighted_f1")),
                      "ref" if ref else _pp((d or {}).get("macro_f1")),
                      "ref" if ref else (DASH if dis is None else f"{100 * (1 - dis):.2f}"),
                      DASH if passed is None else ("pass" if passed else "FAIL"),
                      _gate(r, bool(gates_cfg), failures)])
        points.append({"label": label(r), "latency_ms": _num(lat), "macro_f1": _num(macro), "size_bytes": _num(size),
                       "group": group})
        if _per_class(r) and label(r) not in per_model:
            per_model[label(r)] = (r, d, ref)  # accuracy does not depend on device or threads
    doc.table(["model", "device", "threads", "status", "size MB", "latency median ms", "p90 ms", "peak MB",
               "accuracy %", "macro F1 %", "weighted F1 %", "Δ macro F1 pp", "agreement w/ ref %",
               "verified", "gate"], table, ["l", "l", "r", "l"] + ["r"] * 9 + ["l", "l"])
    doc.p("Δ and agreement are against the reference model (the float fp32 model unless --reference named "
          "another), in percentage points; 'verified' is the converter's check against the Keras model; "
          "latency is the median of timed runs after warm-up.")
    if failures:
        doc.p("Gate failures: " + "; ".join(failures), "note")
    elif gates_cfg:
        doc.p("Every gate holds.")
    for r in rows:
        if str(r.get("status") or "ok").lower() != "ok":
            doc.p(f"{label(r)} ({r.get('device')}): {r.get('status')}: {_get(r, 'reason', 'error', 'message') or DASH}",
                  "note")
    classes: list[str] = []
    for r, _, _ in per_model.values():
        classes += [c for c in _per_class(r) if c not in classes]
    if classes and any(d for _, d, _ in per_model.values()):
        for metric, title in (("sensitivity", "sensitivity"), ("f1", "F1")):
            drows = []
            for lab, (r, d, ref) in per_model.items():
                pcd = (d or {}).get("per_class") or {}
                drows.append([lab] + ["ref" if ref else _pp((pcd.get(c) or {}).get(metric)) for c in classes])
            doc.h(2, f"Per-class {title} change against the reference (pp)")
            doc.table(["model"] + classes, drows)
    if len(per_model) > 0 and classes:
        doc.h(2, "Per-class F1 (%)")
        doc.table(["model"] + classes,
                  [[lab] + [_pct((_per_class(r).get(c) or {}).get("f1")) for c in classes]
                   for lab, (r, _, _) in per_model.items()])
    domains = [d for d in (s.info.get("domains") or []) if isinstance(d, Mapping) and isinstance(d.get("models"), Mapping)]
    if domains:
        from edge_derm.benchmarks.report import DOMAIN_COLUMNS, domain_rows

        doc.h(2, "Across datasets (domain shift)")
        doc.table(list(DOMAIN_COLUMNS), domain_rows(domains), ["l", "l"] + ["r"] * (len(DOMAIN_COLUMNS) - 2))
        doc.p("; ".join(f"data {i + 1}: {d.get('data')} (classes {', '.join(d.get('classes') or [])})"
                        for i, d in enumerate(domains))
              + ". Macro F1 and balanced accuracy are over each dataset's classes; 'absent' is the share of "
                "predictions of a class the dataset does not have (errors); 'agree' is against the reference.")
    try:
        doc.img(f"{_slug(name)}_latency_f1.png", plot_latency_f1(points, None), "latency vs macro F1")
    except DataError as exc:
        doc.p(f"Latency-vs-F1 plot not drawn: {exc}", "note")
    prov.append((f"Benchmark: {name}", _bench_prov(s, cfg), []))


def _bench_prov(s: Section, cfg: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(cfg)
    if s.info.get("versions") and not out.get("versions"):
        out["versions"] = s.info["versions"]
    if s.info.get("devices"):
        out["devices"] = s.info["devices"]
    return out


def _provenance_section(doc: Doc, prov: list) -> None:
    doc.h(1, "Provenance")
    for title, cfg, hashes in prov:
        doc.h(2, title)
        versions = cfg.get("versions") if isinstance(cfg, Mapping) else None
        if hashes:
            doc.kv(hashes)
        if isinstance(versions, Mapping) and versions:
            doc.table(["package", "version"], [[k, v] for k, v in versions.items()], ["l", "l"])
        doc.pre("full config (JSON)", json.dumps(cfg, indent=2, default=str, sort_keys=False))


# -- building and writing ---------------------------------------------------------------------

@dataclass
class Report:
    """A rendered report, not yet written."""

    title: str
    markdown: str
    html: str
    images: dict[str, bytes]
    sections: list[Section]


def _demo_section(doc: Doc, folder: Path) -> None:
    """A short "Demo" section from ``summary.json`` (written by ``edge-derm demo``), when present."""
    path = folder / "summary.json"
    if not path.is_file():
        return
    s = _read_json(path)
    if not isinstance(s, dict) or s.get("kind") != "demo":
        return
    doc.h(2, "Demo")
    w, t, m, g = (s.get(k) or {} for k in ("weights", "training", "metrics", "gates"))
    keras = m.get("keras") or {}
    chance = _num(m.get("chance_accuracy"))
    acc = _num(keras.get("accuracy"))
    pairs = [("weights", w.get("note", DASH))]
    if t:
        recipe = ("every layer from epoch 1 (unfreeze full)" if t.get("unfreeze") == "full"
                  else f"block-wise: {' -> '.join(t.get('steps') or [])}")
        pairs.append(("training", f"{t.get('backbone')} at {t.get('image_size')} px, {recipe}, "
                                  f"{t.get('epochs', DASH)} epochs, lr head {t.get('lr_head')} / "
                                  f"backbone {t.get('lr_backbone')}"))
    if acc is not None and chance:
        pairs.append(("test accuracy (Keras)", f"{_pct(acc)} % ({acc / chance:.1f}x chance {_pct(chance)} %), "
                                               f"macro F1 {_pct(keras.get('macro_f1'))} %"))
    if g:
        pairs.append(("gates", f"{', '.join(g.get('rules') or [])}: " + (
            "passed" if g.get("passed") else f"{len(g.get('failures') or [])} failed (reported, not fatal)")))
    doc.kv(pairs)
    stages = s.get("stages") or []
    if stages:
        doc.table(["stage", "seconds"], [[st.get("name"), _fmt(st.get("seconds"), 1)] for st in stages])


def build_report(folder: Path) -> Report:
    """Find the artefact folders under ``folder`` and render the report in memory.

    Raises:
        DataError: ``folder`` is none of run / convert / benchmark, or one of its JSON files is corrupt.
    """
    from edge_derm import __version__

    folder = Path(folder)
    sections = find_sections(folder)
    doc, prov, seen = Doc(), [], set()
    kinds = sorted({s.kind for s in sections}, key=[k for k, _ in KINDS].index)
    doc.p(f"Folder {folder.resolve()} · sections: {', '.join(kinds)} · edge-derm {__version__}", "meta")
    try:
        _summary_section(doc, sections, folder)  # the answer first, then the details
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise DataError(f"{folder}: the files of its summary do not have the expected layout ({exc}); "
                        "regenerate them with this edge-derm version") from None
    _demo_section(doc, folder)
    for s in sections:
        try:
            if s.kind == "run":
                _run_section(doc, s, folder, seen, prov)
            elif s.kind == "convert":
                _convert_section(doc, s, folder, prov)
            elif s.kind == "benchmark":
                _benchmark_section(doc, s, folder, prov)
        except EdgeDermError:
            raise
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise DataError(f"{s.path}: the {s.kind} files do not have the expected layout ({exc}); "
                            "regenerate them with this edge-derm version") from None
    _provenance_section(doc, prov)
    title = f"edge-derm report: {folder.resolve().name}"
    return Report(title, render_markdown(doc, title), render_html(doc, title), doc.images, sections)


def write_report(folder: Path, out: Path | None = None, force: bool = False) -> dict[str, Path]:
    """Render and write ``report.html``, ``report.md`` and ``report_assets/`` for ``folder``.

    Args:
        folder: A run, convert or benchmark folder, or a folder holding several (a demo).
        out: Output folder (default: ``folder`` itself, where existing report files are replaced;
            they are derived files).
        force: Replace report files in an ``out`` other than ``folder``.

    Returns:
        ``{"html": path, "markdown": path, "assets": path}``.

    Raises:
        DataError: Not a report folder; OutputExistsError: report files in another ``out`` without force.
    """
    import tempfile

    from edge_derm.fsutil import staged_dir

    folder = Path(folder)
    rep = build_report(folder)  # everything rendered before anything is written
    out = Path(out) if out is not None else folder
    same = out.exists() and out.resolve() == folder.resolve()
    if not same and not force:
        existing = [n for n in REPORT_FILES if (out / n).exists()]
        if existing:
            raise OutputExistsError(f"{out / existing[0]} already exists; pass --force to replace it")
    out.mkdir(parents=True, exist_ok=True)
    # Write both pages to temporary files first, then the assets folder, then rename: a full disk or a
    # permission error leaves the previous report (if any) untouched and no temporary files behind.
    staged: list[tuple[str, Path]] = []
    try:
        for name, text in (("report.md", rep.markdown), ("report.html", rep.html)):
            fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=out)
            staged.append((tmp, out / name))
            with os.fdopen(fd, "wb") as fh:
                fh.write(text.encode("utf-8"))
                fh.flush()
                os.fsync(fh.fileno())
        with staged_dir(out / ASSETS, force=True) as tmp_assets:
            for name, data in rep.images.items():
                (tmp_assets / name).write_bytes(data)
        for tmp, dst in staged:
            os.replace(tmp, dst)
    finally:
        for tmp, _ in staged:
            if os.path.exists(tmp):
                os.unlink(tmp)
    _log.info("report written to %s", out)
    return {"html": out / "report.html", "markdown": out / "report.md", "assets": out / ASSETS}
