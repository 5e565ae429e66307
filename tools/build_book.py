"""Build the HTML book from the executed notebooks, without executing anything again.

Steps: execute the notebooks that are not up to date (papermill, in parallel, see ``run_notebooks.py``);
stage a copy of the book's sources in ``_build/src`` in which ``notebooks/`` holds the executed notebooks
and the ledger and execution report are filled in; run ``jupyter-book build`` on it with
``-W -n --keep-going`` (any Sphinx warning fails the build). Output: ``_build/html/index.html``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tools import report  # noqa: E402
from tools.run_notebooks import EXECUTED, PROFILES, run  # noqa: E402
from tools.toc import ROOT, toc_notebooks  # noqa: E402

STAGE = ROOT / "_build" / "src"


def benchmarks_markdown(_nbs: dict) -> str:
    """The committed benchmark results (``benchmarks/results/*.md``), headings demoted one level."""
    parts = []
    for path in sorted((ROOT / "benchmarks" / "results").glob("*.md")):
        lines = path.read_text(encoding="utf-8").splitlines()
        parts.append("\n".join("#" + ln if ln.startswith("#") else ln for ln in lines))
    return "\n\n".join(parts) if parts else "No benchmark results have been committed yet."


MARKERS = {
    "book/ledger.md": ("<!-- ledger -->", report.ledger_markdown),
    "book/execution-report.md": ("<!-- execution-report -->", report.report_markdown),
    "book/benchmarks.md": ("<!-- benchmarks -->", benchmarks_markdown),
}


def _write_if_changed(path: Path, data: bytes) -> None:
    """Write only when the content changed, so Sphinx's incremental build stays incremental."""
    if path.exists() and path.read_bytes() == data:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def stage(slugs: list[str]) -> None:
    """Copy the book's sources into ``_build/src`` with executed notebooks and generated pages."""
    wanted: dict[Path, bytes] = {}
    for name in ("_config.yml", "_toc.yml"):
        wanted[STAGE / name] = (ROOT / name).read_bytes()
    for path in [*(ROOT / "book").rglob("*"), *(ROOT / "_static").rglob("*")]:
        if path.is_file():
            wanted[STAGE / path.relative_to(ROOT)] = path.read_bytes()
    for slug in slugs:
        wanted[STAGE / "notebooks" / f"{slug}.ipynb"] = (EXECUTED / f"{slug}.ipynb").read_bytes()
    nbs = report.load(EXECUTED, slugs)
    for rel, (marker, render) in MARKERS.items():
        text = (ROOT / rel).read_text(encoding="utf-8")
        if marker not in text:
            raise RuntimeError(f"{rel} lost its marker {marker}")
        wanted[STAGE / rel] = text.replace(marker, render(nbs)).encode("utf-8")
    # Remove stale files (a renamed page would otherwise linger in the staged tree).
    if STAGE.exists():
        for path in STAGE.rglob("*"):
            if path.is_file() and path not in wanted:
                path.unlink()
    for path, data in wanted.items():
        _write_if_changed(path, data)


def build(profile: str = "ci", jobs: int | None = None, strict: bool = True) -> int:
    """Execute what is stale, stage and build; return the exit code."""
    slugs = toc_notebooks()
    results = run(slugs, profile, jobs)
    failed = [r for r in results if not r["ok"]]
    if failed:
        for r in failed:
            print(f"error: notebooks/{r['slug']}.ipynb failed at {r['error']}", file=sys.stderr)
        return 1
    stage(slugs)
    exe = Path(sys.executable).with_name("jupyter-book")
    jb = str(exe) if exe.exists() else (shutil.which("jupyter-book") or "jupyter-book")
    cmd = [jb, "build", str(STAGE), "--path-output", str(ROOT)]
    if strict:
        cmd += ["-W", "-n", "--keep-going"]
    print("Building the HTML book:", " ".join(cmd), flush=True)
    env = dict(os.environ, PYDEVD_DISABLE_FILE_VALIDATION="1")
    code = subprocess.call(cmd, cwd=ROOT, env=env)
    if code == 0:
        print(f"Book ready: {ROOT / '_build' / 'html' / 'index.html'}")
    return code


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--profile", default=os.environ.get("PROFILE", "ci"), choices=PROFILES)
    parser.add_argument("--jobs", type=int, default=None)
    parser.add_argument("--clean", action="store_true", help="remove previous HTML and staged sources")
    args = parser.parse_args(argv)
    if args.clean:
        for d in (ROOT / "_build" / "html", ROOT / "_build" / ".doctrees", STAGE):
            shutil.rmtree(d, ignore_errors=True)
    return build(args.profile, args.jobs)


if __name__ == "__main__":
    sys.exit(main())
