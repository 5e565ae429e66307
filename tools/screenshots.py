"""Render the book's main pages in headless Chromium and save screenshots for review.

Usage (from the repository root)::

    python -m tools.screenshots            # use _build/html (build it first if it is missing)
    python -m tools.screenshots --build    # build the book first (executes stale notebooks)
    python -m tools.screenshots --pages book/ledger notebooks/squareplus

Each page is rendered at desktop width (1400 px) and phone width (400 px), in the light and the dark theme,
into ``_build/screenshots/<page>-<width>-<theme>.png``. It needs Debian's ``chromium`` (``apt-get install
chromium``; ``fonts-noto-cjk`` too, or the articles' Chinese titles show as boxes), which CI does not:
this is a review tool, not a test; ``tests/test_html.py`` holds the fast
checks that run in the suite.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

from tools import build_book
from tools.toc import ROOT

HTML = ROOT / "_build" / "html"
OUT = ROOT / "_build" / "screenshots"
PAGES = (
    "index",
    "notebooks/squareplus",
    "notebooks/init-geometry",
    "book/ledger",
    "book/errata",
    "book/execution-report",
    "book/benchmarks",
    "book/api",
    "book/api/smooth",
)
WIDTHS = {"desktop": (1400, 2200), "phone": (400, 2200)}
# Blink's preferred colour scheme: 0 dark, 1 light (the theme follows it in its "auto" mode).
THEMES = {"light": 1, "dark": 0}


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    raise SystemExit("no Chromium found: apt-get update && apt-get install -y chromium")


def shoot(browser: str, page: str, width: int, height: int, scheme: int, out: Path) -> bool:
    """One screenshot; return whether Chromium wrote it."""
    url = (HTML / f"{page}.html").as_uri()
    cmd = [
        browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
        "--force-device-scale-factor=1", f"--window-size={width},{height}",
        f"--blink-settings=preferredColorScheme={scheme}", "--virtual-time-budget=8000",
        "--run-all-compositor-stages-before-draw", f"--screenshot={out}", url,
    ]
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        subprocess.run(cmd, capture_output=True, timeout=180, check=False)
    except subprocess.TimeoutExpired:
        return False
    return out.exists()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--build", action="store_true", help="build the book first")
    parser.add_argument("--pages", nargs="*", default=list(PAGES), help="pages, e.g. book/ledger")
    parser.add_argument("--widths", nargs="*", default=list(WIDTHS), choices=list(WIDTHS))
    parser.add_argument("--themes", nargs="*", default=list(THEMES), choices=list(THEMES))
    args = parser.parse_args(argv)
    if args.build or not (HTML / "index.html").exists():
        code = build_book.build()
        if code:
            return code
    browser = chromium()
    failed = []
    for page in args.pages:
        if not (HTML / f"{page}.html").exists():
            failed.append(f"{page} (no such page)")
            continue
        for wname in args.widths:
            width, height = WIDTHS[wname]
            for theme in args.themes:
                out = OUT / f"{page.replace('/', '-')}-{wname}-{theme}.png"
                out.unlink(missing_ok=True)
                if shoot(browser, page, width, height, THEMES[theme], out):
                    print(f"  {out.relative_to(ROOT)}")
                else:
                    failed.append(str(out.relative_to(ROOT)))
    for f in failed:
        print(f"error: no screenshot {f}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
