"""Sphinx extension of the suma book: links between the API reference and the chapters, math everywhere.

- A docstring's ``Chapter: notebooks/<slug>.md`` pointer (any of the styles in use: with or without
  double backquotes, ``.md``, ``.ipynb`` or no suffix) becomes a link to the chapter.
- Each documented function or class gets a "Used in" line: the chapters whose code calls it.
- The bibliography's labels read "Author Year" (style ``suma``: pybtex's ``unsrt`` with author-year
  labels and sorting), never pybtex's garbled alpha labels.
- MathJax is loaded on every page (claim lines, the ledger and the errata carry math in raw HTML, which
  Sphinx does not see when it decides whether a page needs MathJax).
"""

from __future__ import annotations

import io
import json
import re
import tokenize
from pathlib import Path

_POINTER = re.compile(r"(?:``)?notebooks/([a-z0-9][a-z0-9-]*)(?:\.md|\.ipynb)?(?:``)?")
# Core helpers every chapter calls: listing every chapter under them says nothing.
_EVERYWHERE = ("suma_lib.claims", "suma_lib.notebook", "suma_lib.plotting", "suma_lib.device",
               "suma_lib.seeding")


_CODE: dict[str, dict[str, set[str]]] = {}


def _names(code: str) -> set[str]:
    """Identifiers used by a cell's code (not those inside strings or comments)."""
    try:
        return {t.string for t in tokenize.generate_tokens(io.StringIO(code).readline)
                if t.type == tokenize.NAME}
    except (tokenize.TokenError, SyntaxError):
        return set(re.findall(r"[A-Za-z_]\w*", code))


def _chapters(app) -> dict[str, set[str]]:
    """Slug -> the identifiers its code cells use, read once per build."""
    key = str(app.srcdir)
    if key not in _CODE:
        cache = {}
        for path in sorted(Path(app.srcdir, "notebooks").glob("*.ipynb")):
            nb = json.loads(path.read_text(encoding="utf-8"))
            names: set[str] = set()
            for c in nb.get("cells", []):
                if c.get("cell_type") == "code":
                    names |= _names("".join(c.get("source", "")))
            cache[path.stem] = names
        _CODE[key] = cache
    return _CODE[key]


def _link(match: re.Match, known: dict) -> str:
    slug = match.group(1)
    return f":doc:`/notebooks/{slug}`" if slug in known else match.group(0)


def process_docstring(app, what, name, obj, options, lines) -> None:
    """Turn chapter pointers into links and add the "Used in" line."""
    known = _chapters(app)
    for i, line in enumerate(lines):
        if "Chapter" in line or "notebooks/" in line:
            lines[i] = _POINTER.sub(lambda m: _link(m, known), line)
    if what not in ("function", "class") or name.startswith(_EVERYWHERE):
        return
    short = name.rsplit(".", 1)[-1]
    used = [slug for slug, names in known.items() if short in names]
    if used:
        lines.extend(["", "Used in: " + ", ".join(f":doc:`/notebooks/{s}`" for s in used) + "."])


def _bibliography_style() -> None:
    """Register the pybtex style ``suma``: unsrt entries, "Author Year" labels, sorted by author and year."""
    from pybtex.plugin import register_plugin
    from pybtex.style.formatting.unsrt import Style as UnsrtStyle
    from pybtex.style.labels import BaseLabelStyle

    def surname(entry) -> str:
        persons = entry.persons.get("author") or entry.persons.get("editor") or []
        if not persons:
            return entry.key
        names = [re.sub(r"[{}\\]", "", " ".join(p.last_names)) for p in persons]
        if len(names) == 1:
            return names[0]
        return f"{names[0]} & {names[1]}" if len(names) == 2 else f"{names[0]} et al."

    class AuthorYearLabels(BaseLabelStyle):
        def format_labels(self, sorted_entries):
            labels = [f"{surname(e)} {e.fields.get('year', '')}".strip() for e in sorted_entries]
            counts: dict[str, int] = {}
            for label in labels:
                counts[label] = counts.get(label, 0) + 1
            seen: dict[str, int] = {}
            for label in labels:
                if counts[label] > 1:
                    seen[label] = seen.get(label, 0) + 1
                    yield label + "abcdefghijklmnopqrstuvwxyz"[(seen[label] - 1) % 26]
                else:
                    yield label

    class SumaStyle(UnsrtStyle):
        default_label_style = AuthorYearLabels
        default_sorting_style = "author_year_title"

    register_plugin("pybtex.style.formatting", "suma", SumaStyle, force=True)


def setup(app):
    _bibliography_style()
    app.set_html_assets_policy("always")
    app.connect("autodoc-process-docstring", process_docstring)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
