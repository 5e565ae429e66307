"""Shared fixtures: the notebooks executed once per test session (papermill, in parallel)."""

from __future__ import annotations

import os

import pytest

from tools.run_notebooks import run  # the repository root is on sys.path: pytest's pythonpath
from tools.toc import toc_notebooks


@pytest.fixture(scope="session")
def executed() -> dict[str, dict]:
    """Execute every notebook of ``_toc.yml`` in profile ``ci`` once per session (reusing fresh
    runs)."""
    results = run(toc_notebooks(), profile=os.environ.get("PROFILE", "ci"))
    return {r["slug"]: r for r in results}
