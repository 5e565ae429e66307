"""Every chapter in the table of contents runs through papermill in profile ``ci`` and checks its claims."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tools import report
from tools.run_notebooks import EXECUTED, execute_one
from tools.toc import toc_notebooks

SLUGS = toc_notebooks()
# Budget per chapter in profile ci on the 2-core CI machine (issues ask for < 60 s); a chapter that needs
# more is too big for CI and must shrink its ci sizes.
CI_BUDGET_S = 60.0
# Share of an article's items that a chapter's map must cover (checked, retold or departs).
MAP_COVERAGE = 0.9
# The chapters the determinism test runs a second time: a small fixed subset of quick ones (a torch
# experiment, Monte Carlo and symbolic checks among them). SUMA_DETERMINISM=all runs every chapter again.
DETERMINISM_CHAPTERS = ("squareplus", "softmax-robustness-information")


def _executed(slug: str) -> dict:
    return json.loads((EXECUTED / f"{slug}.ipynb").read_text(encoding="utf-8"))


def _code_cells(nb: dict) -> list[dict]:
    return [c for c in nb["cells"] if c["cell_type"] == "code"]


def _source(cell: dict) -> str:
    src = cell["source"]
    return "".join(src) if isinstance(src, list) else src


@pytest.mark.notebooks
@pytest.mark.parametrize("slug", SLUGS)
def test_notebook_runs_and_checks_claims(slug: str, executed: dict) -> None:
    result = executed[slug]
    assert result["ok"], f"notebooks/{slug}.ipynb failed at {result['error']}"
    nb = _executed(slug)
    claims = report.claims_of(nb)
    assert len(claims) >= 5, f"{slug} checks only {len(claims)} claims"
    assert all(c["status"] == "pass" for c in claims)
    methods = {c["method"] for c in claims}
    assert methods <= {"symbolic", "numeric", "experiment"}
    env = report.env_of(nb)
    assert env.get("profile") == "ci", "setup_notebook did not run with the ci profile"
    assert report.runtime_of(nb) < CI_BUDGET_S, f"{slug} took {report.runtime_of(nb):.0f} s in profile ci"


@pytest.mark.notebooks
@pytest.mark.parametrize("slug", SLUGS)
def test_chapter_closes_with_summary_and_article_map(slug: str, executed: dict) -> None:
    """The closing sections of CONTRIBUTING.md: prose summary, folded claim table, article map last."""
    assert executed[slug]["ok"]
    nb = _executed(slug)
    code = _code_cells(nb)
    headings = [ln.strip() for c in nb["cells"] if c["cell_type"] == "markdown"
                for ln in _source(c).splitlines() if ln.startswith("## ")]
    assert "## Summary" in headings, f"{slug} has no '## Summary' section"
    assert "## Article map" in headings, f"{slug} has no '## Article map' section"
    summary = [c for c in code if "claims.summary()" in _source(c)]
    assert summary, f"{slug} never calls claims.summary()"
    assert "hide-output" in summary[-1].get("metadata", {}).get("tags", []), \
        f"{slug}: the claims.summary() cell is not tagged hide-output"
    assert "claims.article_map(" in _source(code[-1]), f"{slug} does not end with claims.article_map(...)"
    amap = report.article_map_of(nb)
    assert amap, f"{slug}: claims.article_map recorded no map"
    coverage = report.chapter_status(nb)["map"]["coverage"]
    assert coverage >= MAP_COVERAGE, f"{slug}: the article map covers {coverage:.0%} (< {MAP_COVERAGE:.0%})"


def _determinism_slugs() -> list[str]:
    if os.environ.get("SUMA_DETERMINISM") == "all":
        return SLUGS
    fixed = [s for s in DETERMINISM_CHAPTERS if s in SLUGS]
    return fixed or SLUGS[:1]


@pytest.mark.notebooks
def test_chapters_are_deterministic(executed: dict, tmp_path: Path) -> None:
    """Two runs in profile ci give the same claim values (a fixed subset of chapters, run a second time)."""
    for slug in _determinism_slugs():
        assert executed[slug]["ok"]
        first = report.claims_of(_executed(slug))
        result = execute_one(slug, "ci", 600, out_dir=tmp_path)
        assert result["ok"], f"second run of {slug} failed at {result['error']}"
        second = report.claims_of(json.loads((tmp_path / f"{slug}.ipynb").read_text(encoding="utf-8")))
        keys = ("claim", "measured", "expected", "tolerance", "status")
        diff = [(a["claim"], a["measured"], b["measured"]) for a, b in zip(first, second, strict=False)
                if any(a.get(k) != b.get(k) for k in keys)]
        assert len(first) == len(second), f"{slug}: {len(first)} claims, then {len(second)}"
        assert not diff, f"{slug} is not deterministic: {diff[:3]}"
