"""The document model every report is built as: an ordered list of blocks (headings, paragraphs, tables,
key-value tables, collapsed preformatted text, images), rendered to GitHub markdown and to one
self-contained HTML page (inline CSS, images as data URIs, a CSP that forbids any fetch).

Heading levels are relative to the document's title: ``h(1, ...)`` is the first level below it
(markdown ``##``, HTML ``<h2>``).
"""

from __future__ import annotations

import base64
import html
import os
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

from edge_derm.reporting.format import cell

#: Folder (beside report.md) that the markdown's images link to.
ASSETS = "report_assets"


@dataclass
class Doc:
    """An ordered list of blocks plus the PNG images they reference."""

    blocks: list[tuple] = field(default_factory=list)
    images: dict[str, bytes] = field(default_factory=dict)

    def h(self, level: int, text: str) -> None:
        self.blocks.append(("h", level, text))

    def p(self, text: str, cls: str = "") -> None:
        """A paragraph; ``cls`` ``note`` (a warning) or ``meta`` styles it in HTML."""
        self.blocks.append(("p", text, cls))

    def table(self, header: list[str], rows: list[list[Any]], align: list[str] | None = None) -> None:
        """A table; ``align`` items are ``l`` or ``r`` (default: first l, rest r); None cells print as a dash."""
        align = align or ["l"] + ["r"] * (len(header) - 1)
        self.blocks.append(("table", header, [[cell(v) for v in r] for r in rows], align))

    def kv(self, pairs: Iterable[tuple[str, Any]]) -> None:
        """A two-column table of (item, value) pairs with no header."""
        self.table(["", ""], [[k, v] for k, v in pairs], ["l", "l"])

    def pre(self, summary: str, text: str) -> None:
        """Preformatted text, collapsed under ``summary``."""
        self.blocks.append(("pre", summary, text))

    def img(self, name: str, png: bytes, alt: str) -> None:
        """A PNG image; ``name`` is made unique among the document's images."""
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


def md_table(header: list[str], rows: list[list[Any]], align: list[str] | None = None) -> str:
    """A GitHub-flavoured markdown table; ``align`` items are ``l`` or ``r`` (default: first l, rest r)."""
    align = align or ["l"] + ["r"] * (len(header) - 1)

    def esc(v: Any) -> str:
        return str(v).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(esc(h) for h in header) + " |",
             "|" + "|".join(":---" if a == "l" else "---:" for a in align) + "|"]
    lines += ["| " + " | ".join(esc(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def render_markdown(doc: Doc, title: str | None = None, assets: str = ASSETS) -> str:
    """Markdown of ``doc`` under ``# title`` (none when None); images link to ``<assets>/<name>``
    (``assets`` "" = beside the markdown)."""
    out = [f"# {title}", ""] if title is not None else []
    prefix = f"{assets}/" if assets else ""
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
            out += [f"![{b[2]}]({prefix}{b[1]})", ""]
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


def _html_block(b: tuple, images: Mapping[str, bytes]) -> str:
    """One block as HTML (text escaped)."""
    e = html.escape
    if b[0] == "h":
        return f"<h{b[1] + 1}>{e(b[2])}</h{b[1] + 1}>"
    if b[0] == "p":
        cls = f' class="{e(b[2])}"' if b[2] else ""
        return f"<p{cls}>{e(b[1])}</p>"
    if b[0] == "table":
        header, rows, align = b[1], b[2], b[3]
        out = ["<table>"]
        if any(header):
            out.append("<tr>" + "".join(f"<th>{e(h)}</th>" for h in header) + "</tr>")
        for row in rows:
            out.append("<tr>" + "".join(f"<td{_cell_class(v, a)}>{e(v)}</td>" for v, a in zip(row, align)) + "</tr>")
        out.append("</table>")
        return "\n".join(out)
    if b[0] == "pre":
        return f"<details><summary>{e(b[1])}</summary><pre>{e(b[2])}</pre></details>"
    data = base64.b64encode(images[b[1]]).decode("ascii")
    return f'<figure><img alt="{e(b[2])}" src="data:image/png;base64,{data}"></figure>'


def render_html(doc: Doc, title: str) -> str:
    """A self-contained HTML page: inline CSS, images as data URIs, a CSP that forbids any fetch."""
    e = html.escape
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
           "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; "
           "img-src data:; style-src 'unsafe-inline'\">",
           '<meta name="viewport" content="width=device-width, initial-scale=1">',
           f"<title>{e(title)}</title><style>{_CSS}</style></head><body><main>", f"<h1>{e(title)}</h1>"]
    out += [_html_block(b, doc.images) for b in doc.blocks]
    out.append("</main></body></html>")
    return "\n".join(out) + "\n"
