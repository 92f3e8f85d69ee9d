"""Tiny fake copies of the public datasets' native layouts (DATASETS.md), for the data-layer tests.

Images are 16x12 px so that building a fake dataset takes milliseconds.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from PIL import Image


def write_image(path: Path, size: tuple[int, int] = (16, 12), seed: int = 0, fmt: str | None = None) -> Path:
    """Write a small random RGB image (format from the suffix unless ``fmt``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(arr).save(path, format=fmt)
    return path


def write_csv(path: Path, header: list[str], rows: list[list]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)
    return path


def fake_folder(root: Path, counts: dict[str, int] | None = None) -> Path:
    """``<root>/<label>/<label>_<i>.png``."""
    counts = counts or {"Nev": 6, "MM": 5, "bcc": 5}
    for k, (label, n) in enumerate(counts.items()):
        for i in range(n):
            write_image(root / label / f"{label}_{i}.png", seed=k * 100 + i)
    return root


# HAM10000: dx -> number of lesions (each with 1 or 2 images).
HAM_LESIONS = {"nv": 8, "mel": 4, "bkl": 3, "bcc": 3, "akiec": 3, "vasc": 3, "df": 3}


def fake_ham10000(root: Path, lesions: dict[str, int] | None = None, kaggle_duplicate: bool = False) -> Path:
    """``HAM10000_metadata.csv`` + JPEGs spread over ``HAM10000_images_part_1/2``; every other lesion has 2 images."""
    lesions = lesions or HAM_LESIONS
    rows, img = [], 0
    for dx, n in lesions.items():
        for j in range(n):
            lesion = f"HAM_{dx}{j:04d}"
            for _ in range(1 + j % 2):
                image_id = f"ISIC_{img:07d}"
                part = 1 + img % 2
                write_image(root / f"HAM10000_images_part_{part}" / f"{image_id}.jpg", seed=img)
                if kaggle_duplicate:
                    write_image(root / f"ham10000_images_part_{part}" / f"{image_id}.jpg", seed=img)
                rows.append([lesion, image_id, dx, "histo", "50.0", "male", "back"])
                img += 1
    write_csv(root / "HAM10000_metadata.csv", ["lesion_id", "image_id", "dx", "dx_type", "age", "sex", "localization"],
              rows)
    return root


DERM7PT_DIAGNOSES = ["basal cell carcinoma", "clark nevus", "melanoma (in situ)", "seborrheic keratosis",
                     "melanosis", "miscellaneous", "dermatofibroma", "lentigo", "vascular lesion", "reed or spitz nevus"]


def fake_derm7pt(root: Path, per_diagnosis: int = 3) -> Path:
    """``release_v0/meta/meta.csv`` (+ index files) and ``release_v0/images/<dir>/<file>`` with mixed case."""
    base = root / "release_v0"
    rows, case = [], 0
    for k, dx in enumerate(DERM7PT_DIAGNOSES):
        for j in range(per_diagnosis):
            d = f"D{k:02d}"
            clinic, derm = f"{d}/NEL{case:03d}.JPG", f"{d}/Nel{case:03d}_derm.jpg"
            write_image(base / "images" / clinic, seed=case)
            write_image(base / "images" / derm, seed=1000 + case)
            rows.append([case, dx, "7", clinic, derm, "excision", "back", "female"])
            case += 1
    write_csv(base / "meta" / "meta.csv", ["case_num", "diagnosis", "seven_point_score", "clinic", "derm",
                                           "management", "location", "sex"], rows)
    idx = list(range(case))
    write_csv(base / "meta" / "train_indexes.csv", ["indexes"], [[i] for i in idx if i % 5 not in (0, 1)])
    write_csv(base / "meta" / "valid_indexes.csv", ["indexes"], [[i] for i in idx if i % 5 == 1])
    write_csv(base / "meta" / "test_indexes.csv", ["indexes"], [[i] for i in idx if i % 5 == 0])
    return root


DERMOFIT_CODES = ["AK", "BCC", "DF", "IEC", "MEL", "ML", "PYO", "SCC", "SK", "VASC"]


def fake_dermofit(root: Path, per_code: int = 2) -> Path:
    """``lesionlist.txt`` + ``<CLASS>/<ID>/<ID>.png`` (+ masks); one class folder in lower case."""
    lines, n = [], 0
    for code in DERMOFIT_CODES:
        folder = code.lower() if code == "VASC" else code
        for j in range(per_code):
            lesion = f"{code[0]}{n}"
            write_image(root / folder / lesion / f"{lesion}.png", seed=n)
            write_image(root / folder / lesion / f"{lesion}mask.png", seed=n)
            n += 1
            lines.append(f"{n} {lesion} {code}")
    (root / "lesionlist.txt").write_text("\n".join(lines) + "\n")
    return root


ISIC_CLASSES = ["MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC", "SCC", "UNK"]


def fake_isic2019(root: Path, per_class: int = 3, start: int = 0) -> Path:
    """Ground truth (one-hot floats) + metadata + ``ISIC_2019_Training_Input/`` (some ``_downsampled``).

    Image ids count from ``start`` (``ISIC_<start:07d>``), like fake_ham10000's, to make overlaps.
    """
    gt, meta, n = [], [], start
    for k, cls in enumerate(ISIC_CLASSES):
        for j in range(per_class):
            name = f"ISIC_{n:07d}" + ("_downsampled" if j == 1 else "")
            write_image(root / "ISIC_2019_Training_Input" / f"{name}.jpg", seed=n)
            gt.append([name] + [f"{float(c == cls):.1f}" for c in ISIC_CLASSES])
            meta.append([name, "50", "back", f"HAM_{cls}{j // 2}" if j < 2 else "", "male"])
            n += 1
    write_csv(root / "ISIC_2019_Training_GroundTruth.csv", ["image"] + ISIC_CLASSES, gt)
    write_csv(root / "ISIC_2019_Training_Metadata.csv", ["image", "age_approx", "anatom_site_general", "lesion_id",
                                                         "sex"], meta)
    return root


PAD_DIAGNOSTICS = ["ACK", "BCC", "MEL", "NEV", "SCC", "SEK"]


def fake_pad_ufes20(root: Path, patients_per_dx: int = 3) -> Path:
    """``metadata.csv`` (26 columns) + ``imgs_part_1..3`` (part 3 nested as some unpackers leave it)."""
    header = ["patient_id", "lesion_id", "smoke", "drink", "background_father", "background_mother", "age",
              "pesticide", "gender", "skin_cancer_history", "cancer_history", "has_piped_water", "has_sewage_system",
              "fitspatrick", "region", "diameter_1", "diameter_2", "diagnostic", "itch", "grew", "hurt", "changed",
              "bleed", "elevation", "img_id", "biopsed"]
    rows, n = [], 0
    for dx in PAD_DIAGNOSTICS:
        for p in range(patients_per_dx):
            patient = f"PAT_{dx}{p}"
            for lesion in range(1 + p % 2):
                img_id = f"{patient}_{lesion}_{n}.png"
                part = 1 + n % 3
                folder = root / f"imgs_part_{part}"
                if part == 3:
                    folder = folder / "imgs_part_3"
                write_image(folder / img_id, seed=n)
                row = dict.fromkeys(header, "")
                row.update(patient_id=patient, lesion_id=str(n), diagnostic=dx, img_id=img_id, biopsed="True")
                rows.append([row[h] for h in header])
                n += 1
    write_csv(root / "metadata.csv", header, rows)
    return root
