"""Issue 15's measured goals hold (benchmarks/scripts/measure_architecture.py), and the install ships every package.

Static checks of the source (nothing imported): no module over 500 lines, at most 5 functions over 60 lines,
no import cycle; pyproject's package list names every package folder of edge_derm/, converters/ and
benchmarks/ (and none of the measurement scripts in benchmarks/scripts/, which are never installed).
"""

from __future__ import annotations

import sys
from pathlib import Path

import measure_architecture as arch

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

REPO = Path(__file__).resolve().parents[1]


def test_code_shape_meets_the_goals():
    shape = arch.measure(REPO)
    assert shape.modules > 100  # it found the tree (edge_derm/, converters/, benchmarks/, the scripts)
    assert not shape.big_modules, shape.big_modules
    assert len(shape.long_functions) <= arch.MAX_LONG_FUNCTIONS, shape.long_functions
    assert not shape.cycles, shape.cycles


def test_cycle_detection_finds_a_cycle(tmp_path):
    """The measurement can fail: a two-module cycle, a long function and a big module are all reported."""
    pkg = tmp_path / "edge_derm"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from edge_derm import b\n\ndef f():\n" + "    x = 1\n" * 70)
    (pkg / "b.py").write_text("def g():\n    from edge_derm.a import f\n" + "# filler\n" * 600)
    for folder in ("converters", "benchmarks/scripts"):
        (tmp_path / folder).mkdir(parents=True)
    shape = arch.measure(tmp_path)
    assert shape.cycles == [["edge_derm.a", "edge_derm.b"]]
    assert shape.long_functions == [("edge_derm.a", "f", 71)]
    assert shape.big_modules == [("edge_derm.b", 602)]
    assert not all(shape.goals().values())


def test_pyproject_lists_every_package_and_no_script():
    setup = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed, dirs = set(setup["packages"]), setup["package-dir"]
    found = set()
    for name, folder in dirs.items():
        root = REPO / folder
        for init in root.rglob("__init__.py"):
            rel = init.parent.relative_to(root)
            found.add(".".join([name, *rel.parts]))
    data_only = {f"{p}" for p in setup["package-data"]}
    assert found <= listed, f"packages missing from pyproject.toml: {sorted(found - listed)}"
    assert listed - found <= data_only, f"listed but not packages: {sorted(listed - found - data_only)}"
    assert not (REPO / "benchmarks" / "scripts" / "__init__.py").exists()  # scripts: never a package
