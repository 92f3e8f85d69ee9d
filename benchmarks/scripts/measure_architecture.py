"""Measure the code's shape against issue 15's goals: module sizes, long functions, import cycles.

    python benchmarks/scripts/measure_architecture.py [--md benchmarks/results/architecture.md] [--json out.json]
        [--repo CHECKOUT]

Reads the source (``ast``; nothing is imported or run) of the installed package (``edge_derm/``, ``converters/``,
``benchmarks/``) and of the measurement scripts in ``benchmarks/scripts/``, and reports:

- modules over ``--max-lines`` (500) lines;
- functions and methods longer than ``--max-function`` (60) lines, from ``def`` to their last line, nested
  ones included (goal: at most 5 in all);
- import cycles: strongly connected components of the module graph, where an edge is any import of another
  module of the tree, at the top or inside a function, and ``from pkg import name`` of a package counts
  as importing its ``__init__`` (goal: none).

A script, not library code: it prints its table (and exits 1 when a goal is not met, so CI-like use is possible).
"""

from __future__ import annotations

import argparse
import ast
import json
import subprocess
import sys
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent          # benchmarks/scripts/ (never installed: always in the repository)
REPO = HERE.parents[1]
#: Source folders and the module names they import as (pyproject's package-dir); the scripts import each
#: other by bare module name (their folder is first on sys.path when one runs).
ROOTS = (("edge_derm", "edge_derm"), ("converters", "edge_derm.converters"), ("benchmarks", "edge_derm.benchmarks"),
         ("benchmarks/scripts", ""))
MAX_LINES, MAX_FUNCTION, MAX_LONG_FUNCTIONS = 500, 60, 5


@dataclass
class Shape:
    """What the measurement found."""

    modules: int = 0
    lines: int = 0
    big_modules: list[tuple[str, int]] = field(default_factory=list)
    long_functions: list[tuple[str, str, int]] = field(default_factory=list)
    cycles: list[list[str]] = field(default_factory=list)

    def goals(self, max_long: int = MAX_LONG_FUNCTIONS) -> dict[str, bool]:
        return {"no module over the line limit": not self.big_modules,
                f"at most {max_long} long functions": len(self.long_functions) <= max_long,
                "no import cycle": not self.cycles}


def module_files(repo: Path = REPO) -> dict[str, Path]:
    """Module name -> file, for the installed package (edge_derm/, converters/, benchmarks/) and the scripts."""
    found: dict[str, Path] = {}
    scripts = repo / "benchmarks" / "scripts"
    for folder, prefix in ROOTS:
        for path in sorted((repo / folder).rglob("*.py")):
            if prefix and scripts in path.parents:
                continue
            parts = list(path.relative_to(repo / folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join(p for p in [prefix, *parts] if p)] = path
    return found


def _imported(node: ast.AST, name: str, is_package: bool, modules: dict[str, Path]) -> set[str]:
    """The tree's modules one import statement names."""
    if isinstance(node, ast.Import):
        return {a.name for a in node.names if a.name in modules}
    if not isinstance(node, ast.ImportFrom):
        return set()
    if node.level:
        base = name.split(".") if is_package else name.split(".")[:-1]
        base = base[:len(base) - (node.level - 1)]
        target = ".".join(base + ([node.module] if node.module else []))
    else:
        target = node.module or ""
    candidates = {target} | {f"{target}.{a.name}" for a in node.names}
    return {c for c in candidates if c in modules}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            v, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[v] = min(low[v], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                component = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    component.append(w)
                    if w == v:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def measure(repo: Path = REPO, max_lines: int = MAX_LINES, max_function: int = MAX_FUNCTION) -> Shape:
    """Measure the tree under ``repo``."""
    modules = module_files(repo)
    shape = Shape(modules=len(modules))
    graph: dict[str, set[str]] = defaultdict(set)
    for name, path in modules.items():
        text = path.read_text(encoding="utf-8")
        n_lines = len(text.splitlines())
        shape.lines += n_lines
        if n_lines > max_lines:
            shape.big_modules.append((name, n_lines))
        for node in ast.walk(ast.parse(text, filename=str(path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > max_function:
                    shape.long_functions.append((name, node.name, length))
            graph[name] |= _imported(node, name, path.name == "__init__.py", modules) - {name}
    shape.big_modules.sort(key=lambda m: -m[1])
    shape.long_functions.sort(key=lambda f: -f[2])
    shape.cycles = _cycles(graph)
    return shape


def markdown(shape: Shape, max_lines: int = MAX_LINES, max_function: int = MAX_FUNCTION, *, commit: str = "",
             command: str = "python benchmarks/scripts/measure_architecture.py") -> str:
    """The results file (``commit``: the measured checkout's, when it is a git checkout)."""
    goals = shape.goals()
    out = [f"# Code shape (issue 15's goals){f' at commit {commit}' if commit else ''}", "",
           f"`{command}` (static: `ast` over edge_derm/, converters/, benchmarks/ and benchmarks/scripts/; "
           f"{shape.modules} modules, {shape.lines} lines).", "",
           "| goal | met |", "|---|---|"]
    out += [f"| {goal} | {'yes' if met else '**no**'} |" for goal, met in goals.items()]
    out += ["", f"## Modules over {max_lines} lines", ""]
    out += [f"- `{m}`: {n}" for m, n in shape.big_modules] or ["none"]
    out += ["", f"## Functions over {max_function} lines ({len(shape.long_functions)})", ""]
    out += [f"- `{m}.{f}`: {n}" for m, f, n in shape.long_functions] or ["none"]
    out += ["", "## Import cycles", ""]
    out += [f"- {' <-> '.join(c)}" for c in shape.cycles] or ["none"]
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", type=Path, default=REPO,
                        help="the checkout to measure (default: this one; e.g. an older commit's `git worktree`)")
    parser.add_argument("--max-lines", type=int, default=MAX_LINES)
    parser.add_argument("--max-function", type=int, default=MAX_FUNCTION)
    parser.add_argument("--md", type=Path, help="write the markdown results file here")
    parser.add_argument("--json", type=Path, help="write the figures as JSON here")
    a = parser.parse_args(argv)
    shape = measure(a.repo, a.max_lines, a.max_function)
    git = subprocess.run(["git", "-C", str(a.repo), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    command = " ".join(["python benchmarks/scripts/measure_architecture.py",
                        *(argv if argv is not None else sys.argv[1:])])
    text = markdown(shape, a.max_lines, a.max_function, commit=git.stdout.strip() if git.returncode == 0 else "",
                    command=command)
    print(text, end="")
    if a.md:
        a.md.write_text(text, encoding="utf-8")
    if a.json:
        a.json.write_text(json.dumps({**asdict(shape), "goals": shape.goals()}, indent=2) + "\n", encoding="utf-8")
    return 0 if all(shape.goals().values()) else 1


if __name__ == "__main__":
    sys.exit(main())
