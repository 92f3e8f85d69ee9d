"""The artefacts stages hand each other, as types: one class per JSON document, read and written here only.

Every stage writes a folder and the next reads it (docs/ARCHITECTURE.md). The JSON documents in those folders
are these classes' ``to_json()``; every reader goes through ``read``/``from_json``, so a key is spelled in
one place and an older or newer file gets one clear error instead of a guess.

- ``kind`` says which document a file is (``run``, ``dataset``, ``convert``, ``benchmark``, ``demo``);
  nested records (a converted variant, a benchmark row) have none of their own.
- ``format_version`` is the document's layout. ``from_json`` reads the current one and the versions listed in
  ``READS`` (upgrading them in ``_upgrade``), and refuses anything else with a one-line ``DataError`` that
  says what to do (rebuild / re-run with this edge-derm, or upgrade edge-derm).
- Fields are the keys some reader uses; everything else a writer adds rides in ``extra`` unchanged, so
  ``from_json(d).to_json() == d`` for every document this edge-derm writes (its writers build these types;
  tests/test_artefacts.py and the writers' tests). ``to_json`` writes every field, so a hand-written document
  that leaves an optional field out reads the same but is written back with that field null.

No TensorFlow, no numpy: the runtime install reads these.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Mapping, TypeVar

from edge_derm.errors import DataError

__all__ = ["Artefact", "BenchmarkResults", "BenchmarkRow", "ConvertResult", "DatasetInfo", "DemoSummary",
           "RunConfig", "VariantRecord", "detect", "documents", "recorded_variant", "DOCUMENTS"]

A = TypeVar("A", bound="Artefact")


@dataclass(kw_only=True)
class Artefact:
    """Base of every artefact type: typed fields + ``extra`` (the keys no reader needs by name)."""

    KIND: ClassVar[str | None] = None          # None: a nested record, no ``kind`` key of its own
    FORMAT_VERSION: ClassVar[int] = 1
    READS: ClassVar[tuple[int, ...]] = ()      # older versions ``_upgrade`` brings to FORMAT_VERSION
    FILENAME: ClassVar[str] = ""               # the file a folder of this kind holds
    REQUIRED: ClassVar[tuple[str, ...]] = ()   # keys a document must have
    HINT: ClassVar[str] = "write it again with this edge-derm"   # what to do when it cannot be read
    VERSIONED: ClassVar[bool] = True           # False: nested records that carry no format_version
    NESTED: ClassVar[dict[str, tuple[str, type]]] = {}  # field -> ("list" | "dict", record type)

    extra: dict[str, Any] = field(default_factory=dict)

    # -- reading ---------------------------------------------------------------------------------------
    @classmethod
    def from_json(cls: type[A], doc: Any, *, source: str = "") -> A:
        """The artefact of ``doc`` (a parsed JSON object); DataError (one line) when it is not one."""
        where = f"{source}: " if source else ""
        what = cls.KIND or cls.__name__
        if not isinstance(doc, Mapping):
            raise DataError(f"{where}expected a JSON object ({what}), found {type(doc).__name__}; {cls.HINT}")
        doc = dict(doc)
        if cls.KIND is not None and doc.get("kind") != cls.KIND:
            raise DataError(f"{where}not a {cls.KIND} document (kind {doc.get('kind')!r}); {cls.HINT}")
        if cls.VERSIONED:
            version = doc.get("format_version", None)
            if version != cls.FORMAT_VERSION:
                if not isinstance(version, int) or isinstance(version, bool):
                    raise DataError(f"{where}{what} has no valid format_version ({version!r}); {cls.HINT}")
                if version > cls.FORMAT_VERSION:
                    raise DataError(f"{where}{what} format {version} is newer than this edge-derm reads "
                                    f"({cls.FORMAT_VERSION}); upgrade edge-derm")
                if version not in cls.READS:
                    raise DataError(f"{where}{what} format {version} is no longer read (this edge-derm reads "
                                    f"{', '.join(map(str, sorted({*cls.READS, cls.FORMAT_VERSION})))}); {cls.HINT}")
                doc = cls._upgrade(doc, version)
                doc["format_version"] = cls.FORMAT_VERSION
        missing = [k for k in cls.REQUIRED if k not in doc]
        if missing:
            raise DataError(f"{where}{what} is missing {', '.join(map(repr, missing))}; {cls.HINT}")
        kwargs: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            if f.name == "extra" or f.name not in doc:
                continue
            value = doc.pop(f.name)
            if f.name in cls.NESTED and value is not None:
                value = cls._decode_nested(f.name, value, where)
            kwargs[f.name] = value
        doc.pop("kind", None)
        if cls.VERSIONED:
            doc.pop("format_version", None)
        return cls(**kwargs, extra=doc)

    @classmethod
    def _decode_nested(cls, name: str, value: Any, where: str) -> Any:
        shape, item = cls.NESTED[name]
        if shape == "list":
            if not isinstance(value, list):
                raise DataError(f"{where}{cls.KIND or cls.__name__}.{name} must be a list; {cls.HINT}")
            return [item.from_json(v, source=f"{where}{name}[{i}]".rstrip(": ")) for i, v in enumerate(value)]
        if not isinstance(value, Mapping):
            raise DataError(f"{where}{cls.KIND or cls.__name__}.{name} must be an object; {cls.HINT}")
        return {k: item.from_json(v, source=f"{where}{name}[{k!r}]".rstrip(": ")) for k, v in value.items()}

    @classmethod
    def _upgrade(cls, doc: dict[str, Any], version: int) -> dict[str, Any]:
        """Bring a document of an older ``version`` (one of READS) to FORMAT_VERSION."""
        raise NotImplementedError  # pragma: no cover - only classes with READS reach it

    @classmethod
    def read(cls: type[A], path: str | os.PathLike) -> A:
        """Read ``path`` (the file, or a folder holding ``FILENAME``); DataError when it cannot be."""
        path = Path(path)
        if path.is_dir() and cls.FILENAME:
            path = path / cls.FILENAME
        if not path.is_file():
            raise DataError(f"{path}: not found; {cls.HINT}")
        return cls.from_json(_load_json(path, cls.HINT), source=str(path))

    # -- writing ---------------------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        """The JSON object (a plain dict) this artefact is written as."""
        doc: dict[str, Any] = {}
        if self.KIND is not None:
            doc["kind"] = self.KIND
        if self.VERSIONED:
            doc["format_version"] = self.FORMAT_VERSION
        for f in dataclasses.fields(self):
            if f.name == "extra":
                continue
            value = getattr(self, f.name)
            if f.name in self.NESTED and value is not None:
                value = ([v.to_json() for v in value] if isinstance(value, list)
                         else {k: v.to_json() for k, v in value.items()})
            doc[f.name] = value
        for k, v in self.extra.items():
            doc.setdefault(k, v)
        return doc

    def write(self, path: str | os.PathLike) -> Path:
        """Write atomically to ``path`` (a file, or a folder that gets ``FILENAME``); returns the file."""
        from edge_derm.fsutil import write_json

        path = Path(path)
        if path.is_dir() and self.FILENAME:
            path = path / self.FILENAME
        write_json(path, self.to_json())
        return path

    def get(self, key: str, default: Any = None) -> Any:
        """A field or an ``extra`` key by name (for the keys no reader types)."""
        if key != "extra" and key in {f.name for f in dataclasses.fields(self)}:
            value = getattr(self, key)
            return default if value is None else value
        return self.extra.get(key, default)


def _load_json(path: Path, hint: str) -> Any:
    """The parsed JSON of ``path``; a one-line DataError (ending in ``hint``) when it cannot be read."""
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except (OSError, ValueError) as exc:  # UnicodeDecodeError is a ValueError
        raise DataError(f"{path} is not valid JSON ({str(exc).splitlines()[0]}); {hint}") from None


def _opt() -> Any:
    """An optional field: None when a document does not have it (written as null)."""
    return field(default=None)


# -- run ---------------------------------------------------------------------------------------------------
@dataclass(kw_only=True)
class RunConfig(Artefact):
    """A run folder's ``config.json`` (written by ``edge-derm train``)."""

    KIND: ClassVar[str] = "run"
    FILENAME: ClassVar[str] = "config.json"
    REQUIRED: ClassVar[tuple[str, ...]] = ("classes", "image_size")
    HINT: ClassVar[str] = "train one with `edge-derm train`"

    backbone: str | None = _opt()
    alpha: float | None = _opt()
    image_size: int = 0
    resize_mode: str | None = _opt()
    classes: list[str] = field(default_factory=list)
    taxonomy: str | None = _opt()
    data: list[dict[str, Any]] = field(default_factory=list)
    weights: str | None = _opt()
    seed: int | None = _opt()
    config_hash: str | None = _opt()
    calibration: dict[str, Any] | None = _opt()
    triage: dict[str, str] | None = _opt()

    @property
    def last_data(self) -> str | None:
        """The dataset folder of the final stage (calibration and evaluation default to it)."""
        last = self.data[-1] if self.data else None
        return str(last["dir"]) if isinstance(last, Mapping) and last.get("dir") else None


# -- dataset -----------------------------------------------------------------------------------------------
@dataclass(kw_only=True)
class DatasetInfo(Artefact):
    """A dataset folder's ``dataset.json`` (beside ``manifest.csv``)."""

    KIND: ClassVar[str] = "dataset"
    FILENAME: ClassVar[str] = "dataset.json"
    REQUIRED: ClassVar[tuple[str, ...]] = ("root", "classes")
    HINT: ClassVar[str] = "rebuild the dataset with `edge-derm data build`"

    root: str = ""
    source: str | None = _opt()

    @classmethod
    def from_json(cls, doc: Any, *, source: str = "") -> "DatasetInfo":
        """As :meth:`Artefact.from_json`; a document with no ``kind`` is an early build's, which wrote neither
        ``kind`` nor ``format_version``: it is read as format 1."""
        if isinstance(doc, Mapping) and "kind" not in doc:
            doc = {"kind": cls.KIND, "format_version": 1, **doc}
        return super().from_json(doc, source=source)
    taxonomy: str | None = _opt()
    classes: list[str] = field(default_factory=list)
    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    seed: int | None = _opt()
    hash: str | None = _opt()


# -- converted variant and convert folder ------------------------------------------------------------------
@dataclass(kw_only=True)
class VariantRecord(Artefact):
    """One converted .tflite: its embedded metadata plus, in ``model.json``, file, size, hash, verification.

    ``format_version`` is the metadata layout (``converters.metadata.FORMAT_VERSION``); a record has no
    ``kind`` of its own (it sits in a convert folder's ``variants`` and inside the .tflite).
    """

    REQUIRED: ClassVar[tuple[str, ...]] = ("quantization", "labels")
    HINT: ClassVar[str] = "convert the run again with `edge-derm convert`"

    name: str | None = _opt()
    quantization: str = ""
    labels: list[str] = field(default_factory=list)
    input: dict[str, Any] = field(default_factory=dict)
    output: dict[str, Any] = field(default_factory=dict)
    verification: dict[str, Any] | None = _opt()
    file: str | None = _opt()
    sha256: str | None = _opt()
    size_bytes: int | None = _opt()

    def file_name(self, key: str) -> str:
        """The file this record describes, as variant ``key`` of a convert folder (``model.<key>.tflite`` in
        records from before ``file`` was recorded)."""
        return self.file or f"model.{key}.tflite"

    @property
    def passed(self) -> bool | None:
        """Whether verification passed (None when the record carries no results)."""
        v = self.verification or {}
        return v.get("passed") if isinstance(v.get("passed"), bool) else None


@dataclass(kw_only=True)
class ConvertResult(Artefact):
    """A convert folder's ``model.json`` (written by ``edge-derm convert``)."""

    KIND: ClassVar[str] = "convert"
    FILENAME: ClassVar[str] = "model.json"
    REQUIRED: ClassVar[tuple[str, ...]] = ("variants",)
    HINT: ClassVar[str] = "convert the run again with `edge-derm convert`"
    NESTED: ClassVar[dict[str, tuple[str, type]]] = {"variants": ("dict", VariantRecord)}

    run: str | None = None
    requested: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    summary: list[dict[str, Any]] = field(default_factory=list)
    variants: dict[str, VariantRecord] = field(default_factory=dict)

    def variant_for(self, filename: str) -> VariantRecord | None:
        """The record of the variant written as ``filename`` (records from before ``file`` was recorded:
        ``model.<key>.tflite``); None when none is."""
        return next((v for key, v in self.variants.items() if v.file_name(key) == filename), None)


def recorded_variant(model: str | os.PathLike) -> VariantRecord | None:
    """The record of the .tflite ``model`` in the ``model.json`` beside it: its entry in a convert folder's
    document, or an exported model's flat record whose ``file`` names it; None when there is no such file
    or it records nothing of this model.

    Raises:
        DataError: ``model.json`` is there but is not valid JSON, or is a malformed document of either type.
    """
    model = Path(model)
    path = model.parent / ConvertResult.FILENAME
    if not path.is_file():
        return None
    doc = _load_json(path, ConvertResult.HINT)
    if isinstance(doc, Mapping) and doc.get("kind") == ConvertResult.KIND:
        return ConvertResult.from_json(doc, source=str(path)).variant_for(model.name)
    if isinstance(doc, Mapping) and doc.get("file") == model.name:
        return VariantRecord.from_json(doc, source=str(path))
    return None


# -- benchmark ---------------------------------------------------------------------------------------------
#: A benchmark row's ``status``: ``ok`` or what went wrong (the harness and the Android runner write them).
OK = "ok"
FAILED_VALIDATION = "failed validation"
FAILED_LOAD = "failed to load"
FAILED_RUN = "failed to run"
PARTIAL = "partially delegated"
NOT_DELEGATED = "not delegated"
THROTTLED = "throttled"


def row_label(model: Any, device: Any, threads: Any) -> str:
    """How messages (gate failures, warnings) name a benchmark row: ``model (device, N threads)``."""
    return f"{model} ({device}, {threads} threads)"


@dataclass(kw_only=True)
class BenchmarkRow(Artefact):
    """One model x device x threads row of a benchmark (``results.json`` ``rows``)."""

    VERSIONED: ClassVar[bool] = False
    REQUIRED: ClassVar[tuple[str, ...]] = ("model", "device", "threads", "status")
    HINT: ClassVar[str] = "benchmark again with `edge-derm benchmark`"

    model: str = ""
    path: str | None = None
    quantization: str = "unknown"
    device: str = "cpu"
    threads: int = 1
    status: str = "ok"
    reason: str | None = None
    size_mb: float | None = None
    latency_median_ms: float | None = None
    latency_p90_ms: float | None = None
    peak_memory_mb: float | None = None
    metrics: dict[str, Any] | None = None
    reference: str | None = _opt()
    deltas: dict[str, Any] | None = _opt()
    disagreement: float | None = _opt()
    speedup_vs_fp32: float | None = _opt()
    slower_than_fp32: bool | None = _opt()
    gate_passed: bool | None = _opt()

    @property
    def label(self) -> str:
        """How messages name the row: ``model (device, N threads)``."""
        return row_label(self.model, self.device, self.threads)


@dataclass(kw_only=True)
class BenchmarkResults(Artefact):
    """A benchmark folder's ``results.json`` (written by ``edge-derm benchmark``).

    Format 2 (this one): every row carries ``gate_passed`` when gates were set. Format 1 files (before
    issue 15) named a row's failed gates only in ``gates.failures`` messages; ``_upgrade`` recovers
    ``gate_passed`` from those messages' ``"<model> (<device>, <threads> threads)"`` prefix, once, here.
    """

    KIND: ClassVar[str] = "benchmark"
    FORMAT_VERSION: ClassVar[int] = 2
    READS: ClassVar[tuple[int, ...]] = (1,)
    FILENAME: ClassVar[str] = "results.json"
    REQUIRED: ClassVar[tuple[str, ...]] = ("rows",)
    HINT: ClassVar[str] = "benchmark again with `edge-derm benchmark`"
    NESTED: ClassVar[dict[str, tuple[str, type]]] = {"rows": ("list", BenchmarkRow)}

    rows: list[BenchmarkRow] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    gates: dict[str, Any] = field(default_factory=dict)
    latency_warnings: list[str] = field(default_factory=list)

    @classmethod
    def _upgrade(cls, doc: dict[str, Any], version: int) -> dict[str, Any]:
        gates = (doc.get("config") or {}).get("gates") or {}
        failures = [str(m) for m in ((doc.get("gates") or {}).get("failures") or [])]
        rows = []
        for row in doc.get("rows") or []:
            if isinstance(row, Mapping) and gates and "gate_passed" not in row:
                label = row_label(row.get("model"), row.get("device"), row.get("threads"))
                row = {**row, "gate_passed": not any(m.startswith(label) for m in failures)}
            rows.append(row)
        return {**doc, "rows": rows}


# -- demo --------------------------------------------------------------------------------------------------
@dataclass(kw_only=True)
class DemoSummary(Artefact):
    """A demo folder's ``summary.json`` (written by ``edge-derm demo``; it marks the folder as a demo)."""

    KIND: ClassVar[str] = "demo"
    FILENAME: ClassVar[str] = "summary.json"
    HINT: ClassVar[str] = "run `edge-derm demo` again"

    status: str = "running"
    out: str | None = None
    quick: bool = False
    config: dict[str, Any] = field(default_factory=dict)
    sizes: dict[str, Any] = field(default_factory=dict)
    stages: list[dict[str, Any]] | None = _opt()


#: The folder-level documents, in the order a report looks for them.
DOCUMENTS: tuple[type[Artefact], ...] = (DemoSummary, RunConfig, ConvertResult, BenchmarkResults, DatasetInfo)


def documents(folder: str | os.PathLike,
              types: tuple[type[Artefact], ...] = DOCUMENTS) -> list[tuple[Artefact, dict[str, Any]]]:
    """The artefacts ``folder`` holds, each with its JSON object as written, in the order of ``types``.

    A file of the right name but another kind is skipped (a run's ``config.json`` beside a convert folder's
    ``model.json``); a file that is not JSON, or of the right kind but unreadable, is a one-line DataError.
    """
    folder = Path(folder)
    found = []
    for cls in types:
        path = folder / cls.FILENAME
        if not path.is_file():
            continue
        doc = _load_json(path, "regenerate it")
        if isinstance(doc, dict) and doc.get("kind") == cls.KIND:
            found.append((cls.from_json(doc, source=str(path)), doc))
    return found


def detect(folder: str | os.PathLike) -> Artefact | None:
    """The first artefact (in :data:`DOCUMENTS` order) a folder holds, or None; see :func:`documents`."""
    found = documents(folder)
    return found[0][0] if found else None
