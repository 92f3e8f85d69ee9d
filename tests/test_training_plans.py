"""Sequential plans: TOML loading and validation, head swap between stages, forgetting matrix."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edge_derm.errors import ConfigError, OutputExistsError
from edge_derm.training.sequential import list_plans, load_plan, run_plan

PLAN = """
name = "two"
description = "first -> second"
params = ["first", "second"]

[train]
backbone = "tiny"
weights = "none"
image_size = 24
epochs_per_block = 1
steps_per_epoch = 2
blocks = 1
lr_head = 0.01
lr_backbone = 0.001
select_best = false     # the checks below follow the last epoch's weights

[[stages]]
name = "first"
data = ["{first}"]

[[stages]]
name = "second"
data = ["{second}"]
"""


def test_shipped_plans_load_with_parameters(tr_datasets):
    assert list_plans() == ["a", "b", "c", "o", "o-blockwise", "x"]
    d = str(tr_datasets["plain"])
    for name, params in {"o": ["target"], "o-blockwise": ["target"], "a": ["target"], "b": ["edra", "target"],
                         "c": ["edra", "dermofit", "target"], "x": ["edra", "dermofit", "target"]}.items():
        assert load_plan(name, {p: d for p in params}, {"weights": "none"}).stages[0].config.backbone \
            == "efficientnet_b3"  # the paper's Table IV backbone is every plan's default
        plan = load_plan(name, {p: d for p in params}, {"backbone": "tiny", "weights": "none"}
                         if not name.startswith("o") else {"backbone": "tiny"})
        assert plan.name == name
        assert all(s.config.data == [str(tr_datasets["plain"].resolve())] * len(s.config.data) for s in plan.stages)
    assert len(load_plan("c", {p: d for p in ("edra", "dermofit", "target")}, {"backbone": "tiny", "weights": "none"}).stages) == 3
    o = load_plan("o", {"target": d}, {"backbone": "tiny"})
    assert o.stages[0].config.weights == "none" and o.stages[0].config.blocks == 4  # the whole backbone
    # the from-scratch recipe: every layer from the start at 1e-3 (not a frozen random backbone)
    assert o.stages[0].config.unfreeze == "full" and o.stages[0].config.n_steps == 1
    assert (o.stages[0].config.lr_head, o.stages[0].config.lr_backbone) == (1e-3, 1e-3)
    # the paper's o: from scratch, block by block over the whole backbone
    ob = load_plan("o-blockwise", {"target": d}, {"backbone": "tiny"}).stages[0].config
    assert (ob.weights, ob.unfreeze, ob.blocks, ob.n_steps) == ("none", "blockwise", 4, 5)
    # b and c train their EDRA / Dermofit stages on those datasets' own classes
    c = load_plan("c", {p: d for p in ("edra", "dermofit", "target")}, {"backbone": "tiny", "weights": "none"})
    assert [s.taxonomy for s in c.stages] == ["edra5", "dermofit10", None]
    b = load_plan("b", {p: d for p in ("edra", "target")}, {"backbone": "tiny", "weights": "none"})
    assert [s.taxonomy for s in b.stages] == ["edra5", None]
    x = load_plan("x", {p: d for p in ("edra", "dermofit", "target")}, {"backbone": "tiny", "weights": "none"})
    assert x.stages[0].config.merge == "last" and len(x.stages[0].config.data) == 3


def test_plan_errors(tr_datasets, tmp_path):
    d = str(tr_datasets["plain"])
    with pytest.raises(ConfigError, match="needs --set edra=DIR"):
        load_plan("b", {"target": d})
    with pytest.raises(ConfigError, match="has no parameter.*colour"):
        load_plan("a", {"target": d, "colour": d})
    with pytest.raises(ConfigError, match="dataset folder.*not found.*missing"):
        load_plan("a", {"target": str(tmp_path / "missing")})
    with pytest.raises(ConfigError, match="unknown plan 'z'.*a, b, c, o, o-blockwise, x"):
        load_plan("z")
    bad = tmp_path / "bad plan.toml"
    bad.write_text(PLAN.replace("[train]", "stray = 1\n[train]"))
    with pytest.raises(ConfigError, match="unknown key.*stray"):
        load_plan(str(bad), {"first": d, "second": d})
    bad.write_text(PLAN.replace("lr_head = 0.01", "lr_hed = 0.01"))
    with pytest.raises(ConfigError, match=r"unknown \[train\] key.*lr_hed"):
        load_plan(str(bad), {"first": d, "second": d})


def test_plan_runs_stages_swaps_heads_and_reports_forgetting(tr_datasets, tmp_path):
    from edge_derm.models import load_model

    path = tmp_path / "two stage.toml"
    path.write_text(PLAN)
    plan = load_plan(str(path), {"first": str(tr_datasets["plain"]), "second": str(tr_datasets["other"])})
    out = tmp_path / "plan run"
    res = run_plan(plan, out)
    first = load_model(out / "stages" / "0-first" / "model.keras")
    second_cfg = json.loads((out / "stages" / "1-second" / "config.json").read_text())
    # the second stage starts from the first stage's model: its backbone, a new 2-class head
    assert second_cfg["weights"] == str((out / "stages" / "0-first" / "model.keras").resolve())
    assert second_cfg["classes"] == ["AK", "SebKer"]
    final = load_model(out / "model.keras")
    assert final.output_shape == (None, 2) and first.output_shape == (None, 3)
    # the stem ("rest") is never unfrozen with blocks=1, so it must still be the first stage's
    for name in ("tiny_stem_conv", "tiny_b1_conv", "tiny_b2_conv"):
        np.testing.assert_array_equal(first.get_layer(name).get_weights()[0], final.get_layer(name).get_weights()[0])
    assert not np.array_equal(first.get_layer("tiny_b3_conv").get_weights()[0],
                              final.get_layer("tiny_b3_conv").get_weights()[0])  # b3 was fine-tuned
    f = res["forgetting"]
    assert f["stages"] == ["first", "second"]
    assert f["macro_f1"][0][1] is None and all(v is not None for v in (f["macro_f1"][0][0], f["macro_f1"][1][0],
                                                                       f["macro_f1"][1][1]))
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["data"][-1]["dir"] == str(tr_datasets["other"].resolve()) and len(cfg["data"]) == 2
    assert cfg["classes"] == ["AK", "SebKer"] and cfg["plan"]["stages"] == ["first", "second"]
    report = (out / "report.md").read_text()
    assert "Forgetting" in report and "| first |" in report
    assert json.loads((out / "metrics.json").read_text())["forgetting"]["stages"] == ["first", "second"]
    header = (out / "history.csv").read_text().splitlines()[0]
    assert header == "step,block,epoch,lr_end,loss,accuracy,val_loss,val_accuracy,val_macro_f1,stage"
    with pytest.raises(OutputExistsError):
        run_plan(plan, out)
    # resuming a finished plan retrains nothing and gives the same matrix
    again = run_plan(plan, out, resume=True)
    assert again["forgetting"] == f
