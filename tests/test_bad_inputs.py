"""Bad inputs and faults through the CLI: exit code 1, exactly one ``error:`` line on stderr, no
traceback, no temporary leftovers, and every input byte-identical afterwards (issue 14's corpus;
the data-loss cases are in test_no_data_loss.py)."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from edge_derm.cli import main

from conftest import make_tr_dataset


def _hashes(root: Path) -> dict[str, str]:
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
    return {str(f): hashlib.sha256(f.read_bytes()).hexdigest() for f in files}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, cv_run, cv_converted):
    """Broken files of every kind, made once, each in a folder of its own."""
    base = tmp_path_factory.mktemp("bad inputs")
    good = make_tr_dataset(base / "good ds", ["MM", "Nev"], n_train=3, n_test=2)
    cases = {"good": good, "converted": cv_converted}
    for name, edit in (("ds int", lambda d: 5), ("ds null classes", lambda d: {**d, "classes": None}),
                       ("ds dup classes", lambda d: {**d, "classes": ["MM", "MM"]}),
                       ("ds list", lambda d: [d])):
        ds = base / name
        shutil.copytree(good, ds)
        info = json.loads((ds / "dataset.json").read_text())
        (ds / "dataset.json").write_text(json.dumps(edit(info)))
        cases[name] = ds
    bad_csv = base / "ds bad csv"
    shutil.copytree(good, bad_csv)
    (bad_csv / "manifest.csv").write_bytes((bad_csv / "manifest.csv").read_bytes() + b"\xff\xfe,x\n")
    cases["ds bad csv"] = bad_csv
    for name, text in (("plan latin1.toml", b'name = "caf\xe9"\n'), ("tax latin1.toml", b'name = "caf\xe9"\n')):
        (base / name).write_bytes(text)
        cases[name] = base / name
    plan = base / "plan big.toml"
    plan.write_text(f'name = "big"\n[train]\nimage_size = "big"\n[[stages]]\nname = "s"\ndata = "{good}"\n')
    cases["plan big.toml"] = plan
    plan = base / "plan bad image.toml"  # fails inside its first stage: no plan.json or stages/ may stay behind
    broken_train = base / "ds broken train image"
    make_tr_dataset(broken_train, ["MM", "Nev"], n_train=3, n_test=2)
    sorted((broken_train / "images" / "MM").glob("train*.png"))[0].write_bytes(b"not a png any more")
    plan.write_text(f'name = "bad"\n[train]\nbackbone = "tiny"\nimage_size = 24\nweights = "none"\n'
                    f'epochs_per_block = 1\nsteps_per_epoch = 1\nval_fraction = 0.0\n'
                    f'[[stages]]\nname = "s"\ndata = "{broken_train}"\n')
    cases["plan bad image.toml"] = plan
    cases["ds broken train image"] = broken_train
    run = base / "run damaged state"
    shutil.copytree(cv_run, run)
    (run / "checkpoints").mkdir(exist_ok=True)
    (run / "checkpoints" / "state.json").write_text("{not json")
    cases["run damaged state"] = run
    empty = base / "empty folder"
    empty.mkdir()
    cases["empty folder"] = empty
    cases["image"] = next((good / "images" / "MM").glob("*.png"))
    from edge_derm.converters.metadata import embed_metadata
    from edge_derm.runtime import read_metadata

    src = cv_converted / "model.fp32.tflite"
    meta = read_metadata(src)
    for name, edit in (("dup labels", {"labels": [meta["labels"][0]] * len(meta["labels"])}),
                       ("input not object", {"input": "big"}),
                       ("unknown resize", {"input": {**meta["input"], "resize": "bicubic"}}),
                       ("other size", {"input": {**meta["input"], "size": [64, 64]}})):
        folder = base / f"tampered {name}"
        folder.mkdir()
        (folder / "model.tflite").write_bytes(embed_metadata(src.read_bytes(), {**meta, **edit}))
        cases[f"tampered {name}"] = folder / "model.tflite"
    # issue 14's silent wrong results: a taxonomy typo, no triage, flipped weight bytes
    nev = '[[classes]]\nid = "Nev"\nname = "Nevus"\ntriage = "benign"\n'
    for name, text in (("tax typo.toml", f'name = "t"\n[[classes]]\nid = "MM"\ntriag = "malignant"\n{nev}'),
                       ("tax no triage.toml", f'name = "t"\n[[classes]]\nid = "MM"\nname = "Melanoma"\n{nev}')):
        (base / name).write_text(text)
        cases[name] = base / name
    flipped = base / "flipped"
    shutil.copytree(cv_converted, flipped)
    model = flipped / "model.fp32.tflite"
    data = bytearray(model.read_bytes())
    mid = len(data) // 2
    data[mid:mid + 64] = bytes(b ^ 0xFF for b in data[mid:mid + 64])
    model.write_bytes(bytes(data))
    cases["flipped"] = flipped
    garbage = base / "garbage model"
    garbage.mkdir()
    (garbage / "model.tflite").write_bytes(b"TFL3" + bytes(range(256)) * 8)
    cases["garbage model"] = garbage / "model.tflite"
    (base / "not an image.png").write_text("hello")
    cases["not an image"] = base / "not an image.png"
    # a manifest row with extra fields, and an unclosed quote that would swallow the rest of the file
    for name, edit in (("ds extra fields", lambda lines: lines[:3] + [lines[3] + ",x,y"] + lines[4:]),
                       ("ds open quote", lambda lines: lines[:2] + ['"' + lines[2]] + lines[3:])):
        ds = base / name
        shutil.copytree(good, ds)
        lines = (ds / "manifest.csv").read_text().splitlines()
        (ds / "manifest.csv").write_text("\n".join(edit(lines)) + "\n")
        cases[name] = ds
    user_csv = base / "user.csv"
    user_csv.write_text("path,label\nMM/train 0.png,MM\nMM/train 1.png\n")
    cases["user.csv"] = user_csv
    cases["user csv empty label"] = base / "user empty label.csv"
    cases["user csv empty label"].write_text("path,label\n\nMM/train 0.png,MM\nMM/train 1.png,\n")  # line 4
    cases["user csv no label"] = base / "user no label.csv"
    cases["user csv no label"].write_text("path,diagnosis\nMM/train 0.png,MM\n")
    for name, text in (("recipe typo.toml", 'name = "r"\nlr_hed = 0.001\n'), ("recipe latin1.toml", None)):
        if text is None:
            (base / name).write_bytes(b'name = "caf\xe9"\n')
        else:
            (base / name).write_text(text)
        cases[name] = base / name
    # an unreadable image after the build (evaluate and benchmark say the same as train)
    broken = base / "ds broken image"
    make_tr_dataset(broken, ["MM", "Nev"], n_train=3, n_test=2)
    sorted((broken / "images" / "MM").glob("test*.png"))[0].write_bytes(b"not a png any more")
    cases["ds broken image"] = broken
    cases["run"] = cv_run
    # another domain (issue 18): a taxonomy mismatch, and no class in common with the model
    cases["ds dermai13"] = make_tr_dataset(base / "ds dermai13", ["MM", "Nev"], n_train=2, n_test=2, taxonomy="dermai13")
    cases["ds alien"] = make_tr_dataset(base / "ds alien", ["X", "Y"], n_train=2, n_test=2)
    cases["app"] = base / "app"
    shutil.copytree(Path(__file__).resolve().parents[1] / "android_demo", cases["app"])
    return cases


CASES = [
    # (argv with {name} placeholders, inputs to hash, what the error line must say)
    (["data", "inspect", "{ds int}"], ["ds int"], "expected a JSON object, found int"),
    (["data", "inspect", "{ds list}"], ["ds list"], "expected a JSON object, found list"),
    (["data", "inspect", "{ds null classes}"], ["ds null classes"], "'classes' must be a list of distinct class names"),
    (["data", "inspect", "{ds dup classes}"], ["ds dup classes"], "'classes' must be a list of distinct class names"),
    (["data", "inspect", "{ds bad csv}"], ["ds bad csv"], "manifest.csv: line 12 is not UTF-8 text"),
    (["train", "--plan", "{plan latin1.toml}", "--out", "{tmp}/o"], ["plan latin1.toml"], "is not UTF-8 text"),
    (["train", "--plan", "{plan big.toml}", "--out", "{tmp}/o"], ["plan big.toml"],
     "image size must be a whole number of pixels, got 'big'"),
    (["train", "--plan", "{plan bad image.toml}", "--out", "{tmp}/o"], ["plan bad image.toml", "ds broken train image"],
     "not a readable image"),
    (["data", "build", "folder", "{good}/images", "--taxonomy", "{tax latin1.toml}", "--out", "{tmp}/o"],
     ["tax latin1.toml", "good"], "taxonomy file"),
    (["train", "--data", "{good}", "--backbone", "tiny", "--image-size", "100000", "--out", "{tmp}/o"], ["good"],
     "image size 100000 is too large"),
    (["train", "--data", "{good}", "--backbone", "tiny", "--image-size", "32", "--weights", "none", "--resume",
      "--out", "{run damaged state}"], ["run damaged state"], "damaged"),
    (["predict", "{empty folder}", "{image}"], ["image"], "is a folder, not a .tflite file"),
    (["predict", "{converted}", "{image}"], ["converted"], "is a folder, not a .tflite file; pass one of its models"),
    (["predict", "{converted}/model.fp32.tflite", "{image}", "--threads", "99999"], ["converted"],
     "--threads 99999 is out of range"),
    (["benchmark", "{converted}", "--threads", "99999"], ["converted"], "--threads 99999 is out of range"),
    (["benchmark", "{converted}", "--device", "android", "--benchmark-binary", "{image}", "--timeout", "inf"],
     ["converted"], "--timeout inf must be a positive number"),
    # tampered embedded metadata decides labels and preprocessing: refused, never run silently
    (["predict", "{tampered dup labels}", "{image}"], ["tampered dup labels"], "labels has duplicates"),
    (["predict", "{tampered input not object}", "{image}"], ["tampered input not object"], "input is not an object"),
    (["predict", "{tampered unknown resize}", "{image}"], ["tampered unknown resize"], "input.resize 'bicubic'"),
    (["predict", "{tampered other size}", "{image}"], ["tampered other size"], "input.size [64, 64] but the model"),
    # click's usage errors: one line with the command's --help, not click's four
    (["train", "--data", "{good}"], ["good"], "Missing option '--out' / '-o'. (see 'edge-derm train --help')"),
    (["train", "--data", "{good}", "--out", "{tmp}/o", "--bogus"], ["good"], "No such option: --bogus"),
    (["convert", "{converted}", "--quantize", "int9"], ["converted"], "'int9' is not one of"),
    (["data", "synth", "--out", "{tmp}/o", "--size", "5"], [], "(see 'edge-derm data synth --help')"),
    (["nosuch"], [], "No such command 'nosuch'."),
    (["predict", "{converted}/model.fp32.tflite", "{image}", "--top-k", "x"], ["converted"], "'--top-k'"),
    # data loss: --out that is, holds or lies inside an input, with --force (more in test_no_data_loss.py)
    (["data", "build", "folder", "{good}/images", "--out", "{good}/images", "--force"], ["good"], "is the input"),
    (["convert", "{run}", "--quantize", "fp32", "--out", "{run}", "--force"], ["run"], "holds the input"),
    (["benchmark", "{converted}", "--out", "{converted}", "--force"], ["converted"], "is the input"),
    (["data", "split", "{good}", "--out", "{good}/images/MM", "--force"], ["good"], "lies inside the input"),
    # silent wrong results, now refused
    (["data", "build", "folder", "{good}/images", "--taxonomy", "{tax typo.toml}", "--out", "{tmp}/o"],
     ["tax typo.toml", "good"], "triag"),
    (["data", "build", "folder", "{good}/images", "--taxonomy", "{tax no triage.toml}", "--out", "{tmp}/o"],
     ["tax no triage.toml", "good"], "triage"),
    (["predict", "{flipped}/model.fp32.tflite", "{image}"], ["flipped"], "SHA-256"),
    (["benchmark", "{flipped}/model.fp32.tflite"], ["flipped"], "1 of 1 model(s) did not run as asked: model.fp32.tflite ("),
    (["export", "android", "{flipped}", "--app", "{app}", "--variant", "fp32"], ["flipped", "app"], "SHA-256"),
    # CSV errors name the line the bad row starts on
    (["data", "inspect", "{ds extra fields}"], ["ds extra fields"], "line 4 has 8 field(s), the header has 6"),
    (["data", "inspect", "{ds open quote}"], ["ds open quote"], "at line 3"),
    (["data", "build", "csv", "{user.csv}", "--out", "{tmp}/o"], ["user.csv"], "line 3 has 1 field(s)"),
    (["data", "build", "csv", "{user csv empty label}", "--out", "{tmp}/o"], ["user csv empty label"],
     "line 4: empty path or label"),
    (["data", "build", "csv", "{user csv no label}", "--out", "{tmp}/o"], ["user csv no label"],
     "missing column(s) label"),
    # unreadable image after the build: evaluate and benchmark as train (test_image_unreadable_... below)
    (["evaluate", "{run}", "--data", "{ds broken image}", "--out", "{tmp}/o"], ["ds broken image", "run"],
     "not a readable image"),
    # missing, corrupt and wrong-kind inputs
    (["predict", "{tmp}/nosuch.tflite", "{image}"], [], "not found"),
    (["predict", "{garbage model}", "{image}"], ["garbage model"], "garbage model"),
    (["predict", "{converted}/model.fp32.tflite", "{not an image}"], ["converted", "not an image"],
     "not a readable image"),
    (["predict", "{converted}/model.fp32.tflite", "{tmp}/nosuch.png"], ["converted"], "image not found"),
    (["benchmark", "{garbage model}", "{converted}/model.int8.tflite"], ["garbage model", "converted"],
     "1 of 2 model(s) did not run as asked: model.tflite ("),
    (["benchmark", "{converted}", "--data", "{tmp}/nosuch"], ["converted"], "nosuch"),
    (["benchmark", "{converted}", "--threads", "0"], ["converted"], "--threads"),
    (["benchmark", "{converted}", "--max-drop", "macro_f1"], ["converted"], "--max-drop"),
    (["convert", "{tmp}/nosuch run", "--quantize", "fp32"], [], "nosuch run"),
    (["convert", "{good}", "--quantize", "fp32", "--out", "{tmp}/o"], ["good"], "model.keras"),
    (["evaluate", "{tmp}/nosuch run", "--data", "{good}"], ["good"], "nosuch run"),
    (["data", "build", "folder", "{tmp}/nosuch", "--out", "{tmp}/o"], [], "nosuch"),
    (["data", "build", "ham10000", "{good}", "--out", "{tmp}/o"], ["good"], "HAM10000"),
    (["data", "build", "folder", "{good}/images", "--taxonomy", "nosuch", "--out", "{tmp}/o"], ["good"], "nosuch"),
    (["data", "merge", "{good}", "--out", "{tmp}/o"], ["good"], "merge"),
    (["data", "split", "{good}", "--test-fraction", "1.5", "--out", "{tmp}/o"], ["good"], "1.5"),
    (["train", "--data", "{good}", "--backbone", "nosuch", "--out", "{tmp}/o"], ["good"], "nosuch"),
    (["train", "--data", "{good}", "--backbone", "tiny", "--weights", "{tmp}/nosuch.keras", "--out", "{tmp}/o"],
     ["good"], "nosuch.keras"),
    (["train", "--data", "{good}", "--backbone", "tiny", "--weights", "{image}", "--out", "{tmp}/o"],
     ["good", "image"], "weights"),
    (["train", "--data", "{good}", "--backbone", "tiny", "--image-size", "0", "--out", "{tmp}/o"], ["good"], "0"),
    (["train", "--plan", "nosuch", "--out", "{tmp}/o"], [], "nosuch"),
    (["report", "{empty folder}"], [], "empty folder"),
    (["export", "android", "{converted}", "--app", "{app}", "--variant", "qat"], ["converted", "app"], "qat"),
    # another domain (issue 18): one line naming the classes or the taxonomies
    (["benchmark", "{converted}/model.fp32.tflite", "--data", "{ds alien}"], ["ds alien", "converted"],
     "has none of its classes (X, Y) among model.fp32.tflite's (MM, Nev, BCC)"),
    (["benchmark", "{converted}/model.fp32.tflite", "--data", "{good}", "--data", "{ds dermai13}"],
     ["ds dermai13", "good", "converted"], "classifies in taxonomy 'native' but"),
    (["evaluate", "{run}", "--data", "{ds alien}", "--out", "{tmp}/o"], ["ds alien", "run"],
     "has none of its classes (X, Y) among the run's (MM, Nev, BCC)"),
    (["evaluate", "{run}", "--data", "{ds dermai13}", "--out", "{tmp}/o"], ["ds dermai13", "run"],
     "build the dataset with --taxonomy native"),
    # recipes (issue 11) and --min-agreement (issue 12)
    (["train", "--data", "{good}", "--recipe", "nosuch", "--out", "{tmp}/o"], ["good"], "nosuch"),
    (["train", "--data", "{good}", "--recipe", "{recipe typo.toml}", "--out", "{tmp}/o"],
     ["good", "recipe typo.toml"], "lr_hed"),
    (["train", "--data", "{good}", "--recipe", "{recipe latin1.toml}", "--out", "{tmp}/o"],
     ["good", "recipe latin1.toml"], "is not UTF-8 text"),
    (["convert", "{run}", "--quantize", "int8", "--min-agreement", "1.5", "--out", "{tmp}/o"], ["run"], "1.5"),
    (["convert", "{run}", "--quantize", "fp16", "--min-agreement", "0.9", "--out", "{tmp}/o"], ["run"],
     "--min-agreement"),
]


@pytest.mark.parametrize("argv, inputs, words", CASES, ids=[" ".join(c[0][:2]) + f" [{c[2][:30]}]" for c in CASES])
def test_bad_input_is_one_error_line(corpus, tmp_path, capsys, argv, inputs, words):
    fill = {**{k: str(v) for k, v in corpus.items()}, "tmp": str(tmp_path)}
    args = []
    for a in argv:
        for key, value in fill.items():
            a = a.replace("{" + key + "}", value)
        args.append(a)
    before = {name: _hashes(corpus[name]) for name in inputs}
    code = main(["--quiet", *args])
    err = capsys.readouterr().err.strip()
    assert code == 1, (code, err)
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err, err
    assert words in err, err
    assert {name: _hashes(corpus[name]) for name in inputs} == before
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name or ".old-" in p.name or p.name == "o"]


def test_image_unreadable_after_the_build_is_one_line_and_leaves_nothing(tmp_path, capsys):
    """It used to print ~110 lines of TensorFlow traceback, leave a skeleton run folder that blocked the
    rerun, and (as a process) could hang at exit; evaluate on such a dataset says the same."""
    import subprocess
    import sys

    ds = make_tr_dataset(tmp_path / "ds", ["MM", "Nev"], n_train=4, n_test=2)
    bad = sorted((ds / "images" / "MM").glob("train*.png"))[0]
    bad.write_bytes(b"not a png any more")
    argv = ["train", "--data", str(ds), "--backbone", "tiny", "--image-size", "24", "--weights", "none", "-e", "1",
            "--steps-per-epoch", "2", "--blocks", "0", "--val-fraction", "0", "--out", str(tmp_path / "run")]
    assert main(["--quiet", *argv]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in err if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in "\n".join(err), err[-5:]
    assert str(bad) in errors[0] and "not a readable image" in errors[0] and "rebuild the dataset" in errors[0]
    assert not (tmp_path / "run").exists()  # no skeleton: the corrected rerun needs no --force
    proc = subprocess.run([sys.executable, "-c", "from edge_derm.cli import entry; entry()", "--quiet", *argv],
                          capture_output=True, text=True, timeout=240)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")] == errors
    # no TensorFlow / XLA / absl log lines around it (the console script filters them; --verbose keeps them)
    from edge_derm._stderr import NOISE

    assert not [ln for ln in proc.stderr.splitlines() if NOISE.match(ln.encode())], proc.stderr[-800:]
    assert "cuInit" not in proc.stderr and "computation placer" not in proc.stderr


def test_native_log_filter_drops_library_noise_and_keeps_the_rest():
    from edge_derm._stderr import NOISE

    noise = [b"W0000 00:00:1795780484.494148    1216 computation_placer.cc:177] computation placer already registered.",
             b"E0000 00:00:1795779027.327714   28655 cuda_dnn.cc:8579] Unable to register cuDNN factory",
             b"2026-11-27 11:54:49.671474: E external/local_xla/xla/stream_executor/cuda/cuda_platform.cc:51] failed "
             b"call to cuInit: INTERNAL: CUDA error: Failed call to cuInit: UNKNOWN ERROR (303)",
             b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
             b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU."]
    kept = [b"error: model file not found: x.tflite", b"WARNING edge_derm.training.trainer: no validation split",
            b"Traceback (most recent call last):", b"INFO: something else", b"Segmentation fault",
            b"F0000 00:00:1795780484.494148    1216 tensor.cc:12] Check failed: shape",  # fatal and real errors stay
            b"E0000 00:00:1795780484.494148    1216 interpreter.cc:12] Node number 3 failed to invoke"]
    assert all(NOISE.match(line) for line in noise) and not any(NOISE.match(line) for line in kept)


def test_ctrl_c_outside_train_is_one_line_exit_130_and_leaves_nothing(tmp_path):
    """Ctrl-C in the middle of a staged write (here `data build`): `error: interrupted`, exit 130, no
    temporary folder and no output left, the input untouched."""
    import signal
    import subprocess
    import sys

    ds = make_tr_dataset(tmp_path / "ds", ["MM", "Nev"], n_train=3, n_test=2)
    before = _hashes(ds)
    code = ("import time\nimport edge_derm.data.build as b\n"
            "def stall(*a, **k):\n    print('writing', flush=True)\n    time.sleep(120)\n"
            "b.write_manifest = stall\nfrom edge_derm.cli import entry\nentry()\n")
    proc = subprocess.Popen([sys.executable, "-c", code, "--quiet", "data", "build", "folder", str(ds / "images"),
                             "--out", str(tmp_path / "out")], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    assert proc.stdout.readline().strip() == "writing"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert err.strip() == "error: interrupted", err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"] and _hashes(ds) == before


def test_inspect_survives_a_decompression_bomb_after_the_build(tmp_path, capsys, monkeypatch):
    """`data inspect` read image headers with Pillow's own limit and died with DecompressionBombError's
    traceback; now the file is counted, named in one warning, and the summary still prints."""
    from PIL import Image

    ds = make_tr_dataset(tmp_path / "ds", ["MM", "Nev"], n_train=3, n_test=2)
    bomb = sorted((ds / "images" / "MM").glob("*.png"))[0]
    Image.new("L", (20000, 20000)).save(bomb)  # 400 MP: above Pillow's hard limit, about 400 kB on disk
    before = _hashes(ds)
    monkeypatch.setenv("COLUMNS", "1000")  # no wrapping inside the paths
    assert main(["--quiet", "data", "inspect", str(ds)]) == 0
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err and "9 read, 1 unreadable" in out
    assert f"warning: {bomb}: above Pillow's pixel limit (possible decompression bomb)" in out
    assert _hashes(ds) == before


def test_csv_line_numbers_count_a_bom_and_every_line_ending(tmp_path):
    """The line of a non-UTF-8 byte is counted after a UTF-8 BOM and over \\n, \\r\\n and bare \\r endings."""
    from edge_derm.data.csvfile import read_rows
    from edge_derm.errors import DataError

    for name, data, line in (("bom.csv", b"\xef\xbb\xbfa,b\n\xff\n", 2), ("crlf.csv", b"a,b\r\n1,2\r\n\xff\r\n", 3),
                             ("cr.csv", b"a,b\r1,2\r1,2\r\xff\r", 4)):
        (tmp_path / name).write_bytes(data)
        with pytest.raises(DataError, match=f"line {line} is not UTF-8 text"):
            read_rows(tmp_path / name, ("a",), hint="fix it")
    (tmp_path / "ok.csv").write_bytes(b"\xef\xbb\xbfa,b\r\n1,2\r\n\r\n3,4\r\n")
    assert read_rows(tmp_path / "ok.csv", ("a", "b"), hint="") == [{"a": "1", "b": "2"}, {"a": "3", "b": "4"}]


def test_failed_plan_into_an_empty_folder_leaves_it_empty(tmp_path, capsys, corpus):
    """An existing empty --out is the user's: a plan that fails before training anything empties it again
    (no plan.json that would block the rerun or claim that steps were kept)."""
    out = tmp_path / "mine"
    out.mkdir()
    assert main(["--quiet", "train", "--plan", str(corpus["plan bad image.toml"]), "--out", str(out)]) == 1
    assert "not a readable image" in capsys.readouterr().err
    assert out.is_dir() and list(out.iterdir()) == []


def test_report_on_a_foreign_layout_is_one_line(tmp_path, capsys):
    """A results.json whose per-class entries are not objects: the summary says the layout is unexpected,
    in one line (it used to end in an AttributeError traceback). A row without its required keys is refused
    earlier, by the artefact reader, in one line too."""
    bench = tmp_path / "bench"
    bench.mkdir()
    (bench / "results.json").write_text(json.dumps({"kind": "benchmark", "format_version": 2, "rows": [
        {"model": "m.tflite", "device": "cpu", "threads": 1, "status": "ok",
         "metrics": {"per_class": {"MM": 0.9}}}]}))
    assert main(["--quiet", "report", str(bench)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "expected layout" in err, err
    (bench / "results.json").write_text(json.dumps({"kind": "benchmark", "format_version": 2, "rows": [
        {"model": "m.tflite"}]}))
    assert main(["--quiet", "report", str(bench)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "is missing 'device', 'threads', 'status'" in err, err
