"""Progress reporting for long work.

Library code calls :func:`track` / :func:`task`; they are silent (log only) unless the CLI has
called :func:`enable` with a rich console. So libraries never print, and ``--quiet`` silences bars.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any, Callable, Iterable, Iterator, TypeVar

T = TypeVar("T")
_log = logging.getLogger(__name__)
_console: Any = None


def enable(console: Any) -> None:
    """Show rich progress bars on ``console`` (called by the CLI only)."""
    global _console
    _console = console


def disable() -> None:
    global _console
    _console = None


def enabled() -> bool:
    return _console is not None


def _make_progress():
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), TimeRemainingColumn(), console=_console, transient=False)


def track(items: Iterable[T], description: str, total: int | None = None) -> Iterator[T]:
    """Iterate over ``items`` with a progress bar when enabled."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    _log.info("%s (%s items)", description, total if total is not None else "?")
    if _console is None:
        yield from items
        return
    with _make_progress() as prog:
        tid = prog.add_task(description, total=total)
        for item in items:
            yield item
            prog.advance(tid)


@contextlib.contextmanager
def task(description: str, total: int | None = None) -> Iterator[Callable[[int], None]]:
    """A progress bar advanced by calling the yielded function with a step count."""
    _log.info("%s", description)
    if _console is None:
        yield lambda n=1: None
        return
    with _make_progress() as prog:
        tid = prog.add_task(description, total=total)
        yield lambda n=1: prog.advance(tid, n)
