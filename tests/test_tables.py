"""Tables for people and for pipes (issue 16): at 80 columns nothing is truncated to `0.…`, and piped
output is plain TSV."""

from __future__ import annotations

import io

from rich.console import Console

from edge_derm.benchmarks.report import TABLE_COLUMNS
from edge_derm.cli import main
from edge_derm.cli._tables import print_table

ROWS = [["model.fp32", "fp32", "cpu 1t", "ok", "1.62", "45.7", "0.378", "", "", "0.852", "0.91", "1173", "48.2"],
        ["model.int8", "int8", "cpu 1t", "ok", "0.61", "34.4", "0.304", "-7.40", "16.9", "1.352", "1.44", "739",
         "44.0"],
        ["a model with a long file name.dynamic", "dynamic", "cpu 1t", "failed validation", "0.55", "", "", "", "",
         "", "", "", ""]]


def _render(width: int, terminal: bool) -> str:
    buf = io.StringIO()
    out = Console(file=buf, width=width, force_terminal=terminal, color_system=None)
    print_table("edge-derm benchmark", TABLE_COLUMNS, ROWS, right=TABLE_COLUMNS[4:], out=out)
    return buf.getvalue()


def test_80_columns_never_truncate():
    text = _render(80, terminal=True)
    lines = text.splitlines()
    assert all(len(line) <= 80 for line in lines), max(lines, key=len)
    assert "…" not in text
    for row in ROWS:  # every value is shown whole
        assert all(cell in text for cell in row if cell)
    wide = _render(200, terminal=True)  # wide enough: one table, one line per row
    assert "…" not in wide and sum(1 for line in wide.splitlines() if "model.int8" in line) == 1


def test_piped_output_is_tsv():
    lines = _render(80, terminal=False).splitlines()
    assert lines[0] == "# edge-derm benchmark"
    assert lines[1].split("\t") == list(TABLE_COLUMNS)
    assert lines[3].split("\t") == ROWS[1] and len(lines) == 2 + len(ROWS)


def test_models_list_piped_is_tsv(capsys):
    assert main(["models", "list"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "# backbones" and out[1].startswith("name\tparams\tinput\t")
    assert any(line.startswith("mobilenet_v2\t") for line in out)
