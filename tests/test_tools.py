"""Unit tests of the book tooling: table of contents, ledger and execution report."""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tools import report  # noqa: E402
from tools.run_notebooks import source_hash  # noqa: E402
from tools.toc import toc_files, toc_notebooks  # noqa: E402


def _fake_executed_notebook() -> dict:
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_markdown_cell("# A chapter | with a pipe\n\ntext"),
        nbformat.v4.new_code_cell("cfg = setup_notebook()"),
        nbformat.v4.new_code_cell("claims.close(...)"),
    ]
    nb.cells[1].outputs = [
        nbformat.v4.new_output(
            "display_data", data={"text/plain": "profile=ci"},
            metadata={"suma_env": {"profile": "ci", "device": "cpu", "torch": "2.x", "python": "3.11"}},
        )
    ]
    nb.cells[2].outputs = [
        nbformat.v4.new_output(
            "display_data", data={"text/plain": "✓"},
            metadata={"suma_claim": {"claim": "a | b", "method": "numeric", "measured": "1",
                                     "expected": "1", "tolerance": "exact", "status": "pass"}},
        ),
        nbformat.v4.new_output("stream", name="stdout", text="noise"),
    ]
    nb.cells[1].metadata["papermill"] = {"duration": 1.5}
    nb.cells[2].metadata["papermill"] = {"duration": 2.0}
    nb.metadata["suma"] = {"seconds": 7.0}
    return nb


def test_report_reads_claims_env_and_runtime() -> None:
    nb = _fake_executed_notebook()
    assert [c["claim"] for c in report.claims_of(nb)] == ["a | b"]
    assert report.env_of(nb)["profile"] == "ci"
    assert report.runtime_of(nb) == 3.5
    assert report.title_of(nb, "x") == "A chapter | with a pipe"


def test_ledger_and_report_escape_table_cells() -> None:
    nbs = {"demo": _fake_executed_notebook()}
    ledger = report.ledger_markdown(nbs)
    assert "**1 claims**" in ledger and "**1 passed**" in ledger
    assert "a \\| b" in ledger  # a pipe inside a claim must not break the Markdown table
    row = [ln for ln in ledger.splitlines() if ln.startswith("| [demo]")][0]
    assert row.count(" | ") == 6
    text = report.report_markdown(nbs)
    assert "| [demo](../notebooks/demo.ipynb) | 3.5 | 7.0 | ci | cpu | 1 |" in text


def test_toc_lists_parts_and_notebooks() -> None:
    files = toc_files()
    assert files[0] == "book/intro"
    for page in ("book/running", "book/api", "book/ledger", "book/execution-report", "book/references"):
        assert page in files
    assert all("/" not in slug for slug in toc_notebooks())


def test_source_hash_depends_on_profile() -> None:
    slugs = toc_notebooks()
    if slugs and (ROOT / "notebooks" / f"{slugs[0]}.ipynb").exists():
        assert source_hash(slugs[0], "ci") != source_hash(slugs[0], "full")
