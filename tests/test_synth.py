"""The synthetic lesion generator (edge_derm.data.synth)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edge_derm.data import synth
from edge_derm.data.synth import CLASSES, MIN_PER_CLASS, class_counts, generate_dataset, render
from edge_derm.errors import ConfigError, OutputExistsError


def _pixels(root: Path) -> dict[str, np.ndarray]:
    return {f.relative_to(root).as_posix(): np.asarray(Image.open(f)) for f in sorted(root.glob("*/*.png"))}


def test_layout_counts_and_summary(synth_root):
    dirs = sorted(p.name for p in synth_root.iterdir() if p.is_dir())
    assert dirs == sorted(CLASSES)
    for cls in CLASSES:
        files = sorted((synth_root / cls).glob("*.png"))
        assert [f.name for f in files] == [f"{cls}_{i:05d}.png" for i in range(8)]
        with Image.open(files[0]) as im:
            assert im.size == (48, 48) and im.mode == "RGB"
    summary = json.loads((synth_root / "synth.json").read_text())
    assert summary["counts"] == {cls: 8 for cls in CLASSES}
    assert summary["total"] == 13 * 8 and summary["size"] == 48 and summary["seed"] == 0
    assert not [p for p in synth_root.parent.iterdir() if p.name.startswith(".")], "temp folder left behind"


def test_deterministic_for_a_seed_and_different_across_seeds(tmp_path, synth_root):
    again = generate_dataset(tmp_path / "again here", per_class=8, size=48, seed=0)
    assert again["counts"] == {cls: 8 for cls in CLASSES}
    a, b = _pixels(synth_root), _pixels(tmp_path / "again here")
    assert a.keys() == b.keys()
    assert all(np.array_equal(a[k], b[k]) for k in a)
    other = render("MM", 0, 48, seed=1)
    assert not np.array_equal(other, a["MM/MM_00000.png"])


def test_each_image_has_its_own_seed(synth_root):
    # independent of how many images are drawn, and of the order: image i is a function of (seed, class, i)
    assert np.array_equal(render("Haem", 5, 48, seed=0), np.asarray(Image.open(synth_root / "Haem/Haem_00005.png")))
    assert not np.array_equal(render("Haem", 5, 48), render("Haem", 6, 48))


def test_workers_do_not_change_the_output(tmp_path):
    serial = generate_dataset(tmp_path / "serial", per_class=10, size=20, seed=3, workers=1)
    parallel = generate_dataset(tmp_path / "parallel", per_class=10, size=20, seed=3, workers=2)
    assert serial["counts"] == parallel["counts"]
    a, b = _pixels(tmp_path / "serial"), _pixels(tmp_path / "parallel")
    assert len(a) == 130 and a.keys() == b.keys()
    assert all(np.array_equal(a[k], b[k]) for k in a)


def test_paper_proportions():
    counts = class_counts(60, paper_proportions=True)
    assert list(counts) == list(CLASSES)
    assert abs(sum(counts.values()) - 13 * 60) <= 13
    assert max(counts, key=counts.get) == "SebKer"
    assert counts["SebKer"] > 4 * counts["Drmfib"] > 0
    assert min(counts.values()) >= MIN_PER_CLASS
    # ratios follow the paper's counts (where no class hits the floor)
    big = class_counts(1000, paper_proportions=True)
    paper_total = sum(synth.PAPER_COUNTS.values())
    for cls in CLASSES:
        assert big[cls] == pytest.approx(13000 * synth.PAPER_COUNTS[cls] / paper_total, abs=1)
    assert class_counts(7) == {cls: 7 for cls in CLASSES}


def test_paper_proportions_on_disk(tmp_path):
    summary = generate_dataset(tmp_path / "paper", per_class=4, paper_proportions=True, size=16)
    for cls, n in summary["counts"].items():
        assert len(list((tmp_path / "paper" / cls).glob("*.png"))) == n
    assert summary["counts"]["SebKer"] > summary["counts"]["MM"]


def test_never_overwrites_without_force(tmp_path):
    out = tmp_path / "out dir"
    generate_dataset(out, per_class=1, size=16)
    (out / "marker.txt").write_text("keep")
    with pytest.raises(OutputExistsError, match="--force"):
        generate_dataset(out, per_class=1, size=16)
    assert (out / "marker.txt").exists()
    generate_dataset(out, per_class=2, size=16, force=True)
    assert not (out / "marker.txt").exists()
    assert len(list(out.glob("*/*.png"))) == 26


@pytest.mark.parametrize("kwargs", [{"per_class": 0}, {"size": 8}, {"size": 5000}, {"seed": -1},
                                    {"workers": -1}, {"per_class": 2.5}])
def test_bad_arguments(tmp_path, kwargs):
    with pytest.raises(ConfigError):
        generate_dataset(tmp_path / "x", **kwargs)
    assert not (tmp_path / "x").exists()


def test_unknown_class():
    with pytest.raises(ConfigError, match="SebKer"):
        render("Psoriasis", 0)


def test_images_carry_class_cues_and_nuisances():
    """Neither trivial nor noise: class means differ the way the cues say; images vary a lot."""
    n, size = 24, 40

    def centre(cls):
        imgs = np.stack([render(cls, i, size) for i in range(n)]).astype(np.float32)
        return imgs[:, size // 3: 2 * size // 3, size // 3: 2 * size // 3].reshape(n, -1, 3).mean(1)

    haem, nev, mm, wart = centre("Haem"), centre("Nev"), centre("MM"), centre("VWart")
    redness = lambda c: (c[:, 0] - c[:, 1]).mean()  # noqa: E731
    assert redness(haem) > redness(nev) + 15     # vascular red
    assert mm.mean() < wart.mean() - 15          # dark pigment vs skin-coloured wart
    # nuisances: skin tone and lighting vary within a class
    corners = np.stack([render("Nev", i, size)[:4, :4].mean() for i in range(n)])
    assert corners.std() > 15
    img = render("SebKer", 0, 64)
    assert img.dtype == np.uint8 and img.shape == (64, 64, 3) and img.std() > 3


def test_synth_does_not_import_tensorflow(tmp_path):
    code = ("import sys; from edge_derm.data.synth import generate_dataset; "
            f"generate_dataset({str(tmp_path / 'no tf')!r}, per_class=1, size=16); "
            "sys.exit(1 if 'tensorflow' in sys.modules else 0)")
    assert subprocess.run([sys.executable, "-c", code], timeout=120).returncode == 0


def test_folder_source_reads_it(synth_manifest):
    classes = synth_manifest.classes
    assert sorted(classes) == sorted(CLASSES)
    assert len(synth_manifest.records) == 13 * 8
    by_split = {s: len(synth_manifest.subset(s)) for s in ("train", "test")}
    assert by_split["train"] > by_split["test"] > 0
    paths, labels = synth_manifest.arrays("test")
    assert all(Path(p).is_file() for p in paths) and len(set(labels.tolist())) == 13
