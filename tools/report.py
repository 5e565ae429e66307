"""Generate the book's pages that are read off the executed notebooks: ledger, errata, report, benchmarks.

Every page is built from ``_build/executed/*.ipynb`` when the book is built, never typed by hand: each claim
check leaves its record in the metadata of its output (key ``suma_claim``), ``claims.article_map`` leaves the
chapter's map (``suma_article_map``), ``suma_lib.setup_notebook`` leaves the run's environment
(``suma_env``), ``tools/run_notebooks.py`` leaves the run's date, commit and time (``metadata.suma``) and
papermill each cell's duration. Errata are read from the chapters' ``{admonition} Erratum`` boxes.

The ledger and errata are raw HTML inside MyST pages: Markdown would turn the ``*`` of an expression into
emphasis, and HTML lets the math go to MathJax untouched.
"""

from __future__ import annotations

import datetime as _dt
import html
import json
import platform
import re
import subprocess
from pathlib import Path

from suma_lib import claims as _claims

STATUSES = _claims.MAP_STATUSES


# ------------------------------------------------------------------------------------ reading notebooks
def _outputs(nb: dict):
    for cell in nb.get("cells", []):
        if cell.get("cell_type") != "code":
            continue
        yield from cell.get("outputs", [])


def _src(cell: dict) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else str(src)


def claims_of(nb: dict) -> list[dict]:
    """Every claim record in an executed notebook, in order (each with its ``anchor``)."""
    recs = [dict(out["metadata"]["suma_claim"]) for out in _outputs(nb)
            if "suma_claim" in out.get("metadata", {})]
    taken: list[str] = []
    for rec in recs:  # records from before anchors existed get the same anchors claims.py would give
        if not rec.get("anchor"):
            rec["anchor"] = _claims.anchor_of(rec["claim"], taken)
        taken.append(rec["anchor"])
    return recs


def article_map_of(nb: dict) -> list[dict]:
    """The article map recorded by ``claims.article_map`` ([] if the chapter has none)."""
    for out in _outputs(nb):
        if "suma_article_map" in out.get("metadata", {}):
            return out["metadata"]["suma_article_map"]
    return []


def env_of(nb: dict) -> dict:
    """The environment record of an executed notebook ({} if setup_notebook never ran)."""
    for out in _outputs(nb):
        if "suma_env" in out.get("metadata", {}):
            return out["metadata"]["suma_env"]
    return {}


def runtime_of(nb: dict) -> float:
    """Wall time of the notebook's cells as papermill measured them (seconds)."""
    total = 0.0
    for cell in nb.get("cells", []):
        dur = cell.get("metadata", {}).get("papermill", {}).get("duration")
        if isinstance(dur, (int, float)):
            total += dur
    return total


def title_of(nb: dict, slug: str) -> str:
    """The notebook's first Markdown heading."""
    for cell in nb.get("cells", []):
        if cell.get("cell_type") == "markdown":
            for line in _src(cell).splitlines():
                if line.startswith("# "):
                    return line[2:].strip()
    return slug


def article_of(nb: dict) -> dict:
    """The article a chapter retells: original title 《…》 and its kexue.fm link, from the title cell."""
    for cell in nb.get("cells", []):
        if cell.get("cell_type") != "markdown":
            continue
        text = _src(cell)
        url = re.search(r"https?://kexue\.fm/archives/\d+", text)
        if url:
            title = re.search(r"《([^》]+)》", text)
            return {"url": url.group(0), "title": title.group(1) if title else ""}
    return {"url": "", "title": ""}


def load(executed_dir: Path, slugs: list[str]) -> dict[str, dict]:
    """Load the executed notebooks of ``slugs`` (raises if one is missing)."""
    out = {}
    for slug in slugs:
        path = executed_dir / f"{slug}.ipynb"
        if not path.exists():
            raise FileNotFoundError(f"{path} is missing: run tools/run_notebooks.py first")
        out[slug] = json.loads(path.read_text(encoding="utf-8"))
    return out


# ------------------------------------------------------------------------------------ errata
_FENCE = re.compile(
    r"^(?P<fence>`{3,}|:{3,})\{admonition\}[ \t]*(?P<title>Erratum\b[^\n]*)\n(?P<body>.*?)^(?P=fence)[ \t]*$",
    re.MULTILINE | re.DOTALL,
)


def errata_of(nb: dict, slug: str) -> list[dict]:
    """The chapter's errata: every ``{admonition} Erratum...`` box of its Markdown cells, in order.

    Each has ``title`` (the text after "Erratum", e.g. ": the bound is one-sided"), ``body`` (the box's
    Markdown without its options), ``name`` (its ``:name:``, or ``erratum-<slug>-<n>`` when it has none,
    which is what staging gives it) and ``cell`` (the index of its cell).
    """
    found = []
    for ci, cell in enumerate(nb.get("cells", [])):
        if cell.get("cell_type") != "markdown":
            continue
        for m in _FENCE.finditer(_src(cell)):
            lines = m.group("body").splitlines()
            opts = {}
            while lines and re.match(r"^:\w[\w-]*:", lines[0]):
                key, _, value = lines.pop(0)[1:].partition(":")
                opts[key] = value.strip()
            title = m.group("title")[len("Erratum"):].strip().lstrip(":").strip()
            title = re.sub(r"^\((.*)\)$", r"\1", title)
            found.append({
                "title": title,
                "body": "\n".join(lines).strip(),
                "name": opts.get("name") or f"erratum-{slug}-{len(found) + 1}",
                "cell": ci,
            })
    return found


def errata_markdown(nbs: dict[str, dict]) -> str:
    """The Errata page: every Erratum of the book, by chapter, each linking to its box in the chapter."""
    parts = []
    total = 0
    for slug, nb in nbs.items():
        errata = errata_of(nb, slug)
        if not errata:
            continue
        art = article_of(nb)
        chapter = title_of(nb, slug)
        source = f"《{art['title']}》, <{art['url']}>" if art["url"] else ""
        for e in errata:
            total += 1
            head = f"{chapter}: {e['title']}" if e["title"] else chapter
            parts.append(
                f"## {head}\n\n"
                f"Chapter {{doc}}`../notebooks/{slug}`"
                + (f"; article {source}" if source else "")
                + f". <a href=\"../notebooks/{slug}.html#{e['name']}\">Go to the erratum and its check</a>.\n\n"
                + "\n".join("> " + ln if ln.strip() else ">" for ln in e["body"].splitlines())
                + "\n"
            )
    head = (f"**{total} errata** in {sum(bool(errata_of(nb, s)) for s, nb in nbs.items())} of "
            f"{len(nbs)} chapters.\n\n")
    return head + ("\n".join(parts) if parts else "No chapter reports an erratum.\n")


# ------------------------------------------------------------------------------------ ledger
def _html_cell(text: str) -> str:
    return html.escape(str(text)).replace("\n", " ")


def _value_html(rec: dict) -> str:
    m_tex, e_tex = _claims.symbolic_tex(rec)
    if m_tex or e_tex:
        return _claims._math_span(f"{m_tex} = {e_tex}")
    if rec.get("tolerance") == "exact (SymPy)":
        return "an identity too long to show here (see the chapter)"
    if rec.get("tolerance") == "holds" and {rec.get("measured"), rec.get("expected")} <= {"True", ""}:
        return "holds" if rec.get("status") == "pass" else "does not hold"
    return (f"{_html_cell(rec['measured'])} <span class=\"suma-vs\">vs</span> "
            f"{_html_cell(rec['expected'])}")


def chapter_status(nb: dict) -> dict:
    """Counts of one chapter: claims, passed, and its article map by status (with coverage)."""
    recs = claims_of(nb)
    amap = article_map_of(nb)
    out = {"claims": len(recs), "passed": sum(r["status"] == "pass" for r in recs),
           "map": _claims.map_counts(amap) if amap else None}
    return out


def _status_line(st: dict) -> str:
    line = f"{st['passed']} of {st['claims']} claims passed"
    m = st["map"]
    if m:
        line += (f" · article map: {m['items']} items, {m['checked']} checked, {m['retold']} retold, "
                 f"{m['departs']} depart, {m['omitted']} omitted ({m['coverage']:.0%} covered)")
    else:
        line += " · no article map"
    return line


def ledger_markdown(nbs: dict[str, dict]) -> str:
    """The ledger: per chapter a folded table of its claims (each linking to its line in the chapter)."""
    counts = {m: 0 for m in _claims.METHODS}
    n_pass = n_total = 0
    blocks = []
    for slug, nb in nbs.items():
        recs = claims_of(nb)
        st = chapter_status(nb)
        n_total += st["claims"]
        n_pass += st["passed"]
        for r in recs:
            counts[r["method"]] = counts.get(r["method"], 0) + 1
        rows = []
        for r in recs:
            ok = r["status"] == "pass"
            rows.append(
                f'<tr class="suma-{"pass" if ok else "fail"}">'
                f'<td class="suma-mark">{"✓" if ok else "✗ fail"}</td>'
                f'<td><a href="../notebooks/{slug}.html#{r["anchor"]}">{_claims._rich(r["claim"])}</a></td>'
                f'<td>{_html_cell(r["method"])}</td><td class="suma-values">{_value_html(r)}</td>'
                f'<td>{_html_cell(r["tolerance"])}</td></tr>'
            )
        ok = st["passed"] == st["claims"]
        blocks.append(
            f'<details class="suma-ledger-chapter suma-{"pass" if ok else "fail"}" id="ledger-{slug}">'
            f'<summary><span class="suma-ledger-title">{_claims._rich(title_of(nb, slug))}</span>'
            f'<span class="suma-ledger-status">{_status_line(st)}</span></summary>'
            f'<p><a href="../notebooks/{slug}.html">Open the chapter</a></p>'
            '<table class="suma-ledger"><colgroup><col class="c-mark"/><col class="c-claim"/>'
            '<col class="c-method"/><col class="c-values"/><col class="c-tol"/></colgroup>'
            '<thead><tr><th></th><th>claim</th><th>method</th><th>measured vs expected</th>'
            f'<th>tolerance</th></tr></thead><tbody>{"".join(rows)}</tbody></table></details>'
        )
    head = (
        f'<p class="suma-ledger-total"><strong>{n_total} claims</strong> in {len(nbs)} chapters: '
        f'{counts.get("symbolic", 0)} symbolic, {counts.get("numeric", 0)} numeric, '
        f'{counts.get("experiment", 0)} experiment; <strong>{n_pass} passed</strong>, '
        f"{n_total - n_pass} failed.</p>"
    )
    return head + "\n\n" + "\n\n".join(blocks) + "\n"


# ------------------------------------------------------------------------------------ execution report
def _git_commit(root: Path) -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True,
                             text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10, check=False).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out + (" (with local changes)" if dirty else "")


def _cpu_count() -> str:
    import os

    return str(os.cpu_count() or "?")


VERSIONS = ("python", "torch", "numpy", "scipy", "sympy", "matplotlib", "suma_lib")


def report_markdown(nbs: dict[str, dict], root: Path | None = None) -> str:
    """The execution report: when, where and how each chapter ran; library versions once."""
    root = root or Path(__file__).resolve().parent.parent
    now = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    envs = {slug: env_of(nb) for slug, nb in nbs.items()}
    metas = {slug: nb.get("metadata", {}).get("suma", {}) for slug, nb in nbs.items()}
    profiles = sorted({e.get("profile", "?") for e in envs.values()})
    devices = sorted({f"{e.get('device', '?')} ({e.get('device_name', '?')})" for e in envs.values()})
    commits = sorted({m.get("commit", "") for m in metas.values()} - {""})
    lines = [
        f"- **Built**: {now}, from commit `{_git_commit(root)}`",
        (f"- **Executed on**: {', '.join(_html_cell(d) for d in devices)}; build machine "
         f"{_html_cell(platform.machine())} with {_cpu_count()} cores"),
        f"- **Profile**: {', '.join(profiles)}",
    ]
    if commits:
        lines.append(f"- **Chapters executed from commit(s)**: {', '.join(f'`{c}`' for c in commits)}")
    versions = []
    for key in VERSIONS:
        vals = sorted({str(e.get(key, "?")) for e in envs.values()})
        versions.append(f"{key} {' / '.join(vals)}")
    lines.append("- **Versions**: " + ", ".join(versions))
    total = sum(runtime_of(nb) for nb in nbs.values())
    lines.append(f"- **Time**: {total:.0f} s of cell time in all (papermill's per-cell durations; wall time "
                 "adds the kernel's start; *load* is the machine's load average over its cores when the "
                 "chapter started: times on a busy machine are longer)")
    rows = ["| chapter | status | claims | cell time (s) | wall (s) | load | ran at |",
            "|---|---|---|---|---|---|---|"]
    for slug, nb in nbs.items():
        meta = metas[slug]
        ok = meta.get("status", "ok") == "ok" and all(r["status"] == "pass" for r in claims_of(nb))
        wall = meta.get("seconds")
        rows.append(
            f"| {{doc}}`{_md(title_of(nb, slug))} <../notebooks/{slug}>` | {'✓ pass' if ok else '✗ fail'} | "
            f"{len(claims_of(nb))} | {runtime_of(nb):.1f} | "
            f"{f'{wall:.1f}' if isinstance(wall, (int, float)) else '?'} | {_load(meta)} | "
            f"{meta.get('date', '?')} |"
        )
    return "\n".join(lines) + "\n\n" + "\n".join(rows) + "\n"


def _load(meta: dict) -> str:
    """The load average when a chapter ran, over the machine's cores (times are slower on a busy one)."""
    load, cores = meta.get("load"), meta.get("cores")
    if not isinstance(load, (int, float)):
        return "?"
    return f"{load:g}" + (f" / {cores}" if cores else "")


def _md(text: str) -> str:
    """Text safe inside a Markdown table cell and a role's title."""
    return str(text).replace("|", "\\|").replace("\n", " ").replace("`", "'").replace("<", "&lt;")


# ------------------------------------------------------------------------------------ benchmarks
def benchmarks_markdown(results_dir: Path, image_prefix: str = "benchmarks") -> str:
    """The committed benchmark results, one section each, with their plots and their goals' verdicts.

    Each ``benchmarks/results/<name>.md`` becomes a section (its headings demoted below the page title);
    ``<name>*.svg`` next to it are shown under it (staging copies them to ``book/<image_prefix>/``). A
    results table with a column named like "met" is counted: how many goals are met and not met.
    """
    parts = []
    verdicts: list[tuple[str, int, int]] = []
    for path in sorted(results_dir.glob("*.md")):
        text = path.read_text(encoding="utf-8")
        lines = text.splitlines()
        levels = [len(m.group(1)) for ln in lines if (m := re.match(r"^(#+) ", ln))]
        shift = 2 - min(levels) if levels else 0
        out = ["#" * max(1, len(m.group(1)) + shift) + ln[len(m.group(1)):]
               if (m := re.match(r"^(#+) ", ln)) else ln for ln in lines]
        if not levels:
            out.insert(0, f"## {path.stem}")
        met, not_met = _verdicts(lines)
        if met or not_met:
            out.insert(1, f"\n**Goals: {met} met, {not_met} not met** (as the results file says).\n")
        elif re.search(r"\bgoal", text, re.IGNORECASE):
            out.insert(1, "\n**Goals: stated, but not marked met or not met in this results file.**\n")
        verdicts.append((lines[0].lstrip("# ").strip() if levels else path.stem, met, not_met))
        for svg in sorted(results_dir.glob(f"{path.stem}*.svg")):
            out.append(f"\n```{{figure}} {image_prefix}/{svg.name}\n:alt: {svg.stem.replace('-', ' ')}\n\n"
                       f"{svg.stem.replace('-', ' ')}\n```\n")
        parts.append("\n".join(out))
    if not parts:
        return "No benchmark results have been committed yet."
    glance = ["| results | goals met | goals not met |", "|---|---|---|"]
    glance += [f"| {_md(name)} | {met} | {not_met} |" for name, met, not_met in verdicts]
    return "\n".join(glance) + "\n\n" + "\n\n".join(parts)


def _verdicts(lines: list[str]) -> tuple[int, int]:
    """Count the met / not met verdicts in the tables of a results file."""
    met = not_met = 0
    col = None
    for ln in lines:
        if not ln.startswith("|"):
            col = None
            continue
        cells = [c.strip().lower() for c in ln.strip().strip("|").split("|")]
        if col is None:
            col = next((i for i, c in enumerate(cells)
                        if "met" in c.split() or c in ("met", "goal met", "verdict", "status")), -1)
            if col < 0:  # a "goal" column whose entries end in "met" / "not met"
                col = next((i for i, c in enumerate(cells) if c == "goal"), -1)
            continue
        if col < 0 or col >= len(cells) or set(cells[col]) <= {"-", ":", " "}:
            continue
        v = cells[col].rstrip(" .")
        if v.startswith(("not", "no", "✗", "❌")) or v.endswith("not met"):
            not_met += 1
        elif v.startswith(("met", "yes", "✓", "✅")) or v.endswith(": met") or v == "met":
            met += 1
    return met, not_met
