"""Experiments: several plans (x backbones) trained into one folder, compared in one table
(like the paper's Tables III and IV: parameters, accuracy, weighted F1, macro F1)."""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path
from typing import Any

from edge_derm.errors import ConfigError
from edge_derm.fsutil import atomic_write_text, check_output_dir, write_json

COLUMNS = ("name", "plan", "backbone", "params", "accuracy", "weighted_f1", "macro_f1", "macro_f1_ci")


def run_experiment(plans: list[str], out: str | os.PathLike, *, params: dict[str, str] | None = None,
                   backbones: list[str] | None = None, overrides: dict[str, Any] | None = None,
                   resume: bool = False, force: bool = False) -> list[dict[str, Any]]:
    """Run each plan (for each backbone) into ``out/<plan>[-<backbone>]`` and write the comparison.

    Each plan receives the parameters it declares from ``params`` (others are ignored).

    Returns:
        The comparison rows (also in ``comparison.csv``, ``comparison.json``, ``comparison.md``).
    """
    from edge_derm.training.sequential import load_plan, run_plan

    if not plans:
        raise ConfigError("no plans given; name at least one (e.g. a b c) or a .toml file")
    out = Path(out)
    if not resume:
        check_output_dir(out, force, list((params or {}).values()))
    params = dict(params or {})
    jobs = []
    for name in plans:
        for backbone in (backbones or [None]):
            ov = dict(overrides or {})
            if backbone:
                ov["backbone"] = backbone
            plan = load_plan(name, _declared(name, params), ov)
            label = plan.name + (f"-{backbone}" if backbone else "")
            jobs.append((label, plan))
    labels = [label for label, _ in jobs]
    if len(set(labels)) != len(labels):
        raise ConfigError(f"two experiments would share a folder ({', '.join(labels)}); give distinct plans")
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for label, plan in jobs:
        res = run_plan(plan, out / label, resume=resume and (out / label / "plan.json").is_file(), force=force)
        m = res["metrics"] or {}
        ci = (m.get("bootstrap") or {}).get("macro_f1")
        rows.append({"name": label, "plan": plan.name, "backbone": plan.stages[-1].config.backbone,
                     "params": res["params"], "accuracy": m.get("accuracy"), "weighted_f1": m.get("weighted_f1"),
                     "macro_f1": m.get("macro_f1"), "macro_f1_ci": ci})
    write_comparison(out, rows)
    return rows


def _declared(name: str, params: dict[str, str]) -> dict[str, str]:
    from edge_derm.training.sequential import _read

    import tomllib

    declared = tomllib.loads(_read(name)[0]).get("params", [])
    return {k: v for k, v in params.items() if k in declared}


def comparison_markdown(rows: list[dict[str, Any]]) -> str:
    """The comparison table (percentages, parameters in millions)."""
    def pct(v: Any) -> str:
        return "" if v is None else f"{100 * v:.1f} %"

    lines = ["| experiment | backbone | parameters | accuracy | weighted F1 | macro F1 | macro F1 95 % CI |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        ci = r.get("macro_f1_ci")
        ci_text = f"{100 * ci[0]:.1f}-{100 * ci[1]:.1f} %" if ci else ""
        lines.append(f"| {r['name']} | {r['backbone']} | {r['params'] / 1e6:.2f} M | {pct(r['accuracy'])} | "
                     f"{pct(r['weighted_f1'])} | {pct(r['macro_f1'])} | {ci_text} |")
    return "\n".join(lines) + "\n"


def write_comparison(out: Path, rows: list[dict[str, Any]]) -> None:
    """comparison.csv / .json / .md in ``out``."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(COLUMNS), lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({**r, "macro_f1_ci": "" if not r.get("macro_f1_ci") else "%.4f-%.4f" % tuple(r["macro_f1_ci"])})
    atomic_write_text(out / "comparison.csv", buf.getvalue())
    write_json(out / "comparison.json", {"kind": "experiment", "rows": rows})
    atomic_write_text(out / "comparison.md", "# Comparison\n\n" + comparison_markdown(rows))
