"""Tables for people and for pipes: the one way a command prints a table.

On a terminal: a rich table when it fits the width, else a stacked layout (one block per row,
``column: value`` lines) that never truncates a value to ``0.…``. Piped or redirected (stdout not a
terminal): plain tab-separated values, a ``# title`` line, then the header and the rows, for
``cut``, ``sort`` or a spreadsheet. A command's notes and legends may follow a table on stdout (as
text lines); the table itself is the ``# title`` block.
"""

from __future__ import annotations

from typing import Sequence

from rich.console import Console


def console() -> Console:
    """The stdout console the tables print to (rich reads the terminal's width; COLUMNS overrides it)."""
    return Console(highlight=False)


def print_table(title: str | None, columns: Sequence[str], rows: Sequence[Sequence[object]], *,
                right: Sequence[str] = (), out: Console | None = None, bold_last: bool = False) -> None:
    """Print one table (see the module docstring for the three layouts).

    Args:
        title: shown above the table (``# title`` in TSV); None for none.
        columns: header cells.
        rows: cells (str() is applied; None prints as empty).
        right: columns to right-align (numbers).
        out: the console (default: stdout's).
        bold_last: the last row is a total.
    """
    out = out or console()
    cells = [["" if c is None else str(c) for c in row] for row in rows]
    if not out.is_terminal:
        lines = ([f"# {title}"] if title else []) + ["\t".join(columns)]
        lines += ["\t".join(c.replace("\t", " ").replace("\n", " ") for c in row) for row in cells]
        out.file.write("\n".join(lines) + "\n")
        out.file.flush()
        return
    from rich import box
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=escape(title) if title else None, box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False,
                  collapse_padding=True)
    for col in columns:
        table.add_column(escape(col), justify="right" if col in right else "left", no_wrap=True)
    for i, row in enumerate(cells):
        table.add_row(*(escape(c) for c in row), style="bold" if bold_last and i == len(cells) - 1 else None)
    if out.measure(table, options=out.options.update(max_width=10**6)).maximum <= out.width:  # its natural width
        out.print(table)
        return
    # too wide: one block per row, never truncated
    if title:
        out.print(escape(title), style="bold")
    width = max(len(c) for c in columns[1:]) if len(columns) > 1 else 0
    for row in cells:
        out.print(escape(row[0]), style="bold")
        for col, value in zip(columns[1:], row[1:]):
            if value:
                out.print(f"  {escape(col).ljust(width)}  {escape(value)}", soft_wrap=False, overflow="fold")

