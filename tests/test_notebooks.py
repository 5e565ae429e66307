"""Every chapter in the table of contents runs through papermill in profile ``ci`` and checks its claims."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tools import report  # noqa: E402
from tools.run_notebooks import EXECUTED  # noqa: E402
from tools.toc import toc_notebooks  # noqa: E402

SLUGS = toc_notebooks()
# Budget per chapter in profile ci on the 2-core CI machine (issues ask for < 60 s); a chapter that needs
# more is too big for CI and must shrink its ci sizes.
CI_BUDGET_S = 60.0


@pytest.mark.notebooks
@pytest.mark.parametrize("slug", SLUGS)
def test_notebook_runs_and_checks_claims(slug: str, executed: dict) -> None:
    result = executed[slug]
    assert result["ok"], f"notebooks/{slug}.ipynb failed at {result['error']}"
    nb = json.loads((EXECUTED / f"{slug}.ipynb").read_text(encoding="utf-8"))
    claims = report.claims_of(nb)
    assert len(claims) >= 5, f"{slug} checks only {len(claims)} claims"
    assert all(c["status"] == "pass" for c in claims)
    methods = {c["method"] for c in claims}
    assert methods <= {"symbolic", "numeric", "experiment"}
    env = report.env_of(nb)
    assert env.get("profile") == "ci", "setup_notebook did not run with the ci profile"
    # The chapter ends with its summary table.
    last = [c for c in nb["cells"] if c["cell_type"] == "code"][-1]
    assert "claims.summary()" in "".join(last["source"]), f"{slug} does not end with claims.summary()"
    assert report.runtime_of(nb) < CI_BUDGET_S, f"{slug} took {report.runtime_of(nb):.0f} s in profile ci"
