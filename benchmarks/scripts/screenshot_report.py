"""Open a report.html in headless Chromium and save a PNG screenshot, so the page is seen rendered.

Usage::

    python benchmarks/scripts/screenshot_report.py RUN_OR_DEMO/report.html [--out shot.png] [--height 4000]

(from the repository root).

Needs Debian's ``chromium`` (``apt-get install -y chromium``) or another Chromium/Chrome on PATH.
Chromium runs with a throw-away profile and every network-using feature off.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def find_chromium() -> str | None:
    """Path of the first Chromium-like browser on PATH, or None."""
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    return None


def screenshot(html: Path, out: Path, width: int = 1280, height: int = 4000, timeout: float = 120.0) -> Path:
    """Render ``html`` headless and write a PNG screenshot to ``out``.

    Raises:
        FileNotFoundError: No Chromium on PATH, or ``html`` is missing.
        RuntimeError: Chromium failed or wrote no screenshot.
    """
    html, out = Path(html).resolve(), Path(out).resolve()
    if not html.is_file():
        raise FileNotFoundError(f"{html} does not exist; run `edge-derm report DIR` first")
    browser = find_chromium()
    if browser is None:
        raise FileNotFoundError("no chromium on PATH; install it with `apt-get install -y chromium`")
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="edge-derm-chromium-") as profile:
        tmp_png = Path(profile) / "shot.png"
        cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
               "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
               f"--user-data-dir={profile}", f"--screenshot={tmp_png}", f"--window-size={width},{height}",
               html.as_uri()]
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
        if not tmp_png.is_file() or tmp_png.stat().st_size == 0:
            tail = (res.stderr or res.stdout).strip().splitlines()[-3:]
            raise RuntimeError(f"chromium exited {res.returncode} without a screenshot: {' | '.join(tail)}")
        shutil.move(str(tmp_png), out)
    return out


def table_bottom(html: Path, heading: str, width: int = 1280, height: int = 800, timeout: float = 120.0) -> float:
    """Where the first table after the ``<h*>`` titled ``heading`` ends on the rendered page (CSS pixels from
    the top): headless Chromium lays out a copy of ``html`` with a script at the end of the body that
    measures it (layout is synchronous; nothing above the table waits for an image) and reports the figure
    through the page title (``--dump-dom``). A figure below ``height`` is below the fold.

    Raises:
        FileNotFoundError / RuntimeError: as :func:`screenshot`; RuntimeError also when no such table exists.
    """
    import json
    import re

    html = Path(html).resolve()
    browser = find_chromium()
    if browser is None:
        raise FileNotFoundError("no chromium on PATH; install it with `apt-get install -y chromium`")
    probe = ("<script>(function () {"
             "var hs = Array.from(document.querySelectorAll('h1,h2,h3,h4'));"
             f"var h = hs.find(function (e) {{ return e.textContent.trim() === {json.dumps(heading)}; }});"
             "var t = null; for (var e = h ? h.nextElementSibling : null; e; e = e.nextElementSibling) {"
             "  if (e.tagName === 'TABLE') { t = e; break; } var inner = e.querySelector && e.querySelector('table');"
             "  if (inner) { t = inner; break; } }"
             "document.title = 'BOTTOM:' + (t ? t.getBoundingClientRect().bottom : -1); })();</script>")
    text = html.read_text(encoding="utf-8")
    with tempfile.TemporaryDirectory(prefix="edge-derm-chromium-") as profile:
        copy = html.parent / f".{html.stem}.probe.html"  # beside the original: its relative images resolve
        # the report's Content-Security-Policy allows no script: the probe copy allows this inline one
        text = re.sub(r"(Content-Security-Policy\"\s+content=\"[^\"]*)", r"\1; script-src 'unsafe-inline'", text, count=1)
        copy.write_text(text.replace("</body>", probe + "</body>"), encoding="utf-8")
        try:
            cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                   "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
                   f"--user-data-dir={profile}", f"--window-size={width},{height}", "--virtual-time-budget=5000",
                   "--dump-dom", copy.as_uri()]
            res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
        finally:
            copy.unlink(missing_ok=True)
    found = re.search(r"<title>BOTTOM:(-?[\d.]+)</title>", res.stdout)
    if not found:
        raise RuntimeError(f"chromium exited {res.returncode} without a layout figure")
    bottom = float(found.group(1))
    if bottom < 0:
        raise RuntimeError(f"no table after a heading {heading!r} in {html}")
    return bottom


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("html", type=Path, help="report.html to render")
    ap.add_argument("--out", type=Path, default=None, help="PNG to write (default: report.png beside the HTML)")
    ap.add_argument("--width", type=int, default=1280)
    ap.add_argument("--height", type=int, default=4000)
    args = ap.parse_args(argv)
    out = args.out or args.html.with_name("report.png")
    try:
        path = screenshot(args.html, out, args.width, args.height)
    except (FileNotFoundError, RuntimeError, subprocess.TimeoutExpired) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
