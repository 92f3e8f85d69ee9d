"""Quantisation fidelity (issue 12): full-set agreement, per-mode bars with partial success,
verification of the bytes on disk with their SHA-256, and the int8 recipe search."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from edge_derm import cli
from edge_derm.converters.presets import PRESETS
from edge_derm.errors import ConfigError, ModelError
from edge_derm.runtime import TFLiteModel


def test_fidelity_counts_flips_per_class():
    from edge_derm.converters.verify import fidelity, fidelity_failures

    classes = ["MM", "Nev", "BCC"]
    ref = np.array([[0.8, 0.1, 0.1]] * 4 + [[0.1, 0.8, 0.1]] * 5 + [[0.1, 0.1, 0.8]])
    new = ref.copy()
    new[0] = [0.3, 0.6, 0.1]  # one melanoma becomes a nevus
    new[4] = [0.1, 0.2, 0.7]  # one nevus becomes a BCC
    fid = fidelity(ref, new, classes, watch=["MM", "BCC", "SCC"])
    assert fid["n"] == 10 and fid["flips"] == 2 and fid["top1_agreement"] == pytest.approx(0.8)
    assert fid["flip_matrix"]["counts"] == [[3, 1, 0], [0, 4, 1], [0, 0, 1]]
    assert fid["watch"] == {"MM": {"n": 4, "flipped": 1, "flip_rate": 0.25, "gained": 0},
                            "BCC": {"n": 1, "flipped": 0, "flip_rate": 0.0, "gained": 1}}
    assert fid["max_abs_diff"] == pytest.approx(0.6)
    assert fid["kl_mean"] > 0 and fid["kl_max"] >= fid["kl_mean"]
    failures = fidelity_failures(fid, PRESETS["int8"].tolerance)
    assert any("top-1 agreement 0.8000 < 0.97" in f for f in failures)
    assert any("1 of 4 MM images changed class" in f for f in failures)
    assert fidelity_failures(fidelity(ref, ref, classes, ["MM"]), PRESETS["fp32"].tolerance) == []
    # --min-agreement only ever raises the bar
    same = fidelity(ref, ref, classes)
    assert fidelity_failures(same, PRESETS["int8"].tolerance, min_agreement=0.5) == []


def test_thresholds_are_documented_per_mode():
    bars = {m: p.tolerance.min_top1_agreement for m, p in PRESETS.items()}
    assert bars == {"fp32": 0.999, "fp16": 0.995, "dynamic": 0.97, "int8": 0.97, "qat": 0.97}
    assert all(p.tolerance.max_watch_flip_rate <= 0.03 for p in PRESETS.values())


def test_agreement_is_measured_on_every_heldout_image(cv_converted, cv_run, cv_dataset):
    """model.json's agreement equals a direct count over all validation + test images."""
    import tf_keras as keras

    from edge_derm.data.images import load_for_model
    from edge_derm.data.manifest import Manifest

    doc = json.loads((cv_converted / "model.json").read_text())
    manifest = Manifest.load(cv_dataset)
    held = [r for r in manifest.records if r.split in ("val", "test")]
    images = np.stack([load_for_model(manifest.resolve(r.path), 32, "nearest") for r in held])
    keras_top1 = keras.models.load_model(cv_run / "model.keras").predict(images, verbose=0).argmax(1)
    for mode in ("fp16", "int8"):
        v = doc["variants"][mode]["verification"]
        top1 = TFLiteModel(cv_converted / f"model.{mode}.tflite").predict(images).argmax(1)
        assert v["n"] == len(held) == doc["verification_data"]["n"]
        assert v["top1_agreement"] == pytest.approx((top1 == keras_top1).mean(), abs=1e-6)
        assert sum(map(sum, v["flip_matrix"]["counts"])) == len(held)
        assert {"kl_mean", "mean_abs_diff", "max_abs_diff", "watch"} <= set(v)


def test_sha256_matches_and_a_flipped_byte_is_refused(cv_converted, tmp_path, capsys):
    import shutil

    doc = json.loads((cv_converted / "model.json").read_text())
    for mode, meta in doc["variants"].items():
        data = (cv_converted / meta["file"]).read_bytes()
        assert meta["sha256"] == hashlib.sha256(data).hexdigest() == meta["verification"]["sha256"]
    copy = tmp_path / "copy of convert"
    shutil.copytree(cv_converted, copy)
    assert TFLiteModel(copy / "model.int8.tflite").sha256 == doc["variants"]["int8"]["sha256"]
    path = copy / "model.fp32.tflite"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01  # one bit in the middle of the weights: still a loadable model
    path.write_bytes(bytes(data))
    with pytest.raises(ModelError, match=r"SHA-256 \S+ differs from .*model.json recorded"):
        TFLiteModel(path)
    img = tmp_path / "lesion.png"
    from PIL import Image

    Image.fromarray(np.full((40, 40, 3), 120, np.uint8)).save(img)
    rc = cli.main(["--quiet", "predict", str(path), str(img)])
    err = capsys.readouterr().err
    assert rc == 1 and err.count("\n") == 1 and err.startswith("error: ") and "SHA-256" in err
    # Without model.json beside it, the (same) file loads: the hash is a convert folder's promise.
    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copy(path, alone / "model.fp32.tflite")
    assert TFLiteModel(alone / "model.fp32.tflite").num_classes == 3


def test_verification_parses_the_written_file_once(cv_converted, monkeypatch):
    from edge_derm.converters.presets import get_preset
    from edge_derm.converters.verify import verify_file
    from edge_derm.tflite_format import reader

    calls = []
    real = reader._parse
    monkeypatch.setattr(reader, "_parse", lambda buf: calls.append(len(buf)) or real(buf))
    path = cv_converted / "model.fp32.tflite"
    imgs = np.random.default_rng(0).uniform(0, 255, (5, 32, 32, 3)).astype(np.float32)
    ref = np.full((5, 3), 1 / 3, np.float32)
    result = verify_file(path, get_preset("fp32"), "float32", ref, imgs, ["MM", "Nev", "BCC"])
    assert calls == [path.stat().st_size]
    assert result["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()


def test_failing_mode_is_left_out_and_others_written(collapse_run, tmp_path, capsys):
    """int8 collapses on this model: fp32 and fp16 are still written, int8 is not, exit code 1."""
    out = tmp_path / "out dir"
    rc = cli.main(["--quiet", "convert", str(collapse_run), "--quantize", "fp32", "--quantize", "int8",
                   "--quantize", "fp16", "--out", str(out), "--calibration-size", "6"])
    captured = capsys.readouterr()
    assert rc == 1, captured.err
    assert sorted(p.name for p in out.glob("*.tflite")) == ["model.fp16.tflite", "model.fp32.tflite"]
    doc = json.loads((out / "model.json").read_text())
    assert set(doc["variants"]) == {"fp32", "fp16"} and doc["failed"] == ["int8"]
    status = {r["mode"]: r["status"] for r in doc["summary"]}
    assert status == {"fp32": "passed", "int8": "failed (left out)", "fp16": "passed"}
    assert "failed (left out)" in captured.out and "top-1 agreement" in captured.err
    assert "left out: int8" in captured.out
    # --keep-failed keeps it, marked failed, and still exits 1
    kept = tmp_path / "kept"
    rc = cli.main(["--quiet", "convert", str(collapse_run), "--quantize", "fp32", "--quantize", "int8",
                   "--out", str(kept), "--calibration-size", "6", "--keep-failed"])
    assert rc == 1
    doc = json.loads((kept / "model.json").read_text())
    assert (kept / "model.int8.tflite").is_file()
    assert doc["variants"]["int8"]["verification"]["passed"] is False
    assert {r["mode"]: r["status"] for r in doc["summary"]}["int8"] == "failed (kept)"


def test_nothing_written_when_every_mode_fails(collapse_run, tmp_path, capsys):
    out = tmp_path / "none"
    rc = cli.main(["--quiet", "convert", str(collapse_run), "--quantize", "int8", "--out", str(out),
                   "--calibration-size", "6"])
    captured = capsys.readouterr()
    assert rc == 1 and not out.exists() and not list(tmp_path.glob(".none*"))
    assert "nothing written" in captured.err and "int8" in captured.out


def test_search_recovers_a_collapsed_int8(collapse_run, tmp_path, capsys):
    """Per-tensor and per-channel int8 (any calibration size) collapse; the search keeps the one
    convolution that matters in float and reaches the bar, and model.json says which recipe."""
    out = tmp_path / "searched"
    rc = cli.main(["--quiet", "convert", str(collapse_run), "--quantize", "int8", "--min-agreement", "0.99",
                   "--out", str(out), "--calibration-size", "6"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    meta = json.loads((out / "model.json").read_text())["variants"]["int8"]
    search = meta["search"]
    names = [t["recipe"]["name"] for t in search["tried"]]
    assert names[:4] == ["per-tensor, 6 calibration images", "per-channel, 6 calibration images",
                         "per-channel, 24 calibration images", "per-channel, every training image (30)"]
    assert all(not t["passed"] and t["top1_agreement"] < 0.97 for t in search["tried"][:4])
    from edge_derm.converters.search import aeq_available

    if aeq_available():  # the second backend quantises the same weights to int8: it collapses too
        aeq = search["tried"][4]
        assert aeq["recipe"]["backend"] == "ai-edge-quantizer" and aeq["top1_agreement"] < 0.97
    assert search["met"] and search["tried"][-1]["passed"]
    # a collapse (best full-integer recipe > COLLAPSE_GAP below the bar) tries 16x8 before the greedy float layers;
    # here the collapse comes from one layer's int8 weights, which int16 activations do not fix
    first_selective = next(i for i, n in enumerate(names) if n.startswith("selective"))
    early = [i for i, n in enumerate(names) if n.startswith("16x8")]
    assert early and early[0] < first_selective and not search["tried"][early[0]]["passed"]
    assert meta["recipe"] == search["recipe"] and meta["recipe"]["name"].startswith("selective, 1 float layer")
    assert any("logits_conv" in layer for layer in meta["recipe"]["float_layers"])
    v = meta["verification"]
    assert v["passed"] and v["top1_agreement"] >= 0.99 and v["tolerance"]["min_top1_agreement"] == 0.99
    assert "met by selective" in captured.out


def test_search_stops_at_the_cheapest_recipe_that_meets_the_bar(cv_run, tmp_path):
    """A bar of 1.0 on a model whose int8 is already exact is met by the cheapest recipe."""
    from edge_derm.converters.convert import ConvertConfig, convert_run

    doc = convert_run(ConvertConfig(run=cv_run, modes=["int8"], out=tmp_path / "o", min_agreement=1.0,
                                    calibration_size=9))
    meta = doc["variants"]["int8"]
    assert meta["search"]["met"] and len(meta["search"]["tried"]) == 1
    assert meta["recipe"]["per_channel"] is False  # per-tensor is the cheapest and it sufficed
    assert meta["verification"]["top1_agreement"] == 1.0


@pytest.mark.parametrize("value", ["0", "1.5", "-0.2"])
def test_min_agreement_out_of_range_is_one_line(cv_run, tmp_path, capsys, value):
    rc = cli.main(["--quiet", "convert", str(cv_run), "--quantize", "int8", "--min-agreement", value,
                   "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 1 and err.count("\n") == 1 and "error: --min-agreement" in err and "(0, 1]" in err
    assert not (tmp_path / "o").exists()


def test_config_rules_for_the_new_options(tmp_path):
    from edge_derm.converters.convert import ConvertConfig

    with pytest.raises(ConfigError, match="add --quantize int8"):
        ConvertConfig(run=tmp_path, modes=["fp16"], min_agreement=0.99)
    with pytest.raises(ConfigError, match="drop --float-layers"):
        ConvertConfig(run=tmp_path, modes=["int8"], min_agreement=0.99, float_layers="auto")
    assert ConvertConfig(run=tmp_path, modes=["int8"], min_agreement=1.0).min_agreement == 1.0


def test_verify_data_other_taxonomy_is_refused(cv_run, tmp_path, capsys):
    from conftest import make_tr_dataset

    other = make_tr_dataset(tmp_path / "other data", ["AK", "SebKer"], n_train=1, n_test=1)
    rc = cli.main(["--quiet", "convert", str(cv_run), "--quantize", "fp32", "--verify-data", str(other),
                   "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 1 and err.count("\n") == 1 and "classes the model lacks (AK, SebKer)" in err
    dermai = make_tr_dataset(tmp_path / "dermai data", ["MM", "Nev"], n_train=1, n_test=1, taxonomy="dermai13")
    rc = cli.main(["--quiet", "convert", str(cv_run), "--quantize", "fp32", "--verify-data", str(dermai),
                   "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 1 and "taxonomy 'dermai13'" in err and "--taxonomy native" in err
    assert not (tmp_path / "o").exists()


def test_verify_data_uses_every_image(cv_run, tmp_path):
    from conftest import make_tr_dataset

    from edge_derm.converters.convert import ConvertConfig, convert_run

    data = make_tr_dataset(tmp_path / "extra data", ["MM", "BCC"], n_train=3, n_val=1, n_test=2, size=40)
    doc = convert_run(ConvertConfig(run=cv_run, modes=["fp32"], out=tmp_path / "o", verify_data=data))
    assert doc["verification_data"]["n"] == 12 and doc["verification_data"]["split"] == "all"
    assert doc["variants"]["fp32"]["verification"]["n"] == 12


def test_benchmark_flags_quantised_variants_slower_than_fp32():
    from edge_derm.benchmarks.harness import flag_slower_than_fp32

    def row(name, q, ms, threads=1, folder="/c"):
        return {"model": name, "path": f"{folder}/model.{q}.tflite", "quantization": q, "device": "cpu",
                "threads": threads, "status": "ok", "latency_median_ms": ms}

    rows = [row("fp32", "fp32", 0.85), row("int8", "int8", 1.35), row("fp16", "fp16", 0.80),
            row("fp32", "fp32", 0.50, threads=2), row("int8", "int8", 0.40, threads=2),
            row("other int8", "int8", 9.0, folder="/elsewhere")]
    messages = flag_slower_than_fp32(rows)
    assert messages == ["int8 (cpu, 1 threads) is slower than fp32: 1.350 ms vs 0.850 ms median"]
    assert rows[1]["slower_than_fp32"] is True and rows[1]["speedup_vs_fp32"] == pytest.approx(0.85 / 1.35, abs=1e-4)
    assert rows[2]["slower_than_fp32"] is False and rows[4]["slower_than_fp32"] is False
    assert "slower_than_fp32" not in rows[5]  # no fp32 beside it: nothing to compare


def test_ai_edge_quantizer_backend(cv_converted, cv_dataset):
    """Google's ai-edge-quantizer quantises the converted float model: full integer, faithful on a tiny model."""
    pytest.importorskip("ai_edge_quantizer", reason="the 'quantizer' extra (ai-edge-quantizer) is not installed")
    from edge_derm.converters.calibration import sample_images
    from edge_derm.converters.search import convert_aeq
    from edge_derm.converters.verify import fidelity
    from edge_derm.errors import ConversionError
    from edge_derm.runtime import inspect_tflite

    fp32 = (cv_converted / "model.fp32.tflite").read_bytes()
    cal = sample_images(cv_dataset, ["MM", "Nev", "BCC"], 32, "nearest", n=9)
    test = sample_images(cv_dataset, ["MM", "Nev", "BCC"], 32, "nearest", n=None, splits=("test",))
    data = convert_aeq(fp32, cal.images, "static_wi8_ai8")
    info = inspect_tflite(data)
    assert info.integer_op_share() == 1.0 and info.input_tensors[0].dtype == "int8"
    ref = TFLiteModel(cv_converted / "model.fp32.tflite").predict(test.images)
    got = TFLiteModel(cv_converted / "aeq.tflite", content=data, check_hash=False).predict(test.images)
    assert fidelity(ref, got, ["MM", "Nev", "BCC"])["top1_agreement"] >= 0.97
    with pytest.raises(ConversionError, match="ai-edge-quantizer recipe no_such_recipe failed"):
        convert_aeq(fp32, cal.images, "no_such_recipe")


def test_measure_fidelity_goals():
    import measure_fidelity as mf

    def row(method, agreement, mm, bcc, df1):
        return {"method": method, "top1_agreement": agreement, "delta_macro_f1_pp": df1,
                "watch": {"MM": {"flip_rate": mm}, "BCC": {"flip_rate": bcc}}}

    rows = [row("fp32", 1.0, 0, 0, 0), row("int8 per-channel (default, uint8 I/O)", 0.905, 0.146, 0.098, -0.2),
            row("int8 search >= 0.99: selective", 0.99, 0.01, 0.011, -1.0)]
    sweep = [{"size": 128, "variant": "int8 (uint8 I/O)", "vs_fp32": 1.4},
             {"size": 224, "variant": "int8 (uint8 I/O)", "vs_fp32": 0.6}]
    g = mf.goals(rows, sweep)
    assert g["search_agreement_ge_99"] is True and g["default_agreement_ge_99"] is False
    assert g["search_mm_bcc_changed_le_1pct"] is False  # BCC 1.1 % > 1 %
    assert g["search_macro_f1_within_1pp"] is True  # exactly 1 pp is within
    assert g["int8_le_0.6x_fp32_at_224"] is True and g["int8_never_slower_than_fp32"] is False
    assert "| fp32 | 100.00 % (" in mf.table([{**rows[0], "flips": 0, "mean_abs_diff": 0.0, "macro_f1_test": 0.4,
                                                "size_kib": 1.0, "latency_ms": 1.0, "latency_vs_fp32": 1.0,
                                                "watch": {"MM": {"flipped": 0, "n": 3, "flip_rate": 0.0},
                                                          "BCC": {"flipped": 0, "n": 2, "flip_rate": 0.0}}}])


def test_search_that_misses_the_bar_keeps_the_best_only_when_asked(collapse_run, tmp_path, monkeypatch):
    """Without float layers nothing recovers this model (16x8 and ai-edge-quantizer keep int8 weights):
    the bar is reported as missed, the best recipe is recorded, and the file is written only with keep_failed."""
    from edge_derm.converters import search
    from edge_derm.converters.convert import ConvertConfig, convert_run

    monkeypatch.setattr(search, "MAX_FLOAT_LAYERS", 0)
    doc = convert_run(ConvertConfig(run=collapse_run, modes=["int8"], out=tmp_path / "o", min_agreement=0.99,
                                    calibration_size=6, keep_failed=True))
    meta = doc["variants"]["int8"]
    tried = meta["search"]["tried"]
    assert not meta["search"]["met"] and doc["failed"] == ["int8"]
    assert not any(t["recipe"]["float_layers"] for t in tried)
    assert any(t["recipe"]["activations"] == "int16" for t in tried)  # 16x8 was tried
    best = max(t["top1_agreement"] for t in tried if "top1_agreement" in t)
    assert meta["verification"]["top1_agreement"] == pytest.approx(best, abs=1e-6)
    assert meta["verification"]["passed"] is False and (tmp_path / "o" / "model.int8.tflite").is_file()


def test_measure_fidelity_sensitivity_and_tables(cv_run, cv_dataset):
    """The float-sensitivity diagnostic perturbs one kernel at a time (every kernel has a row, most
    sensitive first, agreement a fraction of the images) and its table and the width sweep format."""
    import measure_fidelity as mf
    from edge_derm.models import load_model

    sens = mf.sensitivity(cv_run, cv_dataset, None, n=12, top=2)
    kernels = [layer.name for layer in load_model(cv_run / "model.keras").layers
               if type(layer).__name__ in ("Conv2D", "DepthwiseConv2D", "Dense")]
    assert sorted(r["layer"] for r in sens["per_layer"]) == sorted(kernels)
    agreements = [r["agreement"] for r in sens["per_layer"]]
    assert agreements == sorted(agreements) and all(a * sens["n_images"] == round(a * sens["n_images"]) for a in agreements)
    assert "feature_change" in sens["per_layer"][0] or sens["per_layer"][0]["layer"].startswith("head_")
    assert "feature_change_imagenet" not in sens["per_layer"][0]  # no ImageNet weights given
    assert f"| {sens['per_layer'][0]['layer']} | " in mf.sensitivity_table(sens, top=2)
    sweep = [{"size": 128, "alpha": a, "variant": v, "latency_ms": 1.0, "vs_fp32": 1.0, "size_kib": kib, "edge_ops": []}
             for a, v, kib in ((0.5, "fp32", 400.0), (0.5, "int8 (uint8 I/O)", 100.0))]
    assert "| 0.5 | 128 | int8 (uint8 I/O) | 1.000 | 1.00 | 100 | 0.25 | 0 |" in mf.sweep_table(sweep)
