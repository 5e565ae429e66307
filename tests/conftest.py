"""Shared fixtures: the notebooks executed once per test session (through papermill, in parallel)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tools.run_notebooks import run  # noqa: E402
from tools.toc import toc_notebooks  # noqa: E402


@pytest.fixture(scope="session")
def executed() -> dict[str, dict]:
    """Execute every notebook of ``_toc.yml`` in profile ``ci`` (reusing fresh results) once per session."""
    results = run(toc_notebooks(), profile=os.environ.get("PROFILE", "ci"))
    return {r["slug"]: r for r in results}
