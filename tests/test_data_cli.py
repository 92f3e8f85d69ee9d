"""The ``edge-derm data`` commands, in process: tables on success, one-line errors and exit 1 on bad input."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import pytest

from data_fakes import fake_derm7pt, fake_folder, fake_ham10000, write_csv, write_image
from edge_derm.cli import main


@pytest.fixture
def tmp(tmp_path: Path) -> Path:
    d = tmp_path / "cli data"
    d.mkdir()
    return d


def _one_line_error(capsys, *needles: str) -> str:
    err = capsys.readouterr().err.strip()
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for n in needles:
        assert n in lines[0], (n, lines[0])
    return lines[0]


def test_build_then_inspect(tmp, capsys):
    fake_ham10000(tmp / "raw ham")
    out = tmp / "ds"
    assert main(["-q", "data", "build", "ham10000", str(tmp / "raw ham"), "--out", str(out), "--seed", "3",
                 "--val-fraction", "0.2", "--test-fraction", "0.25"]) == 0
    text = capsys.readouterr().out
    assert "Nev" in text and "val" in text and "premalignant" in text
    info = json.loads((out / "dataset.json").read_text())
    assert info["seed"] == 3 and info["val_fraction"] == 0.2 and info["test_fraction"] == 0.25
    assert main(["-q", "data", "inspect", str(out)]) == 0
    text = capsys.readouterr().out
    assert "SebKer" in text and "image sizes (38 read, 0 unreadable)" in text and "16x12" in text


def test_build_derm7pt_options_and_drop_report(tmp, capsys):
    fake_derm7pt(tmp / "edra")
    out = tmp / "ds"
    assert main(["-q", "data", "build", "derm7pt", str(tmp / "edra"), "--out", str(out), "--modality", "derm",
                 "--official-split"]) == 0
    assert "dropped (not in the taxonomy): melanosis (3), miscellaneous (3)" in capsys.readouterr().out
    assert main(["-q", "data", "inspect", str(out), "--no-sizes"]) == 0
    text = capsys.readouterr().out
    assert "melanosis" in text and "image sizes" not in text


def test_class_with_one_group_is_warned(tmp, capsys, caplog):
    fake_folder(tmp / "raw", {"Nev": 6, "MM": 1})
    assert main(["-q", "data", "build", "folder", str(tmp / "raw"), "--out", str(tmp / "ds")]) == 0
    capsys.readouterr()
    assert "class 'MM' has only 1 group" in caplog.text  # logged: the CLI shows it on stderr
    assert json.loads((tmp / "ds" / "dataset.json").read_text())["counts"]["MM"] == {"train": 1, "val": 0, "test": 0}
    assert main(["-q", "data", "inspect", str(tmp / "ds"), "--no-sizes"]) == 0
    assert "warning: class 'MM' has only 1 group" in capsys.readouterr().out


def test_build_native_taxonomy(tmp, capsys):
    fake_folder(tmp / "raw", {"eczema": 3, "psoriasis": 3})
    assert main(["-q", "data", "build", "folder", str(tmp / "raw"), "--out", str(tmp / "ds"),
                 "--taxonomy", "native"]) == 0
    assert json.loads((tmp / "ds" / "dataset.json").read_text())["classes"] == ["eczema", "psoriasis"]


@pytest.mark.parametrize("args, needles", [
    (["data", "build", "folder", "{tmp}/nope", "--out", "{tmp}/ds"], ["dataset root not found"]),
    (["data", "build", "ham10000", "{tmp}", "--out", "{tmp}/ds"], ["HAM10000_metadata.csv not found"]),
    (["data", "build", "folder", "{tmp}", "--out", "{tmp}/ds", "--taxonomy", "icd"], ["unknown taxonomy 'icd'",
                                                                                       "dermai13, dermofit10, edra5, native"]),
    (["data", "build", "derm7pt", "{tmp}", "--out", "{tmp}/ds"], ["--modality clinic or derm"]),
    (["data", "build", "ham10000", "{tmp}", "--out", "{tmp}/ds", "--modality", "derm"], ["does not take --modality"]),
    (["data", "build", "folder", "{tmp}", "--out", "{tmp}/ds", "--test-fraction", "0.6", "--val-fraction", "0.5"],
     ["leave images for training"]),
    (["data", "inspect", "{tmp}"], ["not a dataset folder"]),
    (["data", "merge", "{tmp}", "--out", "{tmp}/m"], ["at least two"]),
])
def test_bad_input_is_one_line_and_exit_1(tmp, capsys, args, needles):
    assert main([a.replace("{tmp}", str(tmp)) for a in args]) == 1
    _one_line_error(capsys, *needles)
    assert not (tmp / "ds").exists() and not (tmp / "m").exists()


def test_missing_csv_columns_named(tmp, capsys):
    write_csv(tmp / "x.csv", ["file", "label"], [["a.png", "MM"]])
    assert main(["data", "build", "csv", str(tmp / "x.csv"), "--out", str(tmp / "ds")]) == 1
    _one_line_error(capsys, "missing column(s) path")


def test_unknown_source_is_a_usage_error(tmp, capsys):
    assert main(["data", "build", "edra", str(tmp), "--out", str(tmp / "ds")]) == 1
    err = capsys.readouterr().err
    assert "derm7pt" in err and "pad-ufes-20" in err and "Traceback" not in err


def test_strict_skipped_and_existing_output(tmp, capsys):
    fake_folder(tmp / "raw", {"Nev": 3, "MM": 3})
    (tmp / "raw" / "MM" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    out = tmp / "ds"
    assert main(["-q", "data", "build", "folder", str(tmp / "raw"), "--out", str(out), "--strict"]) == 1
    _one_line_error(capsys, "broken.png", "--strict")
    assert not out.exists()
    assert main(["-q", "data", "build", "folder", str(tmp / "raw"), "--out", str(out)]) == 0
    assert "skipped 1 unreadable image(s): see skipped.csv" in capsys.readouterr().out
    assert main(["-q", "data", "build", "folder", str(tmp / "raw"), "--out", str(out)]) == 1
    _one_line_error(capsys, "already exists", "--force")
    assert main(["-q", "data", "build", "folder", str(tmp / "raw"), "--out", str(out), "--force", "--seed", "9"]) == 0
    assert json.loads((out / "dataset.json").read_text())["seed"] == 9


def test_pixel_limit_option(tmp, capsys):
    fake_folder(tmp / "raw", {"Nev": 2, "MM": 2})
    write_image(tmp / "raw" / "MM" / "big.png", size=(64, 64))
    assert main(["-q", "data", "build", "folder", str(tmp / "raw"), "--out", str(tmp / "ds"), "--max-pixels", "1000",
                 "--strict"]) == 1
    _one_line_error(capsys, "big.png", "pixel limit")


def test_merge_and_duplicates(tmp, capsys):
    fake_folder(tmp / "a", {"Nev": 3, "MM": 3})
    fake_folder(tmp / "b", {"SebKer": 3, "BCC": 3})
    for name in ("a", "b"):
        assert main(["-q", "data", "build", "folder", str(tmp / name), "--out", str(tmp / f"{name} ds")]) == 0
    capsys.readouterr()
    assert main(["-q", "data", "merge", str(tmp / "a ds"), str(tmp / "b ds"), "--out", str(tmp / "m")]) == 0
    assert "merged 2 datasets" in capsys.readouterr().out
    assert json.loads((tmp / "m" / "dataset.json").read_text())["classes"] == ["SebKer", "Nev", "BCC", "MM"]
    assert main(["-q", "data", "merge", str(tmp / "a ds"), str(tmp / "a ds"), "--out", str(tmp / "m2")]) == 1
    _one_line_error(capsys, "occur in more than one dataset", "--drop-duplicates")
    assert not (tmp / "m2").exists()


def test_split_command(tmp, capsys):
    fake_folder(tmp / "raw", {"Nev": 10, "MM": 10})
    assert main(["-q", "data", "build", "folder", str(tmp / "raw"), "--out", str(tmp / "ds")]) == 0
    assert main(["-q", "data", "split", str(tmp / "ds"), "--out", str(tmp / "re"), "--seed", "2",
                 "--val-fraction", "0.2"]) == 0
    assert "re-split, seed 2" in capsys.readouterr().out
    info = json.loads((tmp / "re" / "dataset.json").read_text())
    assert info["seed"] == 2 and info["counts"]["MM"]["val"] == 2
    assert main(["-q", "data", "split", str(tmp / "ds"), "--out", str(tmp / "re")]) == 1
    _one_line_error(capsys, "already exists")


@pytest.fixture
def fake_synth(monkeypatch):
    """Replace edge_derm.data.synth with a recorder, so the wiring is tested independently of the generator."""
    calls = []
    mod = types.ModuleType("edge_derm.data.synth")

    def generate_dataset(out, **kwargs):
        calls.append((Path(out), kwargs))
        return {"kind": "synthetic", "counts": {"SebKer": 2, "MM": 3}, "total": 5, "size": kwargs["size"]}

    mod.generate_dataset = generate_dataset
    monkeypatch.setitem(sys.modules, "edge_derm.data.synth", mod)
    return calls


def test_synth_wiring(tmp, capsys, fake_synth):
    assert main(["-q", "data", "synth", "--out", str(tmp / "s"), "--per-class", "7", "--size", "32", "--seed", "4",
                 "--force"]) == 0
    out, kwargs = fake_synth[-1]
    assert out == tmp / "s"
    assert kwargs == {"per_class": 7, "paper_proportions": False, "size": 32, "seed": 4, "force": True, "workers": 1}
    text = capsys.readouterr().out
    assert "MM" in text and "total" in text and "5" in text
    assert main(["-q", "data", "synth", "--out", str(tmp / "s"), "--paper-proportions"]) == 0
    assert "per_class" not in fake_synth[-1][1] and fake_synth[-1][1]["paper_proportions"] is True


def test_synth_bad_size_is_rejected(tmp, capsys, fake_synth):
    assert main(["data", "synth", "--out", str(tmp / "s"), "--size", "8"]) != 0
    assert fake_synth == []


def test_synth_then_build_real_generator(tmp, capsys):
    pytest.importorskip("edge_derm.data.synth")
    assert main(["-q", "data", "synth", "--out", str(tmp / "s"), "--per-class", "3", "--size", "24"]) == 0
    assert main(["-q", "data", "build", "folder", str(tmp / "s"), "--out", str(tmp / "ds")]) == 0
    info = json.loads((tmp / "ds" / "dataset.json").read_text())
    assert len(info["classes"]) == 13 and info["n_images"] == 39
