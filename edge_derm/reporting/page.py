"""``edge-derm report``: one self-contained HTML page and a markdown twin for any artefact folder.

The folder kind comes from its JSON, read as :mod:`edge_derm.artefacts` types: ``config.json`` (kind
``run``), ``model.json`` (``convert``), ``results.json`` (``benchmark``). A folder holding several of these
below it (a demo folder) gets every section. The report is built in memory as one document
(:class:`~edge_derm.reporting.document.Doc`), rendered twice (markdown and HTML), and only then written:
``report.md``, ``report.html`` (images base64-embedded, inline CSS, no script, no network) and
``report_assets/*.png`` (the images that ``report.md`` links to).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from edge_derm.artefacts import Artefact, BenchmarkResults, ConvertResult, DemoSummary, RunConfig, documents
from edge_derm.errors import DataError, EdgeDermError, OutputExistsError
from edge_derm.reporting.document import ASSETS, Doc, render_html, render_markdown
from edge_derm.reporting.files import read_json
from edge_derm.reporting.format import DASH, fmt, mb, num, pct

_log = logging.getLogger(__name__)

#: The artefact type of each section kind, in report order.
KINDS: tuple[tuple[str, type[Artefact]], ...] = (("run", RunConfig), ("convert", ConvertResult),
                                                  ("benchmark", BenchmarkResults))
REPORT_FILES = ("report.html", "report.md")
MAX_DEPTH = 3


@dataclass
class Section:
    """One artefact folder found under the report folder: its document, typed and as the file holds it."""

    kind: str
    path: Path
    doc: Artefact
    #: the JSON object of the file, as written (the provenance section shows it)
    info: dict[str, Any]


def _sections_of(folder: Path) -> list[Section]:
    """The artefact documents ``folder`` holds (a file of the right name but another kind is skipped)."""
    return [Section(doc.KIND, folder, doc, raw) for doc, raw in documents(folder, tuple(cls for _, cls in KINDS))]


def find_sections(folder: Path) -> list[Section]:
    """Every run / convert / benchmark folder at or below ``folder`` (at most 3 levels down).

    Raises:
        DataError: ``folder`` is missing or holds none of these, or one of them cannot be read.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder} is not a folder; give a run, convert or benchmark folder")
    sections: list[Section] = []
    todo = [(folder, 0)]
    while todo:
        here, depth = todo.pop(0)
        sections += _sections_of(here)
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


# -- the summary, demo and provenance sections ------------------------------------------------------

def summary_section(doc: Doc, sections: list[Section], root: Path) -> None:
    """The answer first: the first benchmark's summary; a convert folder's verdicts or a run's headline
    figures when there is no benchmark."""
    from edge_derm.reporting.benchmark import SUMMARY_CLASSES, benchmark_summary

    bench = next((s for s in sections if s.kind == "benchmark" and s.doc.rows), None)
    if bench is not None:
        benchmark_summary(doc, bench.path, bench.doc, root)
        return
    conv = next((s for s in sections if s.kind == "convert"), None)
    if conv is not None and conv.doc.summary:
        doc.h(1, "Summary")
        doc.table(["variant", "status", "size MB", "top-1 agreement with Keras %", "melanoma / BCC changed"],
                  [[r.get("mode"), r.get("status"), mb(r.get("size_bytes")), pct(r.get("top1_agreement")),
                    ", ".join(f"{k} {v}" for k, v in (r.get("watch_flips") or {}).items()) or DASH]
                   for r in conv.doc.summary if isinstance(r, Mapping)], ["l", "l", "r", "r", "l"])
        doc.p("No benchmark in this folder: run `edge-derm benchmark` for latency and per-class accuracy.")
        return
    run = next((s for s in sections if s.kind == "run"), None)
    metrics = read_json(run.path / "metrics.json") if run is not None and (run.path / "metrics.json").is_file() else None
    if isinstance(metrics, Mapping):
        pc = metrics.get("per_class") or {}
        doc.h(1, "Summary")
        doc.kv([("macro F1", f"{pct(metrics.get('macro_f1'))} %"),
                ("balanced accuracy", f"{pct(metrics.get('balanced_accuracy'))} %"),
                *((f"{c} sensitivity", f"{pct((pc.get(c) or {}).get('sensitivity'))} %") for c in SUMMARY_CLASSES
                  if c in pc),
                ("expected calibration error", fmt(metrics.get("ece"), 3))])


def demo_section(doc: Doc, folder: Path) -> None:
    """A short "Demo" section from ``summary.json`` (written by ``edge-derm demo``), when present."""
    found = documents(folder, (DemoSummary,))
    if not found:
        return
    s = found[0][0]
    doc.h(2, "Demo")
    w, t, m, g = (s.get(k) or {} for k in ("weights", "training", "metrics", "gates"))
    keras = m.get("keras") or {}
    chance, acc = num(m.get("chance_accuracy")), num(keras.get("accuracy"))
    # the demo's full note (weights decision, schedule, BatchNorm re-estimation) is its own record
    pairs = [("weights", s.get("weights_note") or w.get("note", DASH))]
    if t:
        recipe = ("every layer from epoch 1 (unfreeze full)" if t.get("unfreeze") == "full"
                  else f"block-wise: {' -> '.join(t.get('steps') or [])}")
        pairs.append(("training", f"{t.get('backbone')} at {t.get('image_size')} px, {recipe}, "
                                  f"{t.get('epochs', DASH)} epochs, lr head {t.get('lr_head')} / "
                                  f"backbone {t.get('lr_backbone')}"))
    if acc is not None and chance:
        pairs.append(("test accuracy (Keras)", f"{pct(acc)} % ({acc / chance:.1f}x chance {pct(chance)} %), "
                                               f"macro F1 {pct(keras.get('macro_f1'))} %"))
    if g:
        pairs.append(("gates", f"{', '.join(g.get('rules') or [])}: " + (
            "passed" if g.get("passed") else f"{len(g.get('failures') or [])} failed (reported, not fatal)")))
    doc.kv(pairs)
    if s.stages:
        doc.table(["stage", "seconds"], [[st.get("name"), fmt(st.get("seconds"), 1)] for st in s.stages])


def provenance_section(doc: Doc, prov: list) -> None:
    """Hashes, package versions and the full config of every section."""
    doc.h(1, "Provenance")
    for title, cfg, hashes in prov:
        doc.h(2, title)
        versions = cfg.get("versions") if isinstance(cfg, Mapping) else None
        if hashes:
            doc.kv(hashes)
        if isinstance(versions, Mapping) and versions:
            doc.table(["package", "version"], [[k, v] for k, v in versions.items()], ["l", "l"])
        doc.pre("full config (JSON)", json.dumps(cfg, indent=2, default=str, sort_keys=False))


# -- building and writing ---------------------------------------------------------------------------

@dataclass
class Report:
    """A rendered report, not yet written."""

    title: str
    markdown: str
    html: str
    images: dict[str, bytes]
    sections: list[Section]


def _section(doc: Doc, s: Section, folder: Path, seen: set[str], prov: list) -> None:
    """Render one artefact folder's section."""
    from edge_derm.reporting.benchmark import benchmark_section
    from edge_derm.reporting.convert import convert_section
    from edge_derm.reporting.run import run_section

    if s.kind == "run":
        run_section(doc, s.path, s.doc, s.info, folder, seen, prov)
    elif s.kind == "convert":
        convert_section(doc, s.path, s.doc, folder, prov)
    elif s.kind == "benchmark":
        benchmark_section(doc, s.path, s.doc, folder, prov)


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
        summary_section(doc, sections, folder)  # the answer first, then the details
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise DataError(f"{folder}: the files of its summary do not have the expected layout ({exc}); "
                        "regenerate them with this edge-derm version") from None
    demo_section(doc, folder)
    for s in sections:
        try:
            _section(doc, s, folder, seen, prov)
        except EdgeDermError:
            raise
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise DataError(f"{s.path}: the {s.kind} files do not have the expected layout ({exc}); "
                            "regenerate them with this edge-derm version") from None
    provenance_section(doc, prov)
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
    folder = Path(folder)
    rep = build_report(folder)  # everything rendered before anything is written
    out = Path(out) if out is not None else folder
    same = out.exists() and out.resolve() == folder.resolve()
    if not same and not force:
        existing = [n for n in REPORT_FILES if (out / n).exists()]
        if existing:
            raise OutputExistsError(f"{out / existing[0]} already exists; pass --force to replace it")
    out.mkdir(parents=True, exist_ok=True)
    _write_files(out, rep)
    _log.info("report written to %s", out)
    return {"html": out / "report.html", "markdown": out / "report.md", "assets": out / ASSETS}


def _write_files(out: Path, rep: Report) -> None:
    """Write both pages to temporary files first, then the assets folder, then rename: a full disk or a
    permission error leaves the previous report (if any) untouched and no temporary files behind."""
    import tempfile

    from edge_derm.fsutil import staged_dir

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
