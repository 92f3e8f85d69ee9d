"""Atomic output: write to a temporary sibling, then rename, so nothing is ever half-written."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterable, Iterator

from edge_derm.errors import ConfigError, OutputExistsError


def _umask() -> int:
    # mkdtemp/mkstemp create owner-only (0700/0600) entries; artefacts should get the usual
    # permissions (0777/0666 minus the umask), like any other file the user creates.
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _real(path: str | os.PathLike) -> Path:
    return Path(os.path.abspath(path)).resolve()


def check_not_input(out: Path, inputs: Iterable[str | os.PathLike | None]) -> None:
    """Refuse an output folder that is, holds or lies inside an input (what ``--force`` would delete).

    ``inputs``: the files and folders the command reads (None entries are skipped). A folder input
    counts as read whole: an output inside it is refused too (a later scan of the folder would read
    the output, and ``--force`` would delete what lies under it). Symbolic links are resolved.

    Raises:
        ConfigError: one line naming the output, the input and the way out.
    """
    o = _real(out)
    parents: dict[str, Path] = {}  # each folder resolved once: datasets list thousands of images per folder
    for item in inputs:
        if item is None:
            continue
        a = Path(os.path.abspath(item))
        key = str(a.parent)
        if key not in parents:
            parents[key] = a.parent.resolve()
        p = parents[key] / a.name
        if p.is_symlink():
            p = p.resolve()
        if o == p:
            how = "is"
        elif p.is_relative_to(o):
            how = "holds"
        elif o.is_relative_to(p) and p.is_dir():
            how = "lies inside"
        else:
            continue
        raise ConfigError(f"output folder {out} {how} the input {item}; writing it (or --force) would destroy the "
                          "input: choose an --out outside the inputs")


def check_output_dir(out: Path, force: bool, inputs: Iterable[str | os.PathLike | None] = ()) -> None:
    """Raise ConfigError if ``out`` is, holds or lies inside one of ``inputs`` (:func:`check_not_input`),
    OutputExistsError if ``out`` exists (and is not empty) and ``force`` is false."""
    out = Path(out)
    check_not_input(out, inputs)
    if out.exists() and not force:
        if out.is_dir() and not any(out.iterdir()):
            return
        raise OutputExistsError(f"{out} already exists; choose another --out or pass --force to replace it")


@contextlib.contextmanager
def staged_dir(out: Path, force: bool = False, inputs: Iterable[str | os.PathLike | None] = ()) -> Iterator[Path]:
    """Yield a temporary folder beside ``out``; on success it replaces ``out`` atomically.

    ``out`` may not be, hold or lie inside one of ``inputs`` (:func:`check_not_input`). On any
    exception the temporary folder is removed and ``out`` is left as it was.
    """
    out = Path(os.path.abspath(out))  # "--out ." names the current folder, whose parent holds the siblings
    check_output_dir(out, force, inputs)
    out.parent.mkdir(parents=True, exist_ok=True)
    stem = _sibling_stem(out)
    tmp = Path(tempfile.mkdtemp(prefix=f".{stem}.tmp-", dir=out.parent))
    os.chmod(tmp, 0o777 & ~_umask())
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    try:
        inside = _real(os.getcwd()) == out.resolve()  # "--out ." or the folder we stand in
    except OSError:
        inside = False
    old = None
    if out.exists() or out.is_symlink():
        old = out.parent / f".{stem}.old-{os.getpid()}"
        _remove(old)
        os.replace(out, old)
    os.replace(tmp, out)
    if inside:
        os.chdir(out)  # the old folder is gone: stand in its replacement so relative paths still resolve
    if old is not None:
        _remove(old)


def _sibling_stem(out: Path) -> str:
    """``out``'s name, shortened so that ``.NAME.tmp-XXXXXXXX`` stays within a 255-byte file name."""
    name = out.name
    while len(f".{name}.tmp-xxxxxxxx".encode()) > 255 or len(f".{name}.old-{os.getpid()}".encode()) > 255:
        name = name[:-1]
    return name


def _remove(path: Path) -> None:
    """Remove a file, a link or a folder tree; nothing if it does not exist."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file in the same folder and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{_sibling_stem(path)}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` (UTF-8) atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def write_json(path: Path, obj: Any) -> None:
    """Write ``obj`` as indented, key-sorted-as-given JSON atomically."""
    atomic_write_text(path, json.dumps(obj, indent=2, default=_json_default) + "\n")


def read_config_text(path: Path, what: str) -> str:
    """A user's UTF-8 text file (plan, taxonomy, recipe); ConfigError (one line) when it cannot be read."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{what} {path} is not UTF-8 text (byte {exc.start}); save it as UTF-8") from None
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc.strerror}") from None


def read_json(path: Path) -> Any:
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def _json_default(o: Any) -> Any:
    # numpy scalars/arrays and paths show up in metrics and configs.
    if hasattr(o, "tolist"):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
