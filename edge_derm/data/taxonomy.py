"""Target taxonomies, read from TOML files shipped in ``edge_derm/data/taxonomies/`` (no TensorFlow).

A taxonomy file holds the ordered classes (id, name, triage group) and, per source, a table
from that dataset's own labels to class ids. ``native`` keeps the sources' labels unchanged.
A path to a ``.toml`` file of the same form can be used instead of a shipped name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

from edge_derm.errors import ConfigError

TRIAGE_GROUPS = ("benign", "premalignant", "uncertain", "malignant")
_PACKAGE = "edge_derm.data.taxonomies"


@dataclass
class Taxonomy:
    """Classes of a target taxonomy and the mapping of source labels onto them.

    Attributes:
        name: taxonomy name (``dermai13``, ``native`` or a file stem).
        classes: ordered class ids (empty for ``native``: classes come from the data).
        descriptions: class id -> human-readable name.
        triage: class id -> ``benign``/``premalignant``/``uncertain``/``malignant``.
        sources: source name -> {lower-case source label -> class id}.
        aliases: lower-case label -> class id, for sources without a table (folder, csv).
        native: keep source labels unchanged.
    """

    name: str
    classes: list[str]
    descriptions: dict[str, str] = field(default_factory=dict)
    triage: dict[str, str] = field(default_factory=dict)
    sources: dict[str, dict[str, str]] = field(default_factory=dict)
    aliases: dict[str, str] = field(default_factory=dict)
    native: bool = False
    description: str = ""

    def map(self, source: str, source_label: str) -> str | None:
        """The class id of ``source_label`` from ``source``, or None when it is dropped."""
        label = source_label.strip()
        if not label:
            return None
        if self.native:
            return label
        table = self.sources.get(source)
        if table is not None:
            return table.get(label.lower())
        return self.aliases.get(label.lower())

    def triage_of(self, class_id: str) -> str:
        """Triage group of a class (``unknown`` for native labels)."""
        return self.triage.get(class_id, "unknown")


def list_taxonomies() -> list[str]:
    """Names of the shipped taxonomies."""
    return sorted(p.name[:-5] for p in resources.files(_PACKAGE).iterdir() if p.name.endswith(".toml"))


def load_taxonomy(name: str) -> Taxonomy:
    """Load a shipped taxonomy by name, or a taxonomy TOML file by path.

    Raises:
        ConfigError: unknown name (the known ones are listed) or an invalid file.
    """
    if name.endswith(".toml"):
        path = Path(name)
        if not path.is_file():
            raise ConfigError(f"taxonomy file not found: {path}")
        from edge_derm.fsutil import read_config_text

        text, where = read_config_text(path, "taxonomy file"), str(path)
    else:
        known = list_taxonomies()
        if name not in known:
            raise ConfigError(f"unknown taxonomy {name!r}; use one of: {', '.join(known)} (or a path to a .toml file)")
        ref = resources.files(_PACKAGE) / f"{name}.toml"
        text, where = ref.read_text(encoding="utf-8"), f"{name}.toml"
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{where}: invalid TOML ({exc})") from exc
    return _from_dict(data, where, default_name=Path(name).stem)


#: Keys a taxonomy file may hold (a typo is an error, never silently ignored).
_TOP_KEYS = {"name", "description", "native", "classes", "sources", "aliases", "drop"}
_CLASS_KEYS = {"id", "name", "triage", "note"}


def _close(key: str, known: set[str]) -> str:
    import difflib

    near = difflib.get_close_matches(key, sorted(known), n=1)
    return f" (did you mean {near[0]!r}?)" if near else ""


def _from_dict(data: dict[str, Any], where: str, default_name: str) -> Taxonomy:
    unknown = sorted(set(data) - _TOP_KEYS)
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r}{_close(unknown[0], _TOP_KEYS)}; a taxonomy file "
                          f"takes {', '.join(sorted(_TOP_KEYS))}")
    name = str(data.get("name", default_name))
    if data.get("native"):
        return Taxonomy(name=name, classes=[], native=True, description=str(data.get("description", "")))
    if not isinstance(data.get("classes", []), list) or not isinstance(data.get("sources", {}), dict):
        raise ConfigError(f"{where}: classes must be [[classes]] entries and sources a table of tables")
    classes, descriptions, triage = [], {}, {}
    for i, c in enumerate(data.get("classes", [])):
        if not isinstance(c, dict) or not c.get("id"):
            raise ConfigError(f"{where}: class #{i + 1} needs an id")
        cid = str(c["id"])
        if cid in descriptions:
            raise ConfigError(f"{where}: class {cid!r} is defined twice")
        bad = sorted(set(c) - _CLASS_KEYS)
        if bad:
            raise ConfigError(f"{where}: class {cid!r} has unknown key {bad[0]!r}{_close(bad[0], _CLASS_KEYS)}; "
                              f"a class takes {', '.join(sorted(_CLASS_KEYS))}")
        if "triage" not in c:
            raise ConfigError(f"{where}: class {cid!r} has no triage; set triage = one of {', '.join(TRIAGE_GROUPS)} "
                              "(a referral decision must never default to benign)")
        group = str(c["triage"])
        if group not in TRIAGE_GROUPS:
            raise ConfigError(f"{where}: class {cid!r} has triage {group!r}; use one of {', '.join(TRIAGE_GROUPS)}")
        classes.append(cid)
        descriptions[cid] = str(c.get("name", cid))
        triage[cid] = group
    if len(classes) < 2:
        raise ConfigError(f"{where}: a taxonomy needs at least 2 classes under [[classes]]")
    ids = set(classes)

    def table(raw: Any, what: str) -> dict[str, str]:
        if not isinstance(raw, dict):
            raise ConfigError(f"{where}: [{what}] must be a table of label = class id")
        bad = sorted({str(v) for v in raw.values()} - ids)
        if bad:
            raise ConfigError(f"{where}: [{what}] maps onto unknown class(es) {', '.join(bad)}")
        return {str(k).strip().lower(): str(v) for k, v in raw.items()}

    aliases = {c.lower(): c for c in classes}
    aliases.update({descriptions[c].lower(): c for c in classes})
    aliases.update(table(data.get("aliases", {}), "aliases"))
    sources = {src: table(t, f"sources.{src}") for src, t in data.get("sources", {}).items()}
    return Taxonomy(name=name, classes=classes, descriptions=descriptions, triage=triage, sources=sources,
                    aliases=aliases, description=str(data.get("description", "")))
