"""The app's plain-Kotlin core, compiled with kotlinc and run on the JVM (skipped without kotlinc).

- the JVM unit tests in android_demo/app/src/test (JUnit 4) pass;
- the Kotlin resize gives byte for byte the pixels of edge_derm.data.images.resize (nearest and pad),
  so the phone feeds the model what the host does.

CI: ``apt-get install -y kotlin junit4`` (Debian's kotlinc 1.3; about 15 s to install).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edge_derm.data.images import resize

pytestmark = pytest.mark.slow  # kotlinc takes ~20-30 s

REPO = Path(__file__).resolve().parents[1]
APP = REPO / "android_demo/app/src"
CORE = APP / "main/java/org/edgederm/demo/core"
TESTS = APP / "test/java/org/edgederm/demo/core"
JAR_DIRS = [Path(p) for p in os.environ.get("EDGE_DERM_JAVA_LIBS", "/usr/share/java").split(os.pathsep)]


def _jar(*names: str) -> Path | None:
    for d in JAR_DIRS:
        for n in names:
            if (d / n).is_file():
                return d / n
    return None


@pytest.fixture(scope="module")
def kotlin_build(tmp_path_factory) -> dict:
    """Compile the core (+ its JUnit tests when junit4 is installed) into a class folder."""
    kotlinc, java = shutil.which("kotlinc"), shutil.which("java")
    if not kotlinc or not java:
        pytest.skip("kotlinc is not installed (apt-get install -y kotlin junit4)")
    # The JVM runs the classes with the stdlib on the class path (the `kotlin` runner's own class
    # loader hides test classes from JUnitCore).
    stdlib = _jar("kotlin-stdlib.jar") or next(
        iter(sorted((Path(os.path.realpath(kotlinc)).parent.parent / "lib").glob("kotlin-stdlib*.jar"))), None)
    if stdlib is None:
        pytest.skip("kotlinc is installed but kotlin-stdlib.jar was not found (set EDGE_DERM_JAVA_LIBS)")
    junit = _jar("junit4.jar", "junit.jar")
    hamcrest = _jar("hamcrest-core.jar", "hamcrest.jar")
    out = tmp_path_factory.mktemp("kotlin build") / "classes dir"
    sources = sorted(CORE.glob("*.kt"))
    if junit and hamcrest:
        sources += sorted(TESTS.glob("*.kt"))
    else:
        sources.append(TESTS / "GoldenTool.kt")
    cmd = [kotlinc, "-nowarn", "-d", str(out)]
    if junit:
        cmd += ["-cp", str(junit)]
    proc = subprocess.run(cmd + [str(s) for s in sources], capture_output=True, text=True, timeout=600)
    errors = [line for line in (proc.stdout + proc.stderr).splitlines() if "error:" in line]
    assert proc.returncode == 0 and not errors, "kotlinc failed:\n" + "\n".join(errors or [proc.stderr[-3000:]])
    return {"java": java, "out": out, "junit": junit, "hamcrest": hamcrest,
            "cp": [str(out), str(stdlib)]}


def test_jvm_unit_tests_pass(kotlin_build):
    if not kotlin_build["junit"] or not kotlin_build["hamcrest"]:
        pytest.skip("junit4 is not installed (apt-get install -y junit4)")
    classes = sorted(f"org.edgederm.demo.core.{p.stem}" for p in TESTS.glob("*Test.kt"))
    assert len(classes) >= 6
    cp = os.pathsep.join(kotlin_build["cp"] + [str(kotlin_build["junit"]), str(kotlin_build["hamcrest"])])
    proc = subprocess.run([kotlin_build["java"], "-cp", cp, "org.junit.runner.JUnitCore", *classes],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    ran = int(proc.stdout.rsplit("OK (", 1)[1].split()[0])
    assert ran >= 30, proc.stdout[-500:]


def _ppm(path: Path, img: np.ndarray) -> None:
    Image.fromarray(img).save(path, format="PPM")


@pytest.mark.parametrize("mode", ["nearest", "pad"])
def test_kotlin_resize_matches_python_exactly(kotlin_build, tmp_path, mode):
    rng = np.random.default_rng(1)
    cases = [(37, 23, 16), (480, 640, 224), (23, 91, 32), (450, 600, 300), (1000, 751, 224), (5, 7, 64),
             (300, 300, 300), (224, 225, 224), (3, 2, 300)]
    args, expected = [], []
    for i, (h, w, size) in enumerate(cases):
        # Noise plus a smooth gradient: both rounding paths of the bilinear filter get exercised.
        grad = np.linspace(0, 200, w)[None, :, None] + np.linspace(0, 50, h)[:, None, None]
        img = np.clip(rng.integers(0, 56, (h, w, 3)) + grad, 0, 255).astype(np.uint8)
        src, dst = tmp_path / f"in {i}.ppm", tmp_path / f"out {i}.ppm"
        _ppm(src, img)
        args += [mode, str(size), str(size), str(src), str(dst)]
        expected.append((dst, resize(img, size, mode)))
    cp = os.pathsep.join(kotlin_build["cp"])
    proc = subprocess.run([kotlin_build["java"], "-cp", cp, "org.edgederm.demo.core.GoldenTool",
                           *args], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for (dst, want), case in zip(expected, cases):
        got = np.asarray(Image.open(dst))
        assert got.shape == want.shape, case
        diff = int((got != want).sum())
        assert diff == 0, f"{mode} {case}: {diff} channel values differ from edge_derm.data.images.resize"


@pytest.mark.parametrize("variant", ["fp32", "int8"])
def test_kotlin_reads_real_exports_and_builds_the_runtimes_tensor(kotlin_build, cv_converted, cv_dataset,
                                                                  android_app, tmp_path, variant):
    """On a model from `edge-derm convert`, exported with `edge-derm export android`, the Kotlin core
    reads model.json and expected_results.json, and its input tensor for each bundled sample is
    byte for byte what edge_derm.runtime.TFLiteModel feeds the interpreter."""
    import json

    from edge_derm import export
    from edge_derm.data.images import load_for_model, load_rgb
    from edge_derm.runtime import TFLiteModel, quantize

    export.export_android(cv_converted, android_app, variant=variant, samples=cv_dataset, per_class=2)
    model_json = android_app / export.MAIN_ASSETS / export.METADATA_ASSET
    expected_json = android_app / export.TEST_ASSETS / export.EXPECTED_ASSET
    meta = json.loads(model_json.read_text())
    expected = json.loads(expected_json.read_text())
    tfl = TFLiteModel(android_app / export.MAIN_ASSETS / export.MODEL_ASSET)

    args = ["meta", str(model_json), "expected", str(expected_json)]
    want = []
    for i, sample in enumerate(expected["samples"]):
        png = android_app / export.TEST_ASSETS / sample["file"]
        ppm, out = tmp_path / f"sample {i}.ppm", tmp_path / f"tensor {i}.bin"
        _ppm(ppm, load_rgb(png))
        args += ["tensor", str(model_json), str(ppm), str(out)]
        x = load_for_model(png, tfl.input_size, tfl.resize_mode)[None]
        d = tfl.input_details
        host = quantize(x, d["dtype"], *d["quantization"]) if np.issubdtype(d["dtype"], np.integer) else x.astype(d["dtype"])
        want.append((out, host.tobytes()))
    proc = subprocess.run([kotlin_build["java"], "-cp", os.pathsep.join(kotlin_build["cp"]),
                           "org.edgederm.demo.core.GoldenTool", *args], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = dict(line.split("=", 1) for line in proc.stdout.splitlines())
    assert got["labels"] == ",".join(meta["labels"])
    assert got["size"] == "x".join(str(s) for s in meta["input"]["size"])
    assert got["resize"] == meta["input"]["resize"]
    assert got["input"].split(",")[0] == meta["input"]["dtype"] == np.dtype(tfl.input_details["dtype"]).name
    assert int(got["output"].split(",")[2]) == meta["output"]["zero_point"]
    assert got["triage"] == ",".join(f"{c}:{meta['triage'][c]}" for c in meta["labels"])
    assert int(got["samples"]) == len(expected["samples"]) == 6
    assert got["top1"] == ",".join(s["top1"] for s in expected["samples"])
    for out, host in want:
        assert out.read_bytes() == host, f"{out.name}: Kotlin's input tensor differs from the host runtime's"
