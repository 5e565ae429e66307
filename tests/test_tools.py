"""Unit tests of the book tooling: table of contents, staging, ledger, errata, report and benchmarks pages."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import nbformat
import pytest

from suma_lib import claims
from suma_lib.notebook import PROFILES
from tools import build_book, report, run_notebooks
from tools.run_notebooks import source_hash
from tools.toc import toc_files, toc_notebooks

ROOT = Path(__file__).resolve().parent.parent


def _claim_output(name: str, status: str = "pass", **extra) -> dict:
    rec = {"claim": name, "method": "numeric", "measured": "1", "expected": "1", "tolerance": "exact",
           "status": status, **extra}
    return nbformat.v4.new_output("display_data", data={"text/plain": "✓", "text/html": "<div>old</div>"},
                                  metadata={"suma_claim": rec})


def _fake_executed_notebook() -> dict:
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_markdown_cell(
            "# A chapter | with a pipe\n\nBased on 《标题》 by Su Jianlin, <https://kexue.fm/archives/1234>."
        ),
        nbformat.v4.new_code_cell("try:\n    import suma_lib\nexcept ImportError:\n    pip install"),
        nbformat.v4.new_code_cell('profile = "ci"', metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell("cfg = suma_lib.setup_notebook(profile)"),
        nbformat.v4.new_code_cell("claims.close(...)"),
        nbformat.v4.new_code_cell("for x in xs: claims.close(...)"),
        nbformat.v4.new_markdown_cell(
            "```{admonition} Erratum\n:class: warning\nThe article says 2; 3 holds.\n```\n\ntext\n\n"
            "```{admonition} Erratum: the sign\n:class: erratum\n:name: erratum-demo-sign\nIt is minus.\n```"
        ),
        nbformat.v4.new_code_cell("claims.summary()"),
        nbformat.v4.new_code_cell("claims.article_map([...])"),
    ]
    nb.cells[3].outputs = [
        nbformat.v4.new_output(
            "display_data", data={"text/plain": "profile=ci"},
            metadata={"suma_env": {"profile": "ci", "device": "cpu", "torch": "2.x", "python": "3.11"}},
        )
    ]
    nb.cells[4].outputs = [
        _claim_output("a | b $x^2$"),
        nbformat.v4.new_output("stream", name="stdout", text="noise"),
        nbformat.v4.new_output(
            "display_data",
            data={"image/png": "iVBOR", "image/svg+xml": "<svg/>", "text/plain": "<Figure>"}),
    ]
    nb.cells[5].outputs = [_claim_output(f"error at x = {x}") for x in (0.1, 0.2, 0.5, 1.0, 2.0)]
    nb.cells[7].outputs = [
        nbformat.v4.new_output("display_data", data={"text/html": "<p>t</p>", "text/plain": "t"},
                               metadata={"suma_summary": {"claims": 6, "passed": 6}}),
        nbformat.v4.new_output("execute_result", data={"text/plain": "[ClaimRecord(claim='a', ...)]"},
                               execution_count=1),
    ]
    rows = [{"item": "eq. (1)", "status": "checked", "claims": ["a | b $x^2$"], "note": ""},
            {"item": "eq. (2)", "status": "departs", "claims": [], "note": "see the Erratum"},
            {"item": "aside", "status": "omitted", "claims": [], "note": "off topic"}]
    nb.cells[8].outputs = [
        nbformat.v4.new_output("display_data", data={"text/html": "<p>m</p>", "text/plain": "m"},
                               metadata={"suma_article_map": rows}),
        nbformat.v4.new_output("execute_result", data={"text/plain": "[{'item': 'eq. (1)', ...}]"},
                               execution_count=2),
    ]
    nb.cells[3].metadata["papermill"] = {"duration": 1.5}
    nb.cells[4].metadata["papermill"] = {"duration": 2.0}
    nb.metadata["suma"] = {"seconds": 7.0, "status": "ok", "date": "2026-11-30 08:00 UTC", "commit": "abc1234",
                           "load": 3.5, "cores": 2}
    return json.loads(nbformat.writes(nb))


# ------------------------------------------------------------------------------------ reading
def test_report_reads_claims_env_runtime_and_article() -> None:
    nb = _fake_executed_notebook()
    recs = report.claims_of(nb)
    assert recs[0]["claim"] == "a | b $x^2$" and recs[0]["anchor"] == "claim-a-b-x-2"
    assert len({r["anchor"] for r in recs}) == len(recs)
    assert report.env_of(nb)["profile"] == "ci"
    assert report.runtime_of(nb) == 3.5
    assert report.title_of(nb, "x") == "A chapter | with a pipe"
    assert report.article_of(nb) == {"url": "https://kexue.fm/archives/1234", "title": "标题"}
    st = report.chapter_status(nb)
    assert st["claims"] == 6 and st["passed"] == 6 and st["map"]["checked"] == 1


def test_errata_today_and_with_the_convention() -> None:
    errata = report.errata_of(_fake_executed_notebook(), "demo")
    assert [e["name"] for e in errata] == ["erratum-demo-1", "erratum-demo-sign"]
    assert errata[0]["title"] == "" and errata[1]["title"] == "the sign"
    assert errata[0]["body"] == "The article says 2; 3 holds."
    page = report.errata_markdown({"demo": _fake_executed_notebook()})
    assert "**2 errata** in 1 of 1 chapters" in page
    assert 'href="../notebooks/demo.html#erratum-demo-sign"' in page
    assert "https://kexue.fm/archives/1234" in page and "> It is minus." in page


# ------------------------------------------------------------------------------------ pages
def test_ledger_is_grouped_html_with_math_and_anchors() -> None:
    ledger = report.ledger_markdown({"demo": _fake_executed_notebook()})
    assert "<strong>6 claims</strong>" in ledger and "<strong>6 passed</strong>" in ledger
    assert '<details class="suma-ledger-chapter suma-pass" id="ledger-demo">' in ledger
    assert 'href="../notebooks/demo.html#claim-a-b-x-2"' in ledger
    assert r"\(x^2\)" in ledger and "a | b" in ledger
    assert "1 checked, 0 retold, 1 depart, 1 omitted (67% covered)" in ledger
    # Raw HTML blocks: a blank line inside one would hand the rest to Markdown.
    for block in ledger.split("\n\n"):
        assert "\n" not in block.strip()


def test_ledger_renders_symbolic_claims_as_latex() -> None:
    nb = _fake_executed_notebook()
    nb["cells"][4]["outputs"][0]["metadata"]["suma_claim"].update(
        method="symbolic", measured="k*s**k", expected="k*s**k", tolerance="exact (SymPy)",
        measured_tex="k s^{k}", expected_tex="k s^{k}")
    ledger = report.ledger_markdown({"demo": nb})
    assert r"\(k s^{k} = k s^{k}\)" in ledger and "s**k" not in ledger


def test_execution_report_has_date_commit_versions_once() -> None:
    text = report.report_markdown({"demo": _fake_executed_notebook()}, root=ROOT)
    assert "**Built**" in text and "from commit" in text and "**Versions**" in text
    assert text.count("torch 2.x") == 1
    row = next(ln for ln in text.splitlines() if ln.startswith("| {doc}"))
    assert "✓ pass" in row and "| 6 | 3.5 | 7.0 | 3.5 / 2 | 2026-11-30 08:00 UTC |" in row
    assert "A chapter \\| with a pipe" in row


def test_benchmarks_page_counts_goals_and_shows_plots(tmp_path: Path) -> None:
    (tmp_path / "smooth.md").write_text(
        "# Smooth\n\n| case | ratio | goal | met |\n|---|---|---|---|\n| a | 1.0 | ≤ 1.1 | met |\n"
        "| b | 2.0 | ≤ 1.1 | not met |\n| c | 0.9 | ≤ 1.1 | ✓ met |\n", encoding="utf-8")
    (tmp_path / "smooth-ratio.svg").write_text("<svg/>", encoding="utf-8")
    page = report.benchmarks_markdown(tmp_path)
    assert "| Smooth | 2 | 1 |" in page and "\n## Smooth" in page
    assert "**Goals: 2 met, 1 not met**" in page
    assert "```{figure} benchmarks/smooth-ratio.svg" in page


# ------------------------------------------------------------------------------------ staging
def test_staging_prepares_a_chapter_for_reading() -> None:
    nb = build_book.prepare_chapter(_fake_executed_notebook(), "demo")
    cells = nb["cells"]
    assert "hide-cell" in cells[1]["metadata"]["tags"] and "hide-cell" in cells[2]["metadata"]["tags"]
    assert "hide-input" in cells[3]["metadata"]["tags"]
    first = cells[4]["outputs"][0]["data"]["text/html"]
    assert first.startswith("<details") and 'id="claim-a-b-x-2"' in first
    figure = cells[4]["outputs"][2]["data"]
    assert "image/svg+xml" in figure and "image/png" not in figure
    sweep = cells[5]["outputs"]
    assert len(sweep) == 1 and "5 claims" in sweep[0]["data"]["text/html"]
    assert all(o.get("output_type") != "execute_result" for c in cells[7:] for o in c["outputs"])
    assert "href=\"#claim-a-b-x-2\"" in cells[8]["outputs"][0]["data"]["text/html"]
    assert cells[7]["outputs"][0]["data"]["text/html"].startswith('<details class="suma-summary">')
    md = cells[6]["source"]
    assert ":class: warning erratum\n:name: erratum-demo-1\n" in md
    assert ":class: erratum warning\n:name: erratum-demo-sign\n" in md


def test_heavy_svg_gives_way_to_png() -> None:
    out = {"data": {"image/svg+xml": "x" * (build_book.SVG_LIMIT + 1), "image/png": "iVBOR"}}
    build_book._figure(out)
    assert list(out["data"]) == ["image/png"]


def test_distinct_claims_of_one_cell_are_not_folded() -> None:
    recs = [{"claim": name} for name in ("mean is 0", "variance is 1", "skew is 0", "kurtosis is 3")]
    assert not build_book._is_sweep(recs)
    assert build_book._is_sweep([{"claim": f"gap at n = {n} is below 1e-3"} for n in (8, 16, 32, 64)])
    assert build_book._is_sweep([{"claim": f"{what} at s = {s}"} for s in (0.1, 1.0, 10.0)
                                 for what in ("value", "slope")])


def test_api_reference_splits_per_module() -> None:
    index, pages = build_book.split_api((ROOT / "book" / "api.md").read_text(encoding="utf-8"))
    assert "automodule::" not in index
    assert "book/api/claims.md" in pages and "book/api/attention-exact.md" in pages
    assert ".. automodule:: suma_lib.claims\n" in pages["book/api/claims.md"]
    assert "{doc}`suma_lib.smooth <api/smooth>`" in index
    toc = build_book._toc_with_api({"parts": [{"chapters": [{"file": "book/api"}]}]}, list(pages))
    assert {"file": "book/api/claims"} in toc["parts"][0]["chapters"][0]["sections"]


def test_generated_claim_html_matches_claims_module() -> None:
    rec = report.claims_of(_fake_executed_notebook())[0]
    assert build_book.prepare_chapter(_fake_executed_notebook(), "demo")["cells"][4]["outputs"][0][
        "data"]["text/html"] == claims.render_claim(rec)


# ------------------------------------------------------------------------------------ housekeeping
def test_toc_lists_parts_and_notebooks() -> None:
    files = toc_files()
    assert files[0] == "book/intro"
    for page in ("book/running", "book/api", "book/ledger", "book/errata", "book/execution-report",
                 "book/benchmarks", "book/references"):
        assert page in files
    assert all("/" not in slug for slug in toc_notebooks())


def test_source_hash_depends_on_profile() -> None:
    slugs = toc_notebooks()
    if slugs and (ROOT / "notebooks" / f"{slugs[0]}.ipynb").exists():
        assert source_hash(slugs[0], "ci") != source_hash(slugs[0], "full")


def test_one_profiles_list() -> None:
    assert run_notebooks.PROFILES is PROFILES


@pytest.mark.parametrize("path", sorted((ROOT / "tools").glob("*.py")), ids=lambda p: p.name)
def test_tools_do_not_patch_sys_path(path: Path) -> None:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr == "path" and getattr(node.value, "id", "") == "sys":
            parent_calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call)
                            and isinstance(n.func, ast.Attribute) and n.func.attr in ("insert", "append")
                            and getattr(n.func.value, "attr", "") == "path"]
            assert not parent_calls, f"{path.name} patches sys.path"


def test_chapters_link_the_library_functions_they_use() -> None:
    nb = _fake_executed_notebook()
    nb["cells"][4]["source"] = "y = squareplus(x, b=4.0)"
    staged = build_book.prepare_chapter(nb, "demo", {"squareplus": "suma_lib.smooth.squareplus"})
    last = staged["cells"][-1]
    assert last["cell_type"] == "markdown" and "{py:obj}`~suma_lib.smooth.squareplus`" in last["source"]
    assert build_book.library_index()["squareplus"] == "suma_lib.smooth.squareplus"


def test_a_captioned_figure_without_alt_text_gets_its_caption() -> None:
    nb = _fake_executed_notebook()
    nb["cells"][4]["metadata"]["mystnb"] = {"figure": {"caption": "Gap shrinks.", "name": "fig-demo-gap"}}
    staged = build_book.prepare_chapter(nb, "demo")
    assert staged["cells"][4]["metadata"]["mystnb"]["image"]["alt"] == "Gap shrinks."


def test_benchmark_verdicts_read_status_and_goal_columns() -> None:
    status = ["| case | goal | status |", "|---|---|---|", "| a | <= 1.0x | met |", "| b | <= 1.0x | not met |"]
    goal = ["| case | ratio | goal |", "|---|---|---|", "| a | 0.9 | ≤ 1.05×: met |", "| b | 1.1 | ≤ 1.05×: not met |",
            "| c | 1.0 | ≤ 1.05×: not met |"]
    assert report._verdicts(status) == (1, 1)
    assert report._verdicts(goal) == (1, 2)
