"""Work on one chapter: sync its pair, run it in a profile, and show its claims and article map.

``make chapter SLUG=squareplus`` runs this (``python -m tools.chapter squareplus`` from the repository
root). The steps: regenerate ``notebooks/<slug>.ipynb`` from
``notebooks/<slug>.md`` (normalised, output-free); execute it with papermill in profile ``ci`` (the book's
own runner, so the result is reused by ``make book``); print each claim and the article map's coverage.
Exit status 1 when the chapter fails.
"""

from __future__ import annotations

import argparse
import json
import sys

from tools import report, sync_notebooks
from tools.run_notebooks import EXECUTED, PROFILES, run


def summarize(slug: str) -> str:
    """The executed chapter's claims, one line each, and its article map's coverage."""
    nb = json.loads((EXECUTED / f"{slug}.ipynb").read_text(encoding="utf-8"))
    lines = []
    for rec in report.claims_of(nb):
        mark = "✓" if rec["status"] == "pass" else "✗"
        lines.append(f"{mark} [{rec['method']}] {rec['claim']}: {rec['measured']} vs {rec['expected']} "
                     f"({rec['tolerance']})")
    amap = report.article_map_of(nb)
    if amap:
        c = report.chapter_status(nb)["map"]
        lines.append(f"article map: {c['items']} items, "
                     + ", ".join(f"{c[k]} {k}" for k in report.STATUSES)
                     + f"; coverage {c['coverage']:.0%}")
    else:
        lines.append("article map: none (the chapter must end with claims.article_map(...))")
    lines.append(f"{len(report.claims_of(nb))} claims, {report.runtime_of(nb):.1f} s of cell time")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("slug")
    parser.add_argument("--profile", default="ci", choices=PROFILES)
    args = parser.parse_args(argv)
    if not (sync_notebooks.NOTEBOOKS / f"{args.slug}.md").exists():
        parser.error(f"notebooks/{args.slug}.md does not exist")
    sync_notebooks.main([args.slug])
    result = run([args.slug], args.profile, jobs=1)[0]
    if (EXECUTED / f"{args.slug}.ipynb").exists():
        print(summarize(args.slug))
    if not result["ok"]:
        print(f"error: notebooks/{args.slug}.ipynb failed at {result['error']}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
