"""Each source reads a tiny fake copy of its native layout (DATASETS.md) exactly as released."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from data_fakes import (DERM7PT_DIAGNOSES, DERMOFIT_CODES, HAM_LESIONS, fake_derm7pt, fake_dermofit, fake_folder,
                        fake_ham10000, fake_isic2019, fake_pad_ufes20, write_csv, write_image)
from edge_derm.data.sources import get_source, list_sources, read_source
from edge_derm.errors import ConfigError, DataError

ALL = ["folder", "csv", "derm7pt", "dermofit", "ham10000", "isic2019", "pad-ufes-20"]


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "data set"  # a space in every path


def _exists(root: Path, items) -> None:
    for it in items:
        assert (root / it.path).is_file(), it.path


def test_registry_lists_every_source():
    assert list_sources() == ALL
    for name in ALL:
        assert get_source(name).name == name


def test_unknown_source_lists_known_names(root):
    with pytest.raises(ConfigError, match="unknown source 'edra'.*derm7pt.*pad-ufes-20"):
        read_source("edra", root)


def test_missing_root(root):
    with pytest.raises(DataError, match="dataset root not found"):
        read_source("ham10000", root / "nope")


def test_option_the_source_does_not_take(root):
    fake_ham10000(root)
    with pytest.raises(ConfigError, match="does not take --modality"):
        read_source("ham10000", root, modality="derm")


def test_folder(root):
    fake_folder(root, {"Nev": 2, "MM": 3})
    (root / "MM" / "notes.txt").write_text("not an image")
    (root / "MM" / ".hidden.png").write_bytes(b"")
    write_image(root / "MM" / "sub" / "deep.JPG")
    items = read_source("folder", root)
    assert Counter(i.source_label for i in items) == {"Nev": 2, "MM": 4}
    assert {i.group for i in items if i.source_label == "Nev"} == {"Nev_0", "Nev_1"}
    assert "MM/sub/deep.JPG" in {i.path for i in items}
    _exists(root, items)


def test_folder_symlinks_never_copy_or_relabel_images(root, caplog):
    """A loop (``ln -s .. MM/up``), a link into another class's folder and a second link to one folder
    are skipped with a warning; a link to images kept outside the dataset is followed."""
    fake_folder(root, {"MM": 2, "Nev": 3})
    outside = root.parent / "elsewhere"
    fake_folder(outside, {"extra": 2})
    (root / "MM" / "up").symlink_to("..")  # loop back to the root (would list every class as MM)
    (root / "MM" / "nevi").symlink_to(root / "Nev")  # another class's folder
    (root / "MM" / "more").symlink_to(outside / "extra")  # images kept elsewhere: followed
    (root / "MM" / "more again").symlink_to(outside / "extra")  # the same folder twice: once
    (root / "Nev" / "dup.png").symlink_to(root / "Nev" / "Nev_0.png")  # the same file twice: once
    items = read_source("folder", root)
    labels = Counter(it.source_label for it in items)
    assert labels == {"MM": 2 + 2, "Nev": 3}, labels
    assert not any("/up/" in it.path or "/nevi/" in it.path for it in items)
    assert "symbolic links: skipped" in caplog.text


def test_folder_empty_class_and_no_classes(root):
    root.mkdir()
    with pytest.raises(DataError, match="no class folders"):
        read_source("folder", root)
    fake_folder(root, {"Nev": 1})
    (root / "MM").mkdir()
    with pytest.raises(DataError, match="class folder .*MM has no images"):
        read_source("folder", root)


def test_csv_file_or_folder(root):
    write_image(root / "imgs" / "a.png")
    write_image(root / "imgs" / "b.png")
    write_csv(root / "labels.csv", ["path", "label", "group", "split", "modality"],
              [["imgs/a.png", "MM", "p1", "train", "clinic"], ["imgs\\b.png", "Nev", "", "test", "derm"]])
    for r in (root, root / "labels.csv"):
        items = read_source("csv", r)
        assert [(i.path, i.source_label, i.group, i.split) for i in items] == [
            ("imgs/a.png", "MM", "p1", "train"), ("imgs/b.png", "Nev", "", "test")]
    assert [i.path for i in read_source("csv", root, modality="derm")] == ["imgs/b.png"]


def test_csv_bad_inputs(root):
    write_csv(root / "a.csv", ["file", "diagnosis"], [["x.png", "MM"]])
    with pytest.raises(DataError, match="missing column.*path, label"):
        read_source("csv", root)
    write_csv(root / "b.csv", ["path", "label"], [["x.png", "MM"]])
    with pytest.raises(DataError, match="2 CSV files.*pass the CSV file"):
        read_source("csv", root)
    write_csv(root / "c.csv", ["path", "label", "split"], [["x.png", "MM", "train"], ["y.png", "MM", ""]])
    with pytest.raises(DataError, match="filled on some rows only"):
        read_source("csv", root / "c.csv")
    write_csv(root / "d.csv", ["path", "label", "split"], [["x.png", "MM", "holdout"]])
    with pytest.raises(DataError, match="unknown split 'holdout'"):
        read_source("csv", root / "d.csv")
    write_csv(root / "e.csv", ["path", "label"], [["x.png", ""]])
    with pytest.raises(DataError, match="line 2: empty path or label"):
        read_source("csv", root / "e.csv")
    with pytest.raises(ConfigError, match="no modality column"):
        read_source("csv", root / "b.csv", modality="clinic")


@pytest.mark.parametrize("modality", ["clinic", "derm"])
def test_derm7pt(root, modality):
    fake_derm7pt(root)
    items = read_source("derm7pt", root, modality=modality)
    assert len(items) == 3 * len(DERM7PT_DIAGNOSES)
    assert Counter(i.source_label for i in items) == {d: 3 for d in DERM7PT_DIAGNOSES}
    assert items[0].group == "0" and items[0].split == ""
    assert items[0].path == ("release_v0/images/D00/NEL000.JPG" if modality == "clinic"
                             else "release_v0/images/D00/Nel000_derm.jpg")
    _exists(root, items)
    # root may also be release_v0 itself
    assert read_source("derm7pt", root / "release_v0", modality=modality)[0].path == items[0].path[len("release_v0/"):]


def test_derm7pt_official_split(root):
    fake_derm7pt(root)
    items = read_source("derm7pt", root, modality="derm", official_split=True)
    by_case = {int(i.group): i.split for i in items}
    assert by_case[0] == "test" and by_case[1] == "val" and by_case[2] == "train"
    assert Counter(by_case.values()) == {"train": 18, "val": 6, "test": 6}


def test_derm7pt_bad_inputs(root):
    fake_derm7pt(root)
    with pytest.raises(ConfigError, match="needs --modality clinic or derm"):
        read_source("derm7pt", root)
    with pytest.raises(ConfigError, match="needs --modality"):
        read_source("derm7pt", root, modality="both")
    write_csv(root / "release_v0" / "meta" / "valid_indexes.csv", ["indexes"], [[0]])
    with pytest.raises(DataError, match="row 0 is in both the val and the test|in no index file"):
        read_source("derm7pt", root, modality="derm", official_split=True)
    (root / "release_v0" / "meta" / "test_indexes.csv").unlink()
    with pytest.raises(DataError, match="test_indexes.csv not found"):
        read_source("derm7pt", root, modality="derm", official_split=True)
    (root / "release_v0" / "meta" / "meta.csv").unlink()
    with pytest.raises(DataError, match="meta.csv not found"):
        read_source("derm7pt", root, modality="derm")


def test_derm7pt_missing_column(root):
    write_csv(root / "release_v0" / "meta" / "meta.csv", ["case_num", "clinic"], [[0, "a.jpg"]])
    with pytest.raises(DataError, match="missing column.*diagnosis"):
        read_source("derm7pt", root, modality="clinic")


def test_dermofit(root):
    fake_dermofit(root)
    items = read_source("dermofit", root)
    assert Counter(i.source_label for i in items) == {c: 2 for c in DERMOFIT_CODES}
    assert not any("mask" in i.path for i in items)
    assert any(i.path.startswith("vasc/") for i in items)  # class folder matched case-insensitively
    assert len({i.group for i in items}) == len(items)
    _exists(root, items)


def test_dermofit_bad_inputs(root):
    root.mkdir()
    with pytest.raises(DataError, match="lesionlist.txt not found"):
        read_source("dermofit", root)
    (root / "lesionlist.txt").write_text("1 A1 AK\n2 B2\n")
    (root / "AK").mkdir()
    with pytest.raises(DataError, match="line 2: expected"):
        read_source("dermofit", root)
    (root / "lesionlist.txt").write_text("1 X1 XYZ\n")
    with pytest.raises(DataError, match="no class folder 'XYZ'"):
        read_source("dermofit", root)


def test_ham10000(root):
    fake_ham10000(root)
    items = read_source("ham10000", root)
    per_dx = Counter(i.source_label for i in items)
    assert set(per_dx) == set(HAM_LESIONS)
    assert per_dx["nv"] == 12  # 8 lesions, every other one with 2 images
    assert {i.path.split("/")[0] for i in items} == {"HAM10000_images_part_1", "HAM10000_images_part_2"}
    groups = Counter(i.group for i in items)
    assert groups["HAM_nv0001"] == 2 and groups["HAM_nv0000"] == 1
    _exists(root, items)


def test_ham10000_kaggle_duplicate_folders_resolve_once(root):
    fake_ham10000(root, {"nv": 2, "mel": 2}, kaggle_duplicate=True)
    items = read_source("ham10000", root)
    assert len(items) == 6
    assert all(i.path.startswith("HAM10000_images_part_") for i in items)


def test_images_found_without_part_folders(root):
    fake_ham10000(root / "ham", {"nv": 2, "mel": 2})
    (root / "ham" / "HAM10000_images_part_1").rename(root / "ham" / "images")
    (root / "ham" / "HAM10000_images_part_2").rename(root / "ham" / "images" / "more")
    items = read_source("ham10000", root / "ham")
    assert {i.path.split("/")[0] for i in items} == {"images"}
    _exists(root / "ham", items)
    fake_pad_ufes20(root / "pad", patients_per_dx=1)
    for d in ("imgs_part_1", "imgs_part_2", "imgs_part_3"):
        (root / "pad" / d).rename(root / "pad" / d.replace("imgs_part", "pics"))
    _exists(root / "pad", read_source("pad-ufes-20", root / "pad"))


def test_ham10000_bad_inputs(root):
    root.mkdir()
    with pytest.raises(DataError, match="HAM10000_metadata.csv not found"):
        read_source("ham10000", root)
    write_csv(root / "HAM10000_metadata.csv", ["lesion_id", "image", "diagnosis"], [["a", "b", "nv"]])
    with pytest.raises(DataError, match="missing column.*image_id, dx"):
        read_source("ham10000", root)


def test_isic2019(root):
    fake_isic2019(root)
    items = read_source("isic2019", root)
    assert Counter(i.source_label for i in items) == {c: 3 for c in
                                                      ["MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC", "SCC", "UNK"]}
    assert any(i.path.endswith("_downsampled.jpg") for i in items)
    mel = [i for i in items if i.source_label == "MEL"]
    assert mel[0].group == mel[1].group == "HAM_MEL0"  # shared lesion id
    assert mel[2].group == "ISIC_0000002"  # no lesion id: its own group
    _exists(root, items)


def test_isic2019_not_one_hot(root):
    write_csv(root / "ISIC_2019_Training_GroundTruth.csv", ["image", "MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC",
                                                            "SCC", "UNK"], [["ISIC_1", 1, 1, 0, 0, 0, 0, 0, 0, 0]])
    with pytest.raises(DataError, match="2 positive classes"):
        read_source("isic2019", root)


def test_isic2019_without_metadata_warns(root, caplog):
    fake_isic2019(root, per_class=1)
    (root / "ISIC_2019_Training_Metadata.csv").unlink()
    items = read_source("isic2019", root)
    assert all(i.group == Path(i.path).stem for i in items)
    assert "every image is its own group" in caplog.text


def test_pad_ufes20(root):
    fake_pad_ufes20(root)
    items = read_source("pad-ufes-20", root)
    assert set(Counter(i.source_label for i in items)) == {"ACK", "BCC", "MEL", "NEV", "SCC", "SEK"}
    assert any(i.path.startswith("imgs_part_3/imgs_part_3/") for i in items)
    by_patient = Counter(i.group for i in items)
    assert by_patient["PAT_ACK1"] == 2  # two lesions of one patient: one group
    _exists(root, items)


def test_pad_ufes20_missing_columns(root):
    write_csv(root / "metadata.csv", ["patient_id", "img_id"], [["p", "x.png"]])
    with pytest.raises(DataError, match="missing column.*lesion_id, diagnostic"):
        read_source("pad-ufes-20", root)
