"""Fast checks of the built HTML book, as a reader would meet it (no browser needed).

No raw Python values on any page, no Markdown emphasis inside the ledger's math, a numbered caption and alt
text on every figure of a chapter, math that renders without the internet, no broken local link or anchor.
``tools/screenshots.py`` renders the same pages in a real browser for review.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
from bs4 import BeautifulSoup

from tools import build_book
from tools.toc import toc_notebooks

ROOT = Path(__file__).resolve().parent.parent
HTML = ROOT / "_build" / "html"
pytestmark = pytest.mark.book


@pytest.fixture(scope="module")
def built(executed: dict) -> Path:
    failed = [s for s, r in executed.items() if not r["ok"]]
    if failed:
        pytest.fail(f"notebooks failed, the book cannot be built: {failed}")
    assert build_book.build_once("ci") == 0, "jupyter-book build -W -n failed"
    return HTML


def _pages(built: Path) -> list[Path]:
    return sorted(p for p in built.rglob("*.html") if "_static" not in p.parts and "_sources" not in p.parts)


@functools.cache
def _soup(path: Path) -> BeautifulSoup:
    return BeautifulSoup(path.read_text(encoding="utf-8"), "html.parser")


def _article(soup: BeautifulSoup):
    return soup.find("article") or soup


def test_no_raw_python_values_on_pages(built: Path) -> None:
    bad = []
    for page in _pages(built):
        if "api" in page.parts:  # signatures such as ClaimRecord(claim, method, ...) are the point there
            continue
        text = _article(_soup(page)).get_text()
        if re.search(r"ClaimRecord\(|\{'item': |np\.(int|float)64\(", text):
            bad.append(str(page.relative_to(built)))
    assert not bad, f"raw Python values on {bad}"


def test_no_emphasis_inside_ledger_math(built: Path) -> None:
    soup = _soup(built / "book" / "ledger.html")
    tables = soup.select("table.suma-ledger")
    assert tables, "the ledger has no tables"
    for table in tables:
        assert not table.find(["em", "strong"]), "Markdown emphasis inside the ledger"
    assert "**" not in soup.select_one("article").get_text()


def test_every_chapter_figure_has_a_caption_and_alt_text(built: Path) -> None:
    missing = []
    for slug in toc_notebooks():
        soup = _soup(built / "notebooks" / f"{slug}.html")
        for img in soup.select("div.cell_output img"):
            figure = img.find_parent("figure")
            caption = figure.find("figcaption") if figure else None
            alt = img.get("alt", "")
            if not caption or not re.match(r"^Figure \d", caption.get_text(" ", strip=True)) or \
                    not alt or re.fullmatch(r"[0-9a-f]{16,}(\.\w+)?", alt):
                missing.append(f"{slug}: {img.get('src')}")
    assert not missing, f"{len(missing)} figures without a numbered caption or alt text: {missing[:5]}"


def test_math_needs_no_external_script(built: Path) -> None:
    assert (built / "_static" / "mathjax" / "tex-chtml.js").exists(), "MathJax is not served from the build"
    for page in [built / "book" / "intro.html", built / "book" / "ledger.html",
                 built / "notebooks" / f"{toc_notebooks()[0]}.html"]:
        scripts = [s.get("src", "") for s in _soup(page).find_all("script")]
        external = [s for s in scripts if urlsplit(s).scheme in ("http", "https") and "mathjax" in s.lower()]
        assert not external, f"{page.name} loads MathJax from {external}"
        assert any("mathjax/tex-chtml.js" in s for s in scripts), f"{page.name} does not load MathJax"


def test_no_broken_local_links_or_anchors(built: Path) -> None:
    broken = []
    for page in _pages(built):
        soup = _soup(page)
        for tag, attr in (("a", "href"), ("img", "src"), ("script", "src"), ("link", "href")):
            for el in soup.find_all(tag):
                url = el.get(attr)
                if not url or url.startswith(("mailto:", "javascript:", "data:")):
                    continue
                parts = urlsplit(url)
                if parts.scheme or parts.netloc:
                    continue
                target = (page.parent / unquote(parts.path)).resolve() if parts.path else page
                if not target.exists():
                    broken.append(f"{page.relative_to(built)} -> {url}")
                    continue
                if parts.fragment and target.suffix == ".html":
                    ids = _ids(target)
                    if unquote(parts.fragment) not in ids:
                        broken.append(f"{page.relative_to(built)} -> {url} (no such anchor)")
    assert not broken, f"{len(broken)} broken local links: {broken[:10]}"


@functools.cache
def _ids(path: Path) -> frozenset[str]:
    return frozenset(el["id"] for el in _soup(path).find_all(id=True))


def test_claim_lines_are_short_margin_notes(built: Path) -> None:
    long = []
    for slug in toc_notebooks():
        for summary in _soup(built / "notebooks" / f"{slug}.html").select("details.suma-claim > summary"):
            text = summary.get_text(" ", strip=True)
            if len(text) > 200:
                long.append(f"{slug}: {text[:80]}…")
    assert not long, f"claim lines over 200 characters: {long[:5]}"


def test_citation_labels_name_one_reference_each(built: Path) -> None:
    """Two different references never share the label a reader sees in the text ("Su 2021a", "Su 2021b")."""
    targets: dict[str, set[str]] = {}
    for page in _pages(built):
        for a in _article(_soup(page)).select('a.reference.internal[href*="references.html#"]'):
            label = a.get_text(strip=True)
            targets.setdefault(label, set()).add(a["href"].rsplit("#", 1)[-1])
    assert targets, "no citation found in the book"
    shared = {label: sorted(ids) for label, ids in targets.items() if len(ids) > 1}
    assert not shared, f"citation labels that name several references: {shared}"


def test_markdown_tables_in_outputs_render_as_tables(built: Path) -> None:
    """A table a chapter prints with display(Markdown(...)) reaches the reader as a table, not as pipes."""
    raw = []
    for slug in toc_notebooks():
        for p in _article(_soup(built / "notebooks" / f"{slug}.html")).select(".cell_output p"):
            if re.match(r"\s*\|.*\|\s*\n\s*\|[\s:|—–-]+\|", p.get_text()):
                raw.append(slug)
    assert not raw, f"Markdown tables rendered as text in {sorted(set(raw))}"
