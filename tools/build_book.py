"""Build the HTML book from the executed notebooks, without executing anything again.

Steps: execute the notebooks that are not up to date (papermill, in parallel, see ``run_notebooks.py``);
stage a copy of the book's sources in ``_build/src`` in which ``notebooks/`` holds the executed notebooks,
prepared for reading (below), and the generated pages (ledger, errata, execution report, benchmarks, one
API page per module) are filled in; run ``jupyter-book build`` on it with ``-W -n --keep-going`` (any
Sphinx warning fails the build). Output: ``_build/html/index.html``.

Run from the repository root: ``python -m tools.build_book`` (or ``python -m tools.build_book`` with the
root on ``PYTHONPATH``). ``--no-execute`` builds from the executed notebooks as they are, stale or not.

What staging does to every chapter, so that no chapter's source has to:

- the set-up cells fold away: the install cell and the parameters cell get ``hide-cell``, the
  ``setup_notebook`` cell ``hide-input`` (its one-line output stays);
- claim lines, summaries and article maps are drawn again from the records in their metadata with the
  current ``suma_lib.claims`` (so a change of presentation needs no re-execution); a run of near-identical
  claims from one cell (a sweep) folds into one line with a small table;
- a raw Python value left as a cell's result (``[ClaimRecord(...)]``, the list of an article map) is dropped;
- a figure keeps its SVG unless the SVG is heavy (many points), then its 2x PNG;
- every ``{admonition} Erratum`` box gets the class ``erratum`` and an anchor (``erratum-<slug>-<n>``
  unless it names one), which the Errata page links to;
- the chapter ends with links to the API entries of the library functions its code uses.
"""

from __future__ import annotations

import argparse
import collections
import copy
import importlib
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from suma_lib import claims
from tools import report
from tools.run_notebooks import EXECUTED, PROFILES, run
from tools.toc import ROOT, toc_notebooks

STAGE = ROOT / "_build" / "src"
#: A figure's SVG above this size (bytes) gives way to its PNG.
SVG_LIMIT = 400_000
#: Consecutive claims of one cell that fold into one line when their names differ only in numbers.
SWEEP_MIN = 4


def _benchmarks(_nbs: dict) -> str:
    return report.benchmarks_markdown(ROOT / "benchmarks" / "results")


MARKERS = {
    "book/ledger.md": ("<!-- ledger -->", report.ledger_markdown),
    "book/errata.md": ("<!-- errata -->", report.errata_markdown),
    "book/execution-report.md": ("<!-- execution-report -->", report.report_markdown),
    "book/benchmarks.md": ("<!-- benchmarks -->", _benchmarks),
}


def _write_if_changed(path: Path, data: bytes) -> None:
    """Write only when the content changed, so Sphinx's incremental build stays incremental."""
    if path.exists() and path.read_bytes() == data:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


# ------------------------------------------------------------------------------------ chapters
def _src(cell: dict) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else str(src)


def _tag(cell: dict, tag: str) -> None:
    tags = cell.setdefault("metadata", {}).setdefault("tags", [])
    if tag not in tags:
        tags.append(tag)


def _hide_setup(nb: dict) -> None:
    """Fold the install, parameters and configuration cells away."""
    for cell in nb["cells"]:
        if cell.get("cell_type") != "code":
            continue
        src = _src(cell)
        tags = cell.get("metadata", {}).get("tags", [])
        if "parameters" in tags or ("import suma_lib" in src and "pip" in src):
            _tag(cell, "hide-cell")
        elif "setup_notebook(" in src:
            _tag(cell, "hide-input")


def _sweep_key(name: str) -> str:
    return re.sub(r"[-+−]?\d[\d.,eE+−-]*", "#", name)


def _is_sweep(recs: list[dict]) -> bool:
    if len(recs) < SWEEP_MIN:
        return False
    keys = collections.Counter(_sweep_key(r["claim"]) for r in recs)
    # One statement at several points, or a few statements each repeated over the same points.
    return keys.most_common(1)[0][1] >= 0.75 * len(recs) or 3 * len(keys) <= len(recs)


def _html_output(html: str, text: str, metadata: dict | None = None) -> dict:
    return {"output_type": "display_data", "data": {"text/html": html, "text/plain": text},
            "metadata": metadata or {}}


def _is_raw_python(out: dict) -> bool:
    """A cell's result that is a Python value meant for code, not for the page."""
    if out.get("output_type") != "execute_result":
        return False
    text = out.get("data", {}).get("text/plain", "")
    text = "".join(text) if isinstance(text, list) else text
    return bool(re.match(r"^\[?\s*(ClaimRecord\(|\{'item': |<\d+ (claim records|article-map rows)>)", text))


def _alt_from_caption(cell: dict) -> None:
    """A figure cell with a caption but no alt text gets its caption as alt text."""
    mystnb = cell.get("metadata", {}).get("mystnb")
    if not isinstance(mystnb, dict):
        return
    caption = (mystnb.get("figure") or {}).get("caption")
    image = mystnb.setdefault("image", {})
    if caption and not image.get("alt"):
        image["alt"] = str(caption)


def _figure(out: dict) -> None:
    data = out.get("data", {})
    svg = data.get("image/svg+xml")
    if svg is not None and "image/png" in data:
        size = len("".join(svg) if isinstance(svg, list) else svg)
        if size > SVG_LIMIT:
            del data["image/svg+xml"]
        else:
            del data["image/png"]


def _flush(run_: list[tuple[dict, dict]], new: list[dict]) -> None:
    """Move a run of claim outputs into ``new``: folded into one line if it is a sweep."""
    rs = [r for r, _ in run_]
    if _is_sweep(rs):
        new.append(_html_output(claims.render_claims(rs), "\n".join(r["claim"] for r in rs),
                                {"suma_claims": [r["anchor"] for r in rs]}))
    else:
        new.extend(o for _, o in run_)
    run_.clear()


def _render_outputs(nb: dict) -> None:
    """Draw claim lines, sweeps, summaries and article maps from their records; drop raw values."""
    recs = report.claims_of(nb)
    by_index = iter(recs)
    seen: list[dict] = []
    for cell in nb["cells"]:
        if cell.get("cell_type") != "code":
            continue
        _alt_from_caption(cell)
        new: list[dict] = []
        run_: list[tuple[dict, dict]] = []
        for out in cell.get("outputs", []):
            meta = out.get("metadata", {})
            if "suma_claim" in meta:
                rec = next(by_index)
                seen.append(rec)
                out = copy.deepcopy(out)
                out["data"]["text/html"] = claims.render_claim(rec)
                run_.append((rec, out))
                continue
            _flush(run_, new)
            if _is_raw_python(out):
                continue
            if "suma_article_map" in meta:
                out["data"]["text/html"] = claims.render_article_map(meta["suma_article_map"], recs)
            elif "suma_summary" in meta or 'class="suma-claims"' in str(out.get("data", {}).get("text/html", "")):
                out["data"]["text/html"] = claims.render_summary(seen)
            _figure(out)
            new.append(out)
        _flush(run_, new)
        cell["outputs"] = new


_ERRATUM = re.compile(r"^(`{3,}|:{3,})\{admonition\}[ \t]*Erratum\b[^\n]*\n", re.MULTILINE)


def _classes(given: str) -> str:
    """An Erratum box's classes: the given ones plus ``warning`` (its look) and ``erratum`` (its kind)."""
    names = given.split()
    return " ".join(names + [c for c in ("warning", "erratum") if c not in names])


def _mark_errata(nb: dict, slug: str) -> None:
    """Give each Erratum box the class ``erratum`` and its anchor (the Errata page links to it)."""
    names = {e["cell"]: [] for e in report.errata_of(nb, slug)}
    for e in report.errata_of(nb, slug):
        names[e["cell"]].append(e["name"])
    for ci, cell_names in names.items():
        cell = nb["cells"][ci]
        text = _src(cell)
        parts, pos = [], 0
        for m, name in zip(_ERRATUM.finditer(text), cell_names, strict=False):
            parts.append(text[pos:m.end()])
            rest = text[m.end():]
            opts = re.match(r"((?::\w[\w-]*:[^\n]*\n)*)", rest).group(1)
            new_opts = opts
            if ":class:" in opts:
                new_opts = re.sub(r"^:class:([^\n]*)$", lambda mm: ":class: " + _classes(mm.group(1)),
                                  new_opts, count=1, flags=re.MULTILINE)
            else:
                new_opts = ":class: warning erratum\n" + new_opts
            if ":name:" not in opts:
                new_opts = new_opts + f":name: {name}\n"
            parts.append(new_opts)
            pos = m.end() + len(opts)
        parts.append(text[pos:])
        cell["source"] = "".join(parts)


# Core helpers that every chapter calls: not listed under each chapter.
_CORE = ("suma_lib.claims", "suma_lib.notebook", "suma_lib.plotting", "suma_lib.device", "suma_lib.seeding")


def library_index(api_text: str | None = None) -> dict[str, str]:
    """Short name -> documented name (``suma_lib.<module>.<name>``) of every public function and class.

    Read from the modules that ``book/api.md`` documents with their members, core helpers left out.
    """
    import inspect

    api_text = api_text if api_text is not None else (ROOT / "book" / "api.md").read_text(encoding="utf-8")
    index: dict[str, str] = {}
    for m in _AUTOMODULE.finditer(api_text):
        mod, opts = m.group(1), m.group(2)
        if ":no-members:" in opts or mod.startswith(_CORE):
            continue
        try:
            module = importlib.import_module(mod)
        except ImportError:
            continue
        for name in getattr(module, "__all__", []):
            obj = getattr(module, name, None)
            if (inspect.isfunction(obj) or inspect.isclass(obj)) and (obj.__doc__ or "").strip():
                index.setdefault(name, f"{mod}.{name}")
    return index


def code_names(code: str) -> set[str]:
    """The identifiers a cell's code uses (names in strings and comments do not count)."""
    import io
    import tokenize

    try:
        return {t.string for t in tokenize.generate_tokens(io.StringIO(code).readline)
                if t.type == tokenize.NAME}
    except (tokenize.TokenError, SyntaxError):
        return set(re.findall(r"[A-Za-z_]\w*", code))


def _link_library(nb: dict, index: dict[str, str]) -> None:
    """End the chapter with links to the API entries of the library functions its code uses."""
    names: set[str] = set()
    for c in nb["cells"]:
        if c.get("cell_type") == "code":
            names |= code_names(_src(c))
    used = [full for name, full in index.items() if name in names]
    if not used:
        return
    links = ", ".join(f"{{py:obj}}`~{full}`" for full in used)
    nb["cells"].append({
        "cell_type": "markdown", "id": "suma-library", "metadata": {},
        "source": f"```{{admonition}} suma_lib in this chapter\n:class: seealso\n{links}.\n```\n",
    })


def prepare_chapter(nb: dict, slug: str, index: dict[str, str] | None = None) -> dict:
    """The executed notebook as the book shows it (see the module's docstring)."""
    nb = copy.deepcopy(nb)
    _hide_setup(nb)
    _render_outputs(nb)
    _mark_errata(nb, slug)
    if index:
        _link_library(nb, index)
    return nb


# ------------------------------------------------------------------------------------ API pages
_AUTOMODULE = re.compile(r"^\.\. automodule:: (\S+)\n((?:[ \t]+:[^\n]*\n)*)", re.MULTILINE)
_EVAL_RST = re.compile(r"^```\{eval-rst\}\n(.*?)^```\n", re.MULTILINE | re.DOTALL)


def _module_chapters(mod: str) -> list[str]:
    """The chapters a module's docstrings point to, in order of first mention."""
    try:
        spec = importlib.util.find_spec(mod)
    except (ImportError, ValueError):
        return []
    if spec is None or not spec.origin:
        return []
    text = Path(spec.origin).read_text(encoding="utf-8")
    slugs = re.findall(r"notebooks/([a-z0-9][a-z0-9-]*)", text)
    return list(dict.fromkeys(s for s in slugs if (ROOT / "notebooks" / f"{s}.md").exists()))


def _summary_line(mod: str) -> str:
    try:
        doc = importlib.import_module(mod).__doc__ or ""
    except ImportError:
        return ""
    first = doc.strip().split("\n\n", 1)[0].replace("\n", " ").strip()
    first = re.sub(r"\s*\(?Chapter:.*", "", first)
    first = re.sub(r"\s*\((?:chapter|Part|Parts) [^)]*\)", "", first)  # the chapters are listed anyway
    first = re.sub(r":math:`([^`]*)`", r"$\1$", first)
    first = re.sub(r":\w+:`~?([^`]*)`", r"`\1`", first)
    first = re.sub(r"``([^`]*)``", r"`\1`", first)
    return first.rstrip(" .;")


def api_page_name(mod: str) -> str:
    """The API page of a module: ``suma_lib.attention.exact`` -> ``attention-exact``."""
    return mod.removeprefix("suma_lib.").replace(".", "-").replace("_", "-") or "suma-lib"


def split_api(text: str) -> tuple[str, dict[str, str]]:
    """Split ``book/api.md``: one page per ``automodule`` and an index in place of the directives.

    Returns the index page and ``{"book/api/<page>.md": page}`` (see :func:`api_page_name`).
    """
    pages: dict[str, str] = {}

    def index_of(block: re.Match) -> str:
        items = []
        for m in _AUTOMODULE.finditer(block.group(1)):
            mod, opts = m.group(1), m.group(2)
            chapters = _module_chapters(mod)
            links = ", ".join(f"{{doc}}`../notebooks/{s}`" for s in chapters)
            chap = (f"; chapter{'s' if len(chapters) > 1 else ''} " + links) if chapters else ""
            page = f"book/api/{api_page_name(mod)}.md"
            pages[page] = (
                f"# {mod}\n\n"
                + (f"Derived in {', '.join(f'{{doc}}`../../notebooks/{s}`' for s in chapters)}.\n\n"
                   if chapters else "")
                + f"```{{eval-rst}}\n.. automodule:: {mod}\n{opts}```\n"
            )
            line = _summary_line(mod)
            items.append(f"- {{doc}}`{mod} <api/{api_page_name(mod)}>`" + (f": {line}" if line else "")
                         + chap + ".")
        return "\n".join(items) + "\n"

    index = _EVAL_RST.sub(index_of, text)
    return index, pages


def _toc_with_api(toc: dict, api_pages: list[str]) -> dict:
    toc = copy.deepcopy(toc)

    def visit(node):
        if isinstance(node, dict):
            if node.get("file") == "book/api":
                node["sections"] = [{"file": p[: -len(".md")]} for p in api_pages]
            for v in node.values():
                visit(v)
        elif isinstance(node, list):
            for v in node:
                visit(v)

    visit(toc)
    return toc


# ------------------------------------------------------------------------------------ staging
def stage(slugs: list[str]) -> None:
    """Copy the book's sources into ``_build/src`` with prepared notebooks and generated pages."""
    wanted: dict[Path, bytes] = {}
    wanted[STAGE / "_config.yml"] = (ROOT / "_config.yml").read_bytes()
    for path in [*(ROOT / "book").rglob("*"), *(ROOT / "_static").rglob("*"), *(ROOT / "_ext").rglob("*.py")]:
        if path.is_file():
            wanted[STAGE / path.relative_to(ROOT)] = path.read_bytes()
    nbs = report.load(EXECUTED, slugs)
    index = library_index()
    for slug, nb in nbs.items():
        staged = prepare_chapter(nb, slug, index)
        wanted[STAGE / "notebooks" / f"{slug}.ipynb"] = json.dumps(staged, indent=1, ensure_ascii=False).encode()
    for rel, (marker, render) in MARKERS.items():
        text = (ROOT / rel).read_text(encoding="utf-8")
        if marker not in text:
            raise RuntimeError(f"{rel} lost its marker {marker}")
        wanted[STAGE / rel] = text.replace(marker, render(nbs)).encode("utf-8")
    for svg in (ROOT / "benchmarks" / "results").glob("*.svg"):
        wanted[STAGE / "book" / "benchmarks" / svg.name] = svg.read_bytes()
    index, pages = split_api((ROOT / "book" / "api.md").read_text(encoding="utf-8"))
    wanted[STAGE / "book" / "api.md"] = index.encode("utf-8")
    for rel, page in pages.items():
        wanted[STAGE / rel] = page.encode("utf-8")
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text(encoding="utf-8"))
    wanted[STAGE / "_toc.yml"] = yaml.safe_dump(_toc_with_api(toc, list(pages)), sort_keys=False).encode()
    # Remove stale files (a renamed page would otherwise linger in the staged tree).
    if STAGE.exists():
        for path in STAGE.rglob("*"):
            if path.is_file() and path not in wanted and "__pycache__" not in path.parts:
                path.unlink()
    for path, data in wanted.items():
        _write_if_changed(path, data)


def build(profile: str = "ci", jobs: int | None = None, strict: bool = True, execute: bool = True) -> int:
    """Execute what is stale (unless ``execute`` is false), stage and build; return the exit code."""
    slugs = toc_notebooks()
    if execute:
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
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    code = subprocess.call(cmd, cwd=ROOT, env=env)
    if code == 0:
        print(f"Book ready: {ROOT / '_build' / 'html' / 'index.html'}")
    return code


_ONCE: dict[str, int] = {}


def build_once(profile: str = "ci") -> int:
    """:func:`build` once per process (the test suite's modules share one build, even a failed one)."""
    if profile not in _ONCE:
        _ONCE[profile] = build(profile=profile)
    return _ONCE[profile]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default=os.environ.get("PROFILE", "ci"), choices=PROFILES)
    parser.add_argument("--jobs", type=int, default=None)
    parser.add_argument("--clean", action="store_true", help="remove previous HTML and staged sources")
    parser.add_argument("--no-execute", action="store_true",
                        help="build from _build/executed as it is (no notebook is run, stale ones included)")
    args = parser.parse_args(argv)
    if args.clean:
        for d in (ROOT / "_build" / "html", ROOT / "_build" / ".doctrees", STAGE):
            shutil.rmtree(d, ignore_errors=True)
    return build(args.profile, args.jobs, execute=not args.no_execute)


if __name__ == "__main__":
    sys.exit(main())
