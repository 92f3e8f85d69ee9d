"""CLI: edge-derm train / evaluate / experiment / models list."""

from __future__ import annotations

import json
import subprocess
import sys

from edge_derm.cli import main

FAST = ["--backbone", "tiny", "--image-size", "24", "--weights", "none", "-e", "1", "--steps-per-epoch", "1",
        "--blocks", "1", "--lr-head", "0.01"]

PLAN = """
name = "one"
params = ["target"]
[train]
weights = "none"
[[stages]]
name = "target"
data = ["{target}"]
"""


def test_help_does_not_import_tensorflow():
    code = ("import sys; from edge_derm.cli import main; rc = main(['train', '--help']); "
            "rc = main(['models', '--help']) or rc; print('TF' if 'tensorflow' in sys.modules else 'NOTF')")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "--epochs-per-block" in proc.stdout and proc.stdout.strip().endswith("NOTF")


def test_models_list(capsys):
    assert main(["-q", "models", "list", "--no-params"]) == 0
    out = capsys.readouterr().out
    for name in ("mobilenet_v2", "resnet50", "efficientnet_b3", "tiny", "300 px"):
        assert name in out


def test_train_evaluate_and_errors(tr_datasets, tmp_path, capsys):
    run = tmp_path / "cli runs" / "run one"
    data = str(tr_datasets["val"])
    assert main(["-q", "train", "--data", data, *FAST, "--out", str(run)]) == 0
    out = capsys.readouterr().out
    assert "macro F1" in out and (run / "model.keras").is_file()

    assert main(["-q", "train", "--data", data, *FAST, "--out", str(run)]) == 1
    assert "already exists" in capsys.readouterr().err
    assert main(["-q", "train", "--data", data, *FAST[:-1], "0.5", "--out", str(run), "--resume"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: --resume with a different configuration") and "lr_head: 0.01 -> 0.5" in err
    assert err.count("\n") == 1

    assert main(["-q", "evaluate", str(run), "--data", data, "--bootstrap", "10"]) == 0
    ev = run / f"eval-{tr_datasets['val'].name}-test"
    metrics = json.loads((ev / "metrics.json").read_text())
    assert metrics["n"] == 12 and metrics["bootstrap"]["n"] == 10 and (ev / "confusion.png").is_file()
    assert main(["-q", "evaluate", str(run), "--data", data, "--split", "val"]) == 0
    assert json.loads((run / f"eval-{tr_datasets['val'].name}-val" / "metrics.json").read_text())["n"] == 6
    assert main(["-q", "evaluate", str(run), "--data", data]) == 1  # exists, no --force
    capsys.readouterr()
    assert main(["-q", "evaluate", str(run), "--data", str(tr_datasets["other"])]) == 1
    assert "has none of its classes (" in capsys.readouterr().err


def test_train_bad_input(tr_datasets, tmp_path, capsys):
    data = str(tr_datasets["plain"])
    assert main(["-q", "train", "--data", data, "--backbone", "vgg", "--out", str(tmp_path / "r")]) == 1
    assert "unknown backbone 'vgg'" in capsys.readouterr().err
    assert main(["-q", "train", "--data", data, "--backbone", "mobilenet_v2", "--alpha", "0.3",
                 "--weights", "imagenet", "--out", str(tmp_path / "r")]) == 1
    assert "ImageNet weights exist for alpha 0.35" in capsys.readouterr().err
    assert main(["-q", "train", "--out", str(tmp_path / "r")]) != 0
    assert main(["-q", "train", "--plan", "a", "--out", str(tmp_path / "r")]) == 1
    assert "--set target=DIR" in capsys.readouterr().err
    assert main(["-q", "train", "--data", str(tmp_path / "nope"), *FAST, "--out", str(tmp_path / "r")]) == 1
    assert "dataset folder not found" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_plan_and_experiment(tr_datasets, tmp_path, capsys):
    plan = tmp_path / "one stage.toml"
    plan.write_text(PLAN)
    target = f"target={tr_datasets['plain']}"
    run = tmp_path / "plan run"
    assert main(["-q", "train", "--plan", str(plan), "--set", target, *FAST[:2], *FAST[2:4], *FAST[6:],
                 "--out", str(run)]) == 0
    assert "Forgetting" in capsys.readouterr().out and (run / "model.keras").is_file()
    exp = tmp_path / "experiment out"
    assert main(["-q", "experiment", str(plan), "--set", target, "--backbone", "tiny", "--image-size", "24",
                 "-e", "1", "--steps-per-epoch", "1", "--bootstrap", "10", "--out", str(exp)]) == 0
    out = capsys.readouterr().out
    assert "| one-tiny | tiny |" in out
    rows = json.loads((exp / "comparison.json").read_text())["rows"]
    assert rows[0]["params"] > 0 and 0 <= rows[0]["macro_f1"] <= 1 and len(rows[0]["macro_f1_ci"]) == 2
    assert (exp / "comparison.md").is_file() and (exp / "one-tiny" / "report.md").is_file()


def test_train_unfreeze_full(tr_datasets, tmp_path, capsys):
    data = str(tr_datasets["plain"])
    run = tmp_path / "full run"
    fast = [a for a in FAST if a not in ("--lr-head", "0.01")]
    assert main(["-q", "train", "--data", data, *fast, "--unfreeze", "full", "--out", str(run)]) == 0
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["train"]["unfreeze"] == "full" and cfg["schedule"]["kind"] == "full"
    assert len(cfg["schedule"]["steps"]) == 1 and cfg["schedule"]["steps"][0]["block"] == "all"
    assert cfg["schedule"]["lr"] == {"head": 1e-3, "backbone": 1e-3}  # the from-scratch defaults
    capsys.readouterr()
    assert main(["-q", "train", "--data", data, *fast, "--unfreeze", "layerwise", "--out", str(tmp_path / "r")]) != 0
    assert "layerwise" in capsys.readouterr().err and not (tmp_path / "r").exists()


def test_bn_recalibration_matches_training_mode_statistics(tr_datasets, tmp_path):
    """After ``bn_recalibration`` the saved model normalises with the statistics of class-balanced,
    un-augmented training batches (as the weights were trained): with one such batch, inference mode on
    exactly that batch gives training mode's output."""
    import numpy as np

    from edge_derm.data.pipeline import AugmentConfig, make_dataset
    from edge_derm.models import load_model
    from edge_derm.training import TrainConfig
    from edge_derm.training.data import load_data
    from edge_derm.training.trainer import train

    cfg = TrainConfig(data=[str(tr_datasets["plain"])], backbone="tiny", image_size=24, weights="none",
                      epochs_per_block=1, steps_per_epoch=2, unfreeze="full", batch_size=6, bn_recalibration=6,
                      val_fraction=0.0)
    train(cfg, tmp_path / "bn run", evaluate=False)
    saved = json.loads((tmp_path / "bn run" / "config.json").read_text())
    assert saved["train"]["bn_recalibration"] == 6
    data = load_data(cfg.data)
    ds = make_dataset(data.train[0], data.train[1], len(data.classes), 24, training=True, batch_size=6,
                      augment=AugmentConfig.off(), seed=cfg.seed)
    images, onehot = next(iter(ds))
    assert sorted(np.asarray(onehot).argmax(1).tolist()) == [0, 0, 1, 1, 2, 2]  # class-balanced
    model = load_model(tmp_path / "bn run" / "model.keras")
    inference = model(images, training=False).numpy()
    # atol: the moving variance is the unbiased estimate (n / (n - 1) with n = 6 images x a few pixels)
    np.testing.assert_allclose(inference, model(images, training=True).numpy(), atol=3e-3)
    # without it, the moving averages (momentum 0.9 for 2 steps) are far from the data statistics
    plain = TrainConfig(**{**cfg.to_dict(), "bn_recalibration": 0})
    train(plain, tmp_path / "plain run", evaluate=False)
    model = load_model(tmp_path / "plain run" / "model.keras")
    assert np.abs(model(images, training=False).numpy() - model(images, training=True).numpy()).max() > 1e-2