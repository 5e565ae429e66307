"""Regenerate each chapter's output-free notebook from its MyST Markdown source.

The source of a chapter is ``notebooks/<slug>.md`` (a jupytext ``md:myst`` notebook, the file people edit and
review); ``notebooks/<slug>.ipynb`` is generated from it and committed too, because Colab and papermill open
notebooks. The generated notebook is normalised: no outputs, the python3 kernelspec, Colab's GPU runtime
(``accelerator: GPU``) and stable cell ids, so that regenerating an unchanged source changes nothing.

Usage::

    python -m tools.sync_notebooks                  # every notebooks/*.md -> .ipynb
    python -m tools.sync_notebooks squareplus       # just these slugs
    python -m tools.sync_notebooks --check          # exit 1 and list the pairs that are out of sync
    python -m tools.sync_notebooks --from-ipynb X   # one-off: write X.md from an existing X.ipynb
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import jupytext
import nbformat

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
KERNELSPEC = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
COLAB = {"provenance": [], "gpuType": "T4"}
FIX = "python -m tools.sync_notebooks  (or: make sync)"


def notebook_from_source(md_path: Path) -> str:
    """The normalised ``.ipynb`` text that ``md_path`` generates."""
    nb = jupytext.read(md_path, fmt="md:myst")
    nb.metadata.pop("jupytext", None)
    nb.metadata["kernelspec"] = dict(KERNELSPEC)
    nb.metadata["language_info"] = {"name": "python"}
    nb.metadata["accelerator"] = "GPU"
    nb.metadata["colab"] = dict(COLAB)
    for i, cell in enumerate(nb.cells):
        cell["id"] = f"c{i:03d}"
        if cell.cell_type == "code":
            cell["outputs"] = []
            cell["execution_count"] = None
        for key in ("lines_to_next_cell", "lines_to_end_of_cell_marker"):
            cell.metadata.pop(key, None)
    nb.nbformat, nb.nbformat_minor = 4, 5
    return json.dumps(nb, indent=1, ensure_ascii=False, sort_keys=True) + "\n"


def out_of_sync(slugs: list[str]) -> list[str]:
    """The slugs whose committed ``.ipynb`` differs from what their ``.md`` generates (or is missing)."""
    bad = []
    for slug in slugs:
        ipynb = NOTEBOOKS / f"{slug}.ipynb"
        want = notebook_from_source(NOTEBOOKS / f"{slug}.md")
        if not ipynb.exists() or ipynb.read_text(encoding="utf-8") != want:
            bad.append(slug)
    return bad


def sources() -> list[str]:
    """Every chapter slug that has a MyST source."""
    return sorted(p.stem for p in NOTEBOOKS.glob("*.md"))


def md_from_ipynb(ipynb: Path) -> None:
    """One-off conversion of a legacy notebook into its MyST source (used once per chapter)."""
    nb = nbformat.read(ipynb, as_version=4)
    for cell in nb.cells:
        for key in ("lines_to_next_cell", "lines_to_end_of_cell_marker"):
            cell.metadata.pop(key, None)
        cell.metadata.pop("execution", None)
    nb.metadata.pop("jupytext", None)
    nb.metadata.pop("colab", None)
    nb.metadata.pop("accelerator", None)
    nb.metadata.pop("language_info", None)
    jupytext.write(nb, ipynb.with_suffix(".md"), fmt="md:myst")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("slugs", nargs="*", help="chapter slugs (default: every notebooks/*.md)")
    parser.add_argument("--check", action="store_true", help="report pairs out of sync, change nothing")
    parser.add_argument("--from-ipynb", action="store_true", help="write <slug>.md from <slug>.ipynb")
    args = parser.parse_args(argv)
    if args.from_ipynb:
        slugs = args.slugs or sorted(p.stem for p in NOTEBOOKS.glob("*.ipynb"))
        for slug in slugs:
            md_from_ipynb(NOTEBOOKS / f"{slug}.ipynb")
            print(f"wrote notebooks/{slug}.md")
        return 0
    slugs = args.slugs or sources()
    missing = [s for s in slugs if not (NOTEBOOKS / f"{s}.md").exists()]
    if missing:
        print(f"error: no MyST source for {missing}", file=sys.stderr)
        return 2
    if args.check:
        bad = out_of_sync(slugs)
        for slug in bad:
            print(f"notebooks/{slug}.ipynb is out of sync with notebooks/{slug}.md; fix: {FIX}")
        return 1 if bad else 0
    for slug in slugs:
        path = NOTEBOOKS / f"{slug}.ipynb"
        text = notebook_from_source(NOTEBOOKS / f"{slug}.md")
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
            print(f"wrote notebooks/{slug}.ipynb")
    return 0


if __name__ == "__main__":
    sys.exit(main())
