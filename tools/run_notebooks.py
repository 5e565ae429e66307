"""Execute the book's notebooks with papermill, in parallel, into ``_build/executed/``.

Usage (from the repository root; ``python -m tools.run_notebooks`` works the same)::

    python -m tools.run_notebooks                 # every notebook in _toc.yml, profile ci
    python -m tools.run_notebooks --profile full  # the article-scale run (for a GPU machine)
    python -m tools.run_notebooks init-geometry   # just these slugs

An executed notebook is reused when neither its source, nor ``suma_lib``, nor the profile changed
(``--force`` re-runs everything). The run fails on any notebook error and names the notebook and the cell.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import subprocess
import sys
import time
import traceback
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

from suma_lib.notebook import PROFILES
from tools.toc import ROOT, toc_notebooks

EXECUTED = ROOT / "_build" / "executed"
__all__ = ["EXECUTED", "PROFILES", "is_fresh", "run", "source_hash"]


def _commit() -> str:
    """The commit the notebooks run from (short hash, "+" when the work tree has changes)."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                              text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True, timeout=10, check=False).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""
    return head + ("+" if dirty else "")


def source_hash(slug: str, profile: str) -> str:
    """Hash of everything an executed notebook depends on: its source, the library and the profile."""
    h = hashlib.sha256()
    h.update(profile.encode())
    h.update((ROOT / "notebooks" / f"{slug}.ipynb").read_bytes())
    for path in sorted((ROOT / "suma_lib").rglob("*")):
        if path.is_file() and path.suffix in {".py", ".mplstyle"}:
            h.update(str(path.relative_to(ROOT)).encode())
            h.update(path.read_bytes())
    return h.hexdigest()


def is_fresh(slug: str, profile: str) -> bool:
    """Whether ``_build/executed/<slug>.ipynb`` is up to date for this profile."""
    out = EXECUTED / f"{slug}.ipynb"
    if not out.exists():
        return False
    try:
        meta = json.loads(out.read_text(encoding="utf-8"))["metadata"].get("suma", {})
    except (OSError, ValueError, KeyError):
        return False
    return meta.get("hash") == source_hash(slug, profile) and meta.get("status") == "ok"


def execute_one(slug: str, profile: str, timeout: int, out_dir: Path | None = None) -> dict:
    """Execute one notebook with papermill into ``out_dir`` (default ``_build/executed``).

    Returns a result dict (never raises).
    """
    import nbformat
    import papermill as pm

    os.environ["MPLBACKEND"] = "module://matplotlib_inline.backend_inline"  # figures into outputs
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    src = ROOT / "notebooks" / f"{slug}.ipynb"
    out = (out_dir or EXECUTED) / f"{slug}.ipynb"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".running.ipynb")
    digest = source_hash(slug, profile)
    start = time.perf_counter()
    load = round(os.getloadavg()[0], 1) if hasattr(os, "getloadavg") else None
    result = {"slug": slug, "ok": False, "seconds": 0.0, "error": ""}
    try:
        pm.execute_notebook(
            str(src),
            str(tmp),
            parameters={"profile": profile},
            kernel_name="python3",
            cwd=str(ROOT / "notebooks"),
            execution_timeout=timeout,
            progress_bar=False,
            log_output=False,
        )
        result["ok"] = True
    except pm.PapermillExecutionError as err:
        result["error"] = f"cell {err.exec_count} (index {err.cell_index}): {err.ename}: {err.evalue}"
    except Exception as err:  # noqa: BLE001 - kernel died, timeout, bad JSON: reported, never raised
        result["error"] = f"{type(err).__name__}: {err}".strip()
        if not str(err):
            result["error"] += "\n" + traceback.format_exc(limit=3)
    result["seconds"] = time.perf_counter() - start
    if tmp.exists():
        nb = nbformat.read(str(tmp), as_version=4)
        for cell in nb.cells:  # the book shows the parameters cell, not papermill's injected copy
            tags = cell.get("metadata", {}).get("tags", [])
            if "injected-parameters" in tags and "remove-cell" not in tags:
                tags.append("remove-cell")
        nb.metadata["suma"] = {
            "hash": digest,
            "profile": profile,
            "status": "ok" if result["ok"] else "failed",
            "seconds": round(result["seconds"], 2),
            "error": result["error"],
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "commit": _commit(),
            "load": load,  # the machine's 1-minute load average when the run started
            "cores": os.cpu_count(),
        }
        nbformat.write(nb, str(out))
        tmp.unlink()
    return result


def run(slugs: list[str], profile: str = "ci", jobs: int | None = None, force: bool = False,
        timeout: int = 600) -> list[dict]:
    """Execute ``slugs`` (skipping fresh ones unless ``force``) and return one result per notebook."""
    if profile not in PROFILES:
        raise ValueError(f"profile must be one of {PROFILES}, got {profile!r}")
    EXECUTED.mkdir(parents=True, exist_ok=True)
    todo = [s for s in slugs if force or not is_fresh(s, profile)]
    results = [{"slug": s, "ok": True, "seconds": 0.0, "error": "", "cached": True}
               for s in slugs if s not in todo]
    for r in results:
        print(f"  cached  {r['slug']}", flush=True)
    jobs = max(1, min(jobs or os.cpu_count() or 1, len(todo) or 1))
    # Each kernel gets its share of the cores, so parallel notebooks do not oversubscribe the CPU.
    threads = str(max(1, (os.cpu_count() or 1) // jobs))
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, threads)
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        futures = {pool.submit(execute_one, s, profile, timeout): s for s in todo}
        for fut in as_completed(futures):
            r = fut.result()
            results.append(r)
            mark = "ok    " if r["ok"] else "FAILED"
            print(f"  {mark}  {r['slug']:<36} {r['seconds']:6.1f} s  {r['error']}", flush=True)
    order = {s: i for i, s in enumerate(slugs)}
    return sorted(results, key=lambda r: order[r["slug"]])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("slugs", nargs="*", help="notebooks to run (default: all in _toc.yml)")
    parser.add_argument("--profile", default=os.environ.get("PROFILE", "ci"), choices=PROFILES)
    parser.add_argument("--jobs", type=int, default=None, help="parallel kernels (default: CPU count)")
    parser.add_argument("--force", action="store_true", help="re-run notebooks that are up to date")
    parser.add_argument("--timeout", type=int, default=600, help="seconds allowed per cell")
    args = parser.parse_args(argv)
    known = toc_notebooks()
    slugs = args.slugs or known
    unknown = [s for s in slugs if s not in known]
    if unknown:
        parser.error(f"not in _toc.yml: {unknown}")
    print(f"Executing {len(slugs)} notebook(s) with papermill, profile {args.profile!r}:", flush=True)
    results = run(slugs, args.profile, args.jobs, args.force, args.timeout)
    failed = [r for r in results if not r["ok"]]
    for r in failed:
        print(f"error: notebooks/{r['slug']}.ipynb failed at {r['error']}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
