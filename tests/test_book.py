"""The HTML book builds with no Sphinx warning, from the executed notebooks, with its generated pages."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tools import build_book
from tools.toc import toc_notebooks

ROOT = Path(__file__).resolve().parent.parent
HTML = ROOT / "_build" / "html"


@pytest.fixture(scope="module")
def built(executed: dict) -> Path:
    failed = [s for s, r in executed.items() if not r["ok"]]
    if failed:
        pytest.fail(f"notebooks failed, the book cannot be built: {failed}")
    assert build_book.build_once("ci") == 0, "jupyter-book build -W -n failed (see the Sphinx warnings above)"
    return HTML


def _page(built: Path, rel: str) -> str:
    return (built / rel).read_text(encoding="utf-8")


@pytest.mark.book
def test_index_and_chapters_exist(built: Path) -> None:
    assert (built / "index.html").exists()
    for slug in toc_notebooks():
        page = built / "notebooks" / f"{slug}.html"
        assert page.exists(), f"no page for {slug}"
        text = page.read_text(encoding="utf-8")
        assert "colab.research.google.com/github/suma-book/suma/blob/main/notebooks/" + slug in text
        assert 'class="suma-claim suma-pass"' in text, f"{slug}: no claim line rendered"
        assert 'id="claim-' in text, f"{slug}: claims have no anchors"


@pytest.mark.book
def test_ledger_groups_claims_by_chapter(built: Path) -> None:
    text = _page(built, "book/ledger.html")
    m = re.search(r"<strong>(\d+) claims</strong>", text)
    assert m and int(m.group(1)) > 0
    for slug in toc_notebooks():
        assert f'id="ledger-{slug}"' in text, f"ledger has no section for {slug}"
        assert f"../notebooks/{slug}.html#claim-" in text, f"ledger rows of {slug} link to no claim"
    assert "suma-ledger-chapter suma-fail" not in text, "the ledger lists a failed claim"


@pytest.mark.book
def test_errata_page_lists_every_erratum(built: Path) -> None:
    text = _page(built, "book/errata.html")
    m = re.search(r"<strong>(\d+) errata</strong>", text)
    assert m and int(m.group(1)) >= 1
    for anchor in re.findall(r'href="\.\./notebooks/([a-z0-9-]+)\.html#(erratum-[a-z0-9-]+)"', text):
        chapter = _page(built, f"notebooks/{anchor[0]}.html")
        assert f'id="{anchor[1]}"' in chapter, f"erratum anchor {anchor} missing in its chapter"


@pytest.mark.book
def test_execution_report_benchmarks_and_api(built: Path) -> None:
    report = _page(built, "book/execution-report.html")
    assert "Built" in report and "Versions" in report
    for slug in toc_notebooks():
        assert f"{slug}.html" in report
    assert "Goals:" in _page(built, "book/benchmarks.html") or not list(
        (ROOT / "benchmarks" / "results").glob("*.md"))
    api = _page(built, "book/api.html")
    assert 'href="api/claims.html"' in api
    claims_page = _page(built, "book/api/claims.html")
    assert "suma_lib.claims.symbolic" in claims_page
    smooth = _page(built, "book/api/smooth.html")
    assert "../../notebooks/squareplus.html" in smooth, "docstrings' Chapter: lines do not link"
    assert (built / "book" / "references.html").exists()
