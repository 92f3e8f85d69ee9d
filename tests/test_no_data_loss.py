"""``--out`` (with or without ``--force``) never touches an input: an output folder that is, holds or
lies inside anything the command reads is refused with one line, exit 1, and every input file is
byte-identical afterwards."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest

from edge_derm.cli import main
from edge_derm.errors import ConfigError
from edge_derm.fsutil import check_not_input, staged_dir

from conftest import make_tr_dataset


def _snapshot(*roots: Path) -> dict[str, str]:
    """SHA-256 of every file under ``roots`` (or of ``roots`` themselves when files)."""
    out = {}
    for root in roots:
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        for f in files:
            out[str(f)] = hashlib.sha256(f.read_bytes()).hexdigest()
    return out


def _refused(argv: list[str], capsys, *roots: Path, words: str) -> None:
    before = _snapshot(*roots)
    assert before, "the test needs input files"
    code = main(["--quiet", *argv])
    err = capsys.readouterr().err.strip()
    assert code == 1, err
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err, err
    assert words in err and "choose an --out outside the inputs" in err, err
    assert _snapshot(*roots) == before
    leftovers = [p for r in roots for p in (r.parent.iterdir() if r.parent.is_dir() else [])
                 if ".tmp-" in p.name or ".old-" in p.name]
    assert not leftovers, leftovers


def test_check_not_input_is_holds_lies_inside_and_apart(tmp_path):
    src = tmp_path / "src"
    (src / "a").mkdir(parents=True)
    img = src / "a" / "x.png"
    img.write_bytes(b"png")
    for out, how in ((src, "is"), (tmp_path, "holds"), (src / "a" / "out", "lies inside")):
        with pytest.raises(ConfigError, match=f" {how} the input "):
            check_not_input(out, [src])
    with pytest.raises(ConfigError, match=" holds the input "):
        check_not_input(src / "a", [img])  # a file input: holding it is refused
    check_not_input(tmp_path / "elsewhere", [src, img, None])  # apart: fine
    check_not_input(src / "a" / "beside.png", [img])  # a file is not a folder: nothing lies inside it
    link = tmp_path / "link"
    link.symlink_to(src)
    with pytest.raises(ConfigError, match=" is the input "):
        check_not_input(link, [src])  # symbolic links are resolved


def test_staged_dir_refuses_before_touching_anything(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "keep.txt").write_text("mine")
    with pytest.raises(ConfigError):
        with staged_dir(src, force=True, inputs=[src / "keep.txt"]):
            raise AssertionError("the body must not run")
    assert (src / "keep.txt").read_text() == "mine" and sorted(p.name for p in tmp_path.iterdir()) == ["src"]


def test_data_commands_never_write_over_their_inputs(tmp_path, capsys):
    ds = make_tr_dataset(tmp_path / "ds", ["MM", "Nev"], n_train=3, n_test=2)
    ds2 = make_tr_dataset(tmp_path / "ds2", ["MM", "Nev"], n_train=3, n_test=2, seed=1)
    folder = ds / "images"  # a class-per-folder image tree, as `data build folder` reads it
    for out, words in ((folder, "is the input"), (folder / "MM" / "built", "lies inside the input"),
                       (tmp_path, "holds the input")):
        _refused(["data", "build", "folder", str(folder), "--out", str(out), "--force"], capsys, folder,
                 words=words)
    _refused(["data", "split", str(ds), "--out", str(ds), "--force"], capsys, ds, words="is the input")
    _refused(["data", "split", str(ds), "--out", str(folder / "MM"), "--force"], capsys, ds, words="the input")
    _refused(["data", "merge", str(ds), str(ds2), "--out", str(ds2), "--force"], capsys, ds, ds2,
             words="is the input")


def test_run_commands_never_write_over_their_inputs(cv_run, cv_converted, cv_dataset, tmp_path, capsys):
    run = tmp_path / "run copy"
    shutil.copytree(cv_run, run)
    models = tmp_path / "converted copy"
    shutil.copytree(cv_converted, models)
    _refused(["convert", str(run), "--quantize", "fp32", "--out", str(run), "--force"], capsys, run,
             words="the input")
    _refused(["convert", str(run), "--quantize", "fp32", "--out", str(tmp_path), "--force"], capsys, run,
             words="holds the input")
    _refused(["benchmark", str(models), "--out", str(models), "--force"], capsys, models, words="is the input")
    _refused(["evaluate", str(run), "--data", str(cv_dataset), "--out", str(cv_dataset), "--force"], capsys,
             cv_dataset, run, words="is the input")
    _refused(["train", "--data", str(cv_dataset), "--backbone", "tiny", "--image-size", "32", "--weights",
              str(run / "model.keras"), "--out", str(run), "--force"], capsys, run, cv_dataset,
             words="holds the input")


def test_staged_dir_leaves_no_sibling_behind(tmp_path, monkeypatch):
    """`--out .`, --force over a file, and names of 242-255 characters: no `.NAME.tmp-*` or
    `.NAME.old-PID` is left beside the output (they used to be)."""
    (tmp_path / "here").mkdir()
    monkeypatch.chdir(tmp_path / "here")
    with staged_dir(Path("."), force=True) as tmp:
        (tmp / "a.txt").write_text("x")
    assert (tmp_path / "here" / "a.txt").read_text() == "x"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["here"]
    target = tmp_path / "was a file"
    target.write_text("old")
    with staged_dir(target, force=True) as tmp:
        (tmp / "b.txt").write_text("y")
    assert (target / "b.txt").is_file()
    long = tmp_path / ("n" * 250)
    with staged_dir(long) as tmp:
        (tmp / "c.txt").write_text("z")
    assert (long / "c.txt").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["here", "was a file", "n" * 250])


def test_sigterm_removes_the_temporary_folder(tmp_path):
    """SIGTERM unwinds like Ctrl-C: a staged output's temporary folder is removed (it used to stay)."""
    import signal
    import subprocess
    import sys
    import time

    code = ("import sys, time\nfrom pathlib import Path\nfrom edge_derm.cli import _sigterm\nimport signal\n"
            "signal.signal(signal.SIGTERM, _sigterm)\nfrom edge_derm.fsutil import staged_dir\n"
            "with staged_dir(Path(sys.argv[1])) as tmp:\n    print('staged', flush=True)\n    time.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "out")], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "staged"
    assert [p for p in tmp_path.iterdir() if ".tmp-" in p.name]
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=30)
    time.sleep(0.1)
    assert list(tmp_path.iterdir()) == []
