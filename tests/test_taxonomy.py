"""Taxonomies: dermai13's classes and triage, every source's mapping from DATASETS.md, native, files."""

from __future__ import annotations

import pytest

from edge_derm.data.sources import list_sources
from edge_derm.data.taxonomy import list_taxonomies, load_taxonomy
from edge_derm.errors import ConfigError

PAPER_ORDER = ["SebKer", "ActKer", "Nev", "MolCont", "Haem", "UncNeop", "Drmfib", "SLent", "PenFib", "VWart",
               "OtMalNeop", "BCC", "MM"]

# DATASETS.md, source by source: label -> dermai13 id (None: dropped).
EXPECTED = {
    "derm7pt": {"basal cell carcinoma": "BCC", "blue nevus": "Nev", "clark nevus": "Nev", "combined nevus": "Nev",
                "congenital nevus": "Nev", "dermal nevus": "Nev", "recurrent nevus": "Nev",
                "reed or spitz nevus": "Nev", "melanoma": "MM", "melanoma (in situ)": "MM",
                "melanoma (less than 0.76 mm)": "MM", "melanoma (0.76 to 1.5 mm)": "MM",
                "melanoma (more than 1.5 mm)": "MM", "melanoma metastasis": "MM", "seborrheic keratosis": "SebKer",
                "dermatofibroma": "Drmfib", "lentigo": "SLent", "vascular lesion": "Haem", "melanosis": None,
                "miscellaneous": None},
    "dermofit": {"SK": "SebKer", "AK": "ActKer", "ML": "Nev", "VASC": "Haem", "PYO": "UncNeop", "DF": "Drmfib",
                 "IEC": "OtMalNeop", "SCC": "OtMalNeop", "BCC": "BCC", "MEL": "MM"},
    "ham10000": {"nv": "Nev", "mel": "MM", "bcc": "BCC", "df": "Drmfib", "bkl": "SebKer", "akiec": "ActKer",
                 "vasc": "Haem"},
    "isic2019": {"NV": "Nev", "MEL": "MM", "BCC": "BCC", "AK": "ActKer", "BKL": "SebKer", "DF": "Drmfib",
                 "VASC": "Haem", "SCC": "OtMalNeop", "UNK": None},
    "pad-ufes-20": {"ACK": "ActKer", "BCC": "BCC", "MEL": "MM", "NEV": "Nev", "SCC": "OtMalNeop", "SEK": "SebKer"},
}


@pytest.fixture(scope="module")
def dermai13():
    return load_taxonomy("dermai13")


def test_shipped_taxonomies():
    assert list_taxonomies() == ["dermai13", "dermofit10", "edra5", "native"]


def test_dermai13_classes_descriptions_triage(dermai13):
    assert dermai13.classes == PAPER_ORDER
    assert dermai13.descriptions["MM"] == "Malignant melanoma"
    assert dermai13.descriptions["PenFib"].startswith("Pendulum fibroma")
    assert {c for c, t in dermai13.triage.items() if t == "malignant"} == {"MM", "BCC", "OtMalNeop"}
    assert {c for c, t in dermai13.triage.items() if t == "uncertain"} == {"UncNeop"}
    assert {c for c, t in dermai13.triage.items() if t == "premalignant"} == {"ActKer"}
    assert sum(t == "benign" for t in dermai13.triage.values()) == 8


@pytest.mark.parametrize("source", sorted(EXPECTED))
def test_every_source_mapping(dermai13, source):
    for label, expected in EXPECTED[source].items():
        assert dermai13.map(source, label) == expected, (source, label)
    assert dermai13.map(source, "something else") is None


def test_mapping_tables_only_name_real_sources(dermai13):
    assert set(dermai13.sources) <= set(list_sources())
    assert set(dermai13.sources) == set(EXPECTED)


def test_labels_match_case_insensitively_and_stripped(dermai13):
    assert dermai13.map("ham10000", " NV ") == "Nev"
    assert dermai13.map("derm7pt", "Basal Cell Carcinoma") == "BCC"


def test_user_data_matches_ids_names_and_aliases(dermai13):
    for label, cls in [("SebKer", "SebKer"), ("sebker", "SebKer"), ("Solar lentigo", "SLent"), ("skin tag", "PenFib"),
                       ("pyogenic granuloma", "UncNeop"), ("Malignant melanoma", "MM"), ("wart", "VWart")]:
        assert dermai13.map("folder", label) == cls
        assert dermai13.map("csv", label) == cls
    assert dermai13.map("folder", "psoriasis") is None
    # a public source's table is never widened by aliases
    assert dermai13.map("ham10000", "melanoma") is None


def test_native_keeps_labels():
    t = load_taxonomy("native")
    assert t.native and t.classes == []
    assert t.map("derm7pt", "clark nevus") == "clark nevus"
    assert t.map("derm7pt", "  ") is None
    assert t.triage_of("clark nevus") == "unknown"


def test_unknown_taxonomy_lists_names():
    with pytest.raises(ConfigError, match="unknown taxonomy 'derm13'; use one of: dermai13, dermofit10, edra5, native"):
        load_taxonomy("derm13")


def test_taxonomy_file(tmp_path):
    p = tmp_path / "my tax.toml"
    p.write_text('name = "benign-malignant"\n'
                 '[[classes]]\nid = "benign"\ntriage = "benign"\n[[classes]]\nid = "malignant"\ntriage = "malignant"\n'
                 '[sources.ham10000]\nnv = "benign"\nmel = "malignant"\n'
                 '[aliases]\nmole = "benign"\n')
    t = load_taxonomy(str(p))
    assert t.name == "benign-malignant" and t.classes == ["benign", "malignant"]
    assert t.map("ham10000", "mel") == "malignant" and t.map("ham10000", "bcc") is None
    assert t.map("folder", "Mole") == "benign"


B = 'triage = "benign"\n'


@pytest.mark.parametrize("text, match", [
    ('[[classes]]\nid = "a"\n' + B + '[[classes]]\nid = "b"\n' + B + '[sources.x]\nq = "c"\n', "unknown class"),
    ('[[classes]]\nid = "a"\n' + B, "at least 2 classes"),
    ('[[classes]]\nid = "a"\n' + B + '[[classes]]\nid = "a"\n' + B, "defined twice"),
    ('[[classes]]\nid = "a"\ntriage = "bad"\n[[classes]]\nid = "b"\n' + B, "triage 'bad'"),
    ('[[classes]\n', "invalid TOML"),
    # A typo must not make melanoma benign: unknown keys are errors, and triage is required.
    ('[[classes]]\nid = "MM"\ntriag = "malignant"\n[[classes]]\nid = "b"\n' + B,
     "class 'MM' has unknown key 'triag' \\(did you mean 'triage'\\?\\)"),
    ('[[classes]]\nid = "MM"\n[[classes]]\nid = "b"\n' + B, "class 'MM' has no triage; set triage = one of"),
    ('nmae = "x"\n[[classes]]\nid = "a"\n' + B + '[[classes]]\nid = "b"\n' + B,
     "unknown key 'nmae' \\(did you mean 'name'\\?\\)"),
])
def test_bad_taxonomy_files(tmp_path, text, match):
    p = tmp_path / "t.toml"
    p.write_text(text)
    with pytest.raises(ConfigError, match=match):
        load_taxonomy(str(p))
    with pytest.raises(ConfigError, match="not found"):
        load_taxonomy(str(tmp_path / "missing.toml"))


def test_native_class_sets_of_the_intermediate_stages(tmp_path):
    """edra5 and dermofit10 keep derm7pt's five diagnosis groups and Dermofit's ten codes."""
    from data_fakes import fake_derm7pt, fake_dermofit

    from edge_derm.data.build import build_dataset

    edra = load_taxonomy("edra5")
    assert edra.classes == ["BCC", "NEV", "MEL", "MISC", "SK"]
    assert edra.map("derm7pt", "melanoma (in situ)") == "MEL" and edra.map("derm7pt", "vascular lesion") == "MISC"
    assert edra.triage_of("MEL") == "malignant" and edra.triage_of("NEV") == "benign"
    dermofit = load_taxonomy("dermofit10")
    assert dermofit.classes == ["AK", "BCC", "DF", "IEC", "MEL", "ML", "PYO", "SCC", "SK", "VASC"]
    assert dermofit.map("dermofit", "scc") == "SCC" and dermofit.triage_of("AK") == "premalignant"
    m = build_dataset("derm7pt", fake_derm7pt(tmp_path / "d7"), tmp_path / "ds-edra5", taxonomy="edra5", modality="clinic")
    assert set(m.classes) <= set(edra.classes) and {"MEL", "NEV", "MISC"} <= {r.label for r in m.records}
    m = build_dataset("dermofit", fake_dermofit(tmp_path / "df"), tmp_path / "ds-dermofit10", taxonomy="dermofit10")
    assert {r.label for r in m.records} == set(dermofit.classes)
