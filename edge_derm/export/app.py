"""The Android app folder: which project it is, where the assets go, and swapping them in all or nothing.

``fsutil.staged_dir`` cannot do this swap: it replaces one whole folder, and an export replaces five entries in
two asset folders that may hold other files of the app; :func:`swap_in` moves just those.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
from pathlib import Path

from edge_derm.errors import EdgeDermError

#: Asset names the Kotlin app opens (MainActivity / ClassifierTest); keep in sync.
MODEL_ASSET = "model.tflite"
LABELS_ASSET = "labels.txt"
METADATA_ASSET = "model.json"
EXPECTED_ASSET = "expected_results.json"
SAMPLES_DIR = "samples"
MAIN_ASSETS = Path("app/src/main/assets")
TEST_ASSETS = Path("app/src/androidTest/assets")
APP_MARKER = Path("app/src/main/AndroidManifest.xml")
#: The app module's Gradle namespace (app/build.gradle.kts); another Android project is refused.
APP_NAMESPACE = "org.edgederm.demo"


class NotTheAppError(EdgeDermError):
    """``--app`` names a folder that is not the edge-derm Android project (nothing was written)."""


def check_app(app: Path) -> Path:
    """``app`` if it is the edge-derm Android project; NotTheAppError otherwise.

    The project is recognised by its manifest and, when present, by the namespace its app module
    declares, so the assets never land in another Android project or a half-matching folder.
    """
    app = Path(app)
    hint = "pass --app PATH/TO/android_demo"
    if (app / "android_demo" / APP_MARKER).is_file():
        hint = f"did you mean --app {app / 'android_demo'}?"
    if not (app / APP_MARKER).is_file():
        what = "does not exist" if not app.exists() else "is not a folder" if not app.is_dir() else f"has no {APP_MARKER.as_posix()}"
        raise NotTheAppError(f"{app} is not the edge-derm Android app ({what}); {hint}")
    namespaces = []
    for name in ("build.gradle.kts", "build.gradle"):
        gradle = app / "app" / name
        if gradle.is_file():
            namespaces += re.findall(r"""\bnamespace\s*=?\s*["']([\w.]+)["']""", gradle.read_text(encoding="utf-8", errors="replace"))
    manifest = (app / APP_MARKER).read_text(encoding="utf-8", errors="replace")
    namespaces += re.findall(r"""<manifest\b[^>]*\bpackage\s*=\s*["']([\w.]+)["']""", manifest)
    other = [n for n in namespaces if n != APP_NAMESPACE]
    if other:
        raise NotTheAppError(f"{app} is another Android project ({other[0]}), not the edge-derm Android app "
                             f"({APP_NAMESPACE}); {hint}")
    return app



def swap_in(moves: list[tuple[Path, Path]], drop: list[Path], backup: Path) -> None:
    """Move each staged ``(source, target)`` onto its target and remove ``drop``, all or nothing.

    The targets' previous contents are first moved aside into ``backup`` (same file system, so every
    step is a rename); if any step fails, what was placed is removed and the previous contents are
    put back before the error propagates.
    """
    backup.mkdir(parents=True, exist_ok=True)
    saved: list[tuple[Path, Path]] = []
    placed: list[Path] = []
    try:
        for i, target in enumerate([t for _, t in moves] + list(drop)):
            if target.exists():
                keep = backup / f"{i}-{target.name}"
                os.replace(target, keep)
                saved.append((keep, target))
        for source, target in moves:
            os.replace(source, target)
            placed.append(target)
    except BaseException:
        for target in placed:
            if target.is_dir():
                shutil.rmtree(target, ignore_errors=True)
            else:
                with contextlib.suppress(FileNotFoundError):
                    target.unlink()
        for keep, target in reversed(saved):
            with contextlib.suppress(OSError):
                os.replace(keep, target)
        raise


def targets(app: Path) -> list[Path]:
    """Every path an export writes in ``app`` (what ``--force`` replaces)."""
    return [app / MAIN_ASSETS / MODEL_ASSET, app / MAIN_ASSETS / LABELS_ASSET, app / MAIN_ASSETS / METADATA_ASSET,
            app / TEST_ASSETS / EXPECTED_ASSET, app / TEST_ASSETS / SAMPLES_DIR]

