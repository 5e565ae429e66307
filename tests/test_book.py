"""The HTML book builds with no Sphinx warning, from the executed notebooks, with its generated pages."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tools import build_book  # noqa: E402
from tools.toc import toc_notebooks  # noqa: E402

HTML = ROOT / "_build" / "html"


_BUILD: dict[str, int] = {}  # the build runs once per session, even when it fails


@pytest.fixture(scope="module")
def built(executed: dict) -> Path:
    failed = [s for s, r in executed.items() if not r["ok"]]
    if failed:
        pytest.fail(f"notebooks failed, the book cannot be built: {failed}")
    if "code" not in _BUILD:
        _BUILD["code"] = build_book.build(profile="ci")
    assert _BUILD["code"] == 0, "jupyter-book build -W -n failed (see the Sphinx warnings above)"
    return HTML


@pytest.mark.book
def test_index_and_chapters_exist(built: Path) -> None:
    assert (built / "index.html").exists()
    for slug in toc_notebooks():
        page = built / "notebooks" / f"{slug}.html"
        assert page.exists(), f"no page for {slug}"
        text = page.read_text(encoding="utf-8")
        assert "colab.research.google.com/github/suma-book/suma/blob/main/notebooks/" + slug in text
        assert "✓" in text, f"{slug}: no claim output rendered"


@pytest.mark.book
def test_ledger_lists_every_claim(built: Path) -> None:
    text = (built / "book" / "ledger.html").read_text(encoding="utf-8")
    m = re.search(r"<strong>(\d+) claims</strong>", text)
    assert m and int(m.group(1)) > 0
    for slug in toc_notebooks():
        assert f"{slug}.html" in text, f"ledger has no row for {slug}"
    assert "❌" not in text


@pytest.mark.book
def test_execution_report_and_api(built: Path) -> None:
    report = (built / "book" / "execution-report.html").read_text(encoding="utf-8")
    for slug in toc_notebooks():
        assert f"{slug}.html" in report
    api = (built / "book" / "api.html").read_text(encoding="utf-8")
    assert "suma_lib.claims.symbolic" in api
    assert (built / "book" / "references.html").exists()
