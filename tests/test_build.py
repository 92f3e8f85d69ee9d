"""build_dataset / merge_datasets / inspect_dataset: every source end to end, every bad input, and real HAM10000."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

import pytest

from data_fakes import (fake_derm7pt, fake_dermofit, fake_folder, fake_ham10000, fake_isic2019, fake_pad_ufes20,
                        write_csv, write_image)
from edge_derm.artefacts import DatasetInfo
from edge_derm.data.build import build_dataset, image_id, inspect_dataset, merge_datasets, resplit_dataset
from edge_derm.data.manifest import Manifest, resolve_under
from edge_derm.errors import ConfigError, DataError, OutputExistsError


@pytest.fixture
def tmp(tmp_path: Path) -> Path:
    d = tmp_path / "with space"
    d.mkdir()
    return d


def _fake_csv(root: Path) -> Path:
    rows = []
    for i, label in enumerate(["MM"] * 4 + ["Nev"] * 4 + ["psoriasis"] * 2):
        write_image(root / "img" / f"{i}.png", seed=i)
        rows.append([f"img/{i}.png", label, f"patient{i // 2}"])
    return write_csv(root / "labels.csv", ["path", "label", "group"], rows)


# source -> (make the layout, options, classes expected in dermai13 order, dropped labels)
CASES = {
    "folder": (fake_folder, {}, ["Nev", "BCC", "MM"], {}),
    "csv": (_fake_csv, {}, ["Nev", "MM"], {"psoriasis": 2}),
    "derm7pt": (fake_derm7pt, {"modality": "clinic"}, ["SebKer", "Nev", "Haem", "Drmfib", "SLent", "BCC", "MM"],
                {"melanosis": 3, "miscellaneous": 3}),
    "dermofit": (fake_dermofit, {}, ["SebKer", "ActKer", "Nev", "Haem", "UncNeop", "Drmfib", "OtMalNeop", "BCC",
                                     "MM"], {}),
    "ham10000": (fake_ham10000, {}, ["SebKer", "ActKer", "Nev", "Haem", "Drmfib", "BCC", "MM"], {}),
    "isic2019": (fake_isic2019, {}, ["SebKer", "ActKer", "Nev", "Haem", "Drmfib", "OtMalNeop", "BCC", "MM"],
                 {"UNK": 3}),
    "pad-ufes-20": (fake_pad_ufes20, {}, ["SebKer", "ActKer", "Nev", "OtMalNeop", "BCC", "MM"], {}),
}


def _no_group_on_both_sides(m: Manifest) -> None:
    sides = defaultdict(set)
    for r in m.records:
        sides[r.group].add(r.split)
    assert all(len(s) == 1 for s in sides.values())


@pytest.mark.parametrize("source", sorted(CASES))
def test_build_every_source(tmp, source):
    make, options, classes, dropped = CASES[source]
    make(tmp / "raw")
    root = tmp / "raw" / "labels.csv" if source == "csv" else tmp / "raw"
    m = build_dataset(source, root, tmp / "ds", seed=1, **options)
    assert m.classes == classes
    assert m.info["dropped"] == dropped
    assert m.info["source"] == source and m.info["taxonomy"] == "dermai13" and m.info["skipped"] == 0
    assert Path(m.info["root"]) == tmp / "raw"
    assert {r.split for r in m.records} <= {"train", "test"}
    for r in m.records:
        assert m.resolve(r.path).is_file()
        assert r.source == source
    _no_group_on_both_sides(m)
    for c in classes:
        assert sum(m.info["counts"][c].values()) == sum(r.label == c for r in m.records) > 0
    assert (tmp / "ds" / "skipped.csv").read_text().splitlines() == ["path,source_label,reason"]
    assert not [p for p in tmp.iterdir() if p.name.startswith(".")]  # no staging leftovers


def test_build_native_taxonomy_and_val(tmp):
    fake_derm7pt(tmp / "raw", per_diagnosis=6)
    m = build_dataset("derm7pt", tmp / "raw", tmp / "ds", taxonomy="native", modality="derm", val_fraction=0.2)
    assert m.classes == sorted(m.classes) and "melanosis" in m.classes and len(m.classes) == 10
    assert m.info["dropped"] == {}
    assert {r.split for r in m.records} == {"train", "val", "test"}
    assert all(r.path.endswith("_derm.jpg") for r in m.records)


def test_build_with_a_taxonomy_file(tmp):
    tax = tmp / "two classes.toml"
    tax.write_text('name = "bm"\n[[classes]]\nid = "benign"\ntriage = "benign"\n[[classes]]\nid = "malignant"\ntriage = "malignant"\n'
                   '[sources.ham10000]\nnv = "benign"\nbkl = "benign"\nmel = "malignant"\nbcc = "malignant"\n')
    fake_ham10000(tmp / "raw")
    m = build_dataset("ham10000", tmp / "raw", tmp / "ds", taxonomy=str(tax))
    assert m.classes == ["benign", "malignant"] and m.info["taxonomy"] == "bm"
    assert m.info["triage"] == {"benign": "benign", "malignant": "malignant"}
    assert set(m.info["dropped"]) == {"akiec", "vasc", "df"}
    assert Counter(r.label for r in m.records) == {"benign": 16, "malignant": 10}


def test_build_official_split(tmp):
    fake_derm7pt(tmp / "raw")
    m = build_dataset("derm7pt", tmp / "raw", tmp / "ds", modality="derm", official_split=True)
    assert m.info["split"] == "official" and m.info["test_fraction"] is None
    assert m.info["source_options"] == {"modality": "derm", "official_split": True}
    splits = {r.group: r.split for r in m.records}
    assert splits["0"] == "test" and splits["1"] == "val" and splits["2"] == "train"


def test_csv_given_split_is_kept(tmp):
    for i in range(4):
        write_image(tmp / "raw" / f"{i}.png")
    write_csv(tmp / "raw" / "x.csv", ["path", "label", "split"],
              [["0.png", "MM", "train"], ["1.png", "MM", "test"], ["2.png", "Nev", "train"], ["3.png", "Nev", "val"]])
    m = build_dataset("csv", tmp / "raw", tmp / "ds")
    assert [r.split for r in m.records] == ["train", "test", "train", "val"]


def test_bad_images_are_skipped_and_listed(tmp):
    fake_folder(tmp / "raw", {"Nev": 4, "MM": 4})
    (tmp / "raw" / "MM" / "text.png").write_text("not an image")
    (tmp / "raw" / "MM" / "empty.jpg").write_bytes(b"")
    good = write_image(tmp / "full.jpg", size=(32, 24)).read_bytes()
    (tmp / "raw" / "Nev" / "truncated.jpg").write_bytes(good[: len(good) // 2])
    write_image(tmp / "raw" / "Nev" / "huge.png", size=(40, 40))
    m = build_dataset("folder", tmp / "raw", tmp / "ds", max_pixels=1500)
    with open(tmp / "ds" / "skipped.csv", newline="") as fh:
        skipped = {Path(r["path"]).name: r["reason"] for r in csv.DictReader(fh)}
    assert set(skipped) == {"text.png", "empty.jpg", "truncated.jpg", "huge.png"}
    assert "truncated" in skipped["truncated.jpg"] and "pixel limit" in skipped["huge.png"]
    assert m.info["skipped"] == 4 and len(m.records) == 8
    assert not any(Path(r.path).name in skipped for r in m.records)


def test_check_image_formats_and_damage(tmp):
    import numpy as np
    from PIL import Image

    from edge_derm.data.images import ImageError, check_image

    rgb = np.random.default_rng(0).integers(0, 255, (12, 16, 3), dtype=np.uint8)
    Image.fromarray(rgb).convert("L").save(tmp / "gray.png")
    Image.fromarray(rgb).convert("RGBA").save(tmp / "rgba.png")
    Image.fromarray((rgb[..., 0].astype(np.uint16) * 257)).save(tmp / "deep.png")
    Image.fromarray(rgb).convert("P").save(tmp / "pal.gif")
    Image.fromarray(rgb).convert("CMYK").save(tmp / "cmyk.jpg")
    Image.fromarray(rgb).save(tmp / "x.bmp")
    for name in ("gray.png", "rgba.png", "deep.png", "pal.gif", "cmyk.jpg", "x.bmp"):
        assert check_image(tmp / name) == (16, 12), name
    png = (tmp / "rgba.png").read_bytes()
    (tmp / "cut.png").write_bytes(png[: len(png) - 20])
    flipped = bytearray(png)
    flipped[len(png) // 2] ^= 0xFF
    (tmp / "flip.png").write_bytes(bytes(flipped))
    for name in ("cut.png", "flip.png"):
        with pytest.raises(ImageError, match="unreadable or truncated"):
            check_image(tmp / name)
    with pytest.raises(ImageError, match="not found"):
        check_image(tmp / "none.png")
    with pytest.raises(ImageError, match="pixel limit"):
        check_image(tmp / "x.bmp", max_pixels=100)


def test_strict_fails_and_leaves_nothing(tmp):
    fake_folder(tmp / "raw", {"Nev": 2, "MM": 2})
    (tmp / "raw" / "MM" / "bad.jpg").write_bytes(b"\xff\xd8\xff garbage")
    with pytest.raises(DataError, match="bad.jpg.*--strict"):
        build_dataset("folder", tmp / "raw", tmp / "ds", strict=True)
    assert sorted(p.name for p in tmp.iterdir()) == ["raw"]


def test_path_escaping_root(tmp):
    write_image(tmp / "outside.png")
    write_image(tmp / "raw" / "in.png")
    write_csv(tmp / "raw" / "x.csv", ["path", "label"], [["in.png", "MM"], ["../outside.png", "Nev"]])
    with pytest.raises(DataError, match="'../outside.png' escapes the dataset root"):
        build_dataset("csv", tmp / "raw", tmp / "ds")
    assert not (tmp / "ds").exists()


def test_csv_paths_are_normalised_and_deduplicated(tmp, caplog):
    for i in range(4):
        write_image(tmp / "raw" / "img" / f"{i}.png", seed=i)
    write_csv(tmp / "raw" / "x.csv", ["path", "label"],
              [["./img/0.png", "MM"], ["img/../img/1.png", "MM"], [str(tmp / "raw" / "img" / "2.png"), "Nev"],
               ["img/3.png", "Nev"], ["img/3.png", "Nev"]])
    m = build_dataset("csv", tmp / "raw" / "x.csv", tmp / "ds")
    assert sorted(r.path for r in m.records) == ["img/0.png", "img/1.png", "img/2.png", "img/3.png"]
    assert all(r.group == r.path for r in m.records)  # no group column: each image its own group
    assert "listed more than once" in caplog.text


def test_symlink_inside_root_is_allowed(tmp):
    fake_folder(tmp / "elsewhere", {"Nev": 2, "MM": 2})
    (tmp / "raw").mkdir()
    try:
        os.symlink(tmp / "elsewhere" / "MM", tmp / "raw" / "MM")
    except OSError:
        pytest.skip("symlinks not supported here")
    assert resolve_under(tmp / "raw", "MM/MM_0.png").is_file()


def test_listed_image_missing(tmp):
    fake_ham10000(tmp / "raw", {"nv": 3, "mel": 3})
    with open(tmp / "raw" / "HAM10000_metadata.csv", "a") as fh:
        fh.write("HAM_x,ISIC_9999999,nv,histo,50.0,male,back\n")
    with pytest.raises(DataError, match="1 listed image.*missing.*ISIC_9999999.jpg"):
        build_dataset("ham10000", tmp / "raw", tmp / "ds")


def test_class_left_empty(tmp):
    fake_folder(tmp / "raw", {"Nev": 3, "bcc": 2})
    (tmp / "raw" / "MM").mkdir()
    (tmp / "raw" / "MM" / "a.jpg").write_bytes(b"nope")
    with pytest.raises(DataError, match="class 'MM' is left empty"):
        build_dataset("folder", tmp / "raw", tmp / "ds")


def test_one_class_or_nothing_mapped(tmp):
    fake_folder(tmp / "raw", {"Nev": 3, "psoriasis": 2})
    with pytest.raises(DataError, match="only 1 class"):
        build_dataset("folder", tmp / "raw", tmp / "ds")
    fake_folder(tmp / "raw2", {"eczema": 2, "psoriasis": 2})
    with pytest.raises(DataError, match="no label .* maps onto taxonomy 'dermai13'.*--taxonomy native"):
        build_dataset("folder", tmp / "raw2", tmp / "ds")


def test_unknown_source_taxonomy_missing_root(tmp):
    with pytest.raises(ConfigError, match="unknown source"):
        build_dataset("edra", tmp, tmp / "ds")
    with pytest.raises(ConfigError, match="unknown taxonomy"):
        build_dataset("folder", tmp, tmp / "ds", taxonomy="derm13")
    with pytest.raises(DataError, match="dataset root not found"):
        build_dataset("folder", tmp / "missing", tmp / "ds")
    with pytest.raises(ConfigError, match="fraction"):
        build_dataset("folder", tmp, tmp / "ds", test_fraction=0.7, val_fraction=0.4)


def test_existing_output_needs_force(tmp):
    fake_folder(tmp / "raw")
    build_dataset("folder", tmp / "raw", tmp / "ds", seed=0)
    before = (tmp / "ds" / "manifest.csv").read_text()
    with pytest.raises(OutputExistsError, match="--force"):
        build_dataset("folder", tmp / "raw", tmp / "ds", seed=5)
    assert (tmp / "ds" / "manifest.csv").read_text() == before
    m = build_dataset("folder", tmp / "raw", tmp / "ds", seed=5, force=True)
    assert m.info["seed"] == 5


def test_build_is_deterministic(tmp):
    fake_ham10000(tmp / "raw")
    a = build_dataset("ham10000", tmp / "raw", tmp / "a", seed=3)
    b = build_dataset("ham10000", tmp / "raw", tmp / "b", seed=3)
    assert a.hash == b.hash
    assert (tmp / "a" / "manifest.csv").read_text() == (tmp / "b" / "manifest.csv").read_text()


def test_image_id():
    assert image_id("x/ISIC_0000001_downsampled.jpg") == image_id("ISIC_0000001.JPG") == "isic_0000001"


def test_merge_detects_duplicates_and_can_drop_them(tmp):
    fake_ham10000(tmp / "ham", {"nv": 3, "mel": 3})  # ISIC_0000000 .. ISIC_0000008
    fake_isic2019(tmp / "isic", per_class=1, start=5)  # ISIC_0000005 .. ISIC_0000013: 3 shared ids
    ham = build_dataset("ham10000", tmp / "ham", tmp / "ham ds")
    isic = build_dataset("isic2019", tmp / "isic", tmp / "isic ds", test_fraction=0.0)
    with pytest.raises(DataError, match=r"\d+ image id\(s\) occur in more than one dataset.*--drop-duplicates"):
        merge_datasets([tmp / "ham ds", tmp / "isic ds"], tmp / "merged")
    assert not (tmp / "merged").exists()
    m = merge_datasets([tmp / "ham ds", tmp / "isic ds"], tmp / "merged", drop_duplicates=True)
    ids = [image_id(r.path) for r in m.records]
    assert len(ids) == len(set(ids)) == len({image_id(r.path) for r in ham.records + isic.records})
    assert m.info["duplicates_dropped"] == len(ham.records) + len(isic.records) - len(ids) == 3
    assert m.info["source"] == "merged" and [s["source"] for s in m.info["sources"]] == ["ham10000", "isic2019"]
    # ISIC's MEL, NV and BCC images were the duplicates (ids 5-7): no BCC is left
    assert m.classes == ["SebKer", "ActKer", "Nev", "Haem", "Drmfib", "OtMalNeop", "MM"]
    assert m.info["dropped"] == {"UNK": 1}
    for r in m.records:
        assert m.resolve(r.path).is_file()
    assert Counter(r.source for r in m.records)["ham10000"] == len(ham.records)


def test_merge_keeps_splits_and_counts(tmp):
    fake_folder(tmp / "own", {"Nev": 4, "MM": 4, "VWart": 3})
    fake_pad_ufes20(tmp / "pad")
    own = build_dataset("folder", tmp / "own", tmp / "own ds")
    pad = build_dataset("pad-ufes-20", tmp / "pad", tmp / "pad ds")
    m = merge_datasets([tmp / "own ds", tmp / "pad ds"], tmp / "merged")
    assert len(m.records) == len(own.records) + len(pad.records)
    assert m.classes == ["SebKer", "ActKer", "Nev", "VWart", "OtMalNeop", "BCC", "MM"]
    before = {(r.source, r.group, r.split) for r in own.records + pad.records}
    assert {(r.source, r.group, r.split) for r in m.records} == before
    assert m.info["counts"]["VWart"]["train"] + m.info["counts"]["VWart"]["test"] == 3


def test_merge_bad_inputs(tmp):
    fake_folder(tmp / "raw")
    build_dataset("folder", tmp / "raw", tmp / "a")
    build_dataset("folder", tmp / "raw", tmp / "n", taxonomy="native")
    with pytest.raises(ConfigError, match="at least two"):
        merge_datasets([tmp / "a"], tmp / "m")
    with pytest.raises(ConfigError, match="different taxonomies"):
        merge_datasets([tmp / "a", tmp / "n"], tmp / "m")
    with pytest.raises(DataError, match="not a dataset folder"):
        merge_datasets([tmp / "a", tmp / "raw"], tmp / "m")
    with pytest.raises(DataError, match="occur in more than one dataset"):
        merge_datasets([tmp / "a", tmp / "a"], tmp / "m")
    with pytest.raises(OutputExistsError):
        merge_datasets([tmp / "a", tmp / "n"], tmp / "raw")
    assert not (tmp / "m").exists()


def test_resplit(tmp):
    fake_ham10000(tmp / "raw", {"nv": 12, "mel": 8, "bcc": 6})
    a = build_dataset("ham10000", tmp / "raw", tmp / "a", seed=0)
    b = resplit_dataset(tmp / "a", tmp / "b", seed=1, val_fraction=0.2)
    assert [(r.path, r.label, r.group) for r in a.records] == [(r.path, r.label, r.group) for r in b.records]
    assert {r.split for r in b.records} == {"train", "val", "test"}
    _no_group_on_both_sides(b)
    assert b.info["seed"] == 1 and b.info["resplit_from"]["hash"] == a.hash and b.root == a.root
    assert b.hash != a.hash
    with pytest.raises(OutputExistsError):
        resplit_dataset(tmp / "a", tmp / "b")
    with pytest.raises(DataError, match="not a dataset folder"):
        resplit_dataset(tmp / "raw", tmp / "c")


def test_dataset_json_round_trips_through_datasetinfo(tmp):
    """dataset.json of a real build, merge and re-split is a DatasetInfo: read -> to_json gives the file back."""
    fake_ham10000(tmp / "raw", {"nv": 6, "mel": 4, "bcc": 3})
    fake_folder(tmp / "own", {"Nev": 4, "MM": 4})
    build_dataset("ham10000", tmp / "raw", tmp / "a", val_fraction=0.2)
    build_dataset("folder", tmp / "own", tmp / "b")
    merge_datasets([tmp / "a", tmp / "b"], tmp / "m")
    resplit_dataset(tmp / "m", tmp / "r", seed=3)
    for name in ("a", "b", "m", "r"):
        doc = json.loads((tmp / name / "dataset.json").read_text())
        info = DatasetInfo.read(tmp / name)
        assert info.to_json() == doc and doc["kind"] == "dataset" and doc["format_version"] == 1
        assert Manifest.load(tmp / name).info == doc
        again = tmp / f"{name} again.json"
        info.write(again)
        assert json.loads(again.read_text()) == doc


def test_dataset_json_without_kind_loads_and_newer_is_refused(tmp):
    fake_folder(tmp / "raw", {"Nev": 4, "MM": 4})
    built = build_dataset("folder", tmp / "raw", tmp / "ds")
    path = tmp / "ds" / "dataset.json"
    doc = json.loads(path.read_text())
    old = {k: v for k, v in doc.items() if k != "kind"}  # older builds wrote no kind
    path.write_text(json.dumps(old))
    m = Manifest.load(tmp / "ds")
    assert m.info == doc and isinstance(m.dataset, DatasetInfo)  # read as the current document
    assert m.classes == built.classes and m.hash == built.hash and len(m.records) == len(built.records)
    path.write_text(json.dumps({**doc, "format_version": 2}))
    with pytest.raises(DataError, match="format 2 is newer than this edge-derm reads") as err:
        Manifest.load(tmp / "ds")
    assert "\n" not in str(err.value) and str(path) in str(err.value)
    path.write_text(json.dumps({**doc, "kind": "run"}))
    with pytest.raises(DataError, match="not a dataset document"):
        Manifest.load(tmp / "ds")


def test_inspect(tmp):
    fake_folder(tmp / "raw", {"Nev": 5, "MM": 5})
    write_image(tmp / "raw" / "MM" / "wide.png", size=(32, 12))
    build_dataset("folder", tmp / "raw", tmp / "ds")
    (tmp / "raw" / "Nev" / "Nev_0.png").unlink()
    s = inspect_dataset(tmp / "ds")
    assert s["n_images"] == 11 and s["unreadable"] == 1
    assert s["image_sizes"]["width"]["max"] == 32 and s["image_sizes"]["height"]["min"] == 12
    assert sum(s["counts"]["MM"].values()) == 6
    assert s["groups"]["train"] + s["groups"]["test"] == 11


def test_data_layer_imports_no_tensorflow():
    code = ("import sys, edge_derm.data.build, edge_derm.data.sources, edge_derm.cli.data, edge_derm.data.taxonomy\n"
            "from edge_derm.data.sources import get_source, list_sources\n"
            "[get_source(n) for n in list_sources()]\n"
            "sys.exit(1 if 'tensorflow' in sys.modules else 0)")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


@pytest.mark.shared
def test_real_ham10000_dev(shared_dir, tmp, caplog):
    root = shared_dir / "data" / "ham10000-dev"
    if not (root / "HAM10000_metadata.csv").is_file():
        pytest.skip(f"{root} is absent")
    caplog.set_level("INFO")
    t0 = time.perf_counter()
    m = build_dataset("ham10000", root, tmp / "ham dev")
    seconds = time.perf_counter() - t0
    print(f"\nbuilt ham10000-dev ({len(m.records)} images) in {seconds:.2f} s")
    assert len(m.records) == 2049 and m.info["skipped"] == 0 and m.info["dropped"] == {}
    assert Counter(r.label for r in m.records) == {"Nev": 1369, "MM": 234, "SebKer": 220, "BCC": 98, "ActKer": 72,
                                                   "Haem": 33, "Drmfib": 23}
    _no_group_on_both_sides(m)
    with open(root / "HAM10000_metadata.csv", newline="") as fh:
        lesions = {row["lesion_id"] for row in csv.DictReader(fh)}
    assert {r.group for r in m.records} == lesions  # 1495 (the data README says 1494)
    for c, n in Counter(r.label for r in m.records).items():
        assert abs(m.info["counts"][c]["test"] - 0.2 * n) <= max(2, 0.03 * n), c
    assert seconds < 60
