"""Recipes, validation-based model selection, temperature scaling and the triage operating point."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from edge_derm import calibration as cal
from edge_derm.errors import ConfigError
from edge_derm.training.config import RECIPE_FIELDS, TrainConfig, list_recipes, load_recipe



# -- recipes -----------------------------------------------------------------------------------

def test_paper_recipe_is_the_papers_method(tr_datasets):
    """Section III of the paper: 3 epochs per block, Adam 1e-4 / 1e-5, brightness 0.2-0.8, batch = classes."""
    paper = load_recipe("paper")
    assert paper["epochs_per_block"] == 3 and paper["unfreeze"] == "blockwise"
    assert paper["lr_head"] == 1e-4 and paper["lr_backbone"] == 1e-5 and paper["lr_schedule"] == "constant"
    assert paper["brightness"] == [0.2, 0.8] and paper["batch_multiple"] == 1
    assert paper["label_smoothing"] == 0.0 and paper["select_best"] is False and paper["val_fraction"] == 0.0
    cfg = TrainConfig(data=[str(tr_datasets["plain"])], recipe="paper", backbone="mobilenet_v2", weights="none")
    assert (cfg.lr_head, cfg.lr_backbone, cfg.brightness, cfg.batch_multiple, cfg.blocks) == (1e-4, 1e-5, [0.2, 0.8], 1, 4)
    assert cfg.schedule()["select_best"] is None


def test_recipes_differ_where_they_should_and_options_override(tr_datasets):
    assert set(list_recipes()) >= {"paper", "recommended"}
    paper, rec = load_recipe("paper"), load_recipe("recommended")
    assert set(paper) <= set(RECIPE_FIELDS) and set(rec) <= set(RECIPE_FIELDS)
    differ = {k for k in set(paper) | set(rec) if paper.get(k) != rec.get(k)}
    assert {"brightness", "lr_head", "batch_multiple", "select_best", "val_fraction", "bn_recalibration"} <= differ
    assert rec["brightness"][0] < 1.0 < rec["brightness"][1]  # symmetric jitter, not darkening
    d = [str(tr_datasets["plain"])]
    default = TrainConfig(data=d, backbone="tiny", weights="none")
    assert default.recipe == "recommended" and default.select_best is True and default.lr_schedule == "constant"
    # an explicit option wins over the recipe; the other fields still come from it
    cfg = TrainConfig(data=d, backbone="tiny", weights="none", recipe="paper", brightness=[0.9, 1.1], lr_head=3e-4)
    assert cfg.brightness == [0.9, 1.1] and cfg.lr_head == 3e-4 and cfg.lr_backbone == 1e-5
    # a from-scratch schedule keeps its own rates when the recipe's are for block-wise fine-tuning
    assert TrainConfig(data=d, backbone="tiny", weights="none", unfreeze="full").lr_backbone == 1e-3  # not 1e-4
    # the recipe name itself does not decide the model: the resolved fields do
    assert "recipe" not in cfg.identity()


def test_bad_recipes_and_options(tr_datasets, tmp_path):
    d = [str(tr_datasets["plain"])]
    with pytest.raises(ConfigError, match="unknown recipe 'fast'; known: paper, recommended"):
        TrainConfig(data=d, backbone="tiny", weights="none", recipe="fast")
    bad = tmp_path / "r.toml"
    bad.write_text('[train]\nlr_head = 1e-3\nbrightnes = [0.9, 1.1]\n')
    with pytest.raises(ConfigError, match=r"unknown key\(s\) train.brightnes"):
        load_recipe(str(bad))
    with pytest.raises(ConfigError, match="does not exist"):
        load_recipe(str(tmp_path / "none.toml"))
    good = tmp_path / "mine.toml"
    good.write_text('description = "mine"\n[train]\nlr_head = 5e-4\nselect_best = false\n')
    cfg = TrainConfig(data=d, backbone="tiny", weights="none", recipe=str(good))
    assert cfg.lr_head == 5e-4 and cfg.select_best is False and cfg.brightness == [0.2, 0.8]  # the rest: legacy
    for kw, msg in ((dict(triage_target=1.0), "triage_target must be a sensitivity in \\(0, 1\\)"),
                    (dict(triage_target=float("nan")), "triage_target"),
                    (dict(brightness=[1.2, 0.8]), "brightness must be \\[low, high\\]"),
                    (dict(val_fraction=1.0), "val_fraction must be a number in"),
                    (dict(lr_schedule="step"), "unknown lr_schedule"),
                    (dict(prevalence="target"), "unknown prevalence")):
        with pytest.raises(ConfigError, match=msg):
            TrainConfig(data=d, backbone="tiny", weights="none", **kw)


def test_cli_recipes_and_bad_recipe(tr_datasets, tmp_path, capsys):
    from edge_derm.cli import main

    assert main(["recipes"]) == 0
    shown = capsys.readouterr().out
    assert "paper" in shown and "recommended" in shown and "brightness" in shown
    out = tmp_path / "run"
    base = ["-q", "train", "--data", str(tr_datasets["plain"]), "--backbone", "tiny", "--weights", "none"]
    assert main([*base, "--recipe", "nope", "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "error: unknown recipe 'nope'" in err and len(err.strip().splitlines()) == 1 and not out.exists()
    assert main([*base, "--triage-target", "1.5", "--out", str(out)]) == 1
    assert "triage_target" in capsys.readouterr().err and not out.exists()


# -- calibration -------------------------------------------------------------------------------

def _overconfident(n: int = 600, c: int = 4, seed: int = 0):
    """Probabilities whose top-1 is right 60 % of the time but whose confidence is about 0.97."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, c, n)
    pred = np.where(rng.random(n) < 0.6, y, (y + rng.integers(1, c, n)) % c)
    logits = rng.normal(0, 0.5, (n, c))
    logits[np.arange(n), pred] += 6.0
    p = np.exp(logits - logits.max(1, keepdims=True))
    return p / p.sum(1, keepdims=True), y


def test_temperature_scaling_lowers_ece_and_keeps_top1():
    from edge_derm.evaluation import expected_calibration_error as ece

    probs, y = _overconfident()
    t = cal.fit_temperature(probs, y)
    after = cal.apply(probs, t)
    assert t > 1.5  # over-confident: the temperature softens
    assert np.array_equal(after.argmax(1), probs.argmax(1))
    before_ece = ece(probs.max(1), probs.argmax(1) == y)
    after_ece = ece(after.max(1), after.argmax(1) == y)
    assert before_ece > 0.3 and after_ece < 0.08 and after_ece < before_ece / 4
    assert cal.nll(after, y) < cal.nll(probs, y)
    # the fitted T is the NLL minimum: a step either side is worse
    assert cal.nll(cal.apply(probs, t * 1.1), y) > cal.nll(after, y) < cal.nll(cal.apply(probs, t / 1.1), y)


def test_prior_shift_restores_training_frequencies():
    shift = cal.log_prior_shift([90, 10])
    assert shift == pytest.approx([math.log(1.8), math.log(0.2)])
    out = cal.apply(np.array([[0.5, 0.5]]), 1.0, shift)
    assert out[0] == pytest.approx([0.9, 0.1], abs=1e-6)
    with pytest.raises(ConfigError, match="every class"):
        cal.log_prior_shift([5, 0])


def test_operating_point_reaches_its_target_on_validation():
    rng = np.random.default_rng(1)
    positive = rng.random(500) < 0.25
    scores = np.clip(np.where(positive, rng.normal(0.6, 0.2, 500), rng.normal(0.3, 0.2, 500)), 0, 1)
    for target in (0.8, 0.9, 0.95):
        thr = cal.fit_threshold(scores, positive, target)
        sens = ((scores >= thr) & positive).sum() / positive.sum()
        assert sens >= target
        # the highest such threshold: the next positive score above it misses the target
        higher = np.sort(scores[positive & (scores > thr)])
        if higher.size:
            assert ((scores >= higher[0]) & positive).sum() / positive.sum() < target
    with pytest.raises(ConfigError, match="in \\(0, 1\\)"):
        cal.fit_threshold(scores, positive, 0.0)
    with pytest.raises(ConfigError, match="no referral-group image"):
        cal.fit_threshold(scores, np.zeros(500, bool), 0.9)


def test_fit_stores_temperature_threshold_and_referral_classes():
    probs, y = _overconfident(c=3)
    block = cal.fit(probs, y, ["MM", "Nev", "BCC"], {"MM": "malignant", "Nev": "benign", "BCC": "malignant"},
                    target=0.9)
    assert block["referral_classes"] == ["MM", "BCC"] and 0 < block["threshold"] < 1
    assert block["val"]["operating_point"]["sensitivity"] >= 0.9
    assert block["val"]["ece_after"] < block["val"]["ece_before"]
    assert cal.check(block, 3)["temperature"] == block["temperature"]
    for bad, msg in (({"temperature": float("inf")}, "temperature"), ({"temperature": 0}, "temperature"),
                     ({"temperature": 1.0, "threshold": 2}, "threshold"),
                     ({"temperature": 1.0, "log_prior": [0.0]}, "log_prior"), ({}, "temperature"),
                     ({"temperature": 1.0, "referral_classes": "MM"}, "referral_classes"),
                     ({"temperature": 1.0, "target_sensitivity": 1.5}, "target sensitivity")):
        with pytest.raises(ConfigError, match=msg):
            cal.check(bad, 3)


# -- training: validation split, best epoch, calibration in the run -----------------------------

FAST = dict(backbone="tiny", image_size=24, weights="none", steps_per_epoch=4, batch_size=6,
            lr_head=2e-2, lr_backbone=1e-3, bn_recalibration=12)


def _val_macro_f1(model, data, image_size):
    from edge_derm.training.trainer import _macro_f1, predict

    return _macro_f1(predict(model, data.val[0], image_size), data.val[1])


def test_best_epoch_is_restored_on_a_run_that_peaks_early(tr_datasets, tmp_path):
    """Step 0 learns the classes; after it the head is scrambled and step 1 (tiny learning rates) cannot
    repair it, so validation macro F1 peaks in step 0 and the saved model must be that epoch's."""
    from edge_derm.models import load_model
    from edge_derm.training.data import load_data
    from edge_derm.training.trainer import train

    def scramble(step, model):
        if step == 0:
            head = model.get_layer("head_conv")
            kernel, bias = head.get_weights()
            head.set_weights([np.roll(kernel, 1, axis=-1), np.roll(bias, 1)])

    cfg = TrainConfig(data=[str(tr_datasets["val"])], blocks=1, epochs_per_block=3, **FAST)
    cfg_tiny_lr = TrainConfig.from_dict({**cfg.to_dict(), "lr_head": 1e-7, "lr_backbone": 1e-7})
    # step 1 must not repair the scrambled head: only step 0 uses the real rates
    out = tmp_path / "peaks early"
    calls = []

    def on_step_end(step, model):
        calls.append(step)
        scramble(step, model)
        if step == 0:  # from now on, learning rates too small to matter
            cfg.lr_head, cfg.lr_backbone = cfg_tiny_lr.lr_head, cfg_tiny_lr.lr_backbone

    result = train(cfg, out, on_step_end=on_step_end)
    history = result["history"]
    f1 = [r["val_macro_f1"] for r in history]
    assert calls == [0, 1] and len(f1) == 6
    assert max(f1[:3]) > max(f1[3:]) + 0.2  # built to peak early
    state = json.loads((out / "checkpoints" / "state.json").read_text())
    assert state["best"]["step"] == 0 and state["best"]["val_macro_f1"] == pytest.approx(max(f1))
    rc = json.loads((out / "config.json").read_text())
    assert rc["selected"]["by"] == "val_macro_f1" and rc["selected"]["epoch"] == 1 + int(np.argmax(f1[:3]))
    data = load_data([str(tr_datasets["val"])])
    assert _val_macro_f1(load_model(out / "model.keras"), data, 24) == pytest.approx(max(f1))


def test_validation_split_is_carved_by_group_and_calibration_is_stored(tr_datasets, tmp_path, caplog):
    from edge_derm.training.data import carve_validation, load_data
    from edge_derm.training.trainer import train

    data = load_data([str(tr_datasets["plain"])])
    n_train = len(data.train[0])
    warnings = carve_validation(data, 0.34, seed=0)
    assert data.val_source == "carved" and len(data.val[0]) + len(data.train[0]) == n_train
    assert not set(data.val[0]) & set(data.train[0]) and set(np.unique(data.val[1])) == {0, 1, 2}
    assert warnings == []

    from conftest import make_tr_dataset

    ds = make_tr_dataset(tmp_path / "dermai13 set", ["MM", "Nev", "BCC"], taxonomy="dermai13", seed=4)
    cfg = TrainConfig(data=[str(ds)], blocks=1, epochs_per_block=2, val_fraction=0.34, **FAST)
    out = tmp_path / "calibrated run"
    metrics = train(cfg, out)["metrics"]
    rc = json.loads((out / "config.json").read_text())
    assert rc["validation"] == {"source": "carved", "n": 6, "fraction": 0.34}
    block = json.loads((out / "calibration.json").read_text())
    assert rc["calibration"] == block and block["fitted_on"] == "val" and block["temperature"] > 0
    assert block["referral_classes"] == ["MM", "BCC"] and block["threshold"] is not None
    assert metrics["calibration"]["temperature"] == block["temperature"]
    assert metrics["ece"] == metrics["calibration"]["ece_after"]
    assert 0 <= metrics["operating_point"]["sensitivity"] <= 1
    report = (out / "report.md").read_text()
    assert "Calibration" in report and "Triage operating point" in report
    from edge_derm.report import build_report

    md = build_report(out).markdown  # the HTML/markdown report of `edge-derm report RUN`
    assert "Calibration (temperature fitted on the validation split)" in md and "P(MM + BCC) >= " in md


def test_validation_without_a_class_is_named(tr_datasets, tmp_path):
    from edge_derm.training.data import carve_validation, load_data

    data = load_data([str(tr_datasets["plain"])])
    keep = data.train[1] != 2
    keep[np.flatnonzero(data.train[1] == 2)[0]] = True  # BCC: a single training image (one group)
    data.train = ([p for p, k in zip(data.train[0], keep) if k], data.train[1][keep])
    data.train_groups = [g for g, k in zip(data.train_groups, keep) if k]
    warnings = carve_validation(data, 0.34, seed=0)
    assert any("BCC" in w and "no validation image" in w for w in warnings)


def test_paper_recipe_keeps_the_last_epoch_and_skips_calibration_without_val(tr_datasets, tmp_path):
    from edge_derm.training.trainer import train

    cfg = TrainConfig(data=[str(tr_datasets["plain"])], recipe="paper", blocks=1, epochs_per_block=1,
                      **{k: v for k, v in FAST.items() if k != "bn_recalibration"})
    out = tmp_path / "paper run"
    metrics = train(cfg, out)["metrics"]
    rc = json.loads((out / "config.json").read_text())
    assert rc["selected"]["by"] == "last epoch" and rc["validation"]["source"] is None
    assert not (out / "calibration.json").exists() and "calibration" not in metrics


# -- the runtime and predict apply the stored calibration ----------------------------------------

def _with_calibration(src, dst, block):
    from edge_derm.converters.metadata import embed_metadata
    from edge_derm.runtime import read_metadata

    meta = read_metadata(src)
    meta["output_calibration"] = block
    dst.write_bytes(embed_metadata(src.read_bytes(), meta))
    return dst


def test_runtime_and_predict_apply_temperature_and_threshold(cv_converted, cv_dataset, tmp_path, capsys):
    from edge_derm.cli import main
    from edge_derm.data.manifest import Manifest
    from edge_derm.runtime import TFLiteModel

    block = {"temperature": 3.0, "log_prior": None, "threshold": 0.2, "referral_classes": ["MM", "BCC"],
             "target_sensitivity": 0.9}
    model_path = _with_calibration(cv_converted / "model.fp32.tflite", tmp_path / "model.tflite", block)
    m = TFLiteModel(model_path)
    paths, _ = Manifest.load(cv_dataset).arrays("test")
    raw, _ = m.predict_files(paths[:4])
    calibrated = m.calibrate(raw)
    assert np.allclose(calibrated, cal.apply(raw, 3.0), atol=1e-6)
    assert calibrated.max() < raw.max()  # T > 1 softens
    score, refer = m.referral(calibrated)
    assert np.allclose(score, calibrated[:, [0, 2]].sum(1)) and np.array_equal(refer, score >= 0.2)

    assert main(["predict", str(model_path), *paths[:4], "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["calibrated"] is True and doc["temperature"] == 3.0 and doc["referral_threshold"] == 0.2
    top = [r["top"][0]["probability"] for r in doc["results"]]
    assert np.allclose(top, calibrated.max(1), atol=1e-5)
    assert [r["referral"]["refer"] for r in doc["results"]] == refer.tolist()
    assert main(["predict", str(model_path), *paths[:1], "--json", "--raw"]) == 0
    raw_doc = json.loads(capsys.readouterr().out)
    assert raw_doc["calibrated"] is False and "referral" not in raw_doc["results"][0]
    assert raw_doc["results"][0]["top"][0]["probability"] == pytest.approx(float(raw[0].max()), abs=1e-5)


def test_runtime_refuses_a_non_finite_temperature(cv_converted, tmp_path, capsys):
    from edge_derm.cli import main

    bad = _with_calibration(cv_converted / "model.fp32.tflite", tmp_path / "bad.tflite",
                            {"temperature": float("inf"), "threshold": None, "referral_classes": None})
    assert main(["predict", str(bad), str(bad)]) == 1
    err = capsys.readouterr().err
    assert "calibration temperature must be a finite positive number" in err and len(err.strip().splitlines()) == 1


def test_resume_with_best_epoch_selection_gives_the_same_model(tr_datasets, tmp_path):
    import tf_keras as keras

    from edge_derm.training.trainer import train

    cfg = TrainConfig(data=[str(tr_datasets["plain"])], blocks=2, epochs_per_block=2, val_fraction=0.34, **FAST)
    train(cfg, tmp_path / "full", evaluate=False)

    def interrupt(step, model):
        if step == 1:
            raise KeyboardInterrupt

    out = tmp_path / "resumed"
    with pytest.raises(KeyboardInterrupt):
        train(cfg, out, evaluate=False, on_step_end=interrupt)
    train(cfg, out, resume=True, evaluate=False)
    full_state = json.loads((tmp_path / "full" / "checkpoints" / "state.json").read_text())
    assert json.loads((out / "checkpoints" / "state.json").read_text())["best"] == full_state["best"]
    a = keras.models.load_model(tmp_path / "full" / "model.keras")
    b = keras.models.load_model(out / "model.keras")
    for wa, wb in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_allclose(wa, wb, rtol=1e-6, atol=1e-7)


def test_prior_strength_is_fitted_on_validation_macro_f1():
    """Balanced-batch probabilities over-predict a rare class; the fitted shift strength removes most of it."""
    rng = np.random.default_rng(3)
    y = (rng.random(400) < 0.15).astype(int)  # class 1 is rare
    # a model whose scores favour class 1 too much (as if trained with balanced priors)
    p1 = np.clip(np.where(y == 1, rng.normal(0.75, 0.15, 400), rng.normal(0.45, 0.15, 400)), 0.01, 0.99)
    probs = np.stack([1 - p1, p1], 1)
    shift = cal.log_prior_shift([85, 15])
    strength = cal.fit_prior_strength(probs, y, shift)
    from sklearn.metrics import f1_score

    def f1(s):  # as shipped: with the temperature fitted for that strength
        s_shift = s * np.asarray(shift)
        return f1_score(y, cal.apply(probs, cal.fit_temperature(probs, y, s_shift), s_shift).argmax(1),
                        average="macro")

    assert 0.0 < strength <= 1.0 and f1(strength) > f1(0.0)
    assert all(f1(strength) >= f1(s) for s in np.linspace(0, 1, 11))
    block = cal.fit(probs, y, ["Nev", "MM"], {"MM": "malignant", "Nev": "benign"}, target=0.9,
                    train_counts=[85, 15], prior_strength="fit")
    assert block["prior_strength"] == strength and block["prevalence"] == "fit"
    assert block["log_prior"] == pytest.approx([strength * v for v in shift])


def test_experiment_passes_recipe_weights_unfreeze_and_rates(tmp_path, monkeypatch, capsys):
    from edge_derm.cli import main
    from edge_derm.training import experiment

    seen = {}

    def fake(plans, out, *, params, backbones, overrides, resume, force):
        seen.update(plans=plans, overrides=overrides)
        return []

    monkeypatch.setattr(experiment, "run_experiment", fake)
    monkeypatch.setattr(experiment, "comparison_markdown", lambda rows: "table")
    assert main(["-q", "experiment", "a", "o-blockwise", "--set", f"target={tmp_path}", "--out", str(tmp_path / "x"),
                 "--recipe", "paper", "--weights", "none", "--unfreeze", "full", "--lr-head", "2e-3",
                 "--lr-backbone", "2e-4"]) == 0
    assert seen["plans"] == ["a", "o-blockwise"]
    assert seen["overrides"] == {"recipe": "paper", "weights": "none", "unfreeze": "full", "lr_head": 2e-3,
                                 "lr_backbone": 2e-4}
