"""The Android project builds as far as this machine can tell without an Android SDK.

- every resource and manifest parses, and every ``@type/name`` reference in XML and every ``R.type.name``
  in Kotlin names a resource that exists (framework ``@android:`` references excepted; library ones
  only when the library is a declared dependency);
- Debian's ``aapt`` compiles the resources and manifest against its framework-res.apk (skipped
  without ``apt-get install aapt android-framework-res``), and fails on a broken reference;
- the Gradle wrapper jar is a genuine one, with the provenance and SHA-256 the README records, for a
  Gradle version the Android Gradle plugin accepts;
- the dependencies the app's code needs are declared, with one version per library family;
- the app glue does what the issue asked for (GPU choice, budgeted decoding, insets, ViewModel).
"""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
APP = REPO / "android_demo"
MAIN = APP / "app/src/main"
RES = MAIN / "res"
KOTLIN = MAIN / "java/org/edgederm/demo"
BUILD = APP / "app/build.gradle.kts"
WRAPPER_JAR = APP / "gradle/wrapper/gradle-wrapper.jar"
WRAPPER_PROPS = APP / "gradle/wrapper/gradle-wrapper.properties"
FRAMEWORK_RES = Path("/usr/share/android-framework-res/framework-res.apk")
ANDROID_NS = "{http://schemas.android.com/apk/res/android}"

#: Resource types declared in values files, and the folder types whose files are resources.
VALUE_TAGS = {"string": "string", "style": "style", "color": "color", "dimen": "dimen", "bool": "bool",
              "integer": "integer", "string-array": "array", "integer-array": "array", "array": "array",
              "plurals": "plurals", "attr": "attr", "declare-styleable": "styleable", "drawable": "drawable",
              "fraction": "fraction"}
#: Library resource name prefixes and the dependency that provides them.
LIBRARY_PREFIXES = {"Theme.MaterialComponents": "com.google.android.material:material",
                    "Widget.MaterialComponents": "com.google.android.material:material",
                    "Theme.Material3": "com.google.android.material:material",
                    "Widget.Material3": "com.google.android.material:material",
                    "TextAppearance.Material3": "com.google.android.material:material",
                    "Theme.AppCompat": "androidx.appcompat:appcompat",
                    "Widget.AppCompat": "androidx.appcompat:appcompat",
                    "abc_": "androidx.appcompat:appcompat"}
XML_REF = re.compile(r"@(\+)?(?:([\w.]+):)?([a-z]+)/([\w.]+)")
KOTLIN_REF = re.compile(r"(?<![\w.])R\.(id|string|layout|drawable|style|color|dimen|mipmap|menu|xml|raw|array|"
                        r"plurals|bool|integer|font|anim|animator)\.(\w+)")
#: Minimum Gradle for each Android Gradle plugin minor (developer.android.com/build/releases/gradle-plugin).
AGP_MIN_GRADLE = {(8, 5): (8, 7), (8, 6): (8, 7), (8, 7): (8, 9), (8, 8): (8, 10, 2), (8, 9): (8, 11, 1)}


def declared_dependencies(build: Path = BUILD) -> dict[str, str]:
    """``group:artifact`` -> version of app/build.gradle.kts, with ``$var`` versions resolved."""
    text = build.read_text(encoding="utf-8")
    variables = dict(re.findall(r'val (\w+) = "([^"]+)"', text))
    deps = {}
    for coord in re.findall(r'(?:implementation|testImplementation|androidTestImplementation)\("([^"]+)"\)', text):
        group, artifact, version = coord.split(":")
        deps[f"{group}:{artifact}"] = variables.get(version.lstrip("$"), version) if version.startswith("$") else version
    return deps


def resource_inventory(res: Path) -> dict[str, set[str]]:
    """Resource names by type: files in type folders, entries of values files, ``@+id`` declarations."""
    names: dict[str, set[str]] = {}

    def add(kind: str, name: str) -> None:
        names.setdefault(kind, set()).add(name.replace(".", "_") if kind != "style" else name)

    for f in sorted(res.rglob("*.xml")) + sorted(p for p in res.rglob("*") if p.suffix in (".png", ".webp", ".jpg")):
        kind = f.parent.name.split("-")[0]
        if kind == "values":
            for el in ET.parse(f).getroot():
                tag = el.tag if el.tag != "item" else el.get("type", "")
                if tag in VALUE_TAGS and el.get("name"):
                    add(VALUE_TAGS[tag], el.get("name"))
                elif tag == "id" and el.get("name"):
                    add("id", el.get("name"))
        else:
            add(kind, f.name.split(".")[0])
        if f.suffix == ".xml":
            for ref in XML_REF.finditer(f.read_text(encoding="utf-8")):
                if ref.group(1) and ref.group(3) == "id" and not ref.group(2):
                    add("id", ref.group(4))
    return names


def reference_problems(res: Path, manifests: list[Path], kotlin: list[Path], build: Path = BUILD) -> list[str]:
    """Every reference to a resource that neither the app, the framework nor a declared library has."""
    names = resource_inventory(res)
    deps = declared_dependencies(build)
    problems: list[str] = []

    def check(kind: str, name: str, where: str) -> None:
        key = name if kind == "style" else name.replace(".", "_")
        if key in names.get(kind, set()):
            return
        library = next((d for p, d in LIBRARY_PREFIXES.items() if name.startswith(p)), None)
        if library is not None:
            if library not in deps:
                problems.append(f"{where}: @{kind}/{name} comes from {library}, which app/build.gradle.kts does not declare")
            return
        problems.append(f"{where}: @{kind}/{name} does not exist")

    for f in sorted(res.rglob("*.xml")) + manifests:
        where = f.relative_to(f.parents[3]).as_posix() if len(f.parents) > 3 else f.name
        text = f.read_text(encoding="utf-8")
        for plus, package, kind, name in XML_REF.findall(text):
            if plus or package == "android" or kind == "tools":
                continue
            check(kind, name, where)
        root = ET.parse(f).getroot()
        for style in root.iter("style"):
            parent = style.get("parent")
            if parent is None and "." in style.get("name", ""):
                parent = style.get("name").rsplit(".", 1)[0]  # implicit parent by name
            if parent and not parent.startswith(("@android:", "android:")):
                check("style", parent.removeprefix("@style/"), where)
    for kt in kotlin:
        for kind, name in KOTLIN_REF.findall(kt.read_text(encoding="utf-8")):
            check(kind, name, kt.name)
    return problems


def main_manifests() -> list[Path]:
    return sorted((APP / "app/src").glob("*/AndroidManifest.xml"))


def app_kotlin() -> list[Path]:
    return sorted((APP / "app/src").rglob("*.kt"))


# -- resources parse and every reference resolves -----------------------------------------------

def test_every_resource_and_manifest_parses():
    files = sorted(RES.rglob("*.xml")) + main_manifests()
    assert RES / "layout/activity_main.xml" in files and MAIN / "AndroidManifest.xml" in files
    for f in files:
        try:
            ET.parse(f)
        except ET.ParseError as exc:
            pytest.fail(f"{f.relative_to(REPO)} is not well-formed XML: {exc}")


def test_every_resource_reference_exists():
    kotlin = app_kotlin()
    # The parsers must see the references (else the check passes vacuously).
    refs = {m for kt in kotlin for m in KOTLIN_REF.findall(kt.read_text(encoding="utf-8"))}
    assert {("layout", "activity_main"), ("id", "preview"), ("id", "threads"), ("string", "no_model")} <= refs
    names = resource_inventory(RES)
    assert {"preview", "root", "accelerator_gpu", "threads"} <= names["id"] and "Theme.EdgeDerm" in names["style"]
    assert reference_problems(RES, main_manifests(), kotlin) == []


def test_reference_check_finds_faults(tmp_path):
    """The checker reports a missing id, string, style parent, and an undeclared library theme."""
    res = tmp_path / "app/src/main/res"
    (res / "layout").mkdir(parents=True)
    (res / "values").mkdir()
    (res / "layout/screen.xml").write_text(
        '<LinearLayout xmlns:android="http://schemas.android.com/apk/res/android" android:id="@+id/here">'
        '<TextView android:text="@string/missing" android:labelFor="@id/nowhere"/>'
        '<TextView android:text="@android:string/ok" android:layout_below="@id/here"/></LinearLayout>')
    (res / "values/values.xml").write_text(
        '<resources><string name="ok">ok</string><style name="A" parent="Theme.MaterialComponents.Light"/>'
        '<style name="B.C"/><style name="D" parent="@android:style/Theme.Material"/></resources>')
    kt = tmp_path / "Main.kt"
    kt.write_text("val a = R.string.ok; val b = R.id.gone; val c = android.R.id.content; val d = R.layout.screen")
    build = tmp_path / "build.gradle.kts"
    build.write_text('dependencies { implementation("androidx.core:core-ktx:1.13.1") }')
    problems = reference_problems(res, [], [kt], build)
    text = "\n".join(problems)
    assert "@string/missing does not exist" in text and "@id/nowhere does not exist" in text
    assert "@id/gone does not exist" in text and "@style/B does not exist" in text
    assert "com.google.android.material:material, which app/build.gradle.kts does not declare" in text
    assert len(problems) == 5, problems
    build.write_text('dependencies { implementation("com.google.android.material:material:1.12.0") }')
    assert len(reference_problems(res, [], [kt], build)) == 4


def test_theme_and_activity_need_no_library_resources():
    """The app theme is a framework one and the activity a ComponentActivity, so framework-res alone
    compiles the resources (no AppCompat / Material dependency whose themes aapt could not see)."""
    theme = ET.parse(RES / "values/themes.xml").getroot().find("style")
    assert theme.get("parent", "").startswith("@android:style/Theme.Material")
    activity = (KOTLIN / "MainActivity.kt").read_text(encoding="utf-8")
    assert re.search(r"class MainActivity : ComponentActivity\(\)", activity)
    deps = declared_dependencies()
    assert "androidx.appcompat:appcompat" not in deps and "com.google.android.material:material" not in deps


# -- aapt compiles the resources against the framework -------------------------------------------

def _aapt(res: Path, out: Path) -> subprocess.CompletedProcess:
    """``aapt package`` of the main manifest (with the Gradle namespace as its package) and ``res``."""
    aapt = shutil.which("aapt")
    if aapt is None or not FRAMEWORK_RES.is_file():
        pytest.skip("aapt or the framework resources are missing (apt-get install aapt android-framework-res)")
    build = BUILD.read_text(encoding="utf-8")
    namespace = re.search(r'namespace = "([\w.]+)"', build).group(1)
    min_sdk = re.search(r"minSdk = (\d+)", build).group(1)
    out.mkdir(parents=True, exist_ok=True)
    manifest = out / "AndroidManifest.xml"
    manifest.write_text((MAIN / "AndroidManifest.xml").read_text(encoding="utf-8")
                        .replace("<manifest ", f'<manifest package="{namespace}" ', 1), encoding="utf-8")
    (out / "gen").mkdir(exist_ok=True)
    # Debian's framework-res is API 29, so that is the target aapt can check against (the app's is 35).
    return subprocess.run([aapt, "package", "-f", "-m", "-J", str(out / "gen"), "-M", str(manifest), "-S", str(res),
                           "-I", str(FRAMEWORK_RES), "--min-sdk-version", min_sdk, "--target-sdk-version", "29",
                           "-F", str(out / "resources.apk")], capture_output=True, text=True, timeout=120)


def test_aapt_compiles_resources_against_the_framework(tmp_path):
    proc = _aapt(RES, tmp_path / "out")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    with zipfile.ZipFile(tmp_path / "out/resources.apk") as apk:
        assert {"AndroidManifest.xml", "resources.arsc", "res/layout/activity_main.xml"} <= set(apk.namelist())
    # The R class aapt generated has every R.x.y the Kotlin code uses.
    r_java = next((tmp_path / "out/gen").rglob("R.java")).read_text()
    generated = set()
    for kind, body in re.findall(r"public static final class (\w+) \{(.*?)\n    \}", r_java, re.S):
        generated |= {(kind, n) for n in re.findall(r"public static final int (\w+)=", body)}
    used = {m for kt in app_kotlin() for m in KOTLIN_REF.findall(kt.read_text(encoding="utf-8"))}
    assert used and used <= generated, sorted(used - generated)


def test_aapt_fails_on_a_broken_reference(tmp_path):
    res = tmp_path / "res"
    shutil.copytree(RES, res)
    layout = res / "layout/activity_main.xml"
    layout.write_text(layout.read_text().replace("@string/capture", "@string/no_such_string"))
    proc = _aapt(res, tmp_path / "out")
    assert proc.returncode != 0 and "no_such_string" in proc.stdout + proc.stderr


# -- the Gradle wrapper ------------------------------------------------------------------------------

def test_gradle_wrapper_jar_is_genuine_and_its_provenance_recorded():
    assert WRAPPER_JAR.is_file(), "android_demo/gradle/wrapper/gradle-wrapper.jar is not committed"
    with zipfile.ZipFile(WRAPPER_JAR) as jar:
        names = set(jar.namelist())
        assert "org/gradle/wrapper/GradleWrapperMain.class" in names and "META-INF/MANIFEST.MF" in names
        assert jar.read("org/gradle/wrapper/GradleWrapperMain.class")[:4] == b"\xca\xfe\xba\xbe"
        assert b"Implementation-Title: Gradle Wrapper" in jar.read("META-INF/MANIFEST.MF")
    digest = hashlib.sha256(WRAPPER_JAR.read_bytes()).hexdigest()
    readme = (APP / "README.md").read_text(encoding="utf-8")
    props = WRAPPER_PROPS.read_text(encoding="utf-8")
    for where, text in (("README.md", readme), ("gradle-wrapper.properties", props)):
        assert digest in text, f"{where} does not record the jar's SHA-256 {digest}"
        assert "@react-native-community/template@0.77.0" in text, f"{where} does not name the npm package"
    javap = shutil.which("javap")
    if javap:  # a loadable class with the launcher's entry point
        proc = subprocess.run([javap, "-cp", str(WRAPPER_JAR), "org.gradle.wrapper.GradleWrapperMain"],
                              capture_output=True, text=True, timeout=60)
        assert "public static void main(java.lang.String[])" in proc.stdout, proc.stderr


def test_gradle_version_suits_the_android_gradle_plugin():
    agp = re.search(r'id\("com.android.application"\) version "(\d+)\.(\d+)\.\d+"',
                    (APP / "build.gradle.kts").read_text(encoding="utf-8"))
    gradle = re.search(r"gradle-(\d+(?:\.\d+)+)-bin\.zip", WRAPPER_PROPS.read_text(encoding="utf-8"))
    assert agp and gradle
    need = AGP_MIN_GRADLE[(int(agp.group(1)), int(agp.group(2)))]
    have = tuple(int(x) for x in gradle.group(1).split("."))
    assert have >= need, f"AGP {agp.group(1)}.{agp.group(2)} needs Gradle {need}, the wrapper names {have}"


# -- dependencies and the app glue -----------------------------------------------------------------

def test_dependencies_the_code_needs_are_declared_with_matching_versions():
    deps = declared_dependencies()
    for needed in ("com.google.ai.edge.litert:litert", "com.google.ai.edge.litert:litert-gpu",
                   "androidx.lifecycle:lifecycle-viewmodel-ktx", "androidx.lifecycle:lifecycle-livedata-ktx",
                   "androidx.activity:activity-ktx", "androidx.core:core-ktx", "androidx.camera:camera-core"):
        assert needed in deps, f"app/build.gradle.kts does not declare {needed}"
    # One version per family (litert-gpu of another release than litert fails at run time).
    for group in ("com.google.ai.edge.litert", "androidx.lifecycle", "androidx.camera"):
        versions = {v for k, v in deps.items() if k.startswith(group + ":")}
        assert len(versions) == 1, f"{group}: several versions {versions}"
    # The TensorFlow-branded GPU artefact would duplicate LiteRT's classes.
    assert not any(k.startswith("org.tensorflow:") for k in deps)
    sources = "\n".join(p.read_text(encoding="utf-8") for p in app_kotlin())
    assert "org.tensorflow.lite.gpu.GpuDelegate" in sources and "androidx.lifecycle.AndroidViewModel" in sources


def _kt(name: str) -> str:
    return (KOTLIN / name).read_text(encoding="utf-8")


def test_gpu_is_chosen_only_where_supported_with_cpu_fallback():
    clf = _kt("Classifier.kt")
    assert "isDelegateSupportedOnThisDevice" in clf and "DelegatePolicy.plan(" in clf
    assert "DelegatePolicy.afterGpuFailure(" in clf and "setNumThreads(plan.threads)" in clf
    assert not re.search(r"setNumThreads\(\s*\d", clf), "thread count hard-coded"
    layout = (RES / "layout/activity_main.xml").read_text(encoding="utf-8")
    assert "@+id/accelerator_gpu" in layout and "<SeekBar" in layout


def test_images_are_decoded_and_captured_within_a_budget():
    io = _kt("ImageIO.kt")
    assert "inSampleSize = ImageBudget.sampleSize(" in io
    activity = _kt("MainActivity.kt")
    assert "setResolutionSelector(" in activity and "ImageBudget.CAPTURE_WIDTH" in activity
    # One bitmap: the decoded one is shown; no second full-size copy made from the pixel array.
    assert "Bitmap.createBitmap(px.argb" not in activity + _kt("ClassifierViewModel.kt")


def test_activity_handles_insets_keeps_the_model_in_a_viewmodel_and_no_executor():
    activity = _kt("MainActivity.kt")
    assert "enableEdgeToEdge()" in activity and "ViewCompat.setOnApplyWindowInsetsListener(" in activity
    assert "by viewModels()" in activity and "Classifier.load" not in activity
    # Camera callbacks go to the main executor (never shut down), not an executor the activity owns.
    assert "Executors." not in activity and ".shutdown()" not in activity
    assert "takePicture(ContextCompat.getMainExecutor(this)" in activity
    vm = _kt("ClassifierViewModel.kt")
    assert "override fun onCleared()" in vm and "worker.close(" in vm and "image.close()" in vm
