"""Sequential plans: stages trained one after another, each starting from the previous stage's
backbone with a new head for its own classes; then a forgetting matrix over every stage's test set.

A plan is a TOML file::

    name = "b"
    description = "ImageNet -> EDRA -> target"
    params = ["edra", "target"]          # given on the command line: --set edra=DIR --set target=DIR

    [train]                              # TrainConfig fields shared by every stage
    backbone = "mobilenet_v2"
    weights = "imagenet"                 # the first stage's weights; later stages start from the previous one

    [[stages]]
    name = "edra"
    data = ["{edra}"]                    # dataset folders; "{param}" is replaced
    taxonomy = "dermai13"                # optional: every dataset of the stage must use it
    # any TrainConfig field (epochs_per_block, blocks, lr_head, ...) overrides [train] for this stage

Shipped plans (``edge_derm/training/plans/*.toml``): o, o-blockwise, x, a, b, c (the paper's strategies; b and c
train their EDRA and Dermofit stages on those datasets' own classes, taxonomies ``edra5`` and ``dermofit10``).
"""

from __future__ import annotations

import logging
import os
import shutil
import tomllib
from dataclasses import dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import Any

from edge_derm.artefacts import RunConfig
from edge_derm.errors import ConfigError, OutputExistsError
from edge_derm.fsutil import atomic_write_text, check_not_input, read_config_text, read_json, write_json
from edge_derm.training.config import TrainConfig, config_diff

_log = logging.getLogger(__name__)
_PLANS = "edge_derm.training.plans"
_TOP_KEYS = {"name", "description", "params", "train", "stages"}
_STAGE_KEYS = {"name", "data", "taxonomy"}


@dataclass
class Stage:
    """One stage of a plan (already parameterised)."""

    name: str
    config: TrainConfig
    taxonomy: str | None = None


@dataclass
class Plan:
    """A loaded, parameterised plan."""

    name: str
    description: str
    stages: list[Stage]
    source: str
    params: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The plan as saved in plan.json (its hash decides whether --resume may continue it)."""
        return {"name": self.name, "description": self.description, "source": self.source, "params": self.params,
                "stages": [{"name": s.name, "taxonomy": s.taxonomy, "train": s.config.to_dict()} for s in self.stages]}


def list_plans() -> list[str]:
    """Names of the shipped plans."""
    return sorted(p.name[:-5] for p in resources.files(_PLANS).iterdir() if p.name.endswith(".toml"))


def load_plan(name_or_path: str | os.PathLike, params: dict[str, str] | None = None,
              overrides: dict[str, Any] | None = None) -> Plan:
    """Load a plan by shipped name or path and fill in its parameters.

    Args:
        name_or_path: ``b`` (shipped) or ``path/to/plan.toml``.
        params: Values of the plan's ``params`` (e.g. ``{"target": "/data/target"}``).
        overrides: TrainConfig fields that override every stage (e.g. ``{"backbone": "resnet50"}``).

    Raises:
        ConfigError: Unknown plan, keys, parameters, or dataset folders that do not exist.
    """
    text, where = _read(str(name_or_path))
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{where}: invalid TOML ({exc})") from exc
    unknown = sorted(set(raw) - _TOP_KEYS)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(_TOP_KEYS))}")
    params = dict(params or {})
    _check_params([str(p) for p in raw.get("params", [])], params, where)
    train_keys = {f.name for f in fields(TrainConfig)} - {"data"}
    base = dict(raw.get("train", {}))
    bad = sorted(set(base) - train_keys)
    if bad:
        raise ConfigError(f"{where}: unknown [train] key(s) {', '.join(bad)}; known: {', '.join(sorted(train_keys))}")
    overrides = dict(overrides or {})
    bad = sorted(set(overrides) - train_keys)
    if bad:
        raise ConfigError(f"unknown training override(s) {', '.join(bad)}; known: {', '.join(sorted(train_keys))}")
    raw_stages = raw.get("stages") or []
    if not raw_stages:
        raise ConfigError(f"{where}: no [[stages]]; a plan needs at least one stage")
    stages = [_load_stage(i, st, where, params, base, overrides, train_keys)
              for i, st in enumerate(raw_stages)]
    backbones = {(s.config.backbone, s.config.alpha) for s in stages}
    if len(backbones) > 1:
        raise ConfigError(f"{where}: stages use different backbones {sorted(map(str, backbones))}; "
                          "a plan keeps one backbone from stage to stage")
    names = [s.name for s in stages]
    if len(set(names)) != len(names):
        raise ConfigError(f"{where}: stage names must be unique, got {names}")
    return Plan(name=str(raw.get("name", Path(where).stem)), description=str(raw.get("description", "")),
                stages=stages, source=where, params=params)


def _check_params(declared: list[str], params: dict[str, str], where: str) -> None:
    """Every parameter the plan declares is given, and no other."""
    missing = [p for p in declared if p not in params]
    if missing:
        raise ConfigError(f"plan {where} needs " + " ".join(f"--set {p}=DIR" for p in missing))
    extra = sorted(set(params) - set(declared))
    if extra:
        raise ConfigError(f"plan {where} has no parameter(s) {', '.join(extra)}; "
                          f"its parameters: {', '.join(declared) or 'none'}")


def _load_stage(i: int, st: dict[str, Any], where: str, params: dict[str, str], base: dict[str, Any],
                overrides: dict[str, Any], train_keys: set[str]) -> Stage:
    """Stage ``i`` of a plan: its data with the parameters filled in, and its TrainConfig (``base``, the
    plan's [train], then the stage's own options, then the command line's ``overrides``)."""
    name = str(st.get("name", f"stage{i}"))
    bad = sorted(set(st) - _STAGE_KEYS - train_keys)
    if bad:
        raise ConfigError(f"{where}: stage {name}: unknown key(s) {', '.join(bad)}; "
                          f"known: {', '.join(sorted(_STAGE_KEYS | train_keys))}")
    if i > 0 and "weights" in st:
        raise ConfigError(f"{where}: stage {name} sets weights, but stages after the first start from the "
                          "previous stage's model; remove it")
    data = st.get("data")
    if isinstance(data, str):
        data = [data]
    if not data:
        raise ConfigError(f"{where}: stage {name} has no data; add data = [\"{{target}}\"]")
    dirs = [_fill(str(d), params, where) for d in data]
    absent = [d for d in dirs if not Path(d).is_dir()]
    if absent:
        raise ConfigError(f"plan {where}, stage {name}: dataset folder(s) not found: {', '.join(absent)}")
    opts = {**base, **{k: v for k, v in st.items() if k in train_keys}, **overrides}
    if i > 0:
        opts["weights"] = "none"  # replaced by the previous stage's model at run time
    return Stage(name=name, config=TrainConfig(data=dirs, **opts), taxonomy=st.get("taxonomy"))


def _read(name: str) -> tuple[str, str]:
    if name.endswith(".toml") or os.sep in name:
        path = Path(name)
        if not path.is_file():
            raise ConfigError(f"plan file not found: {path}")
        return read_config_text(path, "plan file"), str(path)
    known = list_plans()
    if name not in known:
        raise ConfigError(f"unknown plan {name!r}; use one of {', '.join(known)} or a path to a .toml file")
    return (resources.files(_PLANS) / f"{name}.toml").read_text(encoding="utf-8"), f"{name}.toml"


def _fill(text: str, params: dict[str, str], where: str) -> str:
    try:
        return text.format_map(params)
    except KeyError as exc:
        raise ConfigError(f"{where}: {{{exc.args[0]}}} is not a declared parameter; add it to params") from exc


def stage_dir(out: Path, index: int, stage: Stage) -> Path:
    """The run folder of stage ``index`` of a plan trained into ``out``."""
    return Path(out) / "stages" / f"{index}-{stage.name}"


def run_plan(plan: Plan, out: str | os.PathLike, *, resume: bool = False, force: bool = False) -> dict[str, Any]:
    """Train every stage of ``plan`` into ``out/stages/<i>-<name>/``, then evaluate forgetting.

    ``out`` itself becomes a run folder of the final model (model.keras, config.json with every
    stage's data, the last one last, history.csv, metrics.json, report.md with the forgetting matrix).

    Returns:
        ``{"out", "metrics", "forgetting", "params", "stages": [train results]}``.
    """
    from edge_derm.provenance import hash_json
    from edge_derm.training.runfolder import train_inputs
    from edge_derm.training.trainer import train

    out = Path(out)
    if not resume:
        check_not_input(out, [i for stage in plan.stages for i in train_inputs(stage.config)])
    plan_path = out / "plan.json"
    plan_dict = plan.to_dict()
    plan_hash = hash_json([s["train"] for s in plan_dict["stages"]])
    if resume and force:
        raise ConfigError("--resume and --force contradict each other; pass one")
    if resume:
        _check_resume(out, plan_dict, plan_hash)
    elif out.exists() and (not out.is_dir() or any(out.iterdir())):
        if not force:
            raise OutputExistsError(f"{out} already exists; pass --resume to continue it or --force to replace it")
        if not (plan_path.is_file() or (out / "config.json").is_file()):
            raise OutputExistsError(f"{out} is not empty and not a run folder; choose another --out")
        shutil.rmtree(out)
    for stage in plan.stages:  # before anything trains: a wrong dataset fails now, not after stage 1
        _check_taxonomy(stage, plan)
    existed = out.is_dir()  # empty here unless resuming (a non-empty one was refused or replaced above)
    fresh = not resume and (not existed or not any(out.iterdir()))
    out.mkdir(parents=True, exist_ok=True)
    write_json(plan_path, {**plan_dict, "hash": plan_hash})
    try:
        results = _train_stages(plan, out, resume=resume, train=train)
    except BaseException:
        if fresh and not _anything_trained(out):  # nothing to resume: leave nothing that blocks the rerun
            _clear(out, keep_folder=existed)
        raise
    forgetting = forgetting_matrix(out, plan)
    _finalise(out, plan, results, forgetting)
    final = results[-1]
    return {"out": out, "metrics": final["metrics"], "forgetting": forgetting, "params": final["params"],
            "stages": results}


def _check_resume(out: Path, plan_dict: dict[str, Any], plan_hash: str) -> None:
    """ConfigError unless ``out`` holds a plan.json of this very plan (same stages, same options)."""
    plan_path = out / "plan.json"
    if not plan_path.is_file():
        raise ConfigError(f"nothing to resume in {out} (no plan.json); start it without --resume")
    try:
        old = read_json(plan_path)
    except (ValueError, OSError):
        old = None
    if not isinstance(old, dict):
        raise ConfigError(f"cannot resume {out}: plan.json is damaged; start again with --force")
    if old.get("hash") != plan_hash:
        diffs = []
        for a, b in zip(old.get("stages", []), plan_dict["stages"]):
            diffs += [f"{b['name']}.{d}" for d in config_diff(a.get("train", {}), b["train"])]
        raise ConfigError(f"--resume with a different plan than {out} ({'; '.join(diffs) or 'stages changed'}); "
                          "use the same plan and --set values, or --force to start again")


def _clear(out: Path, *, keep_folder: bool) -> None:
    """Remove what a failed new plan wrote in ``out``; the user's own (empty) folder stays, empty."""
    if not keep_folder:
        shutil.rmtree(out, ignore_errors=True)
        return
    for child in out.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)


def _anything_trained(out: Path) -> bool:
    """Whether a stage of the plan in ``out`` has a checkpoint or a model (something --resume continues)."""
    stages = out / "stages"
    return stages.is_dir() and any(
        (d / "model.keras").is_file() or (d / "checkpoints" / "state.json").is_file() for d in stages.iterdir())


def _train_stages(plan: Plan, out: Path, *, resume: bool, train) -> list[dict[str, Any]]:
    results = []
    previous: Path | None = None
    for i, stage in enumerate(plan.stages):
        cfg = stage.config
        if previous is not None:
            cfg = TrainConfig.from_dict({**cfg.to_dict(), "weights": str(previous / "model.keras")})
        _check_taxonomy(stage, plan)
        sdir = stage_dir(out, i, stage)
        sdir.parent.mkdir(parents=True, exist_ok=True)
        stage_resume = resume and (sdir / "checkpoints" / "state.json").is_file()
        _log.info("plan %s: stage %d/%d (%s)", plan.name, i + 1, len(plan.stages), stage.name)
        results.append(train(cfg, sdir, resume=stage_resume, force=not stage_resume))
        previous = sdir
    return results


def _check_taxonomy(stage: Stage, plan: Plan) -> None:
    if not stage.taxonomy:
        return
    from edge_derm.data.manifest import Manifest

    for d in stage.config.data:
        got = Manifest.load(d).info.get("taxonomy")
        if got != stage.taxonomy:
            raise ConfigError(f"plan {plan.name}, stage {stage.name}: {d} uses taxonomy {got!r}, the plan expects "
                              f"{stage.taxonomy!r}; rebuild it with --taxonomy {stage.taxonomy}")


def forgetting_matrix(out: Path, plan: Plan) -> dict[str, Any]:
    """Macro F1 and accuracy of every stage's head on its own test set, after each later stage.

    Row i = after stage i (its backbone), column j <= i = stage j's test set with stage j's head.
    """
    from edge_derm.evaluation import compute_metrics
    from edge_derm.models import copy_weights, load_model
    from edge_derm.training.data import load_data
    from edge_derm.training.scoring import predict

    n = len(plan.stages)
    names = [s.name for s in plan.stages]
    macro: list[list[float | None]] = [[None] * n for _ in range(n)]
    acc: list[list[float | None]] = [[None] * n for _ in range(n)]
    tests = [load_data(s.config.data, need_train=False, merge=s.config.merge) for s in plan.stages]
    for i in range(n):
        backbone = load_model(stage_dir(out, i, plan.stages[i]) / "model.keras")
        for j in range(i + 1):
            data = tests[j]
            if data.test is None:
                continue
            model = load_model(stage_dir(out, j, plan.stages[j]) / "model.keras")
            if i != j:
                copy_weights(backbone, model)
            cfg = plan.stages[j].config
            probs = predict(model, data.test[0], cfg.image_size, cfg.resize_mode, description=f"forgetting {i},{j}")
            m = compute_metrics(data.test[1], probs, data.classes)
            macro[i][j], acc[i][j] = m["macro_f1"], m["accuracy"]
    return {"stages": names, "macro_f1": macro, "accuracy": acc}


def forgetting_markdown(forgetting: dict[str, Any]) -> str:
    """The forgetting matrix as a markdown table (macro F1, accuracy in brackets)."""
    names = forgetting["stages"]
    lines = ["## Forgetting (macro F1, accuracy)", "",
             "Rows: after training stage; columns: test set of stage (with that stage's head).", "",
             "| after \\ test | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for i, name in enumerate(names):
        cells = []
        for j in range(len(names)):
            f, a = forgetting["macro_f1"][i][j], forgetting["accuracy"][i][j]
            cells.append("" if f is None else f"{100 * f:.1f} % ({100 * a:.1f} %)")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _finalise(out: Path, plan: Plan, results: list[dict[str, Any]], forgetting: dict[str, Any]) -> None:
    """Make ``out`` a run folder of the final model, with the forgetting matrix in its report."""
    from edge_derm.evaluation import write_evaluation

    last = stage_dir(out, len(plan.stages) - 1, plan.stages[-1])
    tmp = out / ".model.keras.tmp"
    shutil.copyfile(last / "model.keras", tmp)
    os.replace(tmp, out / "model.keras")
    cfg = RunConfig.read(last)
    data = []
    for i, stage in enumerate(plan.stages):
        for d in RunConfig.read(stage_dir(out, i, stage)).data:
            data.append({**d, "stage": stage.name})
    cfg.data = data  # the last entry is the final stage's (evaluation) dataset
    cfg.extra["plan"] = {"name": plan.name, "source": plan.source, "params": plan.params,
                         "stages": [s.name for s in plan.stages]}
    cfg.write(out / RunConfig.FILENAME)
    rows = []
    with_val = False
    for stage, res in zip(plan.stages, results):
        for row in res["history"]:
            rows.append({**row, "stage": stage.name})
            with_val = with_val or "val_loss" in row
    from edge_derm.training.runfolder import write_history

    write_history(out / "history.csv", rows, with_val, extra=("stage",))
    write_json(out / "forgetting.json", forgetting)
    metrics = results[-1]["metrics"]
    if metrics is not None:
        metrics = {**metrics, "forgetting": forgetting}
        write_evaluation(out, metrics, title=f"plan {plan.name}: {cfg.backbone} ({' -> '.join(forgetting['stages'])})")
        report = (out / "report.md").read_text(encoding="utf-8")
        atomic_write_text(out / "report.md", report + "\n" + forgetting_markdown(forgetting))
    else:
        atomic_write_text(out / "report.md", f"# plan {plan.name}\n\n" + forgetting_markdown(forgetting))
